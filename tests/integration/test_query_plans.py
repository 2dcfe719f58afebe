"""EXPLAIN guards: on seeded, ANALYZEd data every hot query uses the index meant for it
and never scans reports or issues sequentially."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from civicpulse.db import analytics
from civicpulse.db.issues import candidate_args
from civicpulse.db.queries import q
from civicpulse.db.tenants import hash_key
from civicpulse.db.workflow import timer_args, workflow_params
from civicpulse.engine import geo, grouping
from civicpulse.engine.places import Where
from civicpulse.visibility import STAFF, View
from tests.support import TenantKeys, make_tenant

# The query of civicpulse_claim_grouping, in the parts that stand in the function's source as
# written: the EXPLAIN guard is built from them (EXPLAIN cannot see inside a function).
CLAIM_FN = "civicpulse_claim_grouping"
CLAIM_WAITING = (
    "SELECT DISTINCT ON (w.tenant_id) w.tenant_id, w.received_at, w.id FROM reports w "
    "WHERE w.state = 'received' AND w.received_at > now() -"
)
CLAIM_WAITING_ORDER = "ORDER BY w.tenant_id, w.received_at, w.id"
CLAIM_BUSY = (
    "SELECT DISTINCT b.tenant_id FROM reports b "
    "WHERE b.state = 'classified' AND b.lease_until >= now()"
)
CLAIM_READY = """SELECT p.tenant_id, p.id, p.received_at, p.attempts
         FROM reports p
         LEFT JOIN waiting w ON w.tenant_id = p.tenant_id
        WHERE p.state = 'classified'
          AND (p.lease_until IS NULL OR p.lease_until < now())
          AND NOT EXISTS (SELECT 1 FROM busy b WHERE b.tenant_id = p.tenant_id)
          AND (w.tenant_id IS NULL OR (p.received_at, p.id) < (w.received_at, w.id))
        ORDER BY p.received_at, p.id"""
CLAIM_LOCK = "FOR UPDATE OF p SKIP LOCKED"
CLAIM_GROUPING_PARTS = (CLAIM_WAITING, CLAIM_WAITING_ORDER, CLAIM_BUSY, CLAIM_READY, CLAIM_LOCK)

TENANTS = 4
REPORTS_PER_TENANT = 5_000
ISSUES_PER_TENANT = 2_500

# The public view as the dashboards pass it (civicpulse_shown's arguments): with no public
# lists, and with a tenant's public categories and areas.
PUBLIC = View(False).sql_args
LISTED = View(False, frozenset({"road_defect", "streetlight"}), frozenset({"north"})).sql_args


@pytest.fixture
async def seeded(db_url: str) -> AsyncIterator[list[TenantKeys]]:
    tenants = [await make_tenant(db_url, f"plan-{i}") for i in range(TENANTS)]
    conn = await asyncpg.connect(db_url)
    try:
        await seed(conn, tenants)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    yield tenants


async def seed(conn: asyncpg.Connection, tenants: list[TenantKeys]) -> None:
    """Issues, reports, events and keys for each tenant."""
    for t in tenants:
        # Issues packed into 49 cells of a dense district, eight categories, most closed:
        # the open ones are the partial indexes.
        await conn.execute(
            """
            INSERT INTO issues (tenant_id, id, status, category, kind, lat, lon, cell,
                                report_count, first_reported, last_reported, place_ref)
            SELECT $1, gen_random_uuid(),
                   CASE WHEN g % 5 = 0 THEN 'new' ELSE 'closed' END,
                   (ARRAY['road_defect', 'graffiti', 'streetlight', 'litter_dumping',
                          'bulky_items', 'trees', 'noise', 'parks'])[1 + g % 8],
                   'infrastructure', 34 + (g % 7) * 0.004, -118.5 + (g / 7 % 7) * 0.004,
                   civicpulse_cell(34 + (g % 7) * 0.004, -118.5 + (g / 7 % 7) * 0.004),
                   1, now() - interval '2 days', now() - (g % 20) * interval '1 day',
                   -- A quarter know their room (a facility's issues).
                   CASE WHEN g % 4 = 0 THEN jsonb_build_object('unit', '~' || g % 300) END
              FROM generate_series(1, $2) AS g""",
            t.id,
            ISSUES_PER_TENANT,
        )
        # Reports: mostly done; a few pending, labelled, keyed, attached to issues.
        issue_ids = await conn.fetchval(
            "SELECT array_agg(id) FROM issues WHERE tenant_id = $1", t.id
        )
        await conn.execute(
            """
            INSERT INTO reports (tenant_id, id, text, lat, lon, submitted_at, received_at,
                                 state, category, label_source, idempotency_key, issue_id)
            SELECT $1, civicpulse_uuid7(), 'report ' || g, 34.05, -118.25,
                   now() - g * interval '1 minute', now() - g * interval '1 minute',
                   CASE WHEN g % 200 = 0 THEN 'received'
                        WHEN g % 200 = 1 THEN 'classified' ELSE 'grouped' END,
                   'road_defect', CASE WHEN g % 10 = 0 THEN 'import' END,
                   CASE WHEN g % 3 = 0 THEN 'key-' || g END,
                   CASE WHEN g % 200 > 1 THEN ($3::uuid[])[1 + g % 2000] END
              FROM generate_series(1, $2) AS g""",
            t.id,
            REPORTS_PER_TENANT,
            issue_ids,
        )
        await conn.execute(
            """
            INSERT INTO issue_events (tenant_id, issue_id, kind, actor)
            SELECT tenant_id, id, 'issue_created', 'test' FROM issues
             WHERE tenant_id = $1""",
            t.id,
        )
        await conn.execute(
            """
            INSERT INTO api_keys (tenant_id, key_hash, prefix, scope)
            SELECT $1, sha256(('k' || $1::bigint::text || '-' || g)::bytea), 'x', 'submit'
              FROM generate_series(1, 500) AS g""",
            t.id,
        )


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


async def explain(
    pool: asyncpg.Pool,
    tenant_id: int | None,
    sql: str,
    *args: Any,
    prelude: str | None = None,
) -> list[dict[str, Any]]:
    async with pool.acquire() as conn, conn.transaction():
        if tenant_id is not None:
            await conn.execute(
                "SELECT set_config('civicpulse.tenant_id', $1, true)", str(tenant_id)
            )
        if prelude is not None:
            await conn.execute(prelude)
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
        # Rolled back: EXPLAIN of an UPDATE plans it without running it.
    return list(plan_nodes(json.loads(raw)[0]["Plan"]))


def assert_uses(nodes: list[dict[str, Any]], index: str | tuple[str, ...]) -> None:
    wanted = {index} if isinstance(index, str) else set(index)
    used = {n.get("Index Name") for n in nodes if n.get("Index Name")}
    seq = {n.get("Relation Name") for n in nodes if n["Node Type"] == "Seq Scan"}
    assert wanted & used, f"{index} not used; plan uses {used or 'no index'}"
    assert not seq & {"reports", "issues"}, f"sequential scan of {seq}"


async def test_hot_queries_use_their_indexes(
    seeded: list[TenantKeys], app_pool: asyncpg.Pool, db_url: str
) -> None:
    t = seeded[2].id
    some_id = uuid.uuid4()
    cells = geo.cells_within(34.008, -118.492, 250)
    cases: list[tuple[str, str | tuple[str, ...], int | None, tuple[Any, ...]]] = [
        ("get_report", "reports_pkey", t, (t, some_id)),
        ("list_reports", "reports_pkey", t, (t, None, None, 50)),
        ("find_idempotent_reports", "reports_idempotency_key", t, (t, ["key-3", "key-9"])),
        ("labelled_reports", "reports_labels", t, (t, 50_000)),
        ("count_labels", "reports_labels", t, (t,)),
        ("issue_reports", "reports_issue", t, (t, some_id)),
        ("nearby_issues", "issues_open_cell", t, (t, cells, None, *PUBLIC)),
        # With a category, either open-issue index is a good plan: let the planner choose.
        (
            "nearby_issues",
            ("issues_open_cell", "issues_open_category_cell"),
            t,
            (t, cells, "road_defect", *PUBLIC),
        ),
        ("get_issue", "issues_pkey", t, (t, some_id)),
        ("issue_events", "issue_events_issue", t, (t, some_id)),
    ]
    for name, index, tenant, args in cases:
        nodes = await explain(app_pool, tenant, q(name), *args)
        assert_uses(nodes, index)
    # The candidate lookup of the grouping stage: nearest by cell, and by place key.
    reports = [
        grouping.Report(
            f"r{n}",
            34.05,
            -118.25,
            category,
            "infrastructure",
            "x",
            time.time(),
            2,
            place=Where(unit=f"~{n * 4}"),
        )
        for n, category in enumerate(("road_defect", "streetlight"))
    ]
    search = grouping.search_for(reports, {})
    nodes = await explain(
        app_pool, t, q("open_issue_candidates"), t, *candidate_args(search, grouping.NEAREST)
    )
    assert_uses(nodes, "issues_open_category_cell")
    # The ranking and the place lookup read their indexes alone; the heap is read by primary
    # key for the chosen few.
    kinds = {n.get("Index Name"): n["Node Type"] for n in nodes if n.get("Index Name")}
    assert kinds["issues_open_category_cell"] == "Index Only Scan", kinds
    assert kinds["issues_open_place"] == "Index Only Scan", kinds
    assert "issues_pkey" in kinds, kinds

    # The SECURITY DEFINER functions run as the owner: explain their bodies as the owner.
    conn = await asyncpg.connect(db_url)
    try:
        raw = await conn.fetchval(
            """
            EXPLAIN (FORMAT JSON)
            SELECT p.tenant_id, p.id FROM reports p
             WHERE p.state = $1 AND p.state IN ('received', 'classified')
               AND (p.lease_until IS NULL OR p.lease_until < now())
             ORDER BY p.received_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
            "received",
            200,
        )
        assert_uses(list(plan_nodes(json.loads(raw)[0]["Plan"])), "reports_pending")
        # civicpulse_claim_grouping's body: each tenant's reports waiting for classification,
        # the tenants with a live grouping claim, and the ready prefix, all from the pending
        # index. EXPLAIN cannot see inside a function, so the query is restated here, and the
        # restated parts must stand in the function's source as they are (no silent drift).
        source = " ".join(
            (await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = $1", CLAIM_FN)).split()
        )
        for part in CLAIM_GROUPING_PARTS:
            assert " ".join(part.split()) in source, part
        raw = await conn.fetchval(
            f"EXPLAIN (FORMAT JSON) WITH waiting AS ({CLAIM_WAITING} $1::interval "
            f"{CLAIM_WAITING_ORDER}), busy AS ({CLAIM_BUSY}) {CLAIM_READY} LIMIT 200 {CLAIM_LOCK}",
            timedelta(seconds=60),
        )
        grouping_claim = list(plan_nodes(json.loads(raw)[0]["Plan"]))
        assert_uses(grouping_claim, "reports_pending")
        assert not [n for n in grouping_claim if n["Node Type"] == "Seq Scan"], grouping_claim
        # Both claim functions first set aside the reports that used up their attempts: a
        # scan of the pending index, never of every report (schema 0010).
        for fn, state in (
            ("civicpulse_claim_reports", "received"),
            ("civicpulse_claim_grouping", "classified"),
        ):
            source = " ".join(
                (await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = $1", fn)).split()
            )
            assert (
                f"WHERE f.state = '{state}'" in source and "f.attempts >= p_max_attempts" in source
            )
            raw = await conn.fetchval(
                "EXPLAIN (FORMAT JSON) SELECT f.id FROM reports f "
                f"WHERE f.state = '{state}' AND f.attempts >= $1 "
                "AND (f.lease_until IS NULL OR f.lease_until < now())",
                5,
            )
            set_aside = list(plan_nodes(json.loads(raw)[0]["Plan"]))
            assert_uses(set_aside, "reports_pending")
        raw = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) SELECT k.tenant_id, k.scope FROM api_keys k "
            "WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
            hash_key(seeded[0].submit),
        )
        nodes = list(plan_nodes(json.loads(raw)[0]["Plan"]))
        assert {n.get("Index Name") for n in nodes} & {"api_keys_hash"}
    finally:
        await conn.close()


