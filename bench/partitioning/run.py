"""Monthly range partitioning of `reports` against the one table, at 10M rows.

Three copies of the same 10M reports (the data of `bench.indexes.reports_data`, built or
reused in --db) are made side by side, loaded the same way (INSERT ... SELECT in the
source's physical order, then keys, indexes, the foreign key to issues, RLS, VACUUM ANALYZE):

  single       one table, as shipped: PK (tenant_id, id), the schema's six other indexes;
  by_id        PARTITION BY RANGE (id), one partition per calendar month (UTC) with UUIDv7
               bounds (48-bit millisecond prefix of the month's start, zeros after): the
               PK (tenant_id, id) stays as it is;
  by_received  PARTITION BY RANGE (received_at), monthly: the PK must become
               (tenant_id, id, received_at).

A unique index of a partitioned table must contain the partition key, so on both
partitioned copies the idempotency and source-record indexes can only be unique per
partition (they are created on each partition; the script records the error PostgreSQL
gives for the global one), and insert_reports must say `ON CONFLICT DO NOTHING` without a
conflict target. The script also records what happens to a foreign key that references
(tenant_id, id) of the received_at-partitioned table.

Then, per layout (one after the other, each with a warm-up round, so each is read warm):
the report reads that exist in civicpulse/db/sql (list_reports newest-first first page and
a page at a cursor six months back, get_report, issue_reports, the claim scan of
civicpulse_claim_reports run inline and rolled back) and a per-tenant count of reports by
month (3 and 12 months, bounded by received_at, and by id as an id-partitioned schema would
write it), for the largest 3 tenants and 17 sampled ones, under RLS as civicpulse_app; the
partitions each query plans and executes (EXPLAIN ANALYZE, custom and forced generic plans);
insert_reports rows/s as in bench.indexes.reports; and retention: DELETE of the oldest
month's rows plus the VACUUM it needs, against DETACH PARTITION plus DROP TABLE.
Results: bench/results/partitioning.{md,json,png}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asyncpg

from bench.indexes import reports as ix
from bench.indexes import reports_data as data
from bench.ingest.common import RESULTS, db_url, percentile

LAYOUTS = {
    "single": ("rp_single", "one table (as shipped)"),
    "by_id": ("rp_by_id", "monthly RANGE (id) partitions, UUIDv7 bounds"),
    "by_received": ("rp_by_received", "monthly RANGE (received_at) partitions"),
}
UNIQUE = ("reports_idempotency_key", "reports_source_record")

# The body of civicpulse_claim_reports (schema/0003), run inline on each copy.
CLAIM_SQL = """UPDATE reports r
   SET lease_owner = $2, lease_until = now() + $3::interval, attempts = r.attempts + 1
  FROM (SELECT p.tenant_id, p.id
          FROM reports p
         WHERE p.state = $1
           AND p.state IN ('received', 'classified')
           AND (p.lease_until IS NULL OR p.lease_until < now())
         ORDER BY p.received_at
         LIMIT $4
           FOR UPDATE SKIP LOCKED) AS c
 WHERE r.tenant_id = c.tenant_id AND r.id = c.id
RETURNING r.tenant_id, r.id"""

# A dashboard-like trend computed from reports: one tenant's reports per month.
TREND_RECEIVED = """SELECT date_trunc('month', received_at AT TIME ZONE $4) AS month, count(*)
  FROM reports
 WHERE tenant_id = $1 AND received_at >= $2 AND received_at < $3
 GROUP BY 1 ORDER BY 1"""
TREND_ID = """SELECT date_trunc('month', received_at AT TIME ZONE $4) AS month, count(*)
  FROM reports
 WHERE tenant_id = $1 AND id >= $2 AND id < $3
 GROUP BY 1 ORDER BY 1"""


def on(table: str, sql: str) -> str:
    """The query with `reports` replaced by the layout's table."""
    return re.sub(r"\breports\b", table, sql)


def uuid_floor(at: dt.datetime) -> uuid.UUID:
    """The smallest UUIDv7 of the millisecond `at`: a partition bound or a keyset bound."""
    return uuid.UUID(int=int(at.timestamp() * 1000) << 80)


