"""The operators' reports: `civicpulse explain` and `civicpulse db stats` against a live
database."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import asyncpg

from civicpulse import explain
from civicpulse.db import analytics
from tests.support import TenantKeys, env_without_civicpulse


async def seed(db_url: str, tenant: TenantKeys) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            """
            INSERT INTO issues (tenant_id, id, status, category, lat, lon, cell, opened_at,
                                resolved_at, sla_started_at, area)
            SELECT $1, gen_random_uuid(), CASE WHEN g % 4 = 0 THEN 'new' ELSE 'closed' END,
                   'graffiti', 34 + (g % 50) * 0.001, -118 - (g % 40) * 0.001,
                   civicpulse_cell(34 + (g % 50) * 0.001, -118 - (g % 40) * 0.001),
                   now() - (g % 400) * interval '1 day',
                   CASE WHEN g % 4 <> 0 THEN now() - (g % 300) * interval '1 day' END,
                   now() - (g % 400) * interval '1 day', NULL
              FROM generate_series(1, 20000) g""",
            tenant.id,
        )
        await conn.execute(
            "INSERT INTO issue_events (tenant_id, issue_id, kind, actor) "
            "SELECT tenant_id, id, 'issue_created', 'test' FROM issues WHERE tenant_id = $1",
            tenant.id,
        )
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('civicpulse.tenant_id', $1, true)", str(tenant.id)
            )
            await analytics.rebuild_rollups(conn, tenant.id)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def cli(db_url: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "civicpulse.cli",
        *args,
        env={**env_without_civicpulse(), "CIVICPULSE_DATABASE_URL": db_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_explain_reports_every_hot_query(db_url: str, tenant_a: TenantKeys) -> None:
    await seed(db_url, tenant_a)
    out = await cli(
        db_url, "explain", "--tenant", tenant_a.slug, "--all", "--analyze", "--format", "json"
    )
    reports = json.loads(out)
    assert [r["query"] for r in reports] == [h.name for h in explain.HOT_QUERIES]
    by_name = {r["query"]: r for r in reports}
    for r in reports:
        assert r["analyzed"] and r["execution_ms"] is not None, r["query"]
        assert r["nodes"] and r["nodes"][0]["actual_rows"] is not None
        # The service's queries on the service's indexes: no sequential scan of a big table.
        assert not [w for w in r["warnings"] if w.startswith("sequential scan")], r
    assert "issues_list" in by_name["list_issues"]["indexes"]
    assert {"issues_opened", "issues_list"} & set(by_name["sla_metrics"]["indexes"])

    text = await cli(db_url, "explain", "--tenant", tenant_a.slug, "--query", "list_issues")
    assert "== list_issues" in text and "plan only" in text and "issues_list" in text
    markdown = await cli(
        db_url, "explain", "--tenant", tenant_a.slug, "--all", "--analyze", "--format", "markdown"
    )
    assert markdown.startswith("| query |")


def test_misestimates_and_big_sequential_scans_are_flagged() -> None:
    raw = {
        "Planning Time": 0.1,
        "Execution Time": 9.0,
        "Plan": {
            "Node Type": "Nested Loop",
            "Plan Rows": 1,
            "Actual Rows": 5000,
            "Actual Loops": 1,
            "Actual Total Time": 9.0,
            "Plans": [
                {
                    "Node Type": "Seq Scan",
                    "Relation Name": "reports",
                    "Plan Rows": 10,
                    "Actual Rows": 10,
                    "Actual Loops": 1,
                    "Actual Total Time": 8.0,
                },
            ],
        },
    }
    report = explain.build_report(explain.HOT_QUERIES[0], "t", raw, True, {"reports": 2_000_000.0})
    assert any("5,000x off" in w for w in report.warnings)
    assert any(w.startswith("sequential scan of reports") for w in report.warnings)
    assert "WARNING: sequential scan of reports" in explain.render_text([report])


def test_a_scan_a_limit_stops_early_is_not_called_a_misestimate() -> None:
    scan = {
        "Node Type": "Index Scan",
        "Relation Name": "reports",
        "Index Name": "reports_pkey",
        "Plan Rows": 1_000_000,
        "Actual Rows": 50,
        "Actual Loops": 1,
    }
    raw = {
        "Plan": {
            "Node Type": "Limit",
            "Plan Rows": 50,
            "Actual Rows": 50,
            "Actual Loops": 1,
            "Plans": [scan],
        }
    }
    assert explain.build_report(explain.HOT_QUERIES[0], "t", raw, True, {}).warnings == []
    # The same scan without the Limit read 50 rows where a million were expected.
    alone = explain.build_report(explain.HOT_QUERIES[0], "t", {"Plan": scan}, True, {})
    assert any("20,000x off" in w for w in alone.warnings)
    # Under a Sort the scan runs to the end whatever the Limit: its misestimate is real.
    sort = {"Node Type": "Sort", "Plan Rows": 1_000_000, "Actual Rows": 50, "Actual Loops": 1}
    sorted_raw = {"Plan": {**raw["Plan"], "Plans": [{**sort, "Plans": [scan]}]}}
    warnings = explain.build_report(explain.HOT_QUERIES[0], "t", sorted_raw, True, {}).warnings
    assert any(w.startswith("Index Scan on reports") for w in warnings)
    # More rows than estimated is never an early stop.
    under = {**scan, "Plan Rows": 10, "Actual Rows": 5_000}
    more = {"Plan": {**raw["Plan"], "Plans": [under]}}
    assert explain.build_report(explain.HOT_QUERIES[0], "t", more, True, {}).warnings


async def test_db_stats_lists_sizes_usage_and_unused_indexes(
    db_url: str, tenant_a: TenantKeys
) -> None:
    await seed(db_url, tenant_a)
    out = await cli(db_url, "db", "stats")
    assert "tables:" in out and "issues" in out
    assert "unused indexes" in out
    assert "pg_stat_statements" in out or "calls" in out
    as_json = json.loads(await cli(db_url, "db", "stats", "--format", "json"))
    assert {t["table"] for t in as_json["tables"]} >= {"issues", "reports", "rollup_daily"}

    assert all("idx_scan" in i for i in as_json["indexes"])


async def test_a_reader_that_goes_away_ends_the_listing_quietly(
    db_url: str, tenant_a: TenantKeys
) -> None:
    # `civicpulse tenant list | head -1`: the pipe's reader is gone before the listing ends.
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "civicpulse.cli", "tenant", "list",
        env={**env_without_civicpulse(), "CIVICPULSE_DATABASE_URL": db_url},
        stdout=write_end,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.close(write_end)
    _, err = await proc.communicate()
    assert proc.returncode == 141, err.decode()
    assert err.decode() == ""


async def test_db_stats_counts_rows_of_tables_never_analysed(
    db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    # A fresh database (autovacuum is off here): the live rows counted, never -1.
    as_json = json.loads(await cli(db_url, "db", "stats", "--format", "json"))
    rows = {t["table"]: t["rows"] for t in as_json["tables"]}
    assert min(rows.values()) >= 0, rows
    assert rows["tenants"] == 2, rows
