"""Index strategies for the report-side hot queries, on 10M reports over 1,000 tenants.

Three measurements, each against the schema's own indexes and the alternatives:

  a. ingest write cost: the service's `insert_reports` statement (bound parameters, one
     tenant's batch per statement and transaction, under RLS as civicpulse_app) into the
     10M-row table with each index set in place, cumulatively from the primary key alone to
     the full schema set, plus alternatives (BRIN on received_at, a non-partial idempotency
     index). Rows/s per repetition (median of --write-reps), batch latency p50/p95, and the
     pipeline's first update on the same rows (the claim's lease, then `finish_classified`),
     whose HOT share depends on which columns are indexed. Inserted rows are deleted and
     the table vacuumed after each set. Sets without a unique index on the idempotency key
     run the statement without its ON CONFLICT clause (it cannot be planned without one).
  b. the grouping candidate lookup (`open_issue_candidates`) on the issues table (one issue
     per API problem or imported record, ~6.3M, a realistic open share), each strategy the
     only non-key index on issues, with the probes (report, category, cell) and look-back a
     real batch of the tenant's newest 200 reports asks for (`grouping.search_for`, as
     `civicpulse.pipeline.group` computes them).
  c. the pipeline claim (`claim_reports`, the real SECURITY DEFINER function, rolled back
     after each call) and an issue's reports (`issue_reports`): partial vs full vs none.

Reads are timed for the largest 3 tenants and 17 sampled ones (p50/p95 over --rounds
rounds, first round dropped), under RLS as the service runs them. The data are built (or
reused with --reuse) by `bench.indexes.reports_data`; the schema's indexes are restored at
the end. Results: bench/results/reports_indexes.{md,json,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
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

from bench.indexes import reports_data as data
from bench.ingest.common import RESULTS, db_url, percentile
from civicpulse.db import issues as issues_repo
from civicpulse.engine.grouping import NEAREST

SET_TENANT = "SELECT set_config('civicpulse.tenant_id', $1, true)"
APP_ROLE = "civicpulse_app"

EXTRA_REPORT_INDEXES = {
    "x_idempotency_full": "CREATE UNIQUE INDEX x_idempotency_full ON reports "
    "(tenant_id, idempotency_key)",
    "x_brin_received": "CREATE INDEX x_brin_received ON reports USING brin (received_at)",
    "x_pending_full": "CREATE INDEX x_pending_full ON reports (state, received_at)",
    "x_issue_full": "CREATE INDEX x_issue_full ON reports (tenant_id, issue_id)",
}
REPORT_DDL = {**data.REPORT_INDEXES, **EXTRA_REPORT_INDEXES}
SCHEMA_SET = list(data.REPORT_INDEXES)
ARBITERS = {"reports_idempotency_key", "x_idempotency_full"}

# Cumulative where possible, so each step builds one index more.
WRITE_SETS: list[tuple[str, list[str]]] = [
    ("primary key only", []),
    ("pkey + BRIN (received_at) (alternative)", ["x_brin_received"]),
    ("pkey + reports_idempotency_key", ["reports_idempotency_key"]),
    ("+ reports_source_record", ["reports_idempotency_key", "reports_source_record"]),
    (
        "+ reports_pending",
        ["reports_idempotency_key", "reports_source_record", "reports_pending"],
    ),
    ("+ labels, needs_review, issue (= full schema set)", SCHEMA_SET),
    ("full schema set + BRIN (received_at)", [*SCHEMA_SET, "x_brin_received"]),
    ("full schema set, table fillfactor 85 (alternative)", SCHEMA_SET),
    (
        "full set, idempotency index non-partial",
        ["x_idempotency_full", *SCHEMA_SET[1:]],
    ),
    ("pkey + non-partial idempotency index", ["x_idempotency_full"]),
    ("primary key only (again: drift check)", []),
]


def _issue_ddl(name: str) -> str:
    return data.ISSUE_INDEXES[name].replace(f"INDEX {name} ON", "INDEX x ON")


CANDIDATE_STRATEGIES: dict[str, list[str]] = {
    "no index (primary key only)": [],
    "partial (tenant_id, cell) INCLUDE (last_reported) WHERE open (issues_open_cell)": [
        _issue_ddl("issues_open_cell")
    ],
    "partial (tenant_id, category, cell) INCLUDE (last_reported) WHERE open (before 0008)": [
        "CREATE INDEX x ON issues (tenant_id, category, cell) INCLUDE (last_reported) "
        "WHERE civicpulse_is_open(status)"
    ],
    "partial (tenant_id, category, cell) INCLUDE (last_reported, lat, lon, id) WHERE open "
    "(shipped)": [_issue_ddl("issues_open_category_cell")],
    "partial (tenant_id, category, cell, last_reported) WHERE open": [
        "CREATE INDEX x ON issues (tenant_id, category, cell, last_reported) "
        "WHERE civicpulse_is_open(status)"
    ],
    "non-partial (tenant_id, category, cell)": [
        "CREATE INDEX x ON issues (tenant_id, category, cell)"
    ],
    "BRIN (last_reported)": ["CREATE INDEX x ON issues USING brin (last_reported)"],
}

READ_SETS: dict[str, list[str]] = {
    "no index": [],
    "partial (shipped: reports_pending, reports_issue)": ["reports_pending", "reports_issue"],
    "non-partial (state, received_at), (tenant_id, issue_id)": [
        "x_pending_full",
        "x_issue_full",
    ],
}


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 0.5), 3),
        "p95_ms": round(percentile(ms, 0.95), 3),
    }


def q(name: str) -> str:
    from civicpulse.db.queries import q as named

    return named(name)


def insert_sql(with_arbiter: bool) -> str:
    sql = q("insert_reports")
    if with_arbiter:
        return sql
    stripped = re.sub(r"\nON CONFLICT \(tenant_id, idempotency_key\)[^\n]*\n", "\n", sql)
    assert stripped != sql, "insert_reports changed: update bench/indexes/reports.py"
    return stripped


async def report_indexes(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT indexrelname AS name, pg_relation_size(indexrelid) AS bytes "
        "FROM pg_stat_user_indexes WHERE relname = 'reports'"
    )
    return {r["name"]: r["bytes"] for r in rows}


async def apply_report_set(conn: asyncpg.Connection, names: list[str]) -> dict[str, float]:
    """Make `names` the only non-key indexes on reports; returns build seconds per index."""
    have = set(await report_indexes(conn)) - {"reports_pkey"}
    for name in have - set(names):
        await conn.execute(f"DROP INDEX {name}")
    built = {}
    for name in names:
        if name not in have:
            started = time.perf_counter()
            await conn.execute(REPORT_DDL[name])
            built[name] = round(time.perf_counter() - started, 1)
    return built


async def app_connect(url: str) -> asyncpg.Connection:
    """A connection as the service has one: the RLS-bound role set at connect time."""
    return await asyncpg.connect(url, server_settings={"role": APP_ROLE, "jit": "off"})


async def timed_tenant(
    conn: asyncpg.Connection, tenant: int, sql: str, args: tuple[Any, ...]
) -> tuple[float, int]:
    """One read under the tenant's RLS setting, as tenant_transaction runs it; (ms, rows)."""
    async with conn.transaction():
        await conn.execute(SET_TENANT, str(tenant))
        started = time.perf_counter()
        rows = await conn.fetch(sql, *args)
        return (time.perf_counter() - started) * 1000, len(rows)


