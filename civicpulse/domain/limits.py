"""What the service can store and compute, checked on every decoded value at the edge.

msgspec checks each field's type and bounds; this walk checks what no single field's type
can: characters PostgreSQL refuses (NUL in text and jsonb, lone UTF-16 surrogates, which
cannot be encoded as UTF-8), instants outside the range the calendar arithmetic and the
database handle without overflow, numbers jsonb cannot hold, and nesting deep enough to
exhaust a recursion limit somewhere downstream. A value that passes can be stored and read
back; one that does not is refused with the path of the offending field, before it can fail
a batch shared with other requests.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import msgspec

# Instants are accepted from 1900-01-01 up to (not including) 2200-01-01: far wider than any
# report's life, and far from the edges where a time-zone shift overflows `datetime`.
FIRST_YEAR = 1900
END_YEAR = 2200
# Free-form JSON (report attributes, GeoJSON) may nest this deep.
MAX_DEPTH = 16
# jsonb and every client language hold integers of this size exactly.
MAX_INT = 2**63 - 1

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class Unstorable(ValueError):
    """A value the service cannot store: `field` is its path, `message` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def coordinate(value: float) -> float:
    """A latitude or longitude to 1e-7 degrees (about a centimetre): no position is known
    better, and a value such as 1e-300 would underflow PostgreSQL's float arithmetic."""
    return round(value, 7)


def coordinate_or_none(value: float | None) -> float | None:
    return None if value is None else coordinate(value)


def check_text(value: str, field: str) -> None:
    """Refuse NUL and lone surrogates, which PostgreSQL cannot store."""
    bad = _UNSTORABLE.search(value)
    if bad is not None:
        char = "NUL" if bad.group() == "\x00" else f"U+{ord(bad.group()):04X}"
        raise Unstorable(field, f"contains {char}, which cannot be stored")


def check_instant(value: dt.date, field: str) -> None:
    """Refuse dates and times outside [1900-01-01, 2200-01-01)."""
    if not FIRST_YEAR <= value.year < END_YEAR:
        raise Unstorable(field, f"must be between {FIRST_YEAR}-01-01 and {END_YEAR}-01-01")


def check(value: Any, field: str = "") -> None:
    """Walk a decoded value (Structs, dicts, lists, scalars); raise Unstorable at the first
    part that cannot be stored."""
    _walk(value, field, 0)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _walk(value: Any, field: str, depth: int) -> None:
    if isinstance(value, str):
        check_text(value, field or "body")
    elif value is None or isinstance(value, bool | msgspec.Raw):
        return
    elif isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
            raise Unstorable(field or "body", "integer out of range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise Unstorable(field or "body", "number out of range")
    elif isinstance(value, dt.date):  # datetime is a date
        check_instant(value, field or "body")
    elif depth >= MAX_DEPTH:
        raise Unstorable(field or "body", f"nested deeper than {MAX_DEPTH} levels")
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            _walk(getattr(value, name), _join(field, name), depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            # The path names the key with what cannot be stored shown as "?".
            key_field = _join(field, _UNSTORABLE.sub("?", str(key)))
            if isinstance(key, str):
                check_text(key, key_field)
            _walk(item, key_field, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for i, item in enumerate(value):
            _walk(item, f"{field}[{i}]", depth + 1)
