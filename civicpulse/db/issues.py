"""Issue repository: grouping writes, aggregates, staff tools. Names equal query names."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from civicpulse.db.queries import q
from civicpulse.engine import geo
from civicpulse.engine.grouping import (
    Candidate,
    Report,
    Search,
    address_region,
    building_likelihood,
    profile,
    report_scope,
)
from civicpulse.engine.places import NOWHERE, Where
from civicpulse.visibility import View

_where = msgspec.json.Decoder(Where)
_mixes = msgspec.json.Decoder(list[tuple[str, float]])
_json = msgspec.json.Encoder()


def _place(raw: str | None) -> Where:
    return NOWHERE if raw is None else _where.decode(raw)


def _mix(raw: str | None) -> tuple[tuple[str, float], ...]:
    """A stored probability mix ([[code, p], ...]) as the engine takes it."""
    return () if raw is None else tuple(_mixes.decode(raw))


async def load_classified_reports(
    conn: asyncpg.Connection, tenant_id: int, ids: Sequence[uuid.UUID], owner: str
) -> list[Report]:
    """The claim's reports in submission order, with their scope: the subtype's when the
    vocabulary gives it one (no heat in the whole building), else the category's."""
    rows = await conn.fetch(q("load_classified_reports"), tenant_id, list(ids), owner)
    return [_report(r) for r in rows]


def _report(r: asyncpg.Record) -> Report:
    """A stored report as the engine takes it, with its scope and building-wide likelihood."""
    category = r["category"] or "other"
    subtypes = _mix(r["subtypes"])
    return Report(
        str(r["id"]),
        _coordinate(r["lat"]),
        _coordinate(r["lon"]),
        category,
        r["kind"],
        r["text"],
        r["t"],
        r["severity"],
        r["subtype"],
        report_scope(category, r["scope"], r["subtype"]),
        _place(r["place_ref"]),
        _mix(r["alternatives"]),
        subtypes,
        building_likelihood(category, r["scope"], subtypes, r["subtype"]),
        r["address_key"],
    )


def _coordinate(value: float | None) -> float:
    """A stored coordinate as the engine takes it: NaN for none (engine.grouping.located)."""
    return math.nan if value is None else value


def _stored(value: float) -> float | None:
    """An engine coordinate as stored: NULL for none."""
    return None if math.isnan(value) else value


async def refresh_issue_profiles(
    conn: asyncpg.Connection, tenant_id: int, issue_ids: Sequence[uuid.UUID]
) -> None:
    """Recompute issues' place, scope and probability mixes from the reports they now hold,
    after a staff merge or split moved reports between them."""
    rows = await conn.fetch(q("issue_profile_reports"), tenant_id, list(issue_ids))
    held: dict[str, list[Report]] = {str(i): [] for i in issue_ids}
    category: dict[str, str] = {}
    for r in rows:
        held[str(r["issue_id"])].append(_report(r))
        category[str(r["issue_id"])] = r["issue_category"]
    profiles = [p for i, rs in held.items() if (p := profile(rs, i, category.get(i))) is not None]
    if profiles:
        await set_issue_profiles(conn, tenant_id, profiles)


async def grouping_settings(
    conn: asyncpg.Connection, tenant_id: int
) -> dict[str, tuple[float | None, float | None]]:
    """Per-category radius/look-back overrides."""
    rows = await conn.fetch(q("grouping_settings"), tenant_id)
    return {
        r["code"]: (r["group_radius_m"], r["lookback_s"])
        for r in rows
        if r["group_radius_m"] is not None or r["lookback_s"] is not None
    }


async def keyed_plans(conn: asyncpg.Connection) -> None:
    """For the rest of this transaction, plan key probes only (see the query)."""
    await conn.execute(q("keyed_plans"))


async def lock_regions(conn: asyncpg.Connection, tenant_id: int, keys: Sequence[int]) -> None:
    await conn.fetchval(q("lock_regions"), tenant_id, sorted(keys))


