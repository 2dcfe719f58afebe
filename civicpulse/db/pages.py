"""The resident pages' repository (api/pages.py). Function names equal their query names."""

from __future__ import annotations

import uuid
from typing import NamedTuple

import asyncpg

from civicpulse.db.queries import q


class WebForm(NamedTuple):
    token: str
    enabled: bool


async def public_tenants(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(q("public_tenants"))
    return rows


async def web_form_token(conn: asyncpg.Connection, tenant_id: int, fresh: str) -> WebForm:
    """The tenant's web form token; `fresh` becomes it when the tenant has none yet."""
    row = await conn.fetchrow(q("web_form_token"), tenant_id, fresh)
    assert row is not None
    return WebForm(row["token"], row["enabled"])


async def web_form(conn: asyncpg.Connection, tenant_id: int) -> WebForm | None:
    row = await conn.fetchrow(q("web_form"), tenant_id)
    return None if row is None else WebForm(row["token"], row["enabled"])


async def set_web_form(
    conn: asyncpg.Connection, tenant_id: int, enabled: bool, rotate: bool, fresh: str
) -> bool:
    return bool(await conn.fetchval(q("set_web_form"), tenant_id, enabled, rotate, fresh))


async def map_center(conn: asyncpg.Connection, tenant_id: int) -> list[float] | None:
    row = await conn.fetchrow(q("map_center"), tenant_id)
    if row is None or row["lat"] is None:
        return None
    return [round(row["lat"], 5), round(row["lon"], 5)]


async def tracked_report(
    conn: asyncpg.Connection, tenant_id: int, report_id: uuid.UUID
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(q("tracked_report"), tenant_id, report_id)
    return row
