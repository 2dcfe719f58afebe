"""Ten million reports over a thousand tenants, shared by the report-side benchmarks.

Used by `bench.indexes.reports` and `bench.partitioning.run`. The database (default
bench_reports) is made with the project's own migrations; tenants are created with the
tenant repository (each gets the default taxonomy). Then, as the table owner (the schema
enables but does not FORCE row-level security, so the owner is not subject to it), one
`INSERT ... SELECT` per day of the last --days writes that day's issues and their reports:

  * tenant sizes from `civicpulse.seed.tenant_sizes` (tenant r holds a share proportional to
    1/(r+1): the largest about 13%, the median about 0.03%);
  * every issue is a real LA 311 record (its category, location jittered by up to ~50 m, its
    time of day and its time to close, moved to that day); texts are the resident-style
    texts of `bench.ingest.data`;
  * 20% of issues were imported (one report each, state 'imported', source ids, import
    labels); the others came through the API and were grouped: 1 + floor(Exp(1)) reports
    each (63% one report, mean 1.58), arriving after the first within three days, 30% with an
    idempotency key and body hash, 3% flagged for review, 1% corrected by staff;
  * an issue is closed when its record's time to close has passed, otherwise open
    (new/triaged/assigned/in_progress); ids are UUIDv7 of the issue's opening and of the
    report's arrival, so ids are time-ordered as the service makes them;
  * the newest --pending reports are left unfinished (half 'received', half 'classified',
    no issue yet), as the pipeline's backlog.

The load runs with `session_replication_role = replica` (no trigger: no foreign-key checks,
no rollup marking; the data are consistent by construction) and with the non-key indexes of
`reports` and `issues` dropped, which are rebuilt exactly as the migrations define them
afterwards; then VACUUM ANALYZE (autovacuum is off on this server). A `bench_meta` table
remembers the parameters so that `--reuse` can skip all of it.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from bench.ingest.common import PG_ADMIN_URL, db_url, print_context, psql, reset_database
from bench.ingest.data import LA311, load_la311, report_body

MEAN_EXTRA = 1.0  # reports of an API issue: 1 + floor(Exp(mean MEAN_EXTRA))
IMPORTED_SHARE = 0.2
KEYED_SHARE = 0.3
REVIEW_SHARE = 0.03
STAFF_LABEL_SHARE = 0.01
ZONE = "America/Los_Angeles"

# The schema's non-key indexes on reports and on issues, as the migrations define them
# (checked against the database after migrating, so a schema change shows up here).
REPORT_INDEXES = {
    "reports_idempotency_key": "CREATE UNIQUE INDEX reports_idempotency_key ON public.reports "
    "USING btree (tenant_id, idempotency_key) WHERE (idempotency_key IS NOT NULL)",
    "reports_source_record": "CREATE UNIQUE INDEX reports_source_record ON public.reports "
    "USING btree (tenant_id, source, source_id) WHERE (source_id IS NOT NULL)",
    "reports_pending": "CREATE INDEX reports_pending ON public.reports USING btree "
    "(state, received_at) WHERE (state = ANY (ARRAY['received'::text, 'classified'::text]))",
    "reports_labels": "CREATE INDEX reports_labels ON public.reports USING btree "
    "(tenant_id, id) WHERE (label_source IS NOT NULL)",
    "reports_needs_review": "CREATE INDEX reports_needs_review ON public.reports USING btree "
    "(tenant_id, received_at) WHERE needs_review",
    "reports_issue": "CREATE INDEX reports_issue ON public.reports USING btree "
    "(tenant_id, issue_id) WHERE (issue_id IS NOT NULL)",
}
ISSUE_INDEXES = {
    "issues_open_cell": "CREATE INDEX issues_open_cell ON public.issues USING btree "
    "(tenant_id, cell) INCLUDE (last_reported) WHERE civicpulse_is_open(status)",
    "issues_open_category_cell": "CREATE INDEX issues_open_category_cell ON public.issues "
    "USING btree (tenant_id, category, cell) INCLUDE (last_reported, lat, lon, id) "
    "WHERE civicpulse_is_open(status)",
    "issues_list": "CREATE INDEX issues_list ON public.issues USING btree "
    "(tenant_id, opened_at DESC, id DESC)",
    "issues_resolution_due": "CREATE INDEX issues_resolution_due ON public.issues USING btree "
    "(tenant_id, resolution_due_at) WHERE ((resolution_due_at IS NOT NULL) AND "
    "civicpulse_is_open(status))",
    "issues_opened": "CREATE INDEX issues_opened ON public.issues USING btree "
    "(tenant_id, opened_at) INCLUDE (category, area, team, status)",
    "issues_resolved": "CREATE INDEX issues_resolved ON public.issues USING btree "
    "(tenant_id, resolved_at) WHERE (resolved_at IS NOT NULL)",
}

# A UUIDv7 for a given instant: civicpulse_uuid7()'s construction with `ts` in place of
# clock_timestamp(), so generated history has ids of its own time.
BENCH_UUID7 = """
CREATE OR REPLACE FUNCTION bench_uuid7(ts timestamptz) RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM ts) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$"""

# One day of history: that day's issues of every tenant, then their reports in arrival
# order. $1 tenant ids, $2 issues per day per tenant, $3 the local day, $4 now, $5 the
# sample's size.
DAY_SQL = f"""
WITH base AS MATERIALIZED (
    SELECT t.id AS tenant_id, floor(random() * $5)::int AS si, random() < {IMPORTED_SHARE}
           AS imported, random() AS u_status, random() AS u_k, random() AS u_vis,
           random() AS u_t
      FROM unnest($1::bigint[], $2::float8[]) AS t (id, rate),
           LATERAL generate_series(1, floor(t.rate + random())::int) AS g
), iss AS MATERIALIZED (
    SELECT b.tenant_id, b.imported, s.text, s.address, s.category, s.kind, s.channel,
           s.requesttype, s.close_after, o.opened, bench_uuid7(o.opened) AS issue_id,
           s.lat + (random() - 0.5) * 0.001 AS lat, s.lon + (random() - 0.5) * 0.001 AS lon,
           CASE WHEN b.imported THEN 1
                ELSE LEAST(200, 1 + floor(-ln(1 - b.u_k) * {MEAN_EXTRA})::int) END AS k,
           b.u_status, b.u_vis
      FROM base b
      JOIN bench_sample s ON s.i = b.si
     CROSS JOIN LATERAL (SELECT ($3::date::timestamp AT TIME ZONE '{ZONE}')
                                + make_interval(mins => s.minute_of_day)
                                + b.u_t * interval '60 seconds' AS opened) AS o
     WHERE o.opened <= $4
), rep AS MATERIALIZED (
    SELECT i.*, j, r.submitted, r.submitted + random() * interval '2 seconds' AS received,
           random() < {KEYED_SHARE} AS kr
      FROM iss i
     CROSS JOIN LATERAL generate_series(1, i.k) AS j
     CROSS JOIN LATERAL (SELECT CASE WHEN j = 1 THEN i.opened
                                     ELSE i.opened + random() * interval '3 days' END
                                AS submitted) AS r
     WHERE r.submitted <= $4 - interval '2 seconds'
), agg AS (
    SELECT issue_id, count(*) AS n, max(submitted) AS last FROM rep GROUP BY issue_id
), made AS (
    INSERT INTO issues (tenant_id, id, status, category, kind, severity, title,
                        representative_text, lat, lon, cell, report_count, first_reported,
                        last_reported, opened_at, closed_at, resolved_at, sla_started_at,
                        visibility, created_at, updated_at)
    SELECT i.tenant_id, i.issue_id,
           CASE WHEN i.close_after IS NOT NULL AND i.opened + i.close_after <= $4 THEN 'closed'
                ELSE (ARRAY['new', 'triaged', 'assigned', 'in_progress'])
                     [1 + floor(i.u_status * 4)::int] END,
           i.category, i.kind, 1 + floor(random() * 4)::int, left(i.text, 120), i.text, i.lat,
           i.lon, civicpulse_cell(i.lat, i.lon), a.n, i.opened, a.last, i.opened,
           CASE WHEN i.opened + i.close_after <= $4 THEN i.opened + i.close_after END,
           CASE WHEN i.opened + i.close_after <= $4 THEN i.opened + i.close_after END,
           i.opened, CASE WHEN i.u_vis < 0.9 THEN 'public' ELSE 'private' END, i.opened,
           a.last
      FROM iss i JOIN agg a USING (issue_id)
)
INSERT INTO reports (tenant_id, id, text, lat, lon, address, requested_category, submitted_at,
                     received_at, channel, reporter, attributes, idempotency_key, body_hash,
                     source, source_id, state, category, severity, classification, issue_id,
                     processed_at, language, needs_review, label_source, grouping)
