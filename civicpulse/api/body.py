"""Reading request bodies: content type first, then a hard size limit, then JSON."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from civicpulse.api.errors import HTTPError, decode_error
from civicpulse.domain import limits
from civicpulse.errors import ValidationFailed

T = TypeVar("T")


def media_type(request: Request) -> str:
    """The request's media type, lower-cased, without parameters."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_json(request: Request, limit: int) -> bytes:
    """The raw JSON body, refused with 415 or 413 before it can use memory."""
    if media_type(request) != "application/json":
        raise HTTPError(
            415,
            "unsupported_media_type",
            "Content-Type must be application/json",
            field="content-type",
        )
    body = await read_bounded(request, limit)
    if not body:
        raise HTTPError(400, "malformed_json", "request body is empty", field=None)
    return body


async def read_bounded(request: Request, limit: int) -> bytes:
    """The raw body: 413 as soon as it (or its declared length) passes `limit` bytes, so it
    cannot use more memory than that."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPError(
                400, "bad_request", "invalid Content-Length", field="content-length"
            ) from None
        if size > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> HTTPError:
    return HTTPError(413, "payload_too_large", f"request body exceeds {limit} bytes", field="body")


def decode(decoder: msgspec.json.Decoder[T], body: bytes, prefix: str = "") -> T:
    """Decode a body (or one batch item) into its wire type, and check that every part of
    it can be stored (domain.limits); 400/422 naming the field."""
    try:
        value = decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise decode_error(exc, prefix=prefix) from None
    except RecursionError:
        raise ValidationFailed(
            f"nested deeper than {limits.MAX_DEPTH} levels", field=prefix or "body"
        ) from None
    try:
        # Only a \u escape can put NUL or a lone surrogate in JSON: without one, skip the scan.
        limits.check(value, prefix, strings=b"\\u" in body)
    except limits.Unstorable as exc:
        raise ValidationFailed(exc.message, field=exc.field) from None
    return value