async def test_workflow_queries_use_their_indexes(
    seeded: list[TenantKeys], app_pool: asyncpg.Pool, db_url: str
) -> None:
    t = seeded[1].id
    conn = await asyncpg.connect(db_url)
    try:
        # Opened over ~4 months; the open ones with a clock have due times; timers mostly
        # fired long ago.
        await conn.execute(
            """
            UPDATE issues
               SET opened_at = now() - (abs(hashtext(id::text)) % 3000) * interval '1 hour',
                   resolution_due_at = CASE WHEN civicpulse_is_open(status)
                                            THEN now() + (abs(hashtext(id::text)) % 100
                                                          - 10) * interval '1 hour' END"""
        )
        await conn.execute(
            """
            INSERT INTO sla_timers (tenant_id, issue_id, cycle, target, kind, fire_at, fired_at)
            SELECT tenant_id, id, 1, 'resolution', 'breach', opened_at + interval '1 day',
                   CASE WHEN status = 'closed' THEN opened_at + interval '1 day' END
              FROM issues"""
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()

    week_ago = datetime.now(UTC) - timedelta(days=7)
    no_filter = (None, None, None, None, None, False, None)
    cases: list[tuple[str, str | tuple[str, ...], tuple[Any, ...]]] = [
        ("list_issues", "issues_list", (t, *no_filter, 51, None, None)),
        ("list_issues", "issues_list", (t, *no_filter, 51, week_ago, uuid.uuid4())),
        (
            "list_issues",
            ("issues_list", "issues_resolution_due"),
            (t, None, None, None, None, None, True, None, 51, None, None),
        ),
        (
            "sla_metrics",
            ("issues_opened", "issues_list"),
            (t, "category", week_ago, datetime.now(UTC)),
        ),
    ]
    for name, index, args in cases:
        assert_uses(await explain(app_pool, t, q(name), *args), index)
    # Rewriting a grouping batch's timers finds them by primary key, not by a scan per row.
    conn = await asyncpg.connect(db_url)
    try:
        some = [
            r["id"]
            for r in await conn.fetch("SELECT id FROM issues WHERE tenant_id = $1 LIMIT 50", t)
        ]
    finally:
        await conn.close()
    rows = [(i, 1, "resolution", "breach", None) for i in some]
    nodes = await explain(app_pool, t, q("replace_timers"), t, *timer_args(rows))
    assert {"sla_timers_pkey", "sla_timers_due"} & {n.get("Index Name") for n in nodes}
    assert "sla_timers" not in {
        n.get("Relation Name") for n in nodes if n["Node Type"] == "Seq Scan"
    }

    # Saving a grouping batch's workflow state updates its rows through the primary key.
    from civicpulse import workflow as wf

    conn = await asyncpg.connect(db_url)
    try:
        locked = await conn.fetch(q("lock_issue_workflow"), t, some)
    finally:
        await conn.close()
    cfg = wf.TenantConfig(t, "UTC", None, None, {})
    now = datetime.now(UTC)
    plans = [wf.plan(cfg, wf.state_from_row(r), wf.Change("created", "test"), now) for r in locked]
    params = workflow_params([wf.save_args(t, p) for p in plans], now)
    nodes = await explain(app_pool, t, q("save_issues_workflow"), *params)
    assert_uses(nodes, "issues_pkey")

    # The scheduler's scan (inside the SECURITY DEFINER function) as the owner.
    conn = await asyncpg.connect(db_url)
    try:
        raw = await conn.fetchval(
            """
            EXPLAIN (FORMAT JSON)
            SELECT t.tenant_id, t.issue_id FROM sla_timers t
             WHERE t.fired_at IS NULL AND t.fire_at <= now()
             ORDER BY t.fire_at LIMIT 500 FOR UPDATE SKIP LOCKED"""
        )
        nodes = list(plan_nodes(json.loads(raw)[0]["Plan"]))
        assert {n.get("Index Name") for n in nodes} & {"sla_timers_due"}
    finally:
        await conn.close()


async def test_dashboard_queries_use_their_indexes(
    seeded: list[TenantKeys], app_pool: asyncpg.Pool, db_url: str
) -> None:
    t = seeded[3].id
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            """
            UPDATE issues
               SET opened_at = now() - (abs(hashtext(id::text)) % 3000) * interval '1 hour',
                   resolved_at = CASE WHEN status = 'closed'
                                      THEN now() - (abs(hashtext(id::text)) % 2000)
                                                   * interval '1 hour' END"""
        )
        # Rollups of every tenant, built the way the aggregator builds them.
        for tenant in seeded:
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('civicpulse.tenant_id', $1, true)", str(tenant.id)
                )
                await analytics.rebuild_rollups(conn, tenant.id)
        await conn.execute("ANALYZE")
        # A stream resumes a little way back: the last 20 events.
        resume_from = await conn.fetchval(
            "SELECT max(seq) - 20 FROM issue_events WHERE tenant_id = $1", t
        )
    finally:
        await conn.close()

    now = datetime.now(UTC)
    month = now - timedelta(days=30)
    hours = [now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=h) for h in (1, 5)]
    cases: list[tuple[str, str | tuple[str, ...], tuple[Any, ...]]] = [
        (
            "trend_rows",
            "rollup_daily_pkey",
            (t, "day", "category", month, now, "UTC", *LISTED),
        ),
        ("backlog_before", "rollup_daily_pkey", (t, month, *LISTED, "UTC")),
        ("ranking_rows", "issues_resolved", (t, "area", month, now, *LISTED)),
        ("hotspot_rows", ("issues_opened", "issues_list"), (t, month, now, *LISTED, 10)),
        ("recent_issues", "issues_list", (t, *LISTED, 10, month)),
        ("events_after", "issue_events_seq", (t, resume_from, 1000)),
        ("insert_rollup_hours", ("issues_opened", "issues_resolved"), (t, hours)),
        ("export_issues", ("issues_opened", "issues_list"), (t, month, now, *STAFF.sql_args)),
    ]
    for name, index, args in cases:
        assert_uses(await explain(app_pool, t, q(name), *args), index)


