"""Intake pressure: how many rows the writers committed in the last second.

During a burst the claimers use it to leave the cores and the database to intake (which
must answer every client) and process at a reduced pace; the work waits safely in the
database and is caught up as soon as the burst ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class IntakeRate:
    """Rows committed per second, counted in whole-second buckets."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._second = int(clock())
        self._count = 0
        self._previous = 0

    def _roll(self) -> None:
        now = int(self._clock())
        if now != self._second:
            self._previous = self._count if now == self._second + 1 else 0
            self._second, self._count = now, 0

    def add(self, rows: int) -> None:
        self._roll()
        self._count += rows

    def per_second(self) -> int:
        """Rows committed in the last complete second."""
        self._roll()
        return self._previous
