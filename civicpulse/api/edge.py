"""The first check every request meets: a path and query string the database can hold.

A NUL (`%00`) in a tenant slug, an id or a search term would reach PostgreSQL, which
refuses it with an error of its own (a 500, and for the hot paths a failed lookup). It is
refused here once, for every route, as a 400 naming the part, so no handler needs to know.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from civicpulse.api.errors import error_response


class EdgeGuard:
    """Pure ASGI: refuses requests whose path or query string holds a NUL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            field = _unstorable_part(scope)
            if field is not None:
                response = error_response(
                    400, "invalid_character", "NUL characters are not allowed", field
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _unstorable_part(scope: Scope) -> str | None:
    """The name of the part holding a NUL: "path", or the query parameter's name."""
    if "\x00" in scope["path"]:
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return "query" if "\x00" in name else name
    return None
