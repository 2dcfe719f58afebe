"""Open311 reads (api/open311.py). Function names equal their query names."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg

from civicpulse.db.queries import q
from civicpulse.visibility import View


async def open311_requests(
    conn: asyncpg.Connection,
    tenant_id: int,
    start: dt.datetime,
    end: dt.datetime,
    ids: Sequence[uuid.UUID] | None,
    categories: Sequence[str] | None,
    statuses: Sequence[str] | None,
    view: View,
    limit: int,
    offset: int,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        q("open311_requests"),
        tenant_id,
        start,
        end,
        None if ids is None else list(ids),
        None if categories is None else list(categories),
        None if statuses is None else list(statuses),
        *view.sql_args,
        limit,
        offset,
    )
    return rows


async def open311_token(
    conn: asyncpg.Connection, tenant_id: int, token: uuid.UUID
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(q("open311_token"), tenant_id, token)
    return row


async def open311_requests_updated(
    conn: asyncpg.Connection,
    tenant_id: int,
    start: dt.datetime,
    end: dt.datetime,
    categories: Sequence[str] | None,
    statuses: Sequence[str] | None,
    view: View,
    limit: int,
    offset: int,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        q("open311_requests_updated"),
        tenant_id,
        start,
        end,
        None if categories is None else list(categories),
        *view.sql_args,
        limit,
        offset,
        None if statuses is None else list(statuses),
    )
    return rows


async def open311_notes(
    conn: asyncpg.Connection, tenant_id: int, issue_ids: Sequence[uuid.UUID], staff: bool
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        q("open311_notes"), tenant_id, list(issue_ids), staff
    )
    return rows


async def open311_updates(
    conn: asyncpg.Connection,
    tenant_id: int,
    start: dt.datetime,
    end: dt.datetime,
    view: View,
    limit: int,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        q("open311_updates"), tenant_id, start, end, *view.sql_args, limit
    )
    return rows