async def lock_issue_regions(
    conn: asyncpg.Connection, tenant_id: int, issue_ids: Sequence[uuid.UUID]
) -> None:
    """Take the grouping locks of the regions these issues are in, before a staff merge or
    split changes them: a grouping claim deciding there finishes first (its profile writes
    would otherwise undo the staff change), and the next one sees the change."""
    rows = await conn.fetch(q("issue_points"), tenant_id, list(issue_ids))
    keys: set[int] = set()
    for r in rows:
        if r["lat"] is not None:
            keys |= geo.region_keys(r["lat"], r["lon"], 0.0)
        if r["address_key"] is not None:
            keys.add(address_region(r["address_key"]))
    await lock_regions(conn, tenant_id, sorted(keys))


async def open_issue_candidates(
    conn: asyncpg.Connection, tenant_id: int, search: Search, nearest: int
) -> list[Candidate]:
    """The `nearest` open issues in reach and look-back of each report (by its probes), and
    those at each report's own place; an issue near several reports comes once."""
    rows = await conn.fetch(q("open_issue_candidates"), tenant_id, *candidate_args(search, nearest))
    return [
        Candidate(
            str(r["id"]),
            _coordinate(r["lat"]),
            _coordinate(r["lon"]),
            r["category"] or "other",
            r["kind"],
            r["representative_text"],
            r["last_t"],
            r["report_count"],
            r["subtype"],
            r["scope"],
            _place(r["place_ref"]),
            _mix(r["alternatives"]),
            _mix(r["subtypes"]),
            building_likelihood(
                r["category"] or "other", r["scope"], _mix(r["subtypes"]), r["subtype"]
            ),
            r["address_key"],
            r["located"],
        )
        for r in rows
    ]


def candidate_args(search: Search, nearest: int) -> list[Any]:
    """open_issue_candidates' parameters after the tenant."""
    probes = search.probes
    placed = [(p, category) for p in search.place_probes for category in p.categories]
    addressed = [(p, category) for p in search.address_probes for category in p.categories]
    return [
        [p.report for p in probes],
        [p.category for p in probes],
        [p.cell for p in probes],
        [p.lat for p in probes],
        [p.lon for p in probes],
        *([p.box[i] for p in probes] for i in range(4)),
        [datetime.fromtimestamp(p.since, UTC) for p in probes],
        nearest,
        [p.key for p, _ in placed],
        [c for _, c in placed],
        *([p.box[i] for p, _ in placed] for i in range(4)),
        [datetime.fromtimestamp(p.since, UTC) for p, _ in placed],
        [p.key for p, _ in addressed],
        [c for _, c in addressed],
        [datetime.fromtimestamp(p.since, UTC) for p, _ in addressed],
        [p.unlocated_only for p, _ in addressed],
    ]


async def not_duplicates_for(
    conn: asyncpg.Connection, tenant_id: int, report_ids: Sequence[str]
) -> set[tuple[str, str]]:
    rows = await conn.fetch(q("not_duplicates_for"), tenant_id, list(report_ids))
    return {(str(r["report_id"]), str(r["issue_id"])) for r in rows}


def _encoded(value: object) -> str | None:
    return _json.encode(value).decode() if value else None


async def insert_issues(
    conn: asyncpg.Connection,
    tenant_id: int,
    issues: Sequence[tuple[str, Report, Candidate]],
) -> None:
    """New issues, one per (issue id, founding report, the issue after the batch: its place
    and probability mixes, which later reports of the batch may have refined)."""
    await conn.execute(
        q("insert_issues"),
        tenant_id,
        [i for i, _, _ in issues],
        [r.category for _, r, _ in issues],
        [r.kind for _, r, _ in issues],
        [r.text for _, r, _ in issues],
        [_stored(r.lat) for _, r, _ in issues],
        [_stored(r.lon) for _, r, _ in issues],
        [r.t for _, r, _ in issues],
        [r.scope for _, r, _ in issues],
        [r.subtype for _, r, _ in issues],
        [_encoded(c.alternatives) for _, _, c in issues],
        [_encoded(c.place) if c.place.known else None for _, _, c in issues],
        [_encoded(c.subtypes) for _, _, c in issues],
        [r.address for _, r, _ in issues],
    )


async def set_issue_profiles(
    conn: asyncpg.Connection, tenant_id: int, issues: Sequence[Candidate]
) -> None:
    """Where issues are and their category and subtype mixes, after reports joined them."""
    await conn.execute(
        q("set_issue_profiles"),
        tenant_id,
        [c.id for c in issues],
        [_encoded(c.place) if c.place.known else None for c in issues],
        [_encoded(c.alternatives) for c in issues],
        [_encoded(c.subtypes) for c in issues],
        [c.scope for c in issues],
        [c.subtype for c in issues],
    )