SELECT r.tenant_id, bench_uuid7(r.received), r.text,
       r.lat + (random() - 0.5) * 0.0006, r.lon + (random() - 0.5) * 0.0006, r.address, NULL,
       r.submitted, r.received,
       CASE WHEN r.imported THEN r.channel
            ELSE (ARRAY['api', 'mobile', 'web'])[1 + floor(random() * 3)::int] END,
       CASE WHEN NOT r.imported AND random() < 0.6
            THEN jsonb_build_object('name', 'Resident', 'email', 'resident@example.org') END,
       jsonb_build_object('la_request_type', r.requesttype),
       CASE WHEN NOT r.imported AND r.kr THEN gen_random_uuid()::text END,
       CASE WHEN NOT r.imported AND r.kr
            THEN decode(md5(random()::text) || md5(random()::text), 'hex') END,
       CASE WHEN r.imported THEN 'la311' END,
       CASE WHEN r.imported THEN r.issue_id::text END,
       CASE WHEN r.imported THEN 'imported' ELSE 'grouped' END,
       r.category, 1 + floor(random() * 4)::int,
       CASE WHEN r.imported THEN '{{"decided_by": "import"}}'::jsonb
            ELSE '{{"decided_by": "model", "model": "centroid-v1", "confidence": 0.81}}'::jsonb
       END,
       r.issue_id, r.received + interval '1 second', 'en',
       NOT r.imported AND random() < {REVIEW_SHARE},
       CASE WHEN r.imported THEN 'import'
            WHEN random() < {STAFF_LABEL_SHARE} THEN 'staff' END,
       CASE WHEN NOT r.imported THEN jsonb_build_object('rule', 'score', 'created', r.j = 1,
                                                        'by', 'bench') END
  FROM rep r
 ORDER BY r.received
