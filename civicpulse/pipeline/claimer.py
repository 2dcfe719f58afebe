"""The producer stage: lease reports in one pipeline state from the database onto a queue.

Claims use FOR UPDATE SKIP LOCKED with a lease (see civicpulse_claim_reports), so several
processes share one database without processing a report twice, and a report whose worker
died is claimed again when its lease runs out.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import structlog

from civicpulse.db import reports as reports_repo

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Claim:
    """Reports of one tenant leased by this process."""

    tenant_id: int
    ids: tuple[uuid.UUID, ...]


async def run(
    outbox: asyncio.Queue[Claim | None],
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    wakeup: asyncio.Event,
    *,
    state: str,
    owner: str,
    lease: timedelta,
    batch: int,
    poll: float,
    order_wait: timedelta = timedelta(seconds=60),
    max_attempts: int = 5,
) -> None:
    """Claim until stopped; sleep until woken (new commits, a finished claim) or the poll
    interval passes. Claiming slows to processing speed (the queue to the workers is
    bounded), and the workers rest as intake needs (pipeline/pressure.py). Classified
    reports are claimed for grouping in submission order, one claim per tenant at a time
    (`order_wait`: how long an unclassified report holds its tenant's later ones; after
    `max_attempts` failed claims a report is set aside as failed)."""
    while not stop.is_set():
        # Cleared before claiming: a commit landing during the claim still wakes the next wait.
        wakeup.clear()
        size = batch
        try:
            async with pool.acquire() as conn:
                if state == "classified":
                    claimed = await reports_repo.claim_grouping(
                        conn, owner, lease, size, order_wait, max_attempts
                    )
                else:
                    claimed = await reports_repo.claim_reports(
                        conn, state, owner, lease, size, max_attempts
                    )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("claim_failed", error=repr(exc))
            claimed = []
        if claimed:
            by_tenant: dict[int, list[uuid.UUID]] = defaultdict(list)
            for tenant_id, report_id in claimed:
                by_tenant[tenant_id].append(report_id)
            for tenant_id, ids in by_tenant.items():
                # Waits while the classify queue is full: claiming slows to processing speed.
                await outbox.put(Claim(tenant_id, tuple(ids)))
            if len(claimed) == size:
                continue  # more may be waiting
        stop_wait = asyncio.ensure_future(stop.wait())
        wake_wait = asyncio.ensure_future(wakeup.wait())
        try:
            await asyncio.wait(
                {stop_wait, wake_wait}, timeout=poll, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop_wait.cancel()
            wake_wait.cancel()
    log.info("claimer_stopped", state=state)
