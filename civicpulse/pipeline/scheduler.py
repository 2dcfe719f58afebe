"""The SLA scheduler stage: fire due warning and breach timers, exactly once.

Every tick it calls civicpulse_fire_sla_timers, which marks a batch of due timers fired and
appends their `sla_warning` / `sla_breached` events in one statement (SKIP LOCKED), so two
processes never fire the same timer and a timer missed while no process ran fires at the
first tick after start-up (catch-up). A full batch means more are due: it goes again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import asyncpg
import structlog

from civicpulse.db import workflow as repo
from civicpulse.metrics import Metrics

log = structlog.get_logger(__name__)
ACTOR = "system:sla"


async def fire_due(pool: asyncpg.Pool, metrics: Metrics, batch: int) -> int:
    """Fire one batch of due timers; returns how many fired."""
    async with pool.acquire() as conn, conn.transaction():
        fired = await repo.fire_sla_timers(conn, ACTOR, batch)
    now = datetime.now(UTC)
    for row in fired:
        metrics.sla_events.labels(row["target"], row["kind"]).inc()
        metrics.sla_lag.observe(max(0.0, (now - row["fire_at"]).total_seconds()))
    if fired:
        log.info("sla_timers_fired", count=len(fired))
    return len(fired)


async def run(
    pool: asyncpg.Pool, stop: asyncio.Event, metrics: Metrics, *, tick: float, batch: int
) -> None:
    """Fire due timers every `tick` seconds until stopped."""
    while not stop.is_set():
        try:
            if await fire_due(pool, metrics, batch) == batch:
                continue
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("sla_fire_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), tick)
    log.info("scheduler_stopped")