def months(first: dt.datetime, last: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    out = []
    lo = first.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while lo <= last:
        hi = (lo + dt.timedelta(days=32)).replace(day=1)
        out.append((lo, hi))
        lo = hi
    return out


def index_ddl(name: str, table: str) -> str:
    return data.REPORT_INDEXES[name].replace(
        f"INDEX {name} ON public.reports",
        f"INDEX {table}_{name.removeprefix('reports_')} ON public.{table}",
    )


# -- building the copies --------------------------------------------------------------------


async def build_layout(
    conn: asyncpg.Connection, kind: str, bounds: list[tuple[dt.datetime, dt.datetime]], tag: str
) -> dict[str, Any]:
    table = LAYOUTS[kind][0]
    seconds: dict[str, float] = {}
    await conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    by = {"single": "", "by_id": " PARTITION BY RANGE (id)"}.get(
        kind, " PARTITION BY RANGE (received_at)"
    )
    await conn.execute(
        f"CREATE TABLE {table} (LIKE reports INCLUDING DEFAULTS INCLUDING CONSTRAINTS){by}"
    )
    parts = []
    for lo, hi in bounds:
        name = f"{table}_{lo:%Y_%m}"
        if kind == "by_id":
            lo_v, hi_v = f"'{uuid_floor(lo)}'", f"'{uuid_floor(hi)}'"
        else:
            lo_v, hi_v = f"'{lo.isoformat()}'", f"'{hi.isoformat()}'"
        if kind != "single":
            await conn.execute(
                f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ({lo_v}) TO ({hi_v})"
            )
            parts.append(name)
    started = time.perf_counter()
    await conn.execute(f"INSERT INTO {table} SELECT * FROM reports")
    seconds["load"] = time.perf_counter() - started

    started = time.perf_counter()
    key = "tenant_id, id, received_at" if kind == "by_received" else "tenant_id, id"
    await conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({key})")
    for name in data.REPORT_INDEXES:
        if name in UNIQUE and kind != "single":
            for part in parts:
                await conn.execute(index_ddl(name, part))
        else:
            await conn.execute(index_ddl(name, table))
    seconds["indexes"] = time.perf_counter() - started
    started = time.perf_counter()
    # Validated (PostgreSQL 15 has no NOT VALID foreign key on a partitioned table).
    await conn.execute(
        f"ALTER TABLE {table} ADD FOREIGN KEY (tenant_id, issue_id) "
        "REFERENCES issues (tenant_id, id)"
    )
    seconds["foreign_key"] = time.perf_counter() - started
    await conn.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    await conn.execute(
        f"CREATE POLICY tenant_isolation ON {table} USING (tenant_id = "
        "civicpulse_current_tenant()) WITH CHECK (tenant_id = civicpulse_current_tenant())"
    )
    await conn.execute(f"GRANT SELECT, INSERT, UPDATE ON {table} TO {ix.APP_ROLE}")
    started = time.perf_counter()
    await conn.execute(f"VACUUM (ANALYZE) {table}")
    seconds["vacuum_analyze"] = time.perf_counter() - started
    await conn.execute(f"COMMENT ON TABLE {table} IS '{tag}'")
    return {"seconds": {k: round(v, 1) for k, v in seconds.items()}, "partitions": len(parts)}


async def layout_state(conn: asyncpg.Connection) -> dict[str, Any]:
    out = {}
    for kind, (table, _) in LAYOUTS.items():
        row = await conn.fetchrow(
            "SELECT sum(pg_total_relation_size(c.oid)) AS total, "
            "sum(pg_indexes_size(c.oid)) AS indexes, count(*) - 1 AS partitions "
            "FROM pg_class c WHERE c.oid = $1::regclass "
            "OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::regclass)",
            table,
        )
        out[kind] = {
            "total_mb": round(row["total"] / 2**20),
            "indexes_mb": round(row["indexes"] / 2**20),
            "partitions": row["partitions"],
        }
    return out


async def constraint_checks(conn: asyncpg.Connection) -> dict[str, str]:
    """What PostgreSQL says to the constraints the one table has (rolled back)."""
    out = {}
    attempts = {
        "global idempotency unique index on by_id": (
            "CREATE UNIQUE INDEX x_check ON rp_by_id (tenant_id, idempotency_key) "
            "WHERE idempotency_key IS NOT NULL"
        ),
        "global idempotency unique index on by_received": (
            "CREATE UNIQUE INDEX x_check ON rp_by_received (tenant_id, idempotency_key) "
            "WHERE idempotency_key IS NOT NULL"
        ),
        "insert_reports' ON CONFLICT (tenant_id, idempotency_key) on by_id": on(
            "rp_by_id", ix.q("insert_reports")
        ),
        "insert_reports with ON CONFLICT DO NOTHING (no target) on by_id": on(
            "rp_by_id", ix.q("insert_reports")
        ).replace(
            "ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL",
            "ON CONFLICT",
        ),
        "foreign key to (tenant_id, id) of by_id (issue_events.report_id)": (
            "CREATE TABLE x_ref_check (tenant_id bigint, report_id uuid, FOREIGN KEY "
            "(tenant_id, report_id) REFERENCES rp_by_id (tenant_id, id))"
        ),
        "foreign key to (tenant_id, id) of by_received (issue_events.report_id)": (
            "CREATE TABLE x_ref_check (tenant_id bigint, report_id uuid, FOREIGN KEY "
            "(tenant_id, report_id) REFERENCES rp_by_received (tenant_id, id))"
        ),
    }
    for name, sql in attempts.items():
        tr = conn.transaction()
        await tr.start()
        try:
            if "INSERT INTO" in sql:
                # The planner resolves the conflict target: plan it, with empty batches.
                await conn.fetch(f"EXPLAIN {sql}", 1, *[[] for _ in range(13)])
            else:
                await conn.execute(sql)
            out[name] = "accepted"
        except asyncpg.PostgresError as exc:
            out[name] = "ERROR: " + " ".join(str(exc).split())
        finally:
            await tr.rollback()
    return out


# -- reads -----------------------------------------------------------------------------------


def read_queries(now: dt.datetime) -> dict[str, dict[str, Any]]:
    """name -> sql (on `reports`), args per (tenant, report id, issue id), owner-only flag."""
    d90, d365 = now - dt.timedelta(days=90), now - dt.timedelta(days=365)
    end = now + dt.timedelta(hours=1)
    cursor = uuid_floor(now - dt.timedelta(days=182))
    return {
        "list_reports first page (50, newest first)": {
            "sql": ix.q("list_reports"),
            "args": lambda t, r, i: (t, None, None, 50),
        },
        "list_reports page at a cursor 6 months back": {
            "sql": ix.q("list_reports"),
            "args": lambda t, r, i: (t, None, cursor, 50),
        },
        "get_report": {"sql": ix.q("get_report"), "args": lambda t, r, i: (t, r)},
        "issue_reports": {"sql": ix.q("issue_reports"), "args": lambda t, r, i: (t, i)},
        "count by month, 3 months (received_at range)": {
            "sql": TREND_RECEIVED,
            "args": lambda t, r, i: (t, d90, end, data.ZONE),
        },
        "count by month, 12 months (received_at range)": {
            "sql": TREND_RECEIVED,
            "args": lambda t, r, i: (t, d365, end, data.ZONE),
        },
        "count by month, 3 months (id range)": {
            "sql": TREND_ID,
            "args": lambda t, r, i: (t, uuid_floor(d90), uuid_floor(end), data.ZONE),
        },
        "claim scan (200 received, rolled back)": {
            "sql": CLAIM_SQL,
            "args": lambda t, r, i: ("received", "bench", dt.timedelta(minutes=5), 200),
            "owner": True,
        },
    }


async def sample_reports(
    conn: asyncpg.Connection, tenants: list[int], per_tenant: int, seed: int
) -> dict[int, list[uuid.UUID]]:
    rng = random.Random(seed + 1)
    lo, hi = await conn.fetchrow("SELECT min(received_at), max(received_at) FROM reports")
    out = {}
    for t in tenants:
        got = []
        for _ in range(per_tenant):
            at = lo + (hi - lo) * rng.random()
            got.append(
                await conn.fetchval(
                    "SELECT id FROM reports WHERE tenant_id = $1 AND id >= $2 ORDER BY id LIMIT 1",
                    t,
                    uuid_floor(at),
                )
                or await conn.fetchval("SELECT max(id) FROM reports WHERE tenant_id = $1", t)
            )
        out[t] = got
    return out


async def timed(
    conn: asyncpg.Connection, tenant: int | None, sql: str, args: tuple[Any, ...]
) -> float:
    tr = conn.transaction()
    await tr.start()
    try:
        if tenant is not None:
            await conn.execute(ix.SET_TENANT, str(tenant))
        started = time.perf_counter()
        await conn.fetch(sql, *args)
        return (time.perf_counter() - started) * 1000
    finally:
        if tenant is None:
            await tr.rollback()  # the claim: leave the rows claimable
        else:
            await tr.commit()


def literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dt.datetime):
        return f"'{v.isoformat()}'"
    if isinstance(v, dt.timedelta):
        return f"'{v.total_seconds()} seconds'"
    return "'" + str(v).replace("'", "''") + "'"


