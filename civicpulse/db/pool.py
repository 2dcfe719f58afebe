"""The asyncpg pool, and the one way to run tenant-scoped work: `tenant_transaction`.

Connections switch to the application role in the startup packet, so row-level security
applies to every query and a pool reset (RESET ALL) returns to that role, never to the owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from civicpulse.config import Settings

SET_TENANT = "SELECT set_config('civicpulse.tenant_id', $1, true)"


def server_settings(settings: Settings) -> dict[str, str]:
    """Session settings sent at connect time."""
    out = {"application_name": "civicpulse"}
    if settings.db_app_role:
        out["role"] = settings.db_app_role
    return out


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset round trip (RESET ALL, UNLISTEN...): the service keeps
    no session state: the role is set at connect time and the tenant per transaction."""


async def create_pool(settings: Settings, dsn: str, **overrides: Any) -> asyncpg.Pool:
    """Open the application pool (RLS-bound role)."""
    options: dict[str, Any] = {
        "min_size": settings.db_pool_min,
        "max_size": settings.db_pool_max,
        "command_timeout": settings.db_command_timeout,
        "server_settings": server_settings(settings),
        "reset": _keep_session,
    }
    options.update(overrides)
    pool = await asyncpg.create_pool(dsn, **options)
    assert pool is not None
    return pool


async def close_pool(pool: asyncpg.Pool, timeout: float) -> None:
    """Close gracefully, then terminate whatever is still busy after the timeout."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        pool.terminate()


@asynccontextmanager
async def tenant_transaction(
    pool: asyncpg.Pool, tenant_id: int
) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction whose RLS tenant is `tenant_id`."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(SET_TENANT, str(tenant_id))
        yield conn


async def set_tenant(conn: asyncpg.Connection, tenant_id: int) -> None:
    """Switch the RLS tenant inside an open transaction (multi-tenant batch writes)."""
    await conn.execute(SET_TENANT, str(tenant_id))
