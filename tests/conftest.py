"""Fixtures: a real PostgreSQL, a migrated template database, one database per test.

The server is CIVICPULSE_TEST_DATABASE_URL when set, else PostgreSQL on 127.0.0.1:5432,
else an embedded server started in .civicpulse/test-pgdata (so a fresh machine needs
nothing but Python).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from civicpulse.config import Settings
from civicpulse.db import migrate
from civicpulse.db.pool import create_pool
from tests.support import ROOT, TenantKeys, make_tenant, reachable, test_settings, with_database

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CIVICPULSE_") and not key.startswith("CIVICPULSE_TEST_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def admin_url() -> str:
    explicit = os.environ.get("CIVICPULSE_TEST_DATABASE_URL")
    if explicit:
        return explicit
    if asyncio.run(reachable(LOCAL_URL)):
        return LOCAL_URL
    from civicpulse.db import embedded

    return str(embedded.start(ROOT / ".civicpulse" / "test"))


@pytest.fixture(scope="session")
def template_db(admin_url: str) -> Iterator[str]:
    name = f"cp_template_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        await migrate.migrate(with_database(admin_url, name))

    asyncio.run(create())
    yield name
    asyncio.run(_drop(admin_url, name))


async def _drop(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def db_url(admin_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test (owner URL)."""
    name = f"cp_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await conn.close()
    yield with_database(admin_url, name)
    await _drop(admin_url, name)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return test_settings(db_url)


@pytest.fixture
async def app_pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool that connects as the service does (the app role, under row-level security)."""
    pool = await create_pool(Settings(), db_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture
async def tenant_a(db_url: str) -> TenantKeys:
    return await make_tenant(db_url, "alpha")


@pytest.fixture
async def tenant_b(db_url: str) -> TenantKeys:
    return await make_tenant(db_url, "bravo")