def partitions_in(plan: dict[str, Any], table: str) -> dict[str, int]:
    planned: set[str] = set()
    executed: set[str] = set()
    removed = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal removed
        rel = node.get("Relation Name", "")
        if "Scan" in node["Node Type"] and rel.startswith(table):
            planned.add(rel)
            if node.get("Actual Loops", 0) > 0:
                executed.add(rel)
        removed += node.get("Subplans Removed", 0)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return {"planned": len(planned), "executed": len(executed), "removed": removed}


async def pruning(
    conn: asyncpg.Connection, tenant: int | None, table: str, sql: str, args: tuple[Any, ...]
) -> dict[str, Any]:
    """Partitions in the plan and actually scanned: a custom plan (parameters known to the
    planner) and a forced generic one (pruned at executor start-up or per row)."""
    out: dict[str, Any] = {}
    for mode in ("custom", "generic"):
        tr = conn.transaction()
        await tr.start()
        try:
            if tenant is not None:
                await conn.execute(ix.SET_TENANT, str(tenant))
            if mode == "custom":
                raw = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
            else:
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                await conn.execute(f"PREPARE bench_prune AS {sql}")
                values = ", ".join(literal(a) for a in args)
                raw = await conn.fetchval(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE bench_prune({values})"
                )
                await conn.execute("DEALLOCATE bench_prune")
        finally:
            await tr.rollback()
        out[mode] = partitions_in(json.loads(raw)[0]["Plan"], table)
    return out