"""


def mean_reports_per_issue() -> float:
    extra = 1 / (math.exp(1 / MEAN_EXTRA) - 1)  # E[floor(Exp(mean m))]
    return IMPORTED_SHARE + (1 - IMPORTED_SHARE) * (1 + extra)


def sample_rows(seed: int) -> list[tuple[Any, ...]]:
    """The LA sample as (i, text, lat, lon, address, category, kind, channel, minute of day,
    time to close, request type), three resident-style texts per record."""
    from civicpulse.db.tenants import default_taxonomy

    kinds = {c.code: c.kind for c in default_taxonomy()}
    closed: dict[str, dt.datetime | None] = {}
    with Path(LA311).open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            value = (row.get("closeddate") or "").strip()
            closed[row["srnumber"].strip()] = (
                dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC) if value else None
            )
    rng = random.Random(seed)
    out: list[tuple[Any, ...]] = []
    for rec in load_la311():
        created = rec.created.replace(tzinfo=dt.UTC)  # both columns are naive local times
        end = closed.get(rec.srnumber)
        close_after = None if end is None else max(end - created, dt.timedelta())
        for _ in range(3):
            body = report_body(rng, rec)
            out.append(
                (
                    len(out),
                    body["text"],
                    rec.lat,
                    rec.lon,
                    rec.address,
                    rec.category,
                    kinds.get(rec.category, "other"),
                    rec.channel,
                    rec.created.hour * 60 + rec.created.minute,
                    close_after,
                    rec.requesttype,
                )
            )
    return out


async def check_schema_indexes(conn: asyncpg.Connection) -> None:
    """Fail loudly when the migrations define other indexes than the ones listed here."""
    rows = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename IN ('reports', 'issues') AND indexname NOT LIKE '%pkey'"
    )
    found = {r["indexname"]: r["indexdef"] for r in rows}
    expected = {**REPORT_INDEXES, **ISSUE_INDEXES}
    if found != expected:
        raise RuntimeError(
            f"schema indexes differ from bench/indexes/reports_data.py: found {found}, "
            f"expected {expected}"
        )


async def restore_schema_indexes(conn: asyncpg.Connection) -> None:
    """Drop every non-key index on reports and issues, then build the schema's."""
    rows = await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename IN ('reports', 'issues') AND indexname NOT LIKE '%pkey'"
    )
    have = {r["indexname"] for r in rows}
    for name in have - set(REPORT_INDEXES) - set(ISSUE_INDEXES):
        await conn.execute(f"DROP INDEX {name}")
    for name, ddl in {**REPORT_INDEXES, **ISSUE_INDEXES}.items():
        if name not in have:
            await conn.execute(ddl)


