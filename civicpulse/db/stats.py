"""Planner statistics: which tables need ANALYZE, and whether the server keeps them itself.

Many plans here are only right with fresh statistics (a never-analysed `issues` table made
one grouping statement read every issue of the tenant per call). The service does not rely
on autovacuum, which is off on some servers and slow on others: pipeline.maintenance analyses
what it grows, and `db stats` and `/readyz` say when statistics are stale.
"""

from __future__ import annotations

import asyncpg

from civicpulse.db.queries import q


async def stale_tables(
    conn: asyncpg.Connection, changed_fraction: float, min_rows: int
) -> list[asyncpg.Record]:
    """(relname, statement) of the tables whose statistics are stale."""
    rows: list[asyncpg.Record] = await conn.fetch(q("stale_tables"), changed_fraction, min_rows)
    return rows


async def analyse_stale(
    conn: asyncpg.Connection, changed_fraction: float, min_rows: int
) -> list[str]:
    """ANALYZE every stale table (a connection of the tables' owner); the names analysed."""
    done = []
    for row in await stale_tables(conn, changed_fraction, min_rows):
        await conn.execute(row["statement"])
        done.append(row["relname"])
    return done


async def autovacuum_on(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(q("autovacuum_on")))


async def pipeline_backlog(conn: asyncpg.Connection) -> tuple[int, float]:
    """Reports waiting for classification or grouping, all tenants, and the seconds the
    oldest has waited (the owner's connection)."""
    row = await conn.fetchrow(q("pipeline_backlog"))
    assert row is not None
    return int(row["reports"]), float(row["oldest_wait"])