async def run_reads(
    owner: asyncpg.Connection,
    app: asyncpg.Connection,
    tenants: list[int],
    reports: dict[int, list[uuid.UUID]],
    issues: dict[int, list[uuid.UUID]],
    args: argparse.Namespace,
) -> tuple[dict[str, Any], dict[str, Any]]:
    now = dt.datetime.now(dt.UTC)
    queries = read_queries(now)
    timings: dict[str, dict[str, Any]] = {name: {} for name in queries}
    prune: dict[str, dict[str, Any]] = {name: {} for name in queries}
    for kind, (table, _) in LAYOUTS.items():
        print(f"  == {kind}", flush=True)
        for name, spec in queries.items():
            sql = on(table, spec["sql"])
            conn = owner if spec.get("owner") else app
            heavy = name.startswith("count")
            ms: list[float] = []
            ms_large: list[float] = []
            rounds = args.heavy_rounds if heavy else args.rounds
            for r in range(rounds + 1):
                for n, t in enumerate(tenants):
                    if spec.get("owner") and n:
                        break  # not per tenant: the claim spans tenants
                    for k in range(1 if heavy else args.per_tenant):
                        a = spec["args"](t, reports[t][k], issues[t][k % len(issues[t])])
                        took = await timed(conn, None if spec.get("owner") else t, sql, a)
                        if r:
                            ms.append(took)
                            if n < 3:
                                ms_large.append(took)
            t0 = tenants[0]
            a0 = spec["args"](t0, reports[t0][0], issues[t0][0])
            timings[name][kind] = {
                **ix.summary(ms),
                "largest3_p50_ms": round(percentile(ms_large, 0.5), 3),
            }
            prune[name][kind] = await pruning(
                conn, None if spec.get("owner") else t0, table, sql, a0
            )
            print(f"    {name}: {timings[name][kind]} {prune[name][kind]}", flush=True)
    # Is the by_received count fast because of pruning, or because its primary key
    # (tenant_id, id, received_at) lets the count read the index alone? The one table with
    # an index on (tenant_id, received_at) answers that.
    extra = "single + (tenant_id, received_at)"
    print(f"  == {extra} (counts only)", flush=True)
    await owner.execute(
        "CREATE INDEX rp_single_tenant_received ON rp_single (tenant_id, received_at)"
    )
    await owner.execute("ANALYZE rp_single")
    try:
        for name, spec in queries.items():
            if not name.startswith("count"):
                continue
            sql = on("rp_single", spec["sql"])
            ms, ms_large = [], []
            for r in range(args.heavy_rounds + 1):
                for n, t in enumerate(tenants):
                    took = await timed(app, t, sql, spec["args"](t, None, None))
                    if r:
                        ms.append(took)
                        if n < 3:
                            ms_large.append(took)
            timings[name][extra] = {
                **ix.summary(ms),
                "largest3_p50_ms": round(percentile(ms_large, 0.5), 3),
            }
            print(f"    {name}: {timings[name][extra]}", flush=True)
    finally:
        await owner.execute("DROP INDEX rp_single_tenant_received")
    for per in timings.values():
        base = per["single"]["p50_ms"]
        for r in per.values():
            r["p50_ratio_to_single"] = round(r["p50_ms"] / base, 2) if base else None
    return timings, prune


