"""Time-ordered UUIDs (version 7): ids known before commit that keep B-tree inserts local.

Monotonic within a process (RFC 9562, method 1): ids made in the same millisecond count up
in their 12 `rand_a` bits, so the reports of one batch keep their order, and grouping, which
follows submission order (received_at, id), sees them in the order the client sent them.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last = [0, 0]  # the last id's milliseconds and counter


def uuid7() -> uuid.UUID:
    """A UUIDv7: 48-bit Unix milliseconds, a 12-bit counter, then 62 random bits."""
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms <= _last[0]:
            ms, seq = _last[0], _last[1] + 1
            if seq > 0xFFF:  # 4,096 ids in one millisecond: borrow the next one
                ms, seq = ms + 1, 0
        else:
            seq = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave room to count up
        _last[0], _last[1] = ms, seq
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= seq << 64
    value |= 0b10 << 62  # variant
    value |= int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF  # 62 random bits
    return uuid.UUID(int=value)
