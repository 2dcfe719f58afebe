"""Workflow repository: tenant configuration, issue workflow state, timers, staff list and
SLA metrics. Names equal query names."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from civicpulse.db.queries import q


async def list_teams(conn: asyncpg.Connection, tenant_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("list_teams"), tenant_id))


async def upsert_team(
    conn: asyncpg.Connection, tenant_id: int, code: str, name: str
) -> asyncpg.Record:
    return await conn.fetchrow(q("upsert_team"), tenant_id, code, name)


async def list_areas(conn: asyncpg.Connection, tenant_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("list_areas"), tenant_id))


async def areas_at(
    conn: asyncpg.Connection, tenant_id: int, points: Sequence[tuple[float, float]]
) -> list[asyncpg.Record]:
    """(i, code, geometry) rows: i is the 1-based position of the point."""
    return list(
        await conn.fetch(q("areas_at"), tenant_id, [p[0] for p in points], [p[1] for p in points])
    )


async def upsert_area(
    conn: asyncpg.Connection,
    tenant_id: int,
    code: str,
    name: str,
    geometry: str,
    bbox: tuple[float, float, float, float],
) -> asyncpg.Record:
    return await conn.fetchrow(q("upsert_area"), tenant_id, code, name, geometry, *bbox)


async def list_calendars(conn: asyncpg.Connection, tenant_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("list_calendars"), tenant_id))


async def upsert_calendar(
    conn: asyncpg.Connection,
    tenant_id: int,
    code: str,
    timezone: str,
    hours: str,
    holidays: Sequence[dt.date],
) -> asyncpg.Record:
    return await conn.fetchrow(
        q("upsert_calendar"), tenant_id, code, timezone, hours, list(holidays)
    )


async def list_policies(conn: asyncpg.Connection, tenant_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("list_policies"), tenant_id))


async def upsert_policy(conn: asyncpg.Connection, tenant_id: int, *values: Any) -> None:
    await conn.fetchval(q("upsert_policy"), tenant_id, *values)


async def current_rules(conn: asyncpg.Connection, tenant_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(q("current_rules"), tenant_id)


async def insert_rules(
    conn: asyncpg.Connection, tenant_id: int, mode: str, rules: str, actor: str
) -> asyncpg.Record:
    return await conn.fetchrow(q("insert_rules"), tenant_id, mode, rules, actor)


async def lock_issue_workflow(
    conn: asyncpg.Connection, tenant_id: int, ids: Sequence[uuid.UUID | str]
) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("lock_issue_workflow"), tenant_id, list(ids)))


def workflow_params(args: Sequence[Sequence[Any]], at: dt.datetime) -> list[Any]:
    """save_issues_workflow's parameters from per-issue rows (tenant, id, the 20 columns,
    expected version, bump, the clock's runs as JSON: see civicpulse.workflow.save_args)."""
    columns = [list(c) for c in zip(*[a[1:22] for a in args], strict=True)]
    columns[7] = [",".join(m) for m in columns[7]]  # manual fields
    return [
        args[0][0],
        *columns,
        [a[22] for a in args],
        [a[23] for a in args],
        at,
        [a[24] for a in args],
    ]


async def save_issues_workflow(
    conn: asyncpg.Connection, args: Sequence[Sequence[Any]], at: dt.datetime
) -> int:
    """Write one issue's or a batch's workflow state; returns the rows written (fewer than
    given when a version moved on)."""
    if not args:
        return 0
    status = await conn.execute(q("save_issues_workflow"), *workflow_params(args, at))
    return int(status.split()[-1])


async def replace_timers(
    conn: asyncpg.Connection, tenant_id: int, timers: Sequence[tuple[Any, int, str, str, Any]]
) -> None:
    """(issue_id, cycle, target, kind, fire_at or None) rows, for any number of issues."""
    if timers:
        await conn.execute(q("replace_timers"), tenant_id, *timer_args(timers))


async def insert_timers(
    conn: asyncpg.Connection, tenant_id: int, timers: Sequence[tuple[Any, int, str, str, Any]]
) -> None:
    """The first timers of issues whose clock just started (rows as for replace_timers)."""
    if timers:
        await conn.execute(q("insert_timers"), tenant_id, *_columns(timers))


def _columns(timers: Sequence[tuple[Any, int, str, str, Any]]) -> list[list[Any]]:
    return [list(c) for c in zip(*timers, strict=True)]


def timer_args(timers: Sequence[tuple[Any, int, str, str, Any]]) -> list[list[Any]]:
    """replace_timers' parameters after the tenant: the rows as columns, then the distinct
    issue ids."""
    cols = _columns(timers)
    return [*cols, list(dict.fromkeys(cols[0]))]


async def fire_sla_timers(conn: asyncpg.Connection, actor: str, limit: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("fire_sla_timers"), actor, limit))


async def append_workflow_events(
    conn: asyncpg.Connection, tenant_id: int, events: Sequence[Sequence[Any]]
) -> None:
    """(issue_id, kind, actor, from_status, to_status, note, data) rows, in one insert."""
    if events:
        cols = list(zip(*events, strict=True))
        await conn.execute(q("append_workflow_events"), tenant_id, *[list(c) for c in cols])


async def list_issues(
    conn: asyncpg.Connection, tenant_id: int, *filters: Any
) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("list_issues"), tenant_id, *filters))


async def sla_metrics(
    conn: asyncpg.Connection, tenant_id: int, group_by: str, start: dt.datetime, end: dt.datetime
) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("sla_metrics"), tenant_id, group_by, start, end))