# -- ingest and retention --------------------------------------------------------------------


async def run_ingest(
    owner: asyncpg.Connection, app: asyncpg.Connection, args: argparse.Namespace
) -> dict[str, Any]:
    sizes = [
        (r["tenant_id"], r["n"])
        for r in await owner.fetch(
            "SELECT tenant_id, count(*) AS n FROM reports GROUP BY tenant_id"
        )
    ]
    per_rep = max(1, args.write_rows // args.batch)
    batches = ix.make_batches(sizes, per_rep * args.write_reps, args.batch, args.seed)
    real = ix.q("insert_reports")
    no_target = re.sub(
        r"ON CONFLICT \(tenant_id, idempotency_key\) WHERE idempotency_key IS NOT NULL",
        "ON CONFLICT",
        real,
    )
    assert no_target != real, "insert_reports changed: update bench/partitioning/run.py"
    out: dict[str, Any] = {}
    # Interleaved: every layout takes one repetition in turn (the order rotating), so drift
    # hits all alike.
    await owner.execute("CHECKPOINT")
    wal: dict[str, int] = {k: 0 for k in LAYOUTS}
    rates: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    lat: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    made: dict[str, list[tuple[int, list[str]]]] = {k: [] for k in LAYOUTS}
    for rep in range(args.write_reps):
        chunk = batches[rep * per_rep : (rep + 1) * per_rep]
        kinds = list(LAYOUTS)
        for kind in kinds[rep % 3 :] + kinds[: rep % 3]:  # each goes first once in a while
            table = LAYOUTS[kind][0]
            sql = on(table, real if kind == "single" else no_target)
            start = await owner.fetchval("SELECT pg_current_wal_lsn()::text")
            seconds, ms, ids = await ix.insert_batches(app, chunk, sql)
            wal[kind] += await wal_bytes(owner, start)
            rates[kind].append(per_rep * args.batch / seconds)
            lat[kind] += ms
            made[kind] += ids
    for kind, (table, _) in LAYOUTS.items():
        await owner.execute(
            f"DELETE FROM {table} r USING unnest($1::bigint[], $2::uuid[]) AS d (tenant_id, id) "
            "WHERE r.tenant_id = d.tenant_id AND r.id = d.id",
            [t for t, ids in made[kind] for _ in ids],
            [i for _, ids in made[kind] for i in ids],
        )
        await owner.execute(f"VACUUM {table}")
        out[kind] = {
            "statement": "insert_reports" if kind == "single" else "ON CONFLICT DO NOTHING",
            "rows_per_s_median": round(statistics.median(rates[kind])),
            "rows_per_s_reps": [round(x) for x in rates[kind]],
            "batch_p50_ms": round(percentile(lat[kind], 0.5), 2),
            "batch_p95_ms": round(percentile(lat[kind], 0.95), 2),
            "wal_bytes_per_row": round(wal[kind] / (per_rep * args.batch * args.write_reps)),
        }
    base = out["single"]["rows_per_s_median"]
    for r in out.values():
        r["ratio_to_single"] = round(r["rows_per_s_median"] / base, 3)
    print(f"  {out}", flush=True)
    return out


async def wal_bytes(conn: asyncpg.Connection, since: str) -> int:
    sql = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)"
    return int(await conn.fetchval(sql, since))


