"""Statistics maintenance: analyse the tables the service grows, on a schedule.

One connection of its own, as the tables' owner (ANALYZE needs it; the application pool's
role does not have it). Every `every` seconds it analyses the tables whose statistics are
stale (db/stats.py): never analysed, or changed by more than `changed_fraction` of their
rows. A failed round is logged and the next one tries again.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from civicpulse.db import stats

log = structlog.get_logger(__name__)


async def run(
    dsn: str, stop: asyncio.Event, *, every: float, changed_fraction: float, min_rows: int
) -> None:
    """Analyse until stopped (`every` <= 0: never, but the stage stays up, as /readyz
    expects of every stage)."""
    if every <= 0:
        await stop.wait()
        log.info("maintenance_stopped")
        return
    conn: asyncpg.Connection | None = None
    try:
        while not stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(dsn)
                analysed = await stats.analyse_stale(conn, changed_fraction, min_rows)
                if analysed:
                    log.info("tables_analysed", tables=analysed)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("analyse_failed", error=repr(exc))
                if conn is not None:
                    conn.terminate()
                conn = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    finally:
        if conn is not None and not conn.is_closed():
            await conn.close()
    log.info("maintenance_stopped")
