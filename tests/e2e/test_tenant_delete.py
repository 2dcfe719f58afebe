"""`civicpulse tenant delete`: a tenant and everything it holds go, asked for twice, and no
other tenant loses anything (checked over every table with a tenant_id, from the catalog)."""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from civicpulse.config import Settings
from tests.e2e.test_grouping import grouped, submit
from tests.support import TenantKeys, env_without_civicpulse, running_server


async def cli(db_url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "civicpulse.cli", *args,
        env={**env_without_civicpulse(), "CIVICPULSE_DATABASE_URL": db_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def tenant_tables(conn: asyncpg.Connection) -> set[str]:
    """Every table with a tenant_id column, from the catalog (partitions by their parent)."""
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE a.attname = 'tenant_id' AND c.relkind IN ('r', 'p')
              AND c.relnamespace = 'public'::regnamespace AND NOT c.relispartition"""
    )
    return {r["relname"] for r in rows}


async def rows_per_table(conn: asyncpg.Connection, tenant_id: int) -> dict[str, int]:
    counts = {}
    for name in sorted(await tenant_tables(conn)):
        counts[name] = await conn.fetchval(
            f'SELECT count(*) FROM "{name}" WHERE tenant_id = $1', tenant_id
        )
    return counts


async def test_a_deleted_tenant_leaves_nothing_and_takes_nothing_else(
    settings: Settings, db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    async with running_server(settings) as client:
        for t in (tenant_a, tenant_b):
            ids = [
                await submit(client, t, "Pothole on Main St", 34.05, -118.25),
                await submit(client, t, "Streetlight out on Oak Ave", 34.06, -118.26),
            ]
            await grouped(client, t, ids)
    conn = await asyncpg.connect(db_url)
    try:
        # An hour the aggregator has not taken yet (it may or may not have, at shutdown).
        for t in (tenant_a, tenant_b):
            await conn.execute(
                """INSERT INTO rollup_dirty (tenant_id, hour)
                   VALUES ($1, date_trunc('hour', now())) ON CONFLICT DO NOTHING""",
                t.id,
            )
        before_b = await rows_per_table(conn, tenant_b.id)
        assert (await rows_per_table(conn, tenant_a.id))["reports"] == 2
        code, _, err = await cli(db_url, "tenant", "delete", tenant_a.slug)
        assert code == 2 and "--yes" in err
        code, _, err = await cli(db_url, "tenant", "delete", tenant_a.slug, "--yes", "bravo")
        assert code == 2
        assert (await rows_per_table(conn, tenant_a.id))["reports"] == 2  # nothing happened
        code, out, err = await cli(db_url, "tenant", "delete", tenant_a.slug, "--yes", "alpha")
        assert code == 0 and "deleted tenant alpha" in out, err
        left = await rows_per_table(conn, tenant_a.id)
        assert set(left.values()) == {0}, left
        assert await rows_per_table(conn, tenant_b.id) == before_b
        code, _, err = await cli(db_url, "tenant", "delete", "alpha", "--yes", "alpha")
        assert code == 2 and "no tenant" in err
    finally:
        await conn.close()


async def test_every_tenant_table_goes_with_its_tenant(db_url: str) -> None:
    """From the catalog: every table with a tenant_id reaches tenants through foreign keys
    that cascade on delete, except reports, which delete_tenant removes by name (it carries
    no foreign key, for intake's sake). A table added without one fails here at once, not
    only when the service happened to leave a row in it."""
    conn = await asyncpg.connect(db_url)
    try:
        tables = await tenant_tables(conn)
        cascades = [
            (r["tbl"], r["ref"])
            for r in await conn.fetch(
                """SELECT conrelid::regclass::text AS tbl, confrelid::regclass::text AS ref
                     FROM pg_constraint
                    WHERE contype = 'f' AND confdeltype = 'c'
                      AND connamespace = 'public'::regnamespace"""
            )
        ]
    finally:
        await conn.close()
    assert "rollup_dirty" in tables and "issues" in tables  # the query sees them
    covered = {"tenants"}
    while grown := {t for t, ref in cascades if ref in covered} - covered:
        covered |= grown
    assert tables - covered == {"reports"}
