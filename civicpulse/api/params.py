"""Query-string and header values shared by the read APIs, refused with a 422 naming the field.

Integers are ASCII digits only and bounded before they are converted (`str.isdigit` accepts
"²", and `int` refuses numbers of more than 4,300 digits with an exception of its own);
instants stay within the range domain.limits allows.
"""

from __future__ import annotations

import datetime as dt
import re

from starlette.requests import Request

from civicpulse.domain import limits
from civicpulse.errors import ValidationFailed

_INTEGER = re.compile(r"-?[0-9]{1,18}")
# The start of "all time": the default period of the SLA metrics and of the exports, so
# both cover the same issues, imported history included.
ALL_TIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_int(raw: str, field: str, low: int, high: int) -> int:
    """An integer written in ASCII digits, within [low, high]."""
    if _INTEGER.fullmatch(raw) is None or not low <= int(raw) <= high:
        raise ValidationFailed(f"{field} must be an integer from {low} to {high}", field=field)
    return int(raw)


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An optional integer query parameter within [low, high]."""
    raw = request.query_params.get(name)
    return default if raw is None or raw == "" else parse_int(raw, name, low, high)


def parse_time(raw: str, field: str) -> dt.datetime:
    """An ISO 8601 date or time within the storable range; without an offset it is UTC."""
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(f"{field} must be an ISO 8601 date or time", field=field) from None
    try:
        # The year is checked before any arithmetic: 9999-12-31T23:59-14:00 overflows in UTC.
        limits.check_instant(value, field)
    except limits.Unstorable as exc:
        raise ValidationFailed(exc.message, field=field) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def time_param(request: Request, name: str, default: dt.datetime) -> dt.datetime:
    """An optional ISO 8601 date or time query parameter."""
    raw = request.query_params.get(name)
    return default if not raw else parse_time(raw, name)
