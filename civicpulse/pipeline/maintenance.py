"""Maintenance: analyse the tables the service grows, and count the pipeline's backlog.

One connection of its own, as the tables' owner (ANALYZE needs it, and the backlog is
counted across tenants; the application pool's role has neither). Every `every` seconds it
analyses the tables whose statistics are stale (db/stats.py): never analysed, or changed by
more than `changed_fraction` of their rows. Every `backlog_every` seconds it counts the
reports waiting for the pipeline, and how long the oldest has waited, into `backlog`
(intake's bound, the metric and /readyz's alert read it) and `share` (which gives the
pipeline more of the process when it falls behind). A failed round is logged and the next
one tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import structlog

from civicpulse.db import stats
from civicpulse.metrics import Metrics
from civicpulse.pipeline.pressure import Backlog, Share

log = structlog.get_logger(__name__)


async def run(
    dsn: str,
    stop: asyncio.Event,
    *,
    every: float,
    changed_fraction: float,
    min_rows: int,
    backlog: Backlog | None = None,
    backlog_every: float = 2.0,
    share: Share | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Analyse (`every` <= 0: never) and count the backlog (`backlog` None or
    `backlog_every` <= 0: never) until stopped; with neither the stage stays up idle, as
    /readyz expects of every stage."""
    analyse = every > 0
    count = backlog is not None and backlog_every > 0
    if not analyse and not count:
        await stop.wait()
        log.info("maintenance_stopped")
        return
    tick = min(t for t, on in ((every, analyse), (backlog_every, count)) if on)
    next_analyse = time.monotonic()
    conn: asyncpg.Connection | None = None
    try:
        while not stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(dsn)
                if count:
                    assert backlog is not None
                    backlog.reports, backlog.oldest_wait = await stats.pipeline_backlog(conn)
                    if share is not None:
                        share.oldest_wait = backlog.oldest_wait
                    if metrics is not None:
                        metrics.backlog.set(backlog.reports)
                        metrics.backlog_wait.set(backlog.oldest_wait)
                if analyse and time.monotonic() >= next_analyse:
                    next_analyse = time.monotonic() + every
                    analysed = await stats.analyse_stale(conn, changed_fraction, min_rows)
                    if analysed:
                        log.info("tables_analysed", tables=analysed)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("maintenance_failed", error=repr(exc))
                if conn is not None:
                    conn.terminate()
                conn = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
    finally:
        if conn is not None and not conn.is_closed():
            await conn.close()
    log.info("maintenance_stopped")