async def run_retention(
    conn: asyncpg.Connection, bound: dt.datetime, months_dropped: int
) -> dict[str, Any]:
    """Remove what was received before `bound` (the oldest `months_dropped` partitions: the
    partial first month of the history and the first whole one) from each copy, for real."""
    out: dict[str, Any] = {}
    lsn = "SELECT pg_current_wal_lsn()::text"
    for kind, (table, _) in LAYOUTS.items():
        steps: dict[str, Any] = {}
        await conn.execute(f"COMMENT ON TABLE {table} IS 'retention applied: rebuild'")
        if kind == "single":
            start = await conn.fetchval(lsn)
            started = time.perf_counter()
            status = await conn.execute(f"DELETE FROM {table} WHERE received_at < $1", bound)
            steps["DELETE s"] = round(time.perf_counter() - started, 2)
            steps["DELETE WAL MB"] = round(await wal_bytes(conn, start) / 2**20, 1)
            steps["rows"] = int(status.split()[-1])
            start = await conn.fetchval(lsn)
            started = time.perf_counter()
            await conn.execute(f"VACUUM {table}")
            steps["VACUUM s"] = round(time.perf_counter() - started, 2)
            steps["VACUUM WAL MB"] = round(await wal_bytes(conn, start) / 2**20, 1)
            steps["total s"] = round(steps["DELETE s"] + steps["VACUUM s"], 2)
        else:
            parts = await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = $1::regclass ORDER BY c.relname",
                table,
            )
            steps.update({"partitions": [], "rows": 0, "DETACH s": 0.0, "DROP s": 0.0})
            start = await conn.fetchval(lsn)
            for part in [p["relname"] for p in parts][:months_dropped]:
                steps["partitions"].append(part)
                steps["rows"] += await conn.fetchval(f"SELECT count(*) FROM {part}")
                started = time.perf_counter()
                await conn.execute(f"ALTER TABLE {table} DETACH PARTITION {part}")
                steps["DETACH s"] += time.perf_counter() - started
                started = time.perf_counter()
                await conn.execute(f"DROP TABLE {part}")
                steps["DROP s"] += time.perf_counter() - started
            steps["WAL MB"] = round(await wal_bytes(conn, start) / 2**20, 2)
            steps["DETACH s"] = round(steps["DETACH s"], 3)
            steps["DROP s"] = round(steps["DROP s"], 3)
            steps["total s"] = round(steps["DETACH s"] + steps["DROP s"], 3)
        out[kind] = steps
        print(f"  {kind}: {steps}", flush=True)
    return out


# -- the run --------------------------------------------------------------------------------


