"""Where reads that may be a little stale go: a streaming replica while it keeps up, else the
primary.

`CIVICPULSE_READ_DATABASE_URL` names the replica. The read-only surfaces (dashboard data,
analytics, exports, the public Open311 reads, a stream's replay from the table) take their
pool from `Reads.pool()`; everything that writes, and everything a write's caller reads back,
stays on the primary.

How far behind: every `every` seconds the primary's WAL position is sampled, then the
replica's replay position read. The replica holds everything the primary had written at the
newest sample at or below its replay position, so the lag is the time since that sample: an
upper bound, exact to one interval, a few milliseconds when it has replayed the newest. When
the replica cannot be reached, or is further behind than `max_lag`, reads go to the primary
until it is back within the limit. Stale reads are therefore bounded by `max_lag` plus one
interval.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import structlog

from civicpulse.db.queries import q

log = structlog.get_logger(__name__)


def _ignore(surface: str, database: str) -> None:
    pass


@dataclass(eq=False)
class Reads:
    primary: asyncpg.Pool
    replica: asyncpg.Pool | None = None
    max_lag: float = 5.0
    # Seconds behind the primary at the last look; None: unknown (none set, or unreachable).
    lag: float | None = None
    on_route: Callable[[str, str], None] = _ignore  # (surface, "replica" | "primary")
    _samples: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    _warned: bool = False

    @property
    def current(self) -> bool:
        """Is the replica reachable and within the lag limit?"""
        return self.replica is not None and self.lag is not None and self.lag <= self.max_lag

    def pool(self, surface: str) -> asyncpg.Pool:
        """The pool for one read of `surface` (a metric label: dashboard, export, ...)."""
        if self.current:
            assert self.replica is not None
            self.on_route(surface, "replica")
            return self.replica
        self.on_route(surface, "primary")
        return self.primary

    async def measure(self) -> float:
        """Sample the primary's position, read the replica's; returns and keeps the lag."""
        assert self.replica is not None
        sampled = time.monotonic()
        async with self.primary.acquire() as conn:
            position: int = await conn.fetchval(q("wal_position"))
        self._samples.append((sampled, position))
        async with self.replica.acquire() as conn:
            replayed: int | None = await conn.fetchval(q("replay_position"))
        now = time.monotonic()
        if replayed is None:
            # Not in recovery: a primary (perhaps this one, perhaps a promoted replica). It
            # has everything it will ever be asked for, as far as it can tell.
            if not self._warned:
                log.warning("read_database_not_a_replica")
                self._warned = True
            lag = 0.0
        else:
            reached = [t for t, p in self._samples if p <= replayed]
            # None reached: behind by at least the oldest kept sample's age.
            lag = now - (reached[-1] if reached else self._samples[0][0])
        # Keep what can tell a lag a little past the limit; beyond that only "too far" matters.
        keep = now - max(2 * self.max_lag, 10.0)
        while len(self._samples) > 1 and self._samples[0][0] < keep:
            self._samples.popleft()
        self.lag = lag
        return lag

    async def run(
        self,
        stop: asyncio.Event,
        every: float,
        connect: Callable[[], Awaitable[asyncpg.Pool]],
        on_lag: Callable[[float | None], None],
    ) -> None:
        """Measure every `every` seconds until `stop`; open the replica's pool with
        `connect` while it has none (it may be down when the service starts)."""
        was_current = False
        reachable = True
        while not stop.is_set():
            try:
                if self.replica is None:
                    self.replica = await connect()
                async with asyncio.timeout(max(every, 2.0)):
                    await self.measure()
                reachable = True
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if reachable:
                    log.warning("read_replica_unreachable", error=type(exc).__name__)
                reachable = False
                self.lag = None
            on_lag(self.lag)
            if self.current != was_current:
                was_current = self.current
                log.info(
                    "read_replica_in_use" if was_current else "read_replica_set_aside",
                    lag=None if self.lag is None else round(self.lag, 3),
                    max_lag=self.max_lag,
                )
            try:
                async with asyncio.timeout(every):
                    await stop.wait()
            except TimeoutError:
                pass
