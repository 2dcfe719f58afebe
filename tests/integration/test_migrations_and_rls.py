"""Migrations and row-level security, straight through SQL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from civicpulse.config import Settings
from civicpulse.db import migrate
from civicpulse.db.pool import create_pool, set_tenant, tenant_transaction
from tests.support import TenantKeys, with_database


async def test_migrations_apply_once_even_from_two_processes_at_once(admin_url: str) -> None:
    name = f"cp_mig_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    try:
        first, second = await asyncio.gather(migrate.migrate(url), migrate.migrate(url))
        versions = sorted(m.version for m in first + second)
        assert versions == [m.version for m in migrate.load(migrate.schema_dir())]
        assert await migrate.migrate(url) == []  # and a third run does nothing
        check = await asyncpg.connect(url)
        try:
            rows = await check.fetch("SELECT version FROM civicpulse_migrations ORDER BY 1")
        finally:
            await check.close()
        assert [r["version"] for r in rows] == versions
    finally:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.close()


async def test_an_applied_migration_that_changed_is_refused(db_url: str, tmp_path: Path) -> None:
    for m in migrate.load(migrate.schema_dir()):
        (tmp_path / f"{m.version:04d}_{m.name}.sql").write_text(m.sql + "\n-- edited\n")
    with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
        await migrate.migrate(db_url, tmp_path)


async def _app_pool(db_url: str) -> asyncpg.Pool:
    return await create_pool(Settings(), db_url, min_size=1, max_size=2)


async def test_app_role_sees_only_the_current_tenant(
    db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    owner = await asyncpg.connect(db_url)
    for tenant in (tenant_a, tenant_b):
        await owner.execute(
            "INSERT INTO reports (tenant_id, id, text, lat, lon, submitted_at) "
            "VALUES ($1, $2, $3, 1, 1, now())",
            tenant.id,
            uuid.uuid4(),
            tenant.slug,
        )
    await owner.close()

    pool = await _app_pool(db_url)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == "civicpulse_app"
            # No tenant set: nothing at all, even with no WHERE clause.
            assert await conn.fetchval("SELECT count(*) FROM reports") == 0
            assert await conn.fetchval("SELECT count(*) FROM categories") == 0
        async with tenant_transaction(pool, tenant_a.id) as conn:
            texts = [r["text"] for r in await conn.fetch("SELECT text FROM reports")]
            assert texts == ["alpha"]
            keys = await conn.fetch("SELECT DISTINCT tenant_id FROM api_keys")
            assert [r["tenant_id"] for r in keys] == [tenant_a.id]
        # After the transaction the setting is gone again (set_config(..., true)).
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM reports") == 0
    finally:
        await pool.close()


async def test_app_role_cannot_write_into_another_tenant(
    db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    pool = await _app_pool(db_url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with tenant_transaction(pool, tenant_a.id) as conn:
                await conn.execute(
                    "INSERT INTO reports (tenant_id, id, text, lat, lon, submitted_at) "
                    "VALUES ($1, $2, 'sneaky', 1, 1, now())",
                    tenant_b.id,
                    uuid.uuid4(),
                )
        async with tenant_transaction(pool, tenant_a.id) as conn:
            # Updating another tenant's rows silently matches nothing.
            status = await conn.execute(
                "UPDATE categories SET name = 'x' WHERE tenant_id = $1", tenant_b.id
            )
            assert status == "UPDATE 0"
        async with pool.acquire() as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("INSERT INTO tenants (slug, name) VALUES ('evil', 'Evil')")
            # COPY into an RLS table is refused outright for the app role.
            await set_tenant_outside_tx_fails(conn, tenant_a.id)
    finally:
        await pool.close()


async def set_tenant_outside_tx_fails(conn: asyncpg.Connection, tenant_id: int) -> None:
    async with conn.transaction():
        await set_tenant(conn, tenant_id)
        with pytest.raises(asyncpg.FeatureNotSupportedError):
            await conn.copy_records_to_table(
                "reports",
                records=[(tenant_id, uuid.uuid4(), "x", 1.0, 1.0)],
                columns=["tenant_id", "id", "text", "lat", "lon"],
            )


async def test_issue_events_are_append_only(db_url: str, tenant_a: TenantKeys) -> None:
    pool = await _app_pool(db_url)
    issue_id = uuid.uuid4()
    try:
        async with tenant_transaction(pool, tenant_a.id) as conn:
            await conn.execute(
                "INSERT INTO issues (tenant_id, id) VALUES ($1, $2)", tenant_a.id, issue_id
            )
            await conn.execute(
                "INSERT INTO issue_events (tenant_id, issue_id, kind, actor) "
                "VALUES ($1, $2, 'created', 'test')",
                tenant_a.id,
                issue_id,
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(pool, tenant_a.id) as conn:
                await conn.execute("UPDATE issue_events SET note = 'rewritten'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(pool, tenant_a.id) as conn:
                await conn.execute("DELETE FROM issue_events")
        async with tenant_transaction(pool, tenant_a.id) as conn:
            assert await conn.fetchval("SELECT count(*) FROM issue_events") == 1
    finally:
        await pool.close()


async def test_service_role_cannot_bypass_rls(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        row = await conn.fetchrow(
            "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles "
            "WHERE rolname = 'civicpulse_app'"
        )
        assert tuple(row) == (False, False, False)
        unprotected = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
            "WHERE a.attname = 'tenant_id' AND c.relkind = 'r' AND NOT c.relrowsecurity "
            "AND c.relnamespace = 'public'::regnamespace"
        )
        assert [r["relname"] for r in unprotected] == []
    finally:
        await conn.close()
