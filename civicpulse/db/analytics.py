"""Analytics repository: rollups, snapshots, dashboards, exports. Names equal query names."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from civicpulse.db.classifier import tenant_by_id
from civicpulse.db.queries import q
from civicpulse.visibility import View


async def take_dirty_rollups(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("take_dirty_rollups"), limit))


async def _zone(conn: asyncpg.Connection, tenant_id: int) -> str:
    tenant = await tenant_by_id(conn, tenant_id)
    return "UTC" if tenant is None else str(tenant["timezone"])


def _local_days(hours: Sequence[dt.datetime], zone: str) -> list[dt.date]:
    tz = ZoneInfo(zone)
    return sorted({h.astimezone(tz).date() for h in hours})


async def recompute_rollups(
    conn: asyncpg.Connection, tenant_id: int, hours: Sequence[dt.datetime]
) -> None:
    """Replace the rollup rows of these hours, and of the local days they fall in, with
    what the issues say now."""
    await conn.execute(q("delete_rollup_hours"), tenant_id, list(hours))
    await conn.execute(q("insert_rollup_hours"), tenant_id, list(hours))
    zone = await _zone(conn, tenant_id)
    days = _local_days(hours, zone)
    await conn.execute(q("delete_rollup_days"), tenant_id, days)
    await conn.execute(q("insert_rollup_days"), tenant_id, days, zone)


async def rebuild_rollups(conn: asyncpg.Connection, tenant_id: int) -> int:
    """Recompute every rollup row of a tenant from its issues in one pass; returns the
    number of hourly rows."""
    await conn.execute(q("delete_all_rollups"), tenant_id)
    await conn.execute(q("delete_all_rollup_days"), tenant_id)
    status = await conn.execute(q("insert_all_rollup_hours"), tenant_id)
    await conn.execute(q("insert_all_rollup_days"), tenant_id, await _zone(conn, tenant_id))
    return int(status.split()[-1])


async def rollup_rows(conn: asyncpg.Connection, tenant_id: int) -> list[tuple[Any, ...]]:
    """Every hourly then every daily rollup row of a tenant, in key order."""
    hourly = [tuple(r) for r in await conn.fetch(q("rollup_rows"), tenant_id)]
    daily = [tuple(r) for r in await conn.fetch(q("rollup_day_rows"), tenant_id)]
    return hourly + daily


async def snapshot_cursor(conn: asyncpg.Connection, tenant_id: int) -> asyncpg.Record:
    return await conn.fetchrow(q("snapshot_cursor"), tenant_id)


async def snapshot_days(
    conn: asyncpg.Connection, tenant_id: int, zone: str, first: dt.date, last: dt.date
) -> int:
    status = await conn.execute(q("snapshot_days"), tenant_id, zone, first, last)
    return int(status.split()[-1])


async def dashboard_settings(conn: asyncpg.Connection, tenant_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(q("dashboard_settings"), tenant_id)


async def upsert_dashboard(conn: asyncpg.Connection, tenant_id: int, *values: Any) -> None:
    await conn.execute(q("upsert_dashboard"), tenant_id, *values)


async def public_view(conn: asyncpg.Connection, tenant_id: int) -> tuple[View, bool]:
    """The tenant's public view (civicpulse.visibility), and whether its dashboard is
    public at all."""
    settings = await dashboard_settings(conn, tenant_id)
    return View.public(settings), settings is None or bool(settings["public"])


async def trend_rows(conn: asyncpg.Connection, tenant_id: int, *args: Any) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("trend_rows"), tenant_id, *args))


async def backlog_before(conn: asyncpg.Connection, tenant_id: int, *args: Any) -> int:
    value: int = await conn.fetchval(q("backlog_before"), tenant_id, *args)
    return value


async def first_rollup_day(conn: asyncpg.Connection, tenant_id: int) -> dt.date | None:
    day: dt.date | None = await conn.fetchval(q("first_rollup_day"), tenant_id)
    return day


async def ranking_rows(
    conn: asyncpg.Connection,
    tenant_id: int,
    by: str,
    start: dt.datetime,
    end: dt.datetime,
    view: View,
) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("ranking_rows"), tenant_id, by, start, end, *view.sql_args))


async def hotspot_rows(
    conn: asyncpg.Connection,
    tenant_id: int,
    start: dt.datetime,
    end: dt.datetime,
    view: View,
    limit: int,
) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("hotspot_rows"), tenant_id, start, end, *view.sql_args, limit))


async def recent_issues(
    conn: asyncpg.Connection, tenant_id: int, view: View, limit: int, since: dt.datetime
) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("recent_issues"), tenant_id, *view.sql_args, limit, since))


async def open_issue_points(
    conn: asyncpg.Connection, tenant_id: int, view: View, limit: int
) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("open_issue_points"), tenant_id, *view.sql_args, limit))


async def export_issues(
    conn: asyncpg.Connection, tenant_id: int, start: dt.datetime, end: dt.datetime, view: View
) -> AsyncIterator[asyncpg.Record]:
    """A server-side cursor (the caller holds the transaction): rows arrive in chunks."""
    async for row in conn.cursor(
        q("export_issues"), tenant_id, start, end, *view.sql_args, prefetch=500
    ):
        yield row


async def events_after(
    conn: asyncpg.Connection, tenant_id: int, after: int, limit: int
) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("events_after"), tenant_id, after, limit))


async def last_event_seq(conn: asyncpg.Connection, tenant_id: int) -> int:
    last: int = await conn.fetchval(q("last_event_seq"), tenant_id)
    return last


async def widget_get(
    conn: asyncpg.Connection, tenant_id: int, name: str, max_age: float
) -> str | None:
    body: str | None = await conn.fetchval(q("widget_get"), tenant_id, name, max_age)
    return body


async def widget_put(conn: asyncpg.Connection, tenant_id: int, name: str, body: str) -> None:
    await conn.execute(q("widget_put"), tenant_id, name, body)


async def forget_widgets(conn: asyncpg.Connection, tenant_id: int) -> None:
    await conn.execute(q("forget_widgets"), tenant_id)


async def notify_view(conn: asyncpg.Connection, tenant_id: int) -> None:
    """Tell every process (on commit) that this tenant's public view changed."""
    await conn.execute(q("notify_view"), tenant_id)


async def notify_rollup(conn: asyncpg.Connection, tenant_id: int) -> None:
    """Tell live dashboards (on commit) that this tenant's rollups changed."""
    await conn.execute(q("notify_rollup"), tenant_id)
