"""The loop every claim-processing stage runs: take a claim, process it, count it.

A failed claim is logged and counted; its lease runs out and another claim retries it, so
one bad batch never stops a stage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from civicpulse.metrics import Metrics
from civicpulse.pipeline.claimer import Claim

log = structlog.get_logger(__name__)


async def run_claims(
    name: str,
    inbox: asyncio.Queue[Claim | None],
    process: Callable[[Claim], Awaitable[int]],
    metrics: Metrics,
    on_done: Callable[[], None],
) -> None:
    """Process claims until a None sentinel arrives; `on_done` after any progress."""
    while (claim := await inbox.get()) is not None:
        started = time.perf_counter()
        try:
            done = await process(claim)
        except Exception as exc:
            metrics.stage_failures.labels(name).inc()
            log.error(
                f"{name}_failed", tenant_id=claim.tenant_id, reports=len(claim.ids), error=repr(exc)
            )
            continue
        metrics.stage_items.labels(name).inc(done)
        metrics.stage_latency.labels(name).observe(time.perf_counter() - started)
        if done:
            on_done()
    log.info(f"{name}_stopped")
