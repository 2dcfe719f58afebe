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
from dataclasses import dataclass

import asyncpg
import structlog

from civicpulse.db import reports as reports_repo
from civicpulse.db.pool import set_tenant
from civicpulse.domain.reports import NewReport, WriteOutcome
from civicpulse.errors import Overloaded, StorageUnavailable, ValidationFailed
from civicpulse.metrics import Metrics
from civicpulse.pipeline.pressure import Backlog, Share

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class WriteRequest:
    """Rows from one HTTP request, and the future its handler awaits."""

    rows: Sequence[NewReport]
    future: asyncio.Future[list[WriteOutcome]]
    queued_at: float = 0.0  # time.perf_counter() when it was queued


class Intake:
    """The handlers' side of the intake queue."""

    def __init__(
        self,
        queue: asyncio.Queue[WriteRequest | None],
        retry_after: int,
        metrics: Metrics,
        backlog: Backlog | None = None,
    ) -> None:
        self.queue = queue
        self.retry_after = retry_after
        self.metrics = metrics
        self.backlog = backlog
        self.closed = False
        # The loop, looked up once: get_running_loop() checks the process id (a system call)
        # each time, a measurable share of intake's CPU at thousands of requests a second.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, rows: Sequence[NewReport]) -> list[WriteOutcome]:
        """Queue rows and wait until they are committed; raises Overloaded when full."""
        if self.closed:
            raise Overloaded("the service is shutting down", retry_after=self.retry_after)
        if self.backlog is not None and self.backlog.full:
            self.metrics.rejected_overload.inc()
            raise Overloaded(
                "the processing backlog is full; retry later", retry_after=self.retry_after
            )
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        request = WriteRequest(rows, self._loop.create_future(), time.perf_counter())
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
    share: Share | None = None,
) -> None:
    """Flush until a None sentinel arrives; everything queued before it is flushed. Each
    request's time from queueing to commit is reported to `share` (intake's latency)."""
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
        committed = await _flush(pool, metrics, batch, rows)
        if share is not None:
            done = time.perf_counter()
            for request in batch:
                share.observe(done - request.queued_at)
        if committed:
            on_committed(committed)
    log.info("writer_stopped")


async def _flush(pool: asyncpg.Pool, metrics: Metrics, batch: list[WriteRequest], rows: int) -> int:
    """Commit a batch and resolve its requests; the number of rows committed.

    A batch that fails because of what one request holds is split in halves and each half
    flushed again, down to the request at fault, which alone gets the error: the other
    requests (and tenants) sharing its batch commit as if it had never been there. A failure
    of the database itself fails the whole batch with a 503, at once."""
    started = time.perf_counter()
    try:
        outcomes = await _write(pool, batch)
    except Exception as exc:  # any failure: nothing in this batch was committed
        metrics.flush_failures.inc()
        if not _caused_by_rows(exc):
            log.error("batch_flush_failed", rows=rows, requests=len(batch), error=repr(exc))
            _fail(
                batch,
                StorageUnavailable(
                    "the report could not be stored; retry with the same Idempotency-Key"
                ),
            )
            return 0
        if len(batch) == 1:
            log.warning("request_refused_by_database", rows=rows, error=repr(exc))
            _fail(
                batch,
                ValidationFailed(
                    f"the database refused this request's data ({type(exc).__name__})",
                    field="body",
                ),
            )
            return 0
        log.warning("batch_flush_split", rows=rows, requests=len(batch), error=repr(exc))
        half = len(batch) // 2
        first, second = batch[:half], batch[half:]
        return await _flush(pool, metrics, first, _rows(first)) + await _flush(
            pool, metrics, second, _rows(second)
        )
    elapsed = time.perf_counter() - started
    metrics.flush_latency.observe(elapsed)
    metrics.batch_size.observe(rows)
    metrics.rows_written.inc(sum(1 for o in outcomes.values() if o.kind == "created"))
    for request in batch:
        if not request.future.done():
            request.future.set_result([outcomes[row.id] for row in request.rows])
    return rows


async def _write(pool: asyncpg.Pool, batch: list[WriteRequest]) -> dict[str, WriteOutcome]:
    """Insert every row of the batch in one transaction, tenant by tenant."""
    by_tenant: dict[int, list[NewReport]] = defaultdict(list)
    for request in batch:
        for row in request.rows:
            by_tenant[row.tenant_id].append(row)
    outcomes: dict[str, WriteOutcome] = {}
    async with pool.acquire() as conn, conn.transaction():
        for tenant_id, tenant_rows in by_tenant.items():
            await set_tenant(conn, tenant_id)
            results = await reports_repo.insert_reports(conn, tenant_id, tenant_rows)
            for row, outcome in zip(tenant_rows, results, strict=True):
                outcomes[row.id] = outcome
    return outcomes


def _caused_by_rows(exc: BaseException) -> bool:
    """Whether a failed flush may be the fault of some row in it (a value the server refuses,
    or one the driver cannot encode) rather than of the database being unavailable."""
    return isinstance(
        exc,
        asyncpg.DataError  # SQLSTATE class 22, data exception
        | asyncpg.IntegrityConstraintViolationError  # class 23
        | asyncpg.ProgramLimitExceededError  # class 54, e.g. an index row too large
        | ValueError  # the driver could not encode a value; includes UnicodeEncodeError
        | OverflowError
        | TypeError,
    )


def _rows(batch: list[WriteRequest]) -> int:
    return sum(len(request.rows) for request in batch)


def _fail(batch: list[WriteRequest], error: Exception) -> None:
    for request in batch:
        if not request.future.done():
            request.future.set_exception(error)
