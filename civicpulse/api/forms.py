"""HTML form bodies (application/x-www-form-urlencoded): the login form, and the `csrf_token`
field of a session's form posts.

Design rule: a body is read once, under a hard size limit, and the parsed fields are kept in
the request's scope, so the authenticator (checking the CSRF field) and the handler both
read the same fields without reading the stream twice. Multipart bodies are not read.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from civicpulse.api.body import read_bounded
from civicpulse.api.errors import HTTPError

FORM_MEDIA = "application/x-www-form-urlencoded"
MAX_FIELDS = 100
_PARSED = "civicpulse.form"


async def read_form(request: Request, limit: int) -> dict[str, str]:
    """The form's fields (the first value of each name); 413 past `limit` bytes, 400 when
    it is not a URL-encoded form of UTF-8 text."""
    parsed: dict[str, str] = {}
    for name, value in await read_form_pairs(request, limit):
        parsed.setdefault(name, value)
    return parsed


async def read_form_pairs(request: Request, limit: int) -> list[tuple[str, str]]:
    """Every (name, value) of the form, in order (a name may repeat: attribute[X][]=...)."""
    pairs: list[tuple[str, str]] | None = request.scope.get(_PARSED)
    if pairs is not None:
        return pairs
    body = await read_bounded(request, limit)
    try:
        pairs = parse_qsl(
            body.decode(),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except ValueError:  # UnicodeDecodeError included
        raise HTTPError(
            400,
            "malformed_form",
            f"the body is not a URL-encoded form of UTF-8 text with at most {MAX_FIELDS} fields",
            field="body",
        ) from None
    request.scope[_PARSED] = pairs
    return pairs
