"""The classify stage: give each claimed report a category and a severity.

Reads a claim's reports under the tenant's RLS setting, classifies the batch in the process
pool (pure functions in civicpulse.engine), and stores the results only while this process
still holds the lease. A failed batch keeps its lease and is claimed again when it expires.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

import asyncpg
import msgspec
import structlog

from civicpulse.db import reports as reports_repo
from civicpulse.db import tenants as tenants_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.engine import rules
from civicpulse.metrics import Metrics
from civicpulse.pipeline.claimer import Claim

log = structlog.get_logger(__name__)
STAGE = "classify"
_payload = msgspec.json.Encoder()


async def run(
    inbox: asyncio.Queue[Claim | None],
    pool: asyncpg.Pool,
    executor: Executor,
    metrics: Metrics,
    *,
    owner: str,
) -> None:
    """Process claims until a None sentinel arrives."""
    while (claim := await inbox.get()) is not None:
        started = time.perf_counter()
        try:
            done = await classify_claim(pool, executor, claim, owner=owner)
        except Exception as exc:  # the lease expires and another claim retries the batch
            metrics.stage_failures.labels(STAGE).inc()
            log.error(
                "classify_failed",
                tenant_id=claim.tenant_id,
                reports=len(claim.ids),
                error=repr(exc),
            )
            continue
        metrics.stage_items.labels(STAGE).inc(done)
        metrics.stage_latency.labels(STAGE).observe(time.perf_counter() - started)
    log.info("classify_stopped")


async def classify_claim(
    pool: asyncpg.Pool, executor: Executor, claim: Claim, *, owner: str
) -> int:
    """Classify one claim; returns how many reports were stored."""
    async with tenant_transaction(pool, claim.tenant_id) as conn:
        categories = await tenants_repo.list_categories(conn, claim.tenant_id)
        rows = await reports_repo.load_claimed_reports(conn, claim.tenant_id, claim.ids, owner)
    if not rows:
        return 0
    terms = tuple(rules.terms_for(c.code, c.service_code, c.name, c.keywords) for c in categories)
    fallback = "other" if any(c.code == "other" for c in categories) else terms[0].code
    items = [(r["text"], r["requested_category"]) for r in rows]
    loop = asyncio.get_running_loop()
    results = await loop.run_in_executor(executor, rules.classify_batch, items, terms, fallback)
    stored = [
        (
            row["id"],
            result.category,
            result.severity,
            _payload.encode(
                {
                    "decided_by": result.decided_by,
                    "model": result.model,
                    "confidence": result.confidence,
                    "hazards": list(result.hazards),
                }
            ).decode(),
        )
        for row, result in zip(rows, results, strict=True)
    ]
    async with tenant_transaction(pool, claim.tenant_id) as conn:
        return await reports_repo.finish_classified(conn, claim.tenant_id, stored, owner)