async def plan_indexes(
    conn: asyncpg.Connection, tenant: int | None, sql: str, args: tuple[Any, ...]
) -> str:
    """Which indexes (or sequential scans) the plan uses, under RLS, rolled back."""
    tr = conn.transaction()
    await tr.start()
    try:
        if tenant is not None:
            await conn.execute(SET_TENANT, str(tenant))
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    finally:
        await tr.rollback()
    plan = json.loads(raw)[0]["Plan"]
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Index Name"):
            found.append(f"{node['Node Type']} {node['Index Name']}")
        elif node["Node Type"] == "Seq Scan":
            found.append(f"Seq Scan {node['Relation Name']}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return ", ".join(dict.fromkeys(found)) or "-"


# -- data for the measurements ----------------------------------------------------------------


async def pick_tenants(conn: asyncpg.Connection, seed: int) -> list[int]:
    by_size = [
        r["tenant_id"]
        for r in await conn.fetch(
            "SELECT tenant_id FROM reports GROUP BY tenant_id ORDER BY count(*) DESC"
        )
    ]
    return by_size[:3] + random.Random(seed).sample(by_size[3:], min(17, len(by_size) - 3))


async def candidate_batches(
    conn: asyncpg.Connection, tenants: list[int]
) -> dict[int, tuple[list[str], list[int], dt.datetime, int]]:
    """Per tenant: the probes and look-back of a batch of its newest 200
    classified reports, computed as civicpulse.pipeline.group does."""
    from civicpulse.db.tenants import default_taxonomy
    from civicpulse.engine import grouping

    kinds = {c.code: c.kind for c in default_taxonomy()}
    out = {}
    for t in tenants:
        rows = await conn.fetch(
            "SELECT lat, lon, category, extract(epoch FROM submitted_at)::float8 AS t "
            "FROM reports WHERE tenant_id = $1 AND category IS NOT NULL "
            "ORDER BY id DESC LIMIT 200",
            t,
        )
        reports = [
            grouping.Report(
                str(n),
                r["lat"],
                r["lon"],
                r["category"],
                kinds.get(r["category"], "other"),
                "",
                r["t"],
                2,
            )
            for n, r in enumerate(rows)
        ]
        # As pipeline/group.py: one probe per (report, joinable category, cell).
        search = grouping.search_for(reports, {})
        since = min(p.since for p in search.probes)
        out[t] = (search, dt.datetime.fromtimestamp(since, dt.UTC), len(rows))
    return out


async def sample_issues(
    conn: asyncpg.Connection, tenants: list[int], per_tenant: int, seed: int
) -> dict[int, list[uuid.UUID]]:
    """Issues with reports, picked at random points of each tenant's history (by id)."""
    rng = random.Random(seed)
    lo, hi = await conn.fetchrow("SELECT min(received_at), max(received_at) FROM reports")
    out: dict[int, list[uuid.UUID]] = {}
    for t in tenants:
        found: list[uuid.UUID] = []
        for _ in range(per_tenant * 3):
            at = lo + (hi - lo) * rng.random()
            bound = uuid.UUID(int=int(at.timestamp() * 1000) << 80)
            issue = await conn.fetchval(
                "SELECT issue_id FROM reports WHERE tenant_id = $1 AND id >= $2 "
                "AND issue_id IS NOT NULL ORDER BY id LIMIT 1",
                t,
                bound,
            )
            if issue is not None and issue not in found:
                found.append(issue)
            if len(found) == per_tenant:
                break
        out[t] = found
    return out


# -- b. the grouping candidate lookup ---------------------------------------------------------


async def drop_issue_indexes(conn: asyncpg.Connection) -> None:
    for name in [*data.ISSUE_INDEXES, "x"]:
        await conn.execute(f"DROP INDEX IF EXISTS {name}")


async def run_candidates(
    owner: asyncpg.Connection,
    app: asyncpg.Connection,
    tenants: list[int],
    batches: dict[int, Any],
    rounds: int,
) -> dict[str, Any]:
    sql = q("open_issue_candidates")
    out: dict[str, Any] = {}
    for name, ddl in CANDIDATE_STRATEGIES.items():
        await drop_issue_indexes(owner)
        started = time.perf_counter()
        for statement in ddl:
            await owner.execute(statement)
        build_s = time.perf_counter() - started
        await owner.execute("ANALYZE issues")
        size = await owner.fetchval("SELECT pg_relation_size('x')") if ddl else 0
        ms: list[float] = []
        ms_large: list[float] = []
        returned: list[int] = []
        for r in range(rounds + 1):
            for i, t in enumerate(tenants):
                search, _, _ = batches[t]
                args = (t, *issues_repo.candidate_args(search, NEAREST))
                took, n = await timed_tenant(app, t, sql, args)
                if r:
                    ms.append(took)
                    returned.append(n)
                    if i < 3:
                        ms_large.append(took)
        search, _, _ = batches[tenants[0]]
        args = (tenants[0], *issues_repo.candidate_args(search, NEAREST))
        plan = await plan_indexes(app, tenants[0], sql, args)
        out[name] = {
            **summary(ms),
            "largest3_p50_ms": round(percentile(ms_large, 0.5), 3),
            "largest3_p95_ms": round(percentile(ms_large, 0.95), 3),
            "candidates_mean": round(statistics.mean(returned), 1),
            "index_mb": round(size / 2**20, 1),
            "build_s": round(build_s, 1),
            "plan_largest": plan,
        }
        print(f"  {name}: {out[name]}", flush=True)
    return out


# -- c. claim scan and an issue's reports ----------------------------------------------------


async def time_claim(app: asyncpg.Connection, state: str, limit: int, rounds: int) -> list[float]:
    sql = q("claim_reports")
    ms = []
    for r in range(rounds + 1):
        tr = app.transaction()
        await tr.start()
        try:
            started = time.perf_counter()
            rows = await app.fetch(sql, state, "bench", dt.timedelta(minutes=5), limit)
            took = (time.perf_counter() - started) * 1000
        finally:
            await tr.rollback()
        assert len(rows) == limit, f"claimed {len(rows)} of {limit} {state} reports"
        if r:
            ms.append(took)
    return ms


async def run_reads(
    owner: asyncpg.Connection,
    app: asyncpg.Connection,
    tenants: list[int],
    issues: dict[int, list[uuid.UUID]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sql_issue = q("issue_reports")
    for name, names in READ_SETS.items():
        built = await apply_report_set(owner, names)
        await owner.execute("ANALYZE reports")
        sizes = await report_indexes(owner)
        slow = not names
        rounds = args.slow_rounds if slow else args.rounds
        res: dict[str, Any] = {"built_s": built}
        for state in ("received", "classified"):
            ms = await time_claim(app, state, args.claim_limit, rounds)
            pending_ix = [n for n in names if "pending" in n]
            res[f"claim {state}"] = {
                **summary(ms),
                "index_mb": round(sum(sizes[n] for n in pending_ix) / 2**20, 1),
                "plan": await plan_indexes(
                    owner,
                    None,
                    "SELECT p.tenant_id, p.id FROM reports p WHERE p.state = $1 "
                    "AND p.state IN ('received', 'classified') AND (p.lease_until IS NULL "
                    "OR p.lease_until < now()) ORDER BY p.received_at LIMIT $2 "
                    "FOR UPDATE SKIP LOCKED",
                    (state, args.claim_limit),
                ),
            }
        ms = []
        ms_large = []
        rows_seen = []
        per_tenant = 1 if slow else len(next(iter(issues.values())))
        for r in range((args.slow_rounds if slow else args.rounds) + 1):
            for i, t in enumerate(tenants):
                for issue in issues[t][:per_tenant]:
                    took, n = await timed_tenant(app, t, sql_issue, (t, issue))
                    if r:
                        ms.append(took)
                        rows_seen.append(n)
                        if i < 3:
                            ms_large.append(took)
        issue_ix = [n for n in names if "issue" in n]
        t0 = tenants[0]
        res["issue_reports"] = {
            **summary(ms),
            "largest3_p95_ms": round(percentile(ms_large, 0.95), 3),
            "reports_per_issue": round(statistics.mean(rows_seen), 2),
            "index_mb": round(sum(sizes[n] for n in issue_ix) / 2**20, 1),
            "plan": await plan_indexes(app, t0, sql_issue, (t0, issues[t0][0])),
        }
        out[name] = res
        print(f"  {name}: {res}", flush=True)
    return out


# -- a. ingest write cost ---------------------------------------------------------------------


class Batch:
    __slots__ = ("rows", "tenant")

    def __init__(self, tenant: int, rows: list[tuple[Any, ...]]) -> None:
        self.tenant = tenant
        self.rows = rows


def make_batches(tenant_sizes: list[tuple[int, int]], n: int, size: int, seed: int) -> list[Batch]:
    """n batches of `size` report bodies (bench.ingest.data), each one tenant's flush; a
    tenant is picked in proportion to its size. (keyed, text, lat, lon, address, channel,
    reporter, attributes, body_hash)"""
    from bench.ingest.data import load_la311, report_body

    rng = random.Random(seed)
    records = load_la311()
    ids = [t for t, _ in tenant_sizes]
    weights = [s for _, s in tenant_sizes]
    out = []
    for _ in range(n):
        tenant = rng.choices(ids, weights)[0]
        rows = []
        for _ in range(size):
            body = report_body(rng, rng.choice(records))
            raw = json.dumps(body, separators=(",", ":")).encode()
            keyed = rng.random() < data.KEYED_SHARE
            rows.append(
                (
                    keyed,
                    body["text"],
                    body["lat"],
                    body["lon"],
                    body["address"],
                    body["channel"],
                    json.dumps(body["reporter"]) if "reporter" in body else None,
                    json.dumps(body["attributes"]),
                    hashlib.sha256(raw).digest() if keyed else None,
                )
            )
        out.append(Batch(tenant, rows))
    return out


async def insert_batches(
    app: asyncpg.Connection, batches: list[Batch], sql: str
) -> tuple[float, list[float], list[tuple[int, list[str]]]]:
    """Insert every batch, one transaction each; (seconds, batch ms, ids per batch)."""
    lat: list[float] = []
    made: list[tuple[int, list[str]]] = []
    from civicpulse.ids import uuid7

    started = time.perf_counter()
    for b in batches:
        now = dt.datetime.now(dt.UTC)
        ids = [str(uuid7()) for _ in b.rows]
        args = (
            b.tenant,
            ids,
            [r[1] for r in b.rows],
            [r[2] for r in b.rows],
            [r[3] for r in b.rows],
            [r[4] for r in b.rows],
            [None] * len(b.rows),
            [now] * len(b.rows),
            [r[5] for r in b.rows],
            [r[6] for r in b.rows],
            [r[7] for r in b.rows],
            ["[]"] * len(b.rows),
            [str(uuid.uuid4()) if r[0] else None for r in b.rows],
            [r[8] for r in b.rows],
        )
        t0 = time.perf_counter()
        async with app.transaction():
            await app.execute(SET_TENANT, str(b.tenant))
            got = await app.fetch(sql, *args)
        lat.append((time.perf_counter() - t0) * 1000)
        if sql.find("RETURNING") >= 0:
            assert len(got) == len(ids)
        made.append((b.tenant, ids))
    return time.perf_counter() - started, lat, made


async def classify_updates(
    owner: asyncpg.Connection, app: asyncpg.Connection, made: list[tuple[int, list[str]]]
) -> dict[str, float]:
    """The pipeline's first two updates of fresh reports: the claim's lease (as the
    SECURITY DEFINER function does, by key) and finish_classified (under RLS)."""
    sql = q("finish_classified")
    before = await owner.fetchrow(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'reports'"
    )
    rows = 0
    wal_start = await owner.fetchval("SELECT pg_current_wal_lsn()::text")
    started = time.perf_counter()
    for tenant, ids in made:
        await owner.execute(
            "UPDATE reports SET lease_owner = 'bench', lease_until = now() + interval '5 min', "
            "attempts = attempts + 1 WHERE tenant_id = $1 AND id = ANY($2::uuid[])",
            tenant,
            ids,
        )
        n = len(ids)
        async with app.transaction():
            await app.execute(SET_TENANT, str(tenant))
            await app.execute(
                sql,
                tenant,
                ids,
                ["bulky_items"] * n,
                [2] * n,
                ['{"decided_by": "model", "model": "centroid-v1", "confidence": 0.8}'] * n,
                ["Couch on the curb"] * n,
                [""] * n,
                ["en"] * n,
                [i % 33 == 0 for i in range(n)],
                "bench",
            )
        rows += n
    seconds = time.perf_counter() - started
    wal = await owner.fetchval(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", wal_start
    )
    for conn in (owner, app):  # statistics reach the shared view when a backend is idle
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("SELECT 1")
    await asyncio.sleep(0.2)
    after = await owner.fetchrow(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'reports'"
    )
    upd = after["n_tup_upd"] - before["n_tup_upd"]
    hot = after["n_tup_hot_upd"] - before["n_tup_hot_upd"]
    return {
        "update_rows_per_s": round(rows / seconds),
        "update_wal_bytes_per_row": round(int(wal) / rows),
        "hot_pct": round(100 * hot / upd, 1) if upd else 0.0,
    }


async def run_writes(
    owner: asyncpg.Connection,
    app: asyncpg.Connection,
    args: argparse.Namespace,
) -> dict[str, Any]:
    sizes = [
        (r["tenant_id"], r["n"])
        for r in await owner.fetch(
            "SELECT tenant_id, count(*) AS n FROM reports GROUP BY tenant_id"
        )
    ]
    per_rep = max(1, args.write_rows // args.batch)
    batches = make_batches(sizes, per_rep * args.write_reps, args.batch, args.seed)
    out: dict[str, Any] = {}
    for name, names in WRITE_SETS:
        built = await apply_report_set(owner, names)
        # Free space on each page lets the pipeline's updates stay on the page (HOT) when
        # they change no indexed column; it applies to pages filled from now on.
        fillfactor = 85 if "fillfactor" in name else 100
        await owner.execute(f"ALTER TABLE reports SET (fillfactor = {fillfactor})")
        sql = insert_sql(bool(ARBITERS & set(names)))
        idx = await report_indexes(owner)
        # Every set starts right after a checkpoint, so each pays the same full-page writes
        # (the first change of a page after a checkpoint logs the whole page).
        await owner.execute("CHECKPOINT")
        wal_start = await owner.fetchval("SELECT pg_current_wal_lsn()::text")
        rates: list[float] = []
        lat: list[float] = []
        made_all: list[tuple[int, list[str]]] = []
        made: list[tuple[int, list[str]]] = []
        for rep in range(args.write_reps):
            chunk = batches[rep * per_rep : (rep + 1) * per_rep]
            seconds, ms, made = await insert_batches(app, chunk, sql)
            rates.append(per_rep * args.batch / seconds)
            lat += ms
            made_all += made
        wal = await owner.fetchval(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", wal_start
        )
        updates = await classify_updates(owner, app, made)
        started = time.perf_counter()
        await owner.execute(
            "DELETE FROM reports r USING unnest($1::bigint[], $2::uuid[]) AS d (tenant_id, id) "
            "WHERE r.tenant_id = d.tenant_id AND r.id = d.id",
            [t for t, ids in made_all for _ in ids],
            [i for _, ids in made_all for i in ids],
        )
        await owner.execute("VACUUM reports")
        cleanup_s = time.perf_counter() - started
        out[name] = {
            "indexes": names,
            "on_conflict": "ON CONFLICT" in sql,
            "rows_per_s_median": round(statistics.median(rates)),
            "rows_per_s_reps": [round(r) for r in rates],
            "batch_p50_ms": round(percentile(lat, 0.5), 2),
            "batch_p95_ms": round(percentile(lat, 0.95), 2),
            "wal_bytes_per_row": round(int(wal) / (per_rep * args.batch * args.write_reps)),
            **updates,
            "pkey_mb": round(idx["reports_pkey"] / 2**20, 1),
            "other_indexes_mb": round(
                sum(v for k, v in idx.items() if k != "reports_pkey") / 2**20, 1
            ),
            "index_mb": {k: round(v / 2**20, 1) for k, v in idx.items()},
            "built_s": built,
            "delete_and_vacuum_s": round(cleanup_s, 1),
        }
        print(f"  {name}: {out[name]}", flush=True)
    base = out[WRITE_SETS[0][0]]["rows_per_s_median"]
    base_upd = out[WRITE_SETS[0][0]]["update_rows_per_s"]
    base_wal = out[WRITE_SETS[0][0]]["wal_bytes_per_row"]
    for r in out.values():
        r["ratio_to_pkey_only"] = round(r["rows_per_s_median"] / base, 3)
        r["wal_ratio_to_pkey_only"] = round(r["wal_bytes_per_row"] / base_wal, 2)
        r["update_ratio_to_pkey_only"] = round(r["update_rows_per_s"] / base_upd, 3)
    return out


# -- the run --------------------------------------------------------------------------------


async def run(args: argparse.Namespace, meta: dict[str, Any]) -> dict[str, Any]:
    url = db_url(args.db)
    owner = await asyncpg.connect(url, server_settings={"jit": "off"})
    app = await app_connect(url)
    await owner.execute("SET synchronous_commit = off")
    await app.execute("SET synchronous_commit = off")
    results: dict[str, Any] = {}
    try:
        tenants = await pick_tenants(owner, args.seed)
        batches = await candidate_batches(owner, tenants)
        issues = await sample_issues(owner, tenants, args.issues_per_tenant, args.seed)
        results["open_share"] = round(
            await owner.fetchval("SELECT avg(civicpulse_is_open(status)::int)::float8 FROM issues"),
            4,
        )
        results["candidate_batch"] = {
            "probes_mean": round(statistics.mean(len(b[0].probes) for b in batches.values()), 1),
            "lookback_days_largest": round(
                (dt.datetime.now(dt.UTC) - batches[tenants[0]][1]).total_seconds() / 86400, 1
            ),
        }
        if "b" in args.parts:
            print("== b. open_issue_candidates (grouping)", flush=True)
            try:
                results["candidates"] = await run_candidates(
                    owner, app, tenants, batches, args.rounds
                )
            finally:
                await drop_issue_indexes(owner)
                for ddl in data.ISSUE_INDEXES.values():
                    await owner.execute(ddl)
                await owner.execute("ANALYZE issues")
        if "c" in args.parts:
            print("== c. claim_reports and issue_reports", flush=True)
            results["reads"] = await run_reads(owner, app, tenants, issues, args)
        if "a" in args.parts:
            print("== a. insert_reports write cost", flush=True)
            results["writes"] = await run_writes(owner, app, args)
        results["tenants_timed"] = len(tenants)
        return results
    finally:
        print("== restoring the schema's indexes", flush=True)
        await data.restore_schema_indexes(owner)
        await owner.execute("ALTER TABLE reports RESET (fillfactor)")
        await owner.execute("VACUUM (ANALYZE) reports")
        await data.check_schema_indexes(owner)
        await app.close()
        await owner.close()


# -- output ----------------------------------------------------------------------------------


def write(out: Path, result: dict[str, Any]) -> None:
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    d = result["data"]
    r = result["results"]
    lines = [
        "# Index strategies for the report-side hot queries",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Data: {d['reports']:,} reports and {d['issues']:,} issues over {d['tenants']:,} "
        f"tenants (largest {d['largest_tenant_reports']:,} reports, median "
        f"{d['median_tenant_reports']:,}), {d['days']} days of history; "
        f"{d['imported']:,} imported, {d['keyed']:,} with an idempotency key, "
        f"{d['pending']:,} pending, {d['labelled']:,} labelled, {d['needs_review']:,} "
        f"flagged for review; {100 * r['open_share']:.1f}% of issues open. "
        f"Loaded by {d['loaded_by']} "
        + ("(reused from an earlier run)." if d.get("reused") else f"in {d['seconds']} seconds."),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in result["context"].items()],
        "",
    ]
    if "writes" in r:
        base = next(iter(r["writes"].values()))
        lines += [
            "## a. Ingest write cost (`insert_reports`, 10M-row table)",
            "",
            f"{result['args']['write_reps']} repetitions of {result['args']['write_rows']:,} "
            f"rows in batches of {result['args']['batch']} (one tenant per batch, "
            "tenants drawn by size, one transaction per batch, under RLS as "
            "civicpulse_app, `synchronous_commit = off` so that the commit's fsync, the same "
            "for every index set and this machine's noisiest part, does not drown the index "
            "cost). Each set starts right after a CHECKPOINT. WAL B/row is the WAL written "
            "per inserted row (robust to CPU noise; rows/s is not, on this shared machine). "
            "Update = the claim's lease plus `finish_classified` on the last "
            "repetition's rows. Ratios are against the first row, measured in the same run; "
            "the last row repeats it to show drift.",
            "",
            "| index set | ON CONFLICT | rows/s (median) | ratio | reps rows/s | batch p50 / "
            "p95 ms | WAL B/row | ratio | update rows/s | ratio | update WAL B/row | HOT % | "
            "non-key index MB |",
            "|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, w in r["writes"].items():
            lines.append(
                f"| {name} | {'yes' if w['on_conflict'] else 'no'} | "
                f"{w['rows_per_s_median']:,} | {w['ratio_to_pkey_only']:.2f} | "
                f"{', '.join(f'{x:,}' for x in w['rows_per_s_reps'])} | "
                f"{w['batch_p50_ms']} / {w['batch_p95_ms']} | {w['wal_bytes_per_row']:,} | "
                f"{w['wal_ratio_to_pkey_only']:.2f} | {w['update_rows_per_s']:,} | "
                f"{w['update_ratio_to_pkey_only']:.2f} | {w['update_wal_bytes_per_row']:,} | "
                f"{w['hot_pct']} | {w['other_indexes_mb']:,} |"
            )
        sizes: dict[str, float] = {}
        built: dict[str, float] = {}
        for w in r["writes"].values():
            sizes.update(w["index_mb"])
            built.update(w["built_s"])
        lines += [
            "",
            f"Primary key: {base['pkey_mb']:,} MB. Index sizes and build times on the "
            "10M-row table:",
            "",
            "| index | MB | build s |",
            "|---|---:|---:|",
            *[
                f"| {k} | {v:,} | {built.get(k, '-')} |"
                for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])
            ],
            "",
        ]
    if "candidates" in r:
        cb = r["candidate_batch"]
        lines += [
            "## b. Grouping candidate lookup (`open_issue_candidates`)",
            "",
            f"Each strategy is the only non-key index on `issues` ({d['issues']:,} issues, "
            f"{100 * r['open_share']:.1f}% open). Per tenant, the probes (report, category, "
            f"cell) of its newest 200 classified reports (mean {cb['probes_mean']}) and the "
            f"look-back grouping asks for ({cb['lookback_days_largest']} days for the "
            "largest tenant).",
            "",
            "| strategy | p50 ms | p95 ms | largest 3 p50 / p95 ms | candidates | index MB | "
            "build s | plan (largest tenant) |",
            "|---|---:|---:|---|---:|---:|---:|---|",
        ]
        for name, c in r["candidates"].items():
            lines.append(
                f"| {name} | {c['p50_ms']} | {c['p95_ms']} | {c['largest3_p50_ms']} / "
                f"{c['largest3_p95_ms']} | {c['candidates_mean']} | {c['index_mb']} | "
                f"{c['build_s']} | {c['plan_largest']} |"
            )
        lines.append("")
    if "reads" in r:
        lines += [
            "## c. Claim scan and an issue's reports",
            "",
            f"`claim_reports` ({result['args']['claim_limit']} rows, the real function, "
            "rolled back after each call) and `issue_reports` (an issue's reports, "
            f"{result['args']['issues_per_tenant']} issues per timed tenant; 1 issue and "
            f"{result['args']['slow_rounds']} rounds without an index).",
            "",
            "| strategy | query | p50 ms | p95 ms | index MB | plan |",
            "|---|---|---:|---:|---:|---|",
        ]
        for name, res in r["reads"].items():
            for query in ("claim received", "claim classified", "issue_reports"):
                x = res[query]
                lines.append(
                    f"| {name} | {query} | {x['p50_ms']} | {x['p95_ms']} | {x['index_mb']} | "
                    f"{x['plan']} |"
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
    panels = [k for k in ("writes", "candidates", "reads") if k in r]
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.6 * len(panels)), squeeze=False)
    for ax, key in zip(axes[:, 0], panels, strict=True):
        if key == "writes":
            names = list(r["writes"])
            ys = range(len(names))
            ax.barh(
                [y - 0.2 for y in ys],
                [r["writes"][n]["wal_bytes_per_row"] for n in names],
                height=0.4,
                color="#0b5cad",
                label="insert WAL bytes/row (bottom axis)",
            )
            ax.set_yticks(list(ys), names)
            ax.set_xlabel("insert WAL bytes per row")
            top = ax.twiny()
            top.barh(
                [y + 0.2 for y in ys],
                [r["writes"][n]["rows_per_s_median"] for n in names],
                height=0.4,
                color="#e08a00",
                label="rows/s, median (top axis)",
            )
            top.set_xlabel("insert_reports rows/s (median; CPU-noisy)")
            ax.legend(fontsize=7, loc="center right")
            top.legend(fontsize=7, loc="upper right")
            ax.set_title("a. ingest write cost per index set", fontsize=10, pad=28)
        elif key == "candidates":
            names = list(r["candidates"])
            ax.barh(names, [r["candidates"][n]["p95_ms"] for n in names], color="#0b5cad")
            ax.set_xscale("log")
            ax.set_xlabel("p95 ms (log)")
            ax.set_title("b. open_issue_candidates", fontsize=10)
        else:
            labels, values = [], []
            for name, res in r["reads"].items():
                for query in ("claim received", "issue_reports"):
                    labels.append(f"{query}: {name}")
                    values.append(res[query]["p95_ms"])
            ax.barh(labels, values, color="#0b5cad")
            ax.set_xscale("log")
            ax.set_xlabel("p95 ms (log)")
            ax.set_title("c. claim scan and issue_reports", fontsize=10)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.indexes.reports",
        description=__doc__.split("\n")[0],
        epilog="Builds --db (10M reports: about 6 minutes) unless --reuse finds it.",
    )
    data.add_data_arguments(p, "bench_reports")
    p.add_argument("--parts", default="abc", help="which measurements: a, b, c (abc)")
    p.add_argument("--rounds", type=int, default=5, help="read rounds per tenant (5)")
    p.add_argument(
        "--slow-rounds", type=int, default=2, help="rounds for strategies without an index (2)"
    )
    p.add_argument("--issues-per-tenant", type=int, default=3, help="issue_reports issues (3)")
    p.add_argument("--claim-limit", type=int, default=200, help="claim batch (200, as shipped)")
    p.add_argument("--write-rows", type=int, default=20_000, help="rows per repetition (20,000)")
    p.add_argument("--write-reps", type=int, default=5, help="repetitions per index set (5)")
    p.add_argument("--batch", type=int, default=50, help="rows per insert statement (50)")
    p.add_argument("--out", default=str(RESULTS / "reports_indexes"))
    args = p.parse_args(argv)
    return data.run_and_write("bench.indexes.reports", args, argv, run, write)


if __name__ == "__main__":
    raise SystemExit(main())