@pytest.fixture(params=["never analysed", "analysed while empty"])
async def unanalysed(request: pytest.FixtureRequest, db_url: str) -> list[TenantKeys]:
    """Tenants whose rows the statistics do not know: a database never analysed (autovacuum
    off), or one analysed before the tenants' rows arrived (a fresh tenant, an import)."""
    tenants = [await make_tenant(db_url, f"fresh-{i}") for i in range(TENANTS)]
    conn = await asyncpg.connect(db_url)
    try:
        if request.param == "analysed while empty":
            await conn.execute("ANALYZE")
        await seed(conn, tenants)
    finally:
        await conn.close()
    return tenants


async def test_grouping_and_workflow_plans_hold_without_statistics(
    unanalysed: list[TenantKeys], app_pool: asyncpg.Pool, db_url: str
) -> None:
    """The statements every grouping claim and workflow change runs find their rows by key,
    whatever the statistics say: a tenant-wide scan here would be read once per claim."""
    t = unanalysed[1].id
    conn = await asyncpg.connect(db_url)
    try:
        issues = [
            r["id"]
            for r in await conn.fetch("SELECT id FROM issues WHERE tenant_id = $1 LIMIT 50", t)
        ]
        reports = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM reports WHERE tenant_id = $1 AND issue_id IS NOT NULL LIMIT 200",
                t,
            )
        ]
        locked = await conn.fetch(q("lock_issue_workflow"), t, issues)
        last = await conn.fetchval("SELECT max(seq) FROM issue_events WHERE tenant_id = $1", t)
    finally:
        await conn.close()
    ids = [str(i) for i in reports]
    links = [uuid.UUID(int=0)] * len(reports)
    from civicpulse import workflow as wf

    cfg = wf.TenantConfig(t, "UTC", None, None, {})
    now = datetime.now(UTC)
    plans = [wf.plan(cfg, wf.state_from_row(r), wf.Change("created", "test"), now) for r in locked]
    cases: list[tuple[str, str | tuple[str, ...], tuple[Any, ...]]] = [
        # The pending index holds only unfinished reports: small whatever the tenant holds.
        ("load_classified_reports", ("reports_pkey", "reports_pending"), (t, reports, "owner")),
        (
            "attach_reports",
            ("reports_pkey", "reports_pending"),
            (t, reports, links, ["{}"] * len(ids), "owner"),
        ),
        ("add_to_issue_aggregates", "reports_pkey", (t, reports)),
        ("add_to_issue_aggregates", "issues_pkey", (t, reports)),
        ("lock_issue_workflow", "issues_pkey", (t, issues)),
        (
            "save_issues_workflow",
            "issues_pkey",
            workflow_params([wf.save_args(t, p) for p in plans], now),
        ),
        ("get_issue", "issues_pkey", (t, issues[0])),
        ("issue_reports", "reports_issue", (t, issues[0])),
        ("events_after", "issue_events_seq", (t, last - 20, 1000)),
    ]
    probe = [
        grouping.Report("r", 34.05, -118.25, "road_defect", "infrastructure", "x", time.time(), 2)
    ]
    search = grouping.search_for(probe, {})
    cases.append(
        (
            "open_issue_candidates",
            # A probe per (category, cell), or per cell: either reads one cell's open issues.
            ("issues_open_category_cell", "issues_open_cell"),
            (t, *candidate_args(search, grouping.NEAREST)),
        )
    )
    # A report located by address only: one probe of the address index.
    by_address = grouping.Report(
        "a", float("nan"), float("nan"), "road_defect", "infrastructure", "x", time.time(), 2,
        address="123 n main st",
    )  # fmt: skip
    search = grouping.search_for([by_address], {})
    cases.append(
        (
            "open_issue_candidates",
            "issues_open_address",
            (t, *candidate_args(search, grouping.NEAREST)),
        )
    )
    wrong = []
    for name, index, args in cases:
        try:
            nodes = await explain(app_pool, t, q(name), *args, prelude=q("keyed_plans"))
            assert_uses(nodes, index)
            tenant_wide = [
                f"{n['Node Type']} on {n.get('Index Name')}"
                for n in nodes
                if re.fullmatch(r"\((\w+\.)?tenant_id = [^()]*\)", n.get("Index Cond", ""))
                and re.match(r"(reports|issues|issue_events)_", n.get("Index Name", ""))
            ]
            assert not tenant_wide, f"reads the whole tenant: {tenant_wide}"
        except AssertionError as exc:
            wrong.append(f"{name}: {exc}")
    assert not wrong, wrong
    rows = [(i, 1, "resolution", "breach", None) for i in issues]
    nodes = await explain(
        app_pool, t, q("replace_timers"), t, *timer_args(rows), prelude=q("keyed_plans")
    )
    assert "sla_timers" not in {
        n.get("Relation Name") for n in nodes if n["Node Type"] == "Seq Scan"
    }


