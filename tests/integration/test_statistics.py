"""Planner statistics are never left to chance: stale tables are found and analysed by the
service itself, and /readyz says when the server's autovacuum is off or statistics are
stale."""

from __future__ import annotations

import asyncio

import asyncpg

from civicpulse.config import Settings
from civicpulse.db import stats
from tests.support import TenantKeys, running_server

GROW = """INSERT INTO issues (tenant_id, id, status, category, lat, lon, opened_at)
          SELECT $1, gen_random_uuid(), 'new', 'graffiti', 34, -118, now()
            FROM generate_series(1, $2)"""


async def grow(db_url: str, tenant_id: int, rows: int) -> None:
    """Insert issues from a connection of their own: its counts reach the statistics views
    when it closes (a backend sends them at exit, or when idle)."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(GROW, tenant_id, rows)
    finally:
        await conn.close()
    await asyncio.sleep(0.3)


async def reltuples(conn: asyncpg.Connection, table: str) -> float:
    return float(await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = $1", table))


async def analyse(db_url: str, fraction: float, min_rows: int) -> list[str]:
    """One maintenance round from a connection of its own (as the service's is)."""
    conn = await asyncpg.connect(db_url)
    try:
        return await stats.analyse_stale(conn, fraction, min_rows)
    finally:
        await conn.close()
        await asyncio.sleep(0.3)


async def test_stale_tables_are_found_and_analysed(db_url: str, tenant_a: TenantKeys) -> None:
    await grow(db_url, tenant_a.id, 3_000)
    conn = await asyncpg.connect(db_url)
    try:
        assert "issues" in {r["relname"] for r in await stats.stale_tables(conn, 0.2, 1_000)}
    finally:
        await conn.close()
    assert "issues" in await analyse(db_url, 0.2, 1_000)
    assert "issues" not in await analyse(db_url, 0.2, 1_000)
    # Growing by less than the fraction is not stale; by more, it is again.
    await grow(db_url, tenant_a.id, 300)
    assert "issues" not in await analyse(db_url, 0.2, 100)
    await grow(db_url, tenant_a.id, 1_000)
    assert "issues" in await analyse(db_url, 0.2, 100)
    conn = await asyncpg.connect(db_url)
    try:
        assert await reltuples(conn, "issues") == 4_300
    finally:
        await conn.close()


async def test_the_service_analyses_what_grows_and_says_so(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        autovacuum = await stats.autovacuum_on(conn)
        await grow(db_url, tenant_a.id, 2_000)
        settings = settings.replace(pipeline_enabled=False, analyze_check_seconds=0.0)
        async with running_server(settings) as client:
            ready = (await client.get("/readyz")).json()
        assert any("stale" in w and "issues" in w for w in ready["warnings"]), ready
        assert any("autovacuum is off" in w for w in ready["warnings"]) == (not autovacuum)
        assert await reltuples(conn, "issues") < 0  # nothing analysed with the task off
        settings = settings.replace(analyze_check_seconds=0.2)
        async with running_server(settings) as client:
            for _ in range(100):
                if await reltuples(conn, "issues") == 2_000:
                    break
                await asyncio.sleep(0.1)
            ready = (await client.get("/readyz")).json()
        assert await reltuples(conn, "issues") == 2_000
        assert not any("stale" in w and "issues" in w for w in ready["warnings"]), ready
    finally:
        await conn.close()
