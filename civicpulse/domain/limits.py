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
    try:
        _text(value)
    except _Refused as exc:
        raise Unstorable(field, exc.message) from None


def check_instant(value: dt.date, field: str) -> None:
    """Refuse dates and times outside [1900-01-01, 2200-01-01)."""
    try:
        _instant(value)
    except _Refused as exc:
        raise Unstorable(field, exc.message) from None


def check(value: Any, field: str = "", *, strings: bool = True) -> None:
    """Walk a decoded value (Structs, dicts, lists, scalars); raise Unstorable at the first
    part that cannot be stored. `strings=False` skips the character scan, for values decoded
    from JSON holding no `\\u` escape: JSON cannot carry NUL or a lone surrogate otherwise
    (msgspec refuses raw control characters and invalid UTF-8)."""
    try:
        _walk(value, 0, strings)
    except _Refused as exc:
        path = field
        for part in reversed(exc.path):
            path = f"{path}{part}" if part.startswith("[") else _join(path, part)
        raise Unstorable(path or "body", exc.message) from None


class _Refused(Exception):
    """Raised deep in the walk; each level on the way up adds its name to `path`, so the
    path is built only for a value that is refused, never on the way down."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.path: list[str] = []


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _text(value: str) -> None:
    bad = _UNSTORABLE.search(value)
    if bad is not None:
        char = "NUL" if bad.group() == "\x00" else f"U+{ord(bad.group()):04X}"
        raise _Refused(f"contains {char}, which cannot be stored")


def _instant(value: dt.date) -> None:
    if not FIRST_YEAR <= value.year < END_YEAR:
        raise _Refused(f"must be between {FIRST_YEAR}-01-01 and {END_YEAR}-01-01")


def _integer(value: int) -> None:
    if not -MAX_INT <= value <= MAX_INT:
        raise _Refused("integer out of range")


def _walk(value: Any, depth: int, strings: bool) -> None:
    kind = type(value)
    if kind is str:
        if strings:
            _text(value)
    elif value is None or kind is bool:
        return
    elif kind is int:
        _integer(value)
    elif kind is float:
        if not math.isfinite(value):
            raise _Refused("number out of range")
    elif isinstance(value, dt.date):  # datetime is a date
        _instant(value)
    elif isinstance(value, msgspec.Raw):
        return
    elif depth >= MAX_DEPTH:
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            item = getattr(value, name)
            kind = type(item)
            # The common scalar fields inline (this runs for every report taken in).
            if (kind is str and not strings) or item is None or kind is bool:
                continue
            try:
                _walk(item, depth + 1, strings)
            except _Refused as exc:
                exc.path.append(name)
                raise
    elif isinstance(value, dict):
        for key, item in value.items():
            try:
                if strings and type(key) is str:
                    _text(key)
                _walk(item, depth + 1, strings)
            except _Refused as exc:
                # The path names the key, with what cannot be stored shown as "?".
                exc.path.append(_UNSTORABLE.sub("?", str(key)))
                raise
    elif isinstance(value, list | tuple | set | frozenset):
        for i, item in enumerate(value):
            try:
                _walk(item, depth + 1, strings)
            except _Refused as exc:
                exc.path.append(f"[{i}]")
                raise
    elif isinstance(value, str):  # subclasses (an enum's members...), rare
        if strings:
            _text(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        _integer(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _Refused("number out of range")