async def test_open311_address_and_page_queries_use_their_indexes(
    seeded: list[TenantKeys], app_pool: asyncpg.Pool, db_url: str
) -> None:
    t = seeded[1].id
    now = datetime.now(UTC)
    week = now - timedelta(days=7)
    # Issues change over a year, as a city's do (seeded, all changed at once).
    owner = await asyncpg.connect(db_url)
    try:
        await owner.execute(
            "UPDATE issues SET updated_at = now() - (abs(hashtext(id::text)) % 365) * "
            "interval '1 day'"
        )
        await owner.execute("ANALYZE issues")
    finally:
        await owner.close()
    # Open311 incremental sync, the update feed and the notes of a page of requests.
    cases: list[tuple[str, str, tuple[Any, ...]]] = [
        ("open311_requests_updated", "issues_updated",
         (t, week, now, None, *PUBLIC, 1000, 0, None)),
        ("open311_requests_updated", "issues_updated",
         (t, week, now, ["road_defect"], *STAFF.sql_args, 50, 0, ["open"])),
        ("open311_updates", "issue_events_status_changes", (t, week, now, *PUBLIC, 1000)),
        ("open311_notes", "issue_events_issue", (t, [uuid.uuid4(), uuid.uuid4()], True)),
        # The geocoder's queue: the reports still without a point, oldest first.
        ("geocode_pending", "reports_unlocated", (t, 5, 20)),
        # The resident pages: where the report form's map opens, a tracked report.
        ("map_center", "issues_list", (t,)),
        ("tracked_report", "reports_pkey", (t, uuid.uuid4())),
        ("review_reports", "reports_needs_review", (t, None, 25)),
    ]  # fmt: skip
    # The dashboard's map: the newest open issues, by the open-issue index or by the list.
    nodes = await explain(app_pool, t, q("open_issue_points"), t, *PUBLIC, 500)
    assert_uses(nodes, ("issues_open_cell", "issues_open_category_cell", "issues_list"))
    for name, index, args in cases:
        assert_uses(await explain(app_pool, t, q(name), *args), index)
    # Grouping a report located by address only: the open issues at its address, from the
    # address index alone, never a scan of the tenant's open issues.
    unlocated = grouping.Report(
        "a", float("nan"), float("nan"), "road_defect", "infrastructure", "x", time.time(), 2,
        address="123 n main st",
    )  # fmt: skip
    located = unlocated._replace(id="b", lat=34.05, lon=-118.25)
    search = grouping.search_for([unlocated, located], {})
    assert not [p for p in search.probes if p.report == 0]  # no cell probes without a point
    nodes = await explain(
        app_pool, t, q("open_issue_candidates"), t, *candidate_args(search, grouping.NEAREST)
    )
    kinds = {n.get("Index Name"): n["Node Type"] for n in nodes if n.get("Index Name")}
    assert (
        kinds.get("issues_open_address") == "Index Scan"
        or kinds.get("issues_open_address") == "Index Only Scan"
    ), kinds
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], kinds
