"""The loop every claim-processing stage runs: take a claim, process it, count it.

A claim that fails never stops a stage, and one bad report never holds the others back:
- a stage that may split its claims (classification: no order to keep) splits a failed
  claim in halves and processes each at once, down to the report at fault;
- what still fails is released with a backoff that doubles with each attempt, keeping the
  error, and after `max_attempts` it is set aside as 'failed' (`civicpulse reports retry`
  brings it back). Grouping keeps submission order: its claims are not split here but
  retried by civicpulse_claim_grouping, which claims a tenant's first report alone once a
  claim has failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog

from civicpulse.db import reports as reports_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.metrics import Metrics
from civicpulse.pipeline.claimer import Claim
from civicpulse.pipeline.pressure import Share

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Retry:
    """How a stage retries what failed (see the module docstring)."""

    pool: asyncpg.Pool
    owner: str
    backoff: float = 1.0
    max_backoff: float = 60.0
    max_attempts: int = 5
    split: bool = False


async def run_claims(
    name: str,
    inbox: asyncio.Queue[Claim | None],
    process: Callable[[Claim], Awaitable[int]],
    metrics: Metrics,
    on_done: Callable[[], None],
    retry: Retry,
    share: Share | None = None,
) -> None:
    """Process claims until a None sentinel arrives; `on_done` after any progress. After
    each claim the stage rests as long as `share` says (intake first)."""
    while (claim := await inbox.get()) is not None:
        started = time.perf_counter()
        done = await _attempt(name, claim, process, metrics, retry)
        worked = time.perf_counter() - started
        metrics.stage_items.labels(name).inc(done)
        metrics.stage_latency.labels(name).observe(worked)
        if done:
            on_done()
        if share is not None:
            metrics.pipeline_share.set(share.value)
            if (rest := share.rest_after(worked)) > 0:
                await asyncio.sleep(rest)
    log.info(f"{name}_stopped")


async def _attempt(
    name: str,
    claim: Claim,
    process: Callable[[Claim], Awaitable[int]],
    metrics: Metrics,
    retry: Retry,
) -> int:
    """Process a claim, isolating whatever part of it fails; how many reports were done."""
    try:
        return await process(claim)
    except Exception as exc:
        metrics.stage_failures.labels(name).inc()
        log.error(
            f"{name}_failed", tenant_id=claim.tenant_id, reports=len(claim.ids), error=repr(exc)
        )
        if retry.split and len(claim.ids) > 1:
            half = len(claim.ids) // 2
            first = Claim(claim.tenant_id, claim.ids[:half])
            second = Claim(claim.tenant_id, claim.ids[half:])
            return await _attempt(name, first, process, metrics, retry) + await _attempt(
                name, second, process, metrics, retry
            )
        await _release(name, claim, retry, metrics, f"{name}: {exc!r}")
        return 0


async def _release(name: str, claim: Claim, retry: Retry, metrics: Metrics, error: str) -> None:
    """Back off a failed claim's reports (or set them aside); if even that fails, their
    lease runs out and they are claimed again."""
    try:
        async with tenant_transaction(retry.pool, claim.tenant_id) as conn:
            set_aside = await reports_repo.release_failed_claim(
                conn,
                claim.tenant_id,
                claim.ids,
                retry.owner,
                retry.backoff,
                retry.max_backoff,
                retry.max_attempts,
                error,
            )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("release_failed", stage=name, tenant_id=claim.tenant_id, error=repr(exc))
        return
    if set_aside:
        metrics.reports_failed.labels(name).inc(set_aside)
        log.warning("reports_set_aside", stage=name, tenant_id=claim.tenant_id, reports=set_aside)
