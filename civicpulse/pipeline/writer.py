"""The durable micro-batching writer.

Handlers put a WriteRequest on the bounded intake queue (put_nowait: a full queue is a 503
at once) and await its future. The writer takes whatever is waiting, up to max_batch rows,
commits it in one transaction and only then resolves the futures. It flushes as soon as it
is free rather than waiting to fill a batch: under load the next batch fills during the
commit, and when idle a lone request pays no added delay.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import structlog

from civicpulse.db import reports as reports_repo
from civicpulse.db.pool import set_tenant
from civicpulse.domain.reports import NewReport, WriteOutcome
from civicpulse.errors import Overloaded, StorageUnavailable
from civicpulse.metrics import Metrics

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class WriteRequest:
    """Rows from one HTTP request, and the future its handler awaits."""

    rows: Sequence[NewReport]
    future: asyncio.Future[list[WriteOutcome]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Intake:
    """The handlers' side of the intake queue."""

    def __init__(
        self, queue: asyncio.Queue[WriteRequest | None], retry_after: int, metrics: Metrics
    ) -> None:
        self.queue = queue
        self.retry_after = retry_after
        self.metrics = metrics
        self.closed = False

    async def submit(self, rows: Sequence[NewReport]) -> list[WriteOutcome]:
        """Queue rows and wait until they are committed; raises Overloaded when full."""
        if self.closed:
            raise Overloaded("the service is shutting down", retry_after=self.retry_after)
        request = WriteRequest(rows)
        try:
            self.queue.put_nowait(request)
        except asyncio.QueueFull:
            self.metrics.rejected_overload.inc()
            raise Overloaded("intake queue is full", retry_after=self.retry_after) from None
        # shield: a client hanging up must not cancel the commit others share.
        try:
            return await asyncio.shield(request.future)
        except asyncio.CancelledError:
            request.future.add_done_callback(_retrieve)
            raise


def _retrieve(future: asyncio.Future[list[WriteOutcome]]) -> None:
    # The handler is gone; mark a failure as seen so asyncio does not report it as lost.
    if not future.cancelled():
        future.exception()


async def run(
    inbox: asyncio.Queue[WriteRequest | None],
    pool: asyncpg.Pool,
    metrics: Metrics,
    *,
    max_batch: int,
    on_committed: Callable[[int], None],
) -> None:
    """Flush until a None sentinel arrives; everything queued before it is flushed."""
    stopping = False
    while not stopping:
        first = await inbox.get()
        if first is None:
            break
        batch = [first]
        rows = len(first.rows)
        while rows < max_batch and not inbox.empty():
            item = inbox.get_nowait()
            if item is None:
                stopping = True
                break
            batch.append(item)
            rows += len(item.rows)
        if await _flush(pool, metrics, batch, rows):
            on_committed(rows)
    log.info("writer_stopped")


async def _flush(
    pool: asyncpg.Pool, metrics: Metrics, batch: list[WriteRequest], rows: int
) -> bool:
    """Commit a batch and resolve its requests; False when nothing was committed."""
    started = time.perf_counter()
    by_tenant: dict[int, list[NewReport]] = defaultdict(list)
    for request in batch:
        for row in request.rows:
            by_tenant[row.tenant_id].append(row)
    try:
        outcomes: dict[str, WriteOutcome] = {}
        async with pool.acquire() as conn, conn.transaction():
            for tenant_id, tenant_rows in by_tenant.items():
                await set_tenant(conn, tenant_id)
                results = await reports_repo.insert_reports(conn, tenant_id, tenant_rows)
                for row, outcome in zip(tenant_rows, results, strict=True):
                    outcomes[row.id] = outcome
    except Exception as exc:  # any failure: nothing in this batch was committed
        metrics.flush_failures.inc()
        log.error("batch_flush_failed", rows=rows, requests=len(batch), error=repr(exc))
        failure = StorageUnavailable(
            "the report could not be stored; retry with the same Idempotency-Key"
        )
        for request in batch:
            if not request.future.done():
                request.future.set_exception(failure)
        return False
    elapsed = time.perf_counter() - started
    metrics.flush_latency.observe(elapsed)
    metrics.batch_size.observe(rows)
    metrics.rows_written.inc(sum(1 for o in outcomes.values() if o.kind == "created"))
    for request in batch:
        if not request.future.done():
            request.future.set_result([outcomes[row.id] for row in request.rows])
    return True
