"""The aggregator stage: keeps the hourly rollups and the daily snapshots current.

A statement trigger on issues marks the hours a change touches (rollup_dirty). Each tick
this stage takes a batch of dirty hours and recomputes exactly those rollup rows from the
issues, in one transaction per tenant (a failure puts the hours back), then announces
`rollup` on the event channel so live dashboards refresh. Once a minute it also writes the
daily snapshots of days that have closed in each tenant's time zone; those never change.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import defaultdict
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from civicpulse.db import analytics as repo
from civicpulse.db import tenants as tenants_repo
from civicpulse.db.pool import set_tenant, tenant_transaction

log = structlog.get_logger(__name__)


async def refresh_rollups(pool: asyncpg.Pool, batch: int) -> int:
    """Recompute one batch of dirty hours; returns how many hours."""
    async with pool.acquire() as conn, conn.transaction():
        taken = await repo.take_dirty_rollups(conn, batch)
        by_tenant: dict[int, list[dt.datetime]] = defaultdict(list)
        for row in taken:
            by_tenant[row["tenant_id"]].append(row["hour"])
        for tenant_id, hours in by_tenant.items():
            await set_tenant(conn, tenant_id)
            await repo.recompute_rollups(conn, tenant_id, hours)
            await repo.notify_rollup(conn, tenant_id)
    return len(taken)


async def snapshot_closed_days(pool: asyncpg.Pool, now: dt.datetime) -> int:
    """Write the snapshots of every closed day not yet written, for every tenant."""
    async with pool.acquire() as conn:
        tenants = await tenants_repo.list_tenants(conn)
    written = 0
    for tenant in tenants:
        zone = tenant.timezone
        yesterday = now.astimezone(ZoneInfo(zone)).date() - dt.timedelta(days=1)
        async with tenant_transaction(pool, tenant.id) as conn:
            cursor = await repo.snapshot_cursor(conn, tenant.id)
            if cursor["first_hour"] is None:
                continue
            first = (
                cursor["last_day"] + dt.timedelta(days=1)
                if cursor["last_day"] is not None
                else cursor["first_hour"].astimezone(ZoneInfo(zone)).date()
            )
            if first <= yesterday:
                written += await repo.snapshot_days(conn, tenant.id, zone, first, yesterday)
    return written


async def run(
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    *,
    tick: float,
    batch: int,
    snapshot_every: float,
) -> None:
    """Refresh rollups every `tick` seconds and snapshots every `snapshot_every`."""
    next_snapshot = 0.0
    while not stop.is_set():
        try:
            if await refresh_rollups(pool, batch) == batch:
                continue  # more are waiting
            if time.monotonic() >= next_snapshot:
                written = await snapshot_closed_days(pool, dt.datetime.now(dt.UTC))
                if written:
                    log.info("snapshots_written", rows=written)
                next_snapshot = time.monotonic() + snapshot_every
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("aggregate_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), tick)
    log.info("aggregator_stopped")
