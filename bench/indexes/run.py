"""Index strategies for the hot issue queries, measured on a large database.

For each hot query, each candidate index set is built alone on the `issues` table (every
other non-key index dropped), ANALYZEd, and the query is timed (p50/p95 over --rounds
runs with parameters drawn from real tenants: the largest ones and a sample of the rest);
the index's size is recorded. A write-cost run then inserts --write-rows issues with each
index set in place. Results: bench/results/indexes.{md,json,png}.

Runs against an existing database (default bench_dashboard, as `bench.dashboard.run`
leaves it: 10M issues over 1,000 tenants with `--issues 10000000`). It restores the
schema's own indexes at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asyncpg

from bench.ingest.common import (
    PG_ADMIN_URL,
    RESULTS,
    db_url,
    git_state,
    machine_context,
    percentile,
    print_context,
)

# The schema's own non-key indexes on issues: dropped while a strategy is measured, then
# rebuilt exactly as the migrations define them.
SCHEMA_INDEXES = {
    "issues_open_cell": "CREATE INDEX issues_open_cell ON issues (tenant_id, cell) "
    "INCLUDE (last_reported) WHERE civicpulse_is_open(status)",
    "issues_open_category_cell": "CREATE INDEX issues_open_category_cell ON issues "
    "(tenant_id, category, cell) INCLUDE (last_reported, lat, lon, id) "
    "WHERE civicpulse_is_open(status)",
    "issues_list": "CREATE INDEX issues_list ON issues (tenant_id, opened_at DESC, id DESC)",
    "issues_resolution_due": "CREATE INDEX issues_resolution_due ON issues (tenant_id, "
    "resolution_due_at) WHERE resolution_due_at IS NOT NULL AND civicpulse_is_open(status)",
    "issues_opened": "CREATE INDEX issues_opened ON issues (tenant_id, opened_at) "
    "INCLUDE (category, area, team, status)",
    "issues_resolved": "CREATE INDEX issues_resolved ON issues (tenant_id, resolved_at) "
    "WHERE resolved_at IS NOT NULL",
}

# Hot queries on issues, with the strategies compared for each. $1 is always the tenant.
QUERIES: dict[str, dict[str, Any]] = {
    "open issues per category (dashboard backlog)": {
        "sql": "SELECT category, count(*) FROM issues WHERE tenant_id = $1 "
        "AND civicpulse_is_open(status) GROUP BY category",
        "args": lambda t, now: (t,),
        "strategies": {
            "no index": [],
            "composite (tenant_id, status)": ["CREATE INDEX x ON issues (tenant_id, status)"],
            "composite (tenant_id, opened_at)": ["CREATE INDEX x ON issues (tenant_id, opened_at)"],
            "partial (tenant_id) WHERE open": [
                "CREATE INDEX x ON issues (tenant_id) WHERE civicpulse_is_open(status)"
            ],
            "covering partial (tenant_id, category) WHERE open": [
                "CREATE INDEX x ON issues (tenant_id, category) WHERE civicpulse_is_open(status)"
            ],
            "rollups (rollup_daily, as shipped)": "rollup",
        },
    },
    "staff list, first page (newest open)": {
        "sql": "SELECT id, status, category, opened_at FROM issues WHERE tenant_id = $1 "
        "AND status = ANY($2::text[]) ORDER BY opened_at DESC, id DESC LIMIT 50",
        "args": lambda t, now: (t, ["new", "triaged", "assigned", "in_progress"]),
        "strategies": {
            "no index": [],
            "composite (tenant_id, status)": ["CREATE INDEX x ON issues (tenant_id, status)"],
            "composite (tenant_id, opened_at DESC, id DESC) (shipped)": [
                SCHEMA_INDEXES["issues_list"].replace("issues_list", "x")
            ],
            "partial (tenant_id, opened_at DESC) WHERE open": [
                "CREATE INDEX x ON issues (tenant_id, opened_at DESC, id DESC) "
                "WHERE civicpulse_is_open(status)"
            ],
            "BRIN (opened_at)": ["CREATE INDEX x ON issues USING brin (opened_at)"],
        },
    },
    "SLA due soon (next 24 h)": {
        "sql": "SELECT id, resolution_due_at FROM issues WHERE tenant_id = $1 "
        "AND civicpulse_is_open(status) AND resolution_due_at < $2 "
        "ORDER BY resolution_due_at LIMIT 100",
        "args": lambda t, now: (t, now + dt.timedelta(days=1)),
        "strategies": {
            "no index": [],
            "composite (tenant_id, resolution_due_at)": [
                "CREATE INDEX x ON issues (tenant_id, resolution_due_at)"
            ],
            "partial (tenant_id, resolution_due_at) WHERE open and due (shipped)": [
                SCHEMA_INDEXES["issues_resolution_due"].replace("issues_resolution_due", "x")
            ],
        },
    },
    "public search by date and status (Open311 GET requests)": {
        "sql": "SELECT id, status, category, opened_at FROM issues WHERE tenant_id = $1 "
        "AND opened_at >= $2 AND opened_at < $3 AND status = $4 ORDER BY opened_at LIMIT 200",
        "args": lambda t, now: (t, now - dt.timedelta(days=7), now, "closed"),
        "strategies": {
            "no index": [],
            "composite (tenant_id, opened_at)": ["CREATE INDEX x ON issues (tenant_id, opened_at)"],
            "covering (tenant_id, opened_at) INCLUDE (category, area, team, status) (shipped)": [
                SCHEMA_INDEXES["issues_opened"].replace("issues_opened", "x")
            ],
            "composite (tenant_id, status, opened_at)": [
                "CREATE INDEX x ON issues (tenant_id, status, opened_at)"
            ],
            "BRIN (opened_at)": ["CREATE INDEX x ON issues USING brin (opened_at)"],
        },
    },
}

ROLLUP_SQL = (
    "SELECT category, sum(opened - resolved) FROM rollup_daily WHERE tenant_id = $1 "
    "GROUP BY category"
)


async def drop_non_key(conn: asyncpg.Connection) -> None:
    for name in [*SCHEMA_INDEXES, "x"]:
        await conn.execute(f"DROP INDEX IF EXISTS {name}")


async def time_query(
    conn: asyncpg.Connection, sql: str, args_for: Any, tenants: list[int], rounds: int
) -> dict[str, float]:
    now = dt.datetime.now(dt.UTC)
    ms: list[float] = []
    for r in range(rounds + 1):
        for t in tenants:
            args = args_for(t, now)
            started = time.perf_counter()
            await conn.fetch(sql, *args)
            if r:  # the first round warms the cache
                ms.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(percentile(ms, 0.5), 3),
        "p95_ms": round(percentile(ms, 0.95), 3),
        "n": len(ms),
    }


async def write_cost(conn: asyncpg.Connection, rows: int, tenant: int) -> float:
    """Inserts per second of `rows` issues (one statement per 1,000) with the current
    indexes; rolled back."""
    tr = conn.transaction()
    await tr.start()
    try:
        started = time.perf_counter()
        for _ in range(rows // 1000):
            await conn.execute(
                "INSERT INTO issues (tenant_id, id, status, category, opened_at) "
                "SELECT $1, gen_random_uuid(), 'new', 'other', now() FROM generate_series(1, 1000)",
                tenant,
            )
        return rows / (time.perf_counter() - started)
    finally:
        await tr.rollback()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = db_url(args.db)
    conn = await asyncpg.connect(url)
    try:
        total = await conn.fetchval("SELECT count(*) FROM issues")
        by_size = [
            r["tenant_id"]
            for r in await conn.fetch(
                "SELECT tenant_id FROM issues GROUP BY tenant_id ORDER BY count(*) DESC"
            )
        ]
        tenants = by_size[:3] + random.Random(args.seed).sample(
            by_size[3:], min(17, len(by_size) - 3)
        )
        # Open issues get due times as an SLA would give them (once; idempotent).
        await conn.execute(
            "UPDATE issues SET resolution_due_at = opened_at + interval '5 days' "
            "WHERE civicpulse_is_open(status) AND resolution_due_at IS NULL"
        )
        await conn.execute("ALTER TABLE issues DISABLE TRIGGER issues_mark_rollups_insert")
        await conn.execute("ALTER TABLE issues DISABLE TRIGGER issues_mark_rollups_update")
        results: dict[str, Any] = {}
        for qname, spec in QUERIES.items():
            print(f"== {qname}", flush=True)
            results[qname] = {}
            for sname, ddl in spec["strategies"].items():
                await drop_non_key(conn)
                build_s = 0.0
                size = 0
                if ddl == "rollup":
                    timing = await time_query(conn, ROLLUP_SQL, spec["args"], tenants, args.rounds)
                    size = await conn.fetchval("SELECT pg_total_relation_size('rollup_daily')")
                    writes = None
                else:
                    started = time.perf_counter()
                    for statement in ddl:
                        await conn.execute(statement)
                    build_s = time.perf_counter() - started
                    await conn.execute("ANALYZE issues")
                    if ddl:
                        size = await conn.fetchval("SELECT pg_relation_size('x')")
                    timing = await time_query(conn, spec["sql"], spec["args"], tenants, args.rounds)
                    writes = round(await write_cost(conn, args.write_rows, tenants[0]))
                results[qname][sname] = {
                    **timing,
                    "index_mb": round(size / 2**20, 1),
                    "build_s": round(build_s, 1),
                    "inserts_per_s": writes,
                }
                print(f"  {sname}: {results[qname][sname]}", flush=True)
        return {"issues": total, "tenants_timed": len(tenants), "results": results}
    finally:
        await drop_non_key(conn)
        for ddl in SCHEMA_INDEXES.values():
            await conn.execute(ddl)
        await conn.execute("ALTER TABLE issues ENABLE TRIGGER issues_mark_rollups_insert")
        await conn.execute("ALTER TABLE issues ENABLE TRIGGER issues_mark_rollups_update")
        await conn.execute("ANALYZE issues")
        await conn.close()


def write(out: Path, result: dict[str, Any]) -> None:
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    lines = [
        "# Index strategies for the hot issue queries",
        "",
        f"Command: `{result['command']}`",
        "",
        f"On {result['issues']:,} issues over 1,000 tenants (the largest 3 and "
        f"{result['tenants_timed'] - 3} sampled tenants timed, first round dropped). "
        "Each strategy is the only non-key index on `issues` while it is measured; "
        "inserts/s is 10 x 1,000-row inserts with that index in place (rolled back).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in result["context"].items()],
        "",
    ]
    for qname, strategies in result["results"].items():
        lines += [
            f"## {qname}",
            "",
            "| strategy | p50 ms | p95 ms | index MB | build s | inserts/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for sname, r in strategies.items():
            lines.append(
                f"| {sname} | {r['p50_ms']} | {r['p95_ms']} | {r['index_mb']} | "
                f"{r['build_s']} | {r['inserts_per_s'] or '-'} |"
            )
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(len(result["results"]), 1, figsize=(9, 3.2 * len(result["results"])))
    for ax, (qname, strategies) in zip(axes, result["results"].items(), strict=True):
        names = list(strategies)
        ax.barh(names, [strategies[n]["p95_ms"] for n in names], color="#0b5cad")
        ax.set_xscale("log")
        ax.set_xlabel("p95 ms (log)")
        ax.set_title(qname, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.indexes.run", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--db", default="bench_dashboard", help="database with the data (bench_dashboard)"
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--write-rows", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default=str(RESULTS / "indexes"))
    args = p.parse_args(argv)
    ctx = machine_context(PG_ADMIN_URL)
    ctx.update(git_state())
    print_context(ctx)
    result = asyncio.run(run(args))
    result["context"] = ctx
    result["command"] = "python -m bench.indexes.run " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    write(Path(args.out), result)
    print(f"wrote {args.out}.md, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