async def run(args: argparse.Namespace, meta: dict[str, Any]) -> dict[str, Any]:
    url = db_url(args.db)
    owner = await asyncpg.connect(url, server_settings={"jit": "off"})
    app = await ix.app_connect(url)
    await owner.execute("SET synchronous_commit = off")
    await app.execute("SET synchronous_commit = off")
    result: dict[str, Any] = {}
    try:
        lo, hi = await owner.fetchrow("SELECT min(received_at), max(received_at) FROM reports")
        bounds = months(lo, hi + dt.timedelta(days=62))
        tag = f"bench layout over reports built {meta['built_utc']}"
        print("== building the three copies", flush=True)
        build: dict[str, Any] = {}
        await owner.execute("SET maintenance_work_mem = '256MB'")
        for kind, (table, _) in LAYOUTS.items():
            comment = await owner.fetchval(
                "SELECT obj_description(to_regclass($1), 'pg_class')", table
            )
            if args.reuse and comment == tag:
                build[kind] = "reused"
            else:
                build[kind] = await build_layout(owner, kind, bounds, tag)
            print(f"  {kind}: {build[kind]}", flush=True)
        await owner.execute("RESET maintenance_work_mem")
        result["build"] = build
        result["layouts"] = await layout_state(owner)
        result["constraints"] = await constraint_checks(owner)
        for k, v in result["constraints"].items():
            print(f"  {k}: {v}", flush=True)
        tenants = await ix.pick_tenants(owner, args.seed)
        reports = await sample_reports(owner, tenants, args.per_tenant, args.seed)
        issues = await ix.sample_issues(owner, tenants, args.per_tenant, args.seed)
        result["tenants_timed"] = len(tenants)
        print("== reads", flush=True)
        result["reads"], result["pruning"] = await run_reads(
            owner, app, tenants, reports, issues, args
        )
        print("== ingest", flush=True)
        result["ingest"] = await run_ingest(owner, app, args)
        print("== retention (the oldest whole month, and the partial one before it)", flush=True)
        result["retention_bound"] = bounds[2][0].isoformat()
        result["retention"] = await run_retention(owner, bounds[2][0], 2)
        return result
    finally:
        await app.close()
        await owner.close()


# -- output ----------------------------------------------------------------------------------


