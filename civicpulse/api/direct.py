"""Direct dispatch for the hottest routes.

Report intake is most of the traffic in a burst, and on two cores the Python time per
request decides throughput. These routes are matched here, before Starlette's router,
exception middleware and per-route wrappers, and call the very same endpoint function; a
CivicPulseError becomes the same JSON error the exception handlers would give. Anything
else (and every other route) goes through the normal stack, and an unexpected exception
still reaches the server-error middleware.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from civicpulse.api.errors import to_response
from civicpulse.errors import CivicPulseError


class DirectRoutes:
    def __init__(self, app: ASGIApp, routes: Sequence[Route]) -> None:
        self.app = app
        self.routes = list(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                if route.methods and scope["method"] not in route.methods:
                    continue
                match = route.path_regex.match(scope["path"])
                if match is None:
                    continue
                scope["route"] = route
                scope["path_params"] = match.groupdict()
                try:
                    response = await route.endpoint(Request(scope, receive, send))
                except CivicPulseError as exc:
                    response = to_response(exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
