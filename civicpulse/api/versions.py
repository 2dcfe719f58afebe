"""Optimistic concurrency for every route that writes an issue.

The client sends the version it read: `If-Match: "<version>"` (the issue's ETag) or
`"version"` in the body. Missing: 428; not the version the locked row has: 412. Every issue
write route calls `expected_version` before it changes anything and `check_version` on the
row it locked (tests/e2e/test_issue_versions.py sends each such route of the app's route
table a write without a version, so a new route cannot skip it).
"""

from __future__ import annotations

import re

from starlette.requests import Request

from civicpulse.api.errors import HTTPError

_IF_MATCH = re.compile(r'\s*(?:W/)?"?([0-9]{1,9})"?\s*')


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(request: Request, body_version: int | None) -> int:
    """The version the client read: If-Match first, else the body's; 428 without either."""
    header = request.headers.get("if-match")
    if header is not None:
        match = _IF_MATCH.fullmatch(header)
        if match is None:
            raise HTTPError(
                400, "bad_request", 'If-Match must be the issue\'s ETag, e.g. "3"', field="if-match"
            )
        return int(match.group(1))
    if body_version is not None:
        return body_version
    raise HTTPError(
        428,
        "precondition_required",
        'send the issue version you read (If-Match header or "version")',
        field="if-match",
    )


def check_version(actual: int, expected: int) -> None:
    """412 when the locked issue is no longer at the version the client read."""
    if actual != expected:
        raise HTTPError(
            412,
            "precondition_failed",
            f"the issue changed: it is at version {actual}, not {expected}",
            field="if-match",
        )
