"""The CivicPulse error tree. Errors carry data; the HTTP mapping lives in civicpulse.api."""

from __future__ import annotations


class CivicPulseError(Exception):
    """Base of every error the service raises on purpose."""

    code = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ConfigError(CivicPulseError):
    code = "config"


class ValidationFailed(CivicPulseError):
    code = "invalid"


class NotFound(CivicPulseError):
    code = "not_found"


class Conflict(CivicPulseError):
    code = "conflict"


class Unauthenticated(CivicPulseError):
    code = "unauthenticated"


class Forbidden(CivicPulseError):
    code = "forbidden"


class Overloaded(CivicPulseError):
    """The intake queue is full: the client should retry after a pause."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageUnavailable(CivicPulseError):
    """A write could not be committed; nothing was stored, so the client may retry."""

    code = "storage_unavailable"


class Throttled(CivicPulseError):
    """A rate limit was reached: the client should wait `retry_after` seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after
