"""Query-string parameters shared by the read APIs, refused with a 422 naming the field."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request

from civicpulse.errors import ValidationFailed


def time_param(request: Request, name: str, default: dt.datetime) -> dt.datetime:
    """An ISO 8601 date or time; without an offset it is UTC."""
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be an ISO 8601 date or time", field=name) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