async def attach_reports(
    conn: asyncpg.Connection, tenant_id: int, links: Sequence[tuple[str, str, str]], owner: str
) -> int:
    """Set (report id, issue id, grouping JSON); returns rows updated."""
    status = await conn.execute(
        q("attach_reports"),
        tenant_id,
        [r for r, _, _ in links],
        [i for _, i, _ in links],
        [g for _, _, g in links],
        owner,
    )
    return int(status.split()[-1])


async def add_to_issue_aggregates(
    conn: asyncpg.Connection, tenant_id: int, report_ids: Sequence[str | uuid.UUID]
) -> None:
    """Fold newly linked reports into their issues' aggregates."""
    await conn.execute(q("add_to_issue_aggregates"), tenant_id, list(report_ids))


async def refresh_issue_aggregates(
    conn: asyncpg.Connection, tenant_id: int, issue_ids: Sequence[str | uuid.UUID]
) -> None:
    await conn.execute(q("refresh_issue_aggregates"), tenant_id, list(issue_ids))


async def append_events(
    conn: asyncpg.Connection,
    tenant_id: int,
    actor: str,
    events: Sequence[tuple[str | uuid.UUID, str | uuid.UUID | None, str, str | None, str]],
) -> None:
    """Events as (issue id, report id, kind, to_status, data JSON)."""
    await conn.execute(
        q("append_events"),
        tenant_id,
        actor,
        [e[0] for e in events],
        [e[1] for e in events],
        [e[2] for e in events],
        [e[3] for e in events],
        [e[4] for e in events],
    )


async def get_issue(
    conn: asyncpg.Connection, tenant_id: int, issue_id: uuid.UUID
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(q("get_issue"), tenant_id, issue_id)
    return row


async def issue_reports(
    conn: asyncpg.Connection, tenant_id: int, issue_id: uuid.UUID
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(q("issue_reports"), tenant_id, issue_id)
    return rows


async def issue_events(
    conn: asyncpg.Connection, tenant_id: int, issue_id: uuid.UUID
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(q("issue_events"), tenant_id, issue_id)
    return rows


async def nearby_issues(
    conn: asyncpg.Connection,
    tenant_id: int,
    cells: Sequence[int],
    category: str | None,
    view: View,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        q("nearby_issues"), tenant_id, list(cells), category, *view.sql_args
    )
    return rows


async def issue_reported_with(
    conn: asyncpg.Connection, tenant_id: int, issue_id: uuid.UUID, key_ids: Sequence[int]
) -> bool:
    """Did one of these keys send a report that joined the issue?"""
    if not key_ids:
        return False
    return bool(await conn.fetchval(q("issue_reported_with"), tenant_id, issue_id, list(key_ids)))


async def lock_issue(
    conn: asyncpg.Connection, tenant_id: int, issue_id: uuid.UUID
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(q("lock_issue"), tenant_id, issue_id)
    return row


async def move_reports(
    conn: asyncpg.Connection, tenant_id: int, source: uuid.UUID, target: uuid.UUID
) -> list[uuid.UUID]:
    return [r["id"] for r in await conn.fetch(q("move_reports"), tenant_id, source, target)]


async def detach_report(
    conn: asyncpg.Connection,
    tenant_id: int,
    report_id: uuid.UUID,
    new_issue: uuid.UUID,
    old_issue: uuid.UUID,
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        q("detach_report"), tenant_id, report_id, new_issue, old_issue
    )
    return row


async def insert_not_duplicate(
    conn: asyncpg.Connection,
    tenant_id: int,
    report_id: uuid.UUID,
    issue_id: uuid.UUID,
    actor: str,
) -> None:
    await conn.execute(q("insert_not_duplicate"), tenant_id, report_id, issue_id, actor)


async def issue_from_report(
    conn: asyncpg.Connection,
    tenant_id: int,
    new_issue: uuid.UUID,
    report_id: uuid.UUID,
    source: uuid.UUID,
) -> bool:
    """Found a new issue on a report of `source`; False when the report is not in it."""
    return (
        await conn.fetchval(q("issue_from_report"), tenant_id, new_issue, report_id, source)
        is not None
    )
