"""Where reads that may be a little stale go: a streaming replica while it keeps up, else the
primary.

`CIVICPULSE_READ_DATABASE_URL` names the replica. The read-only surfaces (dashboard data,
analytics, exports, the public Open311 reads, a stream's replay from the table) take their
pool from `Reads.pool()`; everything that writes, and everything a write's caller reads back,
stays on the primary.

How far behind: every `every` seconds the primary's WAL position is sampled (on a connection
of its own, so a busy request pool cannot delay it), then the replica's replay position
read. The replica holds everything the primary had written at the newest sample at or below
its replay position, so the lag is the time since that sample: an upper bound, exact to one
interval, a few milliseconds when it has replayed the newest. A replica that has reached no
sample kept (just after start, or stuck) is infinitely far behind as far as anyone can tell.
When the replica cannot be reached, is not a replica at all, or is further behind than
`max_lag`, reads go to the primary until it is back within the limit. Stale reads are
therefore bounded by `max_lag` plus one interval.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
import structlog

from civicpulse.db.analytics import last_event_seq
from civicpulse.db.pool import tenant_transaction
from civicpulse.db.queries import q

log = structlog.get_logger(__name__)


MAX_SAMPLES = 20_000  # hours at the default interval: beyond, the lag is infinite anyway
CONNECT_TIMEOUT = 5.0


class NotAReplica(Exception):
    """The read database is not in recovery: a primary, perhaps a promoted former replica
    whose data has left this primary's. Its answers could be anything: it is not used."""


def _ignore(surface: str, database: str) -> None:
    pass


@dataclass(eq=False)
class Reads:
    primary: asyncpg.Pool
    replica: asyncpg.Pool | None = None
    max_lag: float = 5.0
    # Seconds behind the primary at the last look (inf: behind every sample kept); None:
    # unknown (none set, unreachable, or not a replica).
    lag: float | None = None
    on_route: Callable[[str, str], None] = _ignore  # (surface, "replica" | "primary")
    # (monotonic time, primary WAL position), oldest first; positions never decrease.
    _samples: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)

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

    @asynccontextmanager
    async def holding(
        self, surface: str, tenant_id: int, seq: int
    ) -> AsyncIterator[tuple[asyncpg.Connection, bool]]:
        """A tenant transaction for a read that must include the tenant's event `seq` (what
        its reader has already seen): on the replica when it is current and holds that event
        (events become visible in number order, schema 0011, so it then misses none before
        it), else on the primary. Yields the connection and whether it is the replica's."""
        if self.current:
            assert self.replica is not None
            async with tenant_transaction(self.replica, tenant_id) as conn:
                if await last_event_seq(conn, tenant_id) >= seq:
                    self.on_route(surface, "replica")
                    yield conn, True
                    return
        self.on_route(surface, "primary")
        async with tenant_transaction(self.primary, tenant_id) as conn:
            yield conn, False

    async def measure(self, probe: asyncpg.Connection) -> float:
        """Sample the primary's position on `probe`, read the replica's; returns and keeps
        the lag."""
        assert self.replica is not None
        sampled = time.monotonic()
        position: int = await probe.fetchval(q("wal_position"))
        self._samples.append((sampled, position))
        if len(self._samples) > MAX_SAMPLES:
            self._samples.popleft()
        async with self.replica.acquire() as conn:
            replayed: int | None = await conn.fetchval(q("replay_position"))
        if replayed is None:
            raise NotAReplica
        now = time.monotonic()
        # The newest sample reached; older ones can tell nothing more, so they go.
        reached = None
        while self._samples and self._samples[0][1] <= replayed:
            reached = self._samples.popleft()
        if reached is None:
            self.lag = math.inf
        else:
            self._samples.appendleft(reached)
            self.lag = now - reached[0]
        return self.lag

    async def run(
        self,
        stop: asyncio.Event,
        every: float,
        connect: Callable[[], Awaitable[asyncpg.Pool]],
        connect_probe: Callable[[], Awaitable[asyncpg.Connection]],
        on_lag: Callable[[float | None], None],
    ) -> None:
        """Measure every `every` seconds until `stop`. The replica's pool is opened with
        `connect` while there is none (it may be down when the service starts), the
        primary's probe connection with `connect_probe`; each look has CONNECT_TIMEOUT."""
        was_current = False
        failing: str | None = None
        probe: asyncpg.Connection | None = None
        try:
            while not stop.is_set():
                try:
                    async with asyncio.timeout(max(every, CONNECT_TIMEOUT)):
                        if probe is None:
                            probe = await connect_probe()
                        if self.replica is None:
                            self.replica = await connect()
                        await self.measure(probe)
                    failing = None
                except Exception as exc:  # whatever it is, the replica is not to be used
                    if failing != type(exc).__name__:
                        failing = type(exc).__name__
                        log.warning("read_replica_unavailable", error=failing)
                    self.lag = None
                    if probe is not None:  # it may be mid-query: start afresh
                        probe.terminate()
                        probe = None
                on_lag(self.lag)
                if self.current != was_current:
                    was_current = self.current
                    log.info(
                        "read_replica_in_use" if was_current else "read_replica_set_aside",
                        lag=self.lag if self.lag is None else round(self.lag, 3),
                        max_lag=self.max_lag,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)
        finally:
            if probe is not None:
                probe.terminate()