async def read_meta(url: str) -> dict[str, Any] | None:
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        if not await conn.fetchval("SELECT to_regclass('bench_meta') IS NOT NULL"):
            return None
        raw = await conn.fetchval("SELECT data FROM bench_meta")
        return json.loads(raw) if raw else None
    finally:
        await conn.close()


async def build(url: str, args: Any) -> dict[str, Any]:
    """Migrate, create tenants, generate the history, index, vacuum; returns the meta."""
    from civicpulse.db import migrate
    from civicpulse.db import tenants as tenants_repo
    from civicpulse.seed import tenant_sizes

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    await migrate.migrate(url, None)
    conn = await asyncpg.connect(url)
    try:
        await check_schema_indexes(conn)
        ids = []
        for i in range(args.tenants):
            t = await tenants_repo.create_tenant(conn, f"rep-{i:04d}", f"City {i}", ZONE)
            ids.append(t.id)
        seconds["migrate_and_tenants"] = time.perf_counter() - started

        await conn.execute(BENCH_UUID7)
        await conn.execute(
            "CREATE TABLE bench_sample (i int PRIMARY KEY, text text, lat float8, lon float8, "
            "address text, category text, kind text, channel text, minute_of_day int, "
            "close_after interval, requesttype text)"
        )
        sample = sample_rows(args.seed)
        await conn.copy_records_to_table("bench_sample", records=sample)
        await conn.execute("ANALYZE bench_sample")
        for name in [*REPORT_INDEXES, *ISSUE_INDEXES]:
            await conn.execute(f"DROP INDEX {name}")

        sizes = tenant_sizes(args.tenants, args.reports)
        per_issue = mean_reports_per_issue()
        rates = [n / (args.days * per_issue) for n in sizes]
        now = await conn.fetchval("SELECT now()")
        today = now.astimezone(dt.UTC).date()
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("SET jit = off")  # compiling each day's statement costs ~1 s
        await conn.execute(f"SELECT setseed({(args.seed % 1000) / 1000})")
        started = time.perf_counter()
        made = 0
        for back in range(args.days - 1, -1, -1):
            day = today - dt.timedelta(days=back)
            status = await conn.execute(DAY_SQL, ids, rates, day, now, len(sample))
            made += int(status.split()[-1])
            if back % 30 == 0:
                rate = made / (time.perf_counter() - started)
                print(f"  {day}: {made:,} reports ({rate:,.0f} rows/s)", flush=True)
        seconds["generate"] = time.perf_counter() - started
        await conn.execute("RESET session_replication_role")

        # The pipeline's backlog: the newest reports, not yet classified or grouped.
        started = time.perf_counter()
        await conn.execute(
            """
            UPDATE reports r
               SET state = CASE WHEN p.received THEN 'received' ELSE 'classified' END,
                   category = CASE WHEN p.received THEN NULL ELSE r.category END,
                   severity = CASE WHEN p.received THEN NULL ELSE r.severity END,
                   classification = CASE WHEN p.received THEN NULL ELSE r.classification END,
                   issue_id = NULL, grouping = NULL, processed_at = NULL, label_source = NULL,
                   needs_review = false
              FROM (SELECT tenant_id, id, random() < 0.5 AS received FROM reports
                     WHERE state = 'grouped' ORDER BY received_at DESC LIMIT $1) AS p
             WHERE r.tenant_id = p.tenant_id AND r.id = p.id
            """,
            args.pending,
        )
        seconds["pending"] = time.perf_counter() - started

        started = time.perf_counter()
        for ddl in [*REPORT_INDEXES.values(), *ISSUE_INDEXES.values()]:
            await conn.execute(ddl)
        seconds["indexes"] = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) reports")
        await conn.execute("VACUUM (ANALYZE) issues")
        seconds["vacuum_analyze"] = time.perf_counter() - started
        await check_schema_indexes(conn)

        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM reports) AS reports, "
            "(SELECT count(*) FROM issues) AS issues, "
            "(SELECT count(*) FROM issues WHERE civicpulse_is_open(status)) AS open_issues, "
            "(SELECT count(*) FROM reports WHERE idempotency_key IS NOT NULL) AS keyed, "
            "(SELECT count(*) FROM reports WHERE state = 'imported') AS imported, "
            "(SELECT count(*) FROM reports WHERE state IN ('received', 'classified')) "
            "AS pending, "
            "(SELECT count(*) FROM reports WHERE label_source IS NOT NULL) AS labelled, "
            "(SELECT count(*) FROM reports WHERE needs_review) AS needs_review"
        )
        largest = await conn.fetchval(
            "SELECT count(*) FROM reports GROUP BY tenant_id ORDER BY 1 DESC LIMIT 1"
        )
        meta = {
            "tenants": args.tenants,
            "reports_target": args.reports,
            "days": args.days,
            "seed": args.seed,
            "pending_target": args.pending,
            **dict(counts),
            "largest_tenant_reports": largest,
            "median_tenant_reports": sorted(sizes)[len(sizes) // 2],
            "reports_per_issue": round(counts["reports"] / counts["issues"], 3),
            "built_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "loaded_by": "INSERT ... SELECT per day as the table owner (RLS not forced), "
            "session_replication_role=replica, non-key indexes built after",
        }
        await conn.execute("CREATE TABLE bench_meta (data text)")
        await conn.execute("INSERT INTO bench_meta VALUES ($1)", json.dumps(meta, default=str))
        return meta
    finally:
        await conn.close()


async def ensure(args: Any) -> dict[str, Any]:
    """The data of an earlier run with the same parameters (--reuse), or freshly built."""
    url = db_url(args.db)
    if args.reuse:
        meta = await read_meta(url)
        if meta and (
            meta["tenants"],
            meta["reports_target"],
            meta["days"],
            meta["seed"],
            meta["pending_target"],
        ) == (args.tenants, args.reports, args.days, args.seed, args.pending):
            print(f"== reusing {args.db} (built {meta['built_utc']})", flush=True)
            conn = await asyncpg.connect(url)
            try:
                # An interrupted run may have left its inserts, other indexes or settings.
                built = dt.datetime.strptime(meta["built_utc"], "%Y-%m-%d %H:%M:%S UTC")
                status = await conn.execute(
                    "DELETE FROM reports WHERE received_at > $1", built.replace(tzinfo=dt.UTC)
                )
                await restore_schema_indexes(conn)
                await conn.execute("ALTER TABLE reports RESET (fillfactor)")
                if status != "DELETE 0":
                    print(f"  removed rows an interrupted run left: {status}", flush=True)
                    await conn.execute("VACUUM (ANALYZE) reports")
            finally:
                await conn.close()
            return {**meta, "reused": True}
    print(
        f"== generating {args.reports:,} reports over {args.tenants:,} tenants in {args.db}",
        flush=True,
    )
    reset_database(PG_ADMIN_URL, args.db)
    meta = await build(url, args)
    print(f"  {meta}", flush=True)
    return {**meta, "reused": False}


def add_data_arguments(p: Any, default_db: str) -> None:
    """The data options both report benchmarks take."""
    p.add_argument("--db", default=default_db, help=f"database to build or reuse ({default_db})")
    p.add_argument("--reports", type=int, default=10_000_000, help="reports (10,000,000)")
    p.add_argument("--tenants", type=int, default=1000, help="tenants (1000)")
    p.add_argument("--days", type=int, default=365, help="history spread over days (365)")
    p.add_argument(
        "--pending", type=int, default=20_000, help="unfinished reports, the backlog (20,000)"
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--reuse",
        action="store_true",
        help="keep --db when it holds data built with the same options (skips generation)",
    )


def table_sizes(db: str, tables: list[str]) -> dict[str, float]:
    """Total size (heap + indexes + TOAST) of each table, in MB."""
    url = db_url(db)
    out = {}
    for t in tables:
        size = psql(url, f"SELECT pg_total_relation_size('{t}')")
        out[t] = round(int(size) / 2**20, 1)
    return out


def context() -> dict[str, Any]:
    """bench.ingest.common.machine_context, without wrk (not needed here, maybe absent),
    plus the planner and maintenance settings these benchmarks depend on."""
    import os
    import platform
    import shutil

    from bench.ingest import common

    if shutil.which("wrk"):
        ctx: dict[str, Any] = common.machine_context(PG_ADMIN_URL)
    else:
        pg = db_url("postgres", PG_ADMIN_URL)
        mem_kb = int(common._first("/proc/meminfo", "MemTotal").split()[0] or 0)
        ctx = {
            "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "cpu_model": common._first("/proc/cpuinfo", "model name"),
            "nproc": os.cpu_count(),
            "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "postgresql": psql(pg, "SELECT version()").split(" on ")[0],
            "postgresql_settings": psql(
                pg,
                "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' "
                "ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers', "
                "'synchronous_commit', 'fsync', 'wal_level', 'max_wal_size', "
                "'commit_delay', 'full_page_writes')",
            ),
            "packages": ", ".join(
                f"{m} {common._version(m)}" for m in ("civicpulse", "asyncpg", "msgspec")
            ),
        }
    ctx.update(common.git_state())
    ctx["postgresql_more_settings"] = psql(
        db_url("postgres", PG_ADMIN_URL),
        "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name) "
        "FROM pg_settings WHERE name IN ('jit', 'work_mem', 'maintenance_work_mem', "
        "'effective_cache_size', 'random_page_cost', 'autovacuum', "
        "'max_parallel_workers_per_gather', 'checkpoint_timeout')",
    )
    ctx["load_1_5_15"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return ctx


def run_and_write(
    prog: str,
    args: Any,
    argv: list[str] | None,
    run: Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]],
    write: Callable[[Path, dict[str, Any]], None],
) -> int:
    """A benchmark's main after its arguments: context, data, run, result files."""
    ctx = context()
    print_context(ctx)
    started = time.perf_counter()
    meta = asyncio.run(ensure(args))
    results = asyncio.run(run(args, meta))
    result = {
        "command": f"python -m {prog} " + " ".join(sys.argv[1:] if argv is None else argv),
        "context": ctx,
        "args": vars(args),
        "data": meta,
        "results": results,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    write(Path(args.out), result)
    print(f"wrote {args.out}.md, .json and .png ({result['wall_s']} s)")
    return 0