def write(out: Path, result: dict[str, Any]) -> None:
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    d = result["data"]
    r = result["results"]
    names = list(LAYOUTS)
    extra = "single + (tenant_id, received_at)"
    lines = [
        "# Monthly partitioning of reports against the one table",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Data: {d['reports']:,} reports over {d['tenants']:,} tenants (largest "
        f"{d['largest_tenant_reports']:,}, median {d['median_tenant_reports']:,}), "
        f"{d['days']} days of history, {d['pending']:,} pending; three copies side by side in "
        "one database. Reads timed for the largest 3 tenants and "
        f"{r['tenants_timed'] - 3} sampled ones, {result['args']['per_tenant']} ids each, "
        f"{result['args']['rounds']} rounds ({result['args']['heavy_rounds']} rounds, once per "
        "tenant, for the counts by month) after a warm-up round, one layout after the other, "
        "under RLS as civicpulse_app (the claim as the owner, as its SECURITY DEFINER "
        "function runs).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in result["context"].items()],
        "",
        "## Layouts",
        "",
        "| layout | description | partitions | total MB | of which indexes MB | build |",
        "|---|---|---:|---:|---:|---|",
    ]
    for kind in names:
        s = r["layouts"][kind]
        b = r["build"][kind]
        built = b if b == "reused" else ", ".join(f"{k} {v} s" for k, v in b["seconds"].items())
        lines.append(
            f"| {kind} | {LAYOUTS[kind][1]} | {s['partitions']} | {s['total_mb']:,} | "
            f"{s['indexes_mb']:,} | {built} |"
        )
    lines += [
        "",
        "## What PostgreSQL says to the one table's constraints",
        "",
        "| attempt | result |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in r["constraints"].items()],
        "",
        "## Reads (p50 / p95 ms; ratio of p50 to the one table)",
        "",
        "| query | " + " | ".join([*names, extra]) + " |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for q, per in r["reads"].items():
        cells = []
        for kind in [*names, extra]:
            x = per.get(kind)
            if x is None:
                cells.append("-")
                continue
            ratio = "" if kind == "single" else f" ({x['p50_ratio_to_single']}x)"
            cells.append(f"{x['p50_ms']} / {x['p95_ms']}{ratio}")
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"The last column is the one table with one more index, {extra}, timed for the "
        "counts only: it shows how much of the received_at-partitioned copy's advantage "
        "there comes from its primary key (tenant_id, id, received_at) letting the count "
        "read the index alone rather than from pruning.",
    ]
    lines += [
        "",
        "## Partition pruning (largest tenant; partitions scanned / in the plan, subplans "
        "removed at run time)",
        "",
        "| query | " + " | ".join(f"{k} custom | {k} generic" for k in names[1:]) + " |",
        "|---|" + "---|---|" * (len(names) - 1),
    ]
    for q, per in r["pruning"].items():
        cells = []
        for kind in names[1:]:
            for mode in ("custom", "generic"):
                p = per[kind][mode]
                cells.append(f"{p['executed']} / {p['planned']}, -{p['removed']}")
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Partitions per copy: {r['layouts']['by_id']['partitions']} (months of history "
        "plus two ahead).",
        "",
        "## Ingest (`insert_reports`, batches of "
        f"{result['args']['batch']}, {result['args']['write_reps']} x "
        f"{result['args']['write_rows']:,} rows, layouts interleaved per repetition, order "
        "rotating, after a CHECKPOINT)",
        "",
        "| layout | statement | rows/s (median) | ratio | reps | batch p50 / p95 ms | WAL B/row |",
        "|---|---|---:|---:|---|---|---:|",
    ]
    for kind in names:
        w = r["ingest"][kind]
        lines.append(
            f"| {kind} | {w['statement']} | {w['rows_per_s_median']:,} | "
            f"{w['ratio_to_single']:.2f} | {', '.join(f'{x:,}' for x in w['rows_per_s_reps'])} "
            f"| {w['batch_p50_ms']} / {w['batch_p95_ms']} | {w['wal_bytes_per_row']:,} |"
        )
    lines += [
        "",
        "## Retention: the oldest whole month and the partial one before it (received "
        f"before {r['retention_bound']})",
        "",
        "| layout | how | rows | seconds | WAL MB |",
        "|---|---|---:|---:|---:|",
    ]
    for kind in names:
        s = r["retention"][kind]
        if kind == "single":
            lines.append(
                f"| {kind} | DELETE {s['DELETE s']} s + VACUUM {s['VACUUM s']} s | "
                f"{s['rows']:,} | {s['total s']} | "
                f"{s['DELETE WAL MB'] + s['VACUUM WAL MB']:.1f} |"
            )
        else:
            lines.append(
                f"| {kind} | DETACH PARTITION {s['DETACH s']} s + DROP TABLE {s['DROP s']} s "
                f"({len(s['partitions'])} partitions) | {s['rows']:,} | {s['total s']} | "
                f"{s['WAL MB']} |"
            )
    lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(out, r)


def plot(out: Path, r: dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(LAYOUTS)
    queries = list(r["reads"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [3, 1]})
    ax = axes[0]
    height = 0.8 / len(names)
    colors = ["#0b5cad", "#e08a00", "#2a9d55"]
    for j, kind in enumerate(names):
        ax.barh(
            [i + j * height for i in range(len(queries))],
            [r["reads"][q][kind]["p50_ms"] for q in queries],
            height=height,
            label=kind,
            color=colors[j],
        )
    ax.set_yticks([i + height for i in range(len(queries))], queries, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("p50 ms (log)")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.set_title("report reads by layout", fontsize=10)
    ax = axes[1]
    ax.bar(names, [r["ingest"][k]["rows_per_s_median"] for k in names], color=colors)
    ax.set_ylabel("insert_reports rows/s (median)")
    ax.set_title("ingest", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.partitioning.run",
        description=__doc__.split("\n")[0],
        epilog="With --reuse the 10M source data and copies built from them are kept; the "
        "copies are rebuilt after a run whose retention step removed a month from them.",
    )
    data.add_data_arguments(p, "bench_reports")
    p.add_argument("--rounds", type=int, default=5, help="read rounds per tenant (5)")
    p.add_argument("--heavy-rounds", type=int, default=2, help="rounds, 12-month count (2)")
    p.add_argument("--per-tenant", type=int, default=3, help="ids per tenant and read (3)")
    p.add_argument("--write-rows", type=int, default=20_000, help="rows per repetition (20,000)")
    p.add_argument("--write-reps", type=int, default=5, help="repetitions per layout (5)")
    p.add_argument("--batch", type=int, default=50, help="rows per insert statement (50)")
    p.add_argument("--out", default=str(RESULTS / "partitioning"))
    args = p.parse_args(argv)
    return data.run_and_write("bench.partitioning.run", args, argv, run, write)


if __name__ == "__main__":
    raise SystemExit(main())
