"""Why is a query fast or slow: EXPLAIN reports of the hot queries, and database statistics.

`civicpulse explain` runs EXPLAIN (with --analyze: ANALYZE, BUFFERS) for the named hot
queries, exactly as the service sends them: the same SQL files, the application role under
row-level security, a tenant's setting, and realistic parameters taken from that tenant's
own data. Everything runs in a transaction that is rolled back, so analysing a write
changes nothing. The report shows the plan tree (estimated and actual rows, time, buffers),
the indexes used, and warnings: misestimates over 10x, sequential scans of large tables.

`civicpulse db stats` lists table and index sizes, index usage from pg_stat_user_indexes,
indexes never used since statistics were reset, and the top statements from
pg_stat_statements when that extension is installed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from civicpulse.db import stats as stats_repo
from civicpulse.db.classifier import tenant_by_id
from civicpulse.db.issues import candidate_args
from civicpulse.db.pool import set_tenant
from civicpulse.db.queries import q
from civicpulse.engine import geo, grouping
from civicpulse.visibility import View

Params = Callable[[asyncpg.Connection, int], Awaitable[tuple[Any, ...]]]
LARGE_TABLE_ROWS = 10_000
MISESTIMATE = 10.0


async def _issue_place(conn: asyncpg.Connection, tenant: int) -> tuple[float, float, str]:
    row = await conn.fetchrow(q("explain_issue_place"), tenant)
    if row is None:
        return 34.05, -118.25, "other"
    return row["lat"], row["lon"], row["category"] or "other"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _candidates(conn: asyncpg.Connection, t: int) -> tuple[Any, ...]:
    lat, lon, category = await _issue_place(conn, t)
    report = grouping.Report("explain", lat, lon, category, "", "", _now().timestamp(), 1)
    search = grouping.search_for([report], {})
    return (t, *candidate_args(search, grouping.NEAREST))


async def _nearby(conn: asyncpg.Connection, t: int) -> tuple[Any, ...]:
    lat, lon, category = await _issue_place(conn, t)
    return (t, geo.cells_within(lat, lon, 250), category, *PUBLIC_VIEW)


async def _report(conn: asyncpg.Connection, t: int) -> tuple[Any, ...]:
    rid = await conn.fetchval(q("explain_some_report"), t)
    return (t, rid)


async def _issue(conn: asyncpg.Connection, t: int) -> tuple[Any, ...]:
    iid = await conn.fetchval(q("explain_some_issue"), t)
    return (t, iid)


async def _zone(conn: asyncpg.Connection, t: int) -> str:
    tenant = await tenant_by_id(conn, t)
    return "UTC" if tenant is None else str(tenant["timezone"])


async def _trend(conn: asyncpg.Connection, t: int) -> tuple[Any, ...]:
    zone = await _zone(conn, t)
    return (t, "week", "category", _now() - dt.timedelta(days=365), _now(), zone, *PUBLIC_VIEW)


async def _resume(conn: asyncpg.Connection, t: int) -> tuple[Any, ...]:
    last = await conn.fetchval(q("explain_last_event"), t)
    return (t, max(0, (last or 0) - 20), 1000)


def _fixed(*tail: Any) -> Params:
    async def params(conn: asyncpg.Connection, t: int) -> tuple[Any, ...]:
        return (t, *tail)

    return params


# What the public dashboards pass (civicpulse.visibility): the public view of a tenant that
# lists no public categories or areas.
PUBLIC_VIEW = View(False).sql_args


@dataclass(frozen=True)
class HotQuery:
    name: str  # the named query in civicpulse/db/sql
    what: str
    params: Params


async def _sla(conn: asyncpg.Connection, t: int) -> tuple[Any, ...]:
    return (t, "category", _now() - dt.timedelta(days=30), _now())


async def _ranking(conn: asyncpg.Connection, t: int) -> tuple[Any, ...]:
    return (t, "area", _now() - dt.timedelta(days=30), _now(), *PUBLIC_VIEW)


async def _recent(conn: asyncpg.Connection, t: int) -> tuple[Any, ...]:
    return (t, *PUBLIC_VIEW, 10, _now() - dt.timedelta(days=30))


async def _hotspots(conn: asyncpg.Connection, t: int) -> tuple[Any, ...]:
    return (t, _now() - dt.timedelta(days=30), _now(), *PUBLIC_VIEW, 10)


HOT_QUERIES: tuple[HotQuery, ...] = (
    HotQuery("get_report", "one report by id (GET .../reports/{id})", _report),
    HotQuery("list_reports", "staff report list, newest first", _fixed(None, None, 50)),
    HotQuery(
        "find_idempotent_reports", "intake: retried idempotency keys", _fixed(["key-1", "key-2"])
    ),
    HotQuery("open_issue_candidates", "grouping: open issues near a batch", _candidates),
    HotQuery("nearby_issues", "residents: open issues near a point", _nearby),
    HotQuery("get_issue", "one issue by id", _issue),
    HotQuery("issue_reports", "an issue's reports", _issue),
    HotQuery(
        "list_issues",
        "staff issue list, first page",
        _fixed(None, None, None, None, None, False, None, 51, None, None),
    ),
    HotQuery("sla_metrics", "SLA metrics by category, last 30 days", _sla),
    HotQuery("trend_rows", "dashboard trend: a year by week and category", _trend),
    HotQuery("ranking_rows", "areas ranked over 30 days", _ranking),
    HotQuery("hotspot_rows", "recurring places over 30 days", _hotspots),
    HotQuery("recent_issues", "newest public issues", _recent),
    HotQuery("events_after", "stream resume after the last 20 events", _resume),
)


@dataclass
class Node:
    depth: int
    kind: str
    relation: str | None
    index: str | None
    plan_rows: float
    actual_rows: float | None
    loops: float | None
    total_ms: float | None
    shared_hit: int | None
    shared_read: int | None


@dataclass
class Report:
    query: str
    what: str
    tenant: str
    analyzed: bool
    planning_ms: float | None
    execution_ms: float | None
    nodes: list[Node] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# Nodes that read all their input before giving a row: a Limit above them cannot stop what
# lies below them early.
BLOCKING = frozenset({"Sort", "Incremental Sort", "Hash", "Aggregate", "SetOp", "WindowAgg"})


def _walk(
    plan: dict[str, Any], depth: int = 0, limited: bool = False
) -> Iterator[tuple[int, dict[str, Any], bool]]:
    """Every node with its depth and whether a Limit above it may stop it early (its row
    estimate is then for a full run, so fewer rows than estimated is no misestimate)."""
    yield depth, plan, limited
    kind = plan["Node Type"]
    below = (limited or kind == "Limit") and kind not in BLOCKING
    for child in plan.get("Plans", []):
        yield from _walk(child, depth + 1, below)


def build_report(
    query: HotQuery, tenant: str, raw: dict[str, Any], analyzed: bool, sizes: dict[str, float]
) -> Report:
    report = Report(
        query.name,
        query.what,
        tenant,
        analyzed,
        raw.get("Planning Time"),
        raw.get("Execution Time"),
    )
    for depth, n, limited in _walk(raw["Plan"]):
        node = Node(
            depth=depth,
            kind=n["Node Type"],
            relation=n.get("Relation Name"),
            index=n.get("Index Name"),
            plan_rows=n.get("Plan Rows", 0),
            actual_rows=n.get("Actual Rows"),
            loops=n.get("Actual Loops"),
            total_ms=n.get("Actual Total Time"),
            shared_hit=n.get("Shared Hit Blocks"),
            shared_read=n.get("Shared Read Blocks"),
        )
        report.nodes.append(node)
        if node.index and node.index not in report.indexes:
            report.indexes.append(node.index)
        if node.kind == "Seq Scan" and node.relation:
            rows = sizes.get(node.relation, 0)
            if rows >= LARGE_TABLE_ROWS:
                report.warnings.append(f"sequential scan of {node.relation} (~{rows:,.0f} rows)")
        if analyzed and node.actual_rows is not None:
            actual = node.actual_rows * (node.loops or 1)
            estimated = node.plan_rows * (node.loops or 1)
            stopped_early = limited and actual < estimated
            high, low = max(actual, estimated, 1), max(min(actual, estimated), 1)
            if high / low > MISESTIMATE and not stopped_early:
                report.warnings.append(
                    f"{node.kind}{' on ' + node.relation if node.relation else ''}: "
                    f"estimated {estimated:,.0f} rows, actual {actual:,.0f} "
                    f"({high / low:,.0f}x off)"
                )
    return report


async def explain(
    conn: asyncpg.Connection,
    tenant_id: int,
    tenant: str,
    queries: list[HotQuery],
    *,
    analyze: bool,
    app_role: str | None,
) -> list[Report]:
    """EXPLAIN each query as the service runs it; every statement is rolled back."""
    sizes = {r["relname"]: r["reltuples"] for r in await conn.fetch(q("table_rows"))}
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    reports = []
    for query in queries:
        tr = conn.transaction()
        await tr.start()
        try:
            if app_role:
                await conn.execute(q("app_role"), app_role)
            await set_tenant(conn, tenant_id)
            args = await query.params(conn, tenant_id)
            raw = await conn.fetchval(f"EXPLAIN ({options}) {q(query.name)}", *args)
        finally:
            await tr.rollback()
        plan = json.loads(raw)[0] if isinstance(raw, str) else raw[0]
        reports.append(build_report(query, tenant, plan, analyze, sizes))
    return reports


def render_text(reports: list[Report]) -> str:
    out: list[str] = []
    for r in reports:
        timing = (
            f"planning {r.planning_ms:.2f} ms, execution {r.execution_ms:.2f} ms"
            if r.analyzed and r.execution_ms is not None
            else "plan only (add --analyze to run it)"
        )
        out.append(f"== {r.query}: {r.what} (tenant {r.tenant}; {timing})")
        out.append(f"   indexes: {', '.join(r.indexes) or 'none'}")
        for n in r.nodes:
            target = (f" on {n.relation}" if n.relation else "") + (
                f" using {n.index}" if n.index else ""
            )
            rows = f"est {n.plan_rows:,.0f}"
            if n.actual_rows is not None:
                rows += f", actual {n.actual_rows:,.0f}" + (
                    f" x{n.loops:,.0f}" if n.loops and n.loops > 1 else ""
                )
            extra = ""
            if n.total_ms is not None:
                extra += f", {n.total_ms:.2f} ms"
            if n.shared_hit is not None:
                extra += f", buffers hit {n.shared_hit} read {n.shared_read}"
            out.append(f"   {'  ' * n.depth}-> {n.kind}{target} ({rows}{extra})")
        for w in r.warnings:
            out.append(f"   WARNING: {w}")
        if not r.warnings:
            out.append("   no warnings")
        out.append("")
    return "\n".join(out)


def render_markdown(reports: list[Report]) -> str:
    out = ["| query | what | indexes | execution ms | warnings |", "|---|---|---|---:|---|"]
    for r in reports:
        ms = f"{r.execution_ms:.2f}" if r.execution_ms is not None else "-"
        out.append(
            f"| {r.query} | {r.what} | {', '.join(r.indexes) or 'none'} | {ms} | "
            f"{'; '.join(r.warnings) or 'none'} |"
        )
    return "\n".join(out) + "\n\n```\n" + render_text(reports) + "```\n"


def render_json(reports: list[Report]) -> str:
    return json.dumps([asdict(r) for r in reports], indent=2)


async def db_stats(conn: asyncpg.Connection, top: int) -> dict[str, Any]:
    tables = [dict(r) for r in await conn.fetch(q("stats_tables"))]
    indexes = [dict(r) for r in await conn.fetch(q("stats_indexes"))]
    unused = [
        i
        for i in indexes
        if (i["idx_scan"] or 0) == 0 and not i["is_primary"] and not i["is_unique"]
    ]
    statements: list[dict[str, Any]] | str
    has_pss = await conn.fetchval(q("stats_has_statements"))
    if has_pss:
        try:
            statements = [dict(r) for r in await conn.fetch(q("stats_statements"), top)]
        except asyncpg.PostgresError as exc:
            statements = f"pg_stat_statements is installed but not readable: {exc}"
    else:
        statements = (
            "pg_stat_statements is not installed (CREATE EXTENSION pg_stat_statements, with "
            "shared_preload_libraries = 'pg_stat_statements'; on RDS: the parameter group)"
        )
    reset = await conn.fetchval(q("stats_since"))
    warnings = []
    if not await stats_repo.autovacuum_on(conn):
        warnings.append(
            "autovacuum is off: `civicpulse serve` analyses stale tables itself "
            "(CIVICPULSE_ANALYZE_CHECK_SECONDS); nothing else keeps the statistics fresh"
        )
    stale = await stats_repo.stale_tables(conn, 0.2, 1_000)
    if stale:
        warnings.append("statistics are stale for: " + ", ".join(r["relname"] for r in stale))
    return {
        "warnings": warnings,
        "stats_since": reset,
        "tables": tables,
        "indexes": indexes,
        "unused_indexes": unused,
        "top_statements": statements,
    }


def render_stats(stats: dict[str, Any]) -> str:
    out = [f"warning: {w}" for w in stats["warnings"]]
    out += [f"statistics since: {stats['stats_since'] or 'the cluster started'}", "", "tables:"]
    out.append(
        f"  {'table':<24} {'rows':>12} {'table':>10} {'indexes':>10} "
        f"{'seq scans':>10} {'idx scans':>10} {'dead':>10}"
    )
    for t in stats["tables"]:
        out.append(
            f"  {t['table']:<24} {t['rows']:>12,} {t['table_size']:>10} {t['indexes_size']:>10} "
            f"{t['seq_scan'] or 0:>10,} {t['idx_scan'] or 0:>10,} {t['n_dead_tup'] or 0:>10,}"
        )
    out += ["", "indexes:"]
    for i in stats["indexes"]:
        out.append(
            f"  {i['table'] + '.' + i['index']:<56} {i['size']:>10} {i['idx_scan'] or 0:>12,} scans"
        )
    out += [
        "",
        "unused indexes (no scan since the statistics were reset; primary and unique "
        "keys left out):",
    ]
    out += [f"  {i['table']}.{i['index']} ({i['size']})" for i in stats["unused_indexes"]] or [
        "  none"
    ]
    out += ["", "top statements:"]
    if isinstance(stats["top_statements"], str):
        out.append("  " + stats["top_statements"])
    else:
        for s in stats["top_statements"]:
            out.append(
                f"  {s['calls']:>9,} calls {s['total_ms']:>12} ms total "
                f"{s['mean_ms']:>9} ms mean  {s['query']}"
            )
    return "\n".join(out) + "\n"
