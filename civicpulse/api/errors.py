"""The one place where errors become HTTP responses: `{"error": {code, message, field}}`."""

from __future__ import annotations

import re
from collections.abc import Mapping

import asyncpg
import msgspec
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from civicpulse import errors

log = structlog.get_logger(__name__)

STATUS: dict[type[errors.CivicPulseError], int] = {
    errors.ValidationFailed: 422,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.Overloaded: 503,
    errors.StorageUnavailable: 503,
    errors.Throttled: 429,
}


class HTTPError(errors.CivicPulseError):
    """An error only the web layer knows (bad content type, body too large...)."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.status = status
        self.code = code


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=False):
    code: str
    message: str
    field: str | None


class ErrorEnvelope(msgspec.Struct, frozen=True):
    error: ErrorBody


_encoder = msgspec.json.Encoder()
_AT = re.compile(r" - at `\$\.?(.*?)`$")
_NAMED = re.compile(r"field `([^`]+)`")


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = _encoder.encode(ErrorEnvelope(ErrorBody(code, message, field)))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def decode_error(exc: msgspec.DecodeError, prefix: str = "") -> errors.CivicPulseError:
    """Turn a msgspec error into a ValidationFailed naming the field."""
    message = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return HTTPError(400, "malformed_json", message, field=prefix or None)
    field: str | None = None
    at = _AT.search(message)
    if at:
        field = at.group(1) or None
        message = message[: at.start()]
    named = _NAMED.search(message)
    if named:
        field = f"{field}.{named.group(1)}" if field else named.group(1)
    if prefix:
        field = f"{prefix}.{field}" if field else prefix
    return errors.ValidationFailed(message, field=field)


def to_response(exc: errors.CivicPulseError) -> Response:
    headers: dict[str, str] | None = None
    status = exc.status if isinstance(exc, HTTPError) else STATUS.get(type(exc), 500)
    if isinstance(exc, errors.Overloaded | errors.Throttled):
        headers = {"Retry-After": str(exc.retry_after)}
    elif isinstance(exc, errors.StorageUnavailable):
        headers = {"Retry-After": "1"}
    elif isinstance(exc, errors.Unauthenticated):
        headers = {"WWW-Authenticate": 'Bearer realm="civicpulse"'}
    return error_response(status, exc.code, exc.message, exc.field, headers)


async def civicpulse_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.CivicPulseError)
    return to_response(exc)


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), None, exc.headers)


async def unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, asyncpg.TransactionRollbackError):
        # A deadlock or serialization failure rolled the request back whole: nothing was
        # changed, and the same request is expected to succeed when sent again.
        log.warning("request_rolled_back", path=request.url.path, error=repr(exc))
        return error_response(
            503,
            "retry",
            "the request conflicted with a concurrent one and changed nothing; retry",
            None,
            {"Retry-After": "1"},
        )
    log.exception("request_failed", path=request.url.path)
    return error_response(500, "internal", "internal error", None)


HANDLERS = {
    errors.CivicPulseError: civicpulse_error,
    HTTPException: http_exception,
    Exception: unexpected,
}
