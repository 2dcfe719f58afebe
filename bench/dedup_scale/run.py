"""Grouping throughput against a real PostgreSQL with 10k, 100k and 1M open issues.

    .venv/bin/python -m bench.dedup_scale.run                  # 10k -> 100k -> 1M
    .venv/bin/python -m bench.dedup_scale.run --levels 10000 --reports 1000   # quick try
    .venv/bin/python -m bench.dedup_scale.run --help

What it does: drops and recreates a scratch database, runs `civicpulse migrate` and
`civicpulse tenant create` against it, seeds open issues as the owner with one
INSERT ... SELECT generate_series (locations around real LA 311 record locations, or uniform
over the LA box; categories in the real LA+SF mix; resident-style texts; last report within
the last 4 days), VACUUM ANALYZE, then at each level inserts N reports in state 'classified'
leased to this process and groups them with the service's own stage code
(`civicpulse.pipeline.group.group_claim`, claims of 200, a ProcessPoolExecutor(2) with the
forkserver context, an app-role asyncpg pool from `civicpulse.db.pool.create_pool`),
`--concurrency` claims at a time (the service runs one group task per pool process).
Issues are added between levels in the same database (10k -> 100k -> 1M). The repository
calls inside group_claim are wrapped (benchmark-side) to time each step and count the
candidate rows. At the largest level the candidate query is run under
EXPLAIN (ANALYZE, BUFFERS) as the app role, with the cells of a real claim.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from bench.dedup_quality import dataset as ds_mod
from bench.dedup_quality.context import (
    RESULTS,
    load_average,
    machine_context,
    print_context,
)
from civicpulse import workflow
from civicpulse.config import Settings
from civicpulse.db import issues as issues_repo
from civicpulse.db import workflow as workflow_repo
from civicpulse.db.pool import create_pool, tenant_transaction
from civicpulse.db.queries import q
from civicpulse.engine import geo, grouping, textmodel
from civicpulse.ids import uuid7
from civicpulse.metrics import Metrics
from civicpulse.pipeline import group
from civicpulse.pipeline.claimer import Claim

ADMIN = "postgresql://postgres@127.0.0.1:5432"
BOX = (33.70, 34.35, -118.70, -118.10)  # lat min/max, lon min/max
OWNER = "bench-dedup-scale"
VENV_BIN = Path(sys.executable).parent

# -- step timing (benchmark-side wrappers around the repository calls group_claim makes) ---------
STEPS = (
    "load_classified_reports",
    "grouping_settings",
    "lock_regions",
    "open_issue_candidates",
    "not_duplicates_for",
    "insert_issues",
    "attach_reports",
    "add_to_issue_aggregates",
    "refresh_issue_aggregates",
    "append_events",
    "apply_to_issues",
    # Inside apply_to_issues (the workflow for the issues a claim opens or changes):
    "workflow.lock_issue_workflow",
    "workflow.save_issues_workflow",
    "workflow.insert_timers",
    "workflow.replace_timers",
    "workflow.append_workflow_events",
)


class StepClock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.candidates: list[int] = []

    def install(self) -> None:
        for name in STEPS:
            module: Any = workflow if name == "apply_to_issues" else issues_repo
            attr = name
            if name.startswith("workflow."):
                module, attr = workflow_repo, name.removeprefix("workflow.")
            original = getattr(module, attr, None)
            if original is not None:
                setattr(module, attr, self._wrap(name, original))

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                out = await fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
            if name == "open_issue_candidates":
                self.candidates.append(len(out))
            return out

        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.candidates.clear()


class TimedExecutor(Executor):
    """Delegates to the real pool; records submit-to-result time (pickling, IPC, engine)."""

    def __init__(self, inner: Executor, clock: StepClock) -> None:
        self.inner, self.clock = inner, clock

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        t0 = time.perf_counter()
        fut = self.inner.submit(fn, *args, **kwargs)

        def done(_: Future[Any]) -> None:
            self.clock.seconds["engine (process pool)"] += time.perf_counter() - t0

        fut.add_done_callback(done)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.inner.shutdown(wait=wait, cancel_futures=cancel_futures)


# -- data ----------------------------------------------------------------------------------
def category_weights() -> dict[str, float]:
    """The real mix: LA + SF records mapped to the taxonomy (as dataset.py maps them)."""
    counts: dict[str, int] = defaultdict(int)
    for s in ds_mod.read_la() + ds_mod.read_sf():
        counts[s.category] += 1
    total = sum(counts.values())
    return {c: n / total for c, n in sorted(counts.items())}


def text_pool(per_category: int, rnd: random.Random) -> dict[str, list[str]]:
    places = [s.place for s in ds_mod.add_cross_streets(ds_mod.read_la())]
    out: dict[str, list[str]] = {}
    for cat in sorted(ds_mod.SUBTYPES):
        texts = []
        for _ in range(per_category):
            p = ds_mod.new_problem_text(cat, rnd.choice(places), rnd)
            texts.append(ds_mod.render(cat, p, rnd, 0.2))
        out[cat] = texts
    return out


def anchors() -> list[tuple[float, float]]:
    return [
        (s.lat, s.lon)
        for s in ds_mod.read_la()
        if BOX[0] <= s.lat <= BOX[1] and BOX[2] <= s.lon <= BOX[3]
    ]


def point(
    rnd: random.Random, spread: str, anchor_list: list[tuple[float, float]], sd_m: float
) -> tuple[float, float]:
    if spread == "uniform":
        return rnd.uniform(BOX[0], BOX[1]), rnd.uniform(BOX[2], BOX[3])
    lat, lon = rnd.choice(anchor_list)
    dlat = rnd.gauss(0, sd_m) / geo.METRES_PER_DEGREE
    dlon = rnd.gauss(0, sd_m) / (geo.METRES_PER_DEGREE * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


# -- database ------------------------------------------------------------------------------
def psql(url: str, sql: str) -> str:
    out = subprocess.run(
        ["psql", url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"psql failed ({sql!r}): {out.stderr.strip()}")
    return out.stdout.strip()


def civicpulse_cli(args: list[str], dsn: str, commands: list[str]) -> str:
    env = {**os.environ, "CIVICPULSE_DATABASE_URL": dsn}
    cmd = [str(VENV_BIN / "civicpulse"), *args]
    commands.append(f"CIVICPULSE_DATABASE_URL={dsn} .venv/bin/civicpulse {shlex.join(args)}")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {out.stderr.strip()}")
    return out.stdout.strip()


SEED_ISSUES = f"""
INSERT INTO issues (tenant_id, id, status, category, kind, title, representative_text,
                    lat, lon, cell, report_count, first_reported, last_reported, opened_at)
SELECT $1, gen_random_uuid(), 'new', c.code, c.kind, left(t.txt, 120), t.txt, x.lat, x.lon,
       civicpulse_cell(x.lat, x.lon), x.rc, x.lr - x.age, x.lr, x.lr - x.age
  FROM (SELECT CASE WHEN $3 THEN {BOX[0]} + r.u1 * {BOX[1] - BOX[0]}
                    ELSE a.lat + $4 / 111195.0 * sqrt(-2 * ln(1 - r.u1)) * cos(2 * pi() * r.u2)
               END AS lat,
               CASE WHEN $3 THEN {BOX[2]} + r.u2 * {BOX[3] - BOX[2]}
                    ELSE a.lon + $4 / (111195.0 * cos(radians(a.lat)))
                         * sqrt(-2 * ln(1 - r.u1)) * sin(2 * pi() * r.u2)
               END AS lon,
               r.rc, r.lr, r.age, r.ucat, r.ti
          FROM (SELECT g, random() AS u1, random() AS u2,
                       floor(random() * $5)::int AS ai, random() AS ucat,
                       floor(random() * $6)::int AS ti,
                       1 + floor(power(random(), 3) * 6)::int AS rc,
                       now() - random() * interval '4 days' AS lr,
                       random() * interval '3 days' AS age
                  FROM generate_series(1, $2) AS g) AS r
          JOIN bench_anchors a ON a.i = r.ai) AS x
  CROSS JOIN LATERAL (SELECT code, kind FROM bench_cats WHERE cum >= x.ucat
                      ORDER BY cum LIMIT 1) AS c
  JOIN bench_texts t ON t.category = c.code AND t.n = x.ti
"""

INSERT_REPORTS = """
INSERT INTO reports (tenant_id, id, text, lat, lon, submitted_at, received_at, channel,
                     state, lease_owner, lease_until, category, severity, subtype,
                     alternatives, subtypes)
SELECT $1, u.id, u.text, u.lat, u.lon, now(), now(), 'api', 'classified', $7,
       now() + interval '2 hours', u.category, 2, u.subtype, u.alternatives::jsonb,
       u.subtypes::jsonb
  FROM unnest($2::uuid[], $3::text[], $4::float8[], $5::float8[], $6::text[], $8::text[],
              $9::text[], $10::text[])
       AS u (id, text, lat, lon, category, subtype, alternatives, subtypes)
"""


@functools.cache
def classified(text: str) -> tuple[str | None, str, str]:
    """What the classify stage stores for a text: subtype, category mix and subtype mix, from
    the city template's own model (so reports probe the categories they really would)."""
    pred, _ = textmodel.classify(city_model(), text, None, {})
    enc = msgspec.json.encode
    return pred.subtype, enc(pred.alternatives).decode(), enc(pred.subtypes).decode()


@functools.cache
def city_model() -> textmodel.Model:
    from civicpulse.db.tenants import default_taxonomy

    entries = [
        textmodel.TaxonomyEntry(c.code, c.name, c.description, c.keywords, c.kind)
        for c in default_taxonomy()
    ]
    return textmodel.load(textmodel.train(entries, [])[0])


async def setup_seed_tables(
    conn: asyncpg.Connection,
    tenant_id: int,
    weights: dict[str, float],
    texts: dict[str, list[str]],
    anchor_list: list[tuple[float, float]],
) -> None:
    await conn.execute("DROP TABLE IF EXISTS bench_cats, bench_texts, bench_anchors")
    await conn.execute("CREATE TABLE bench_cats (code text, kind text, cum float8)")
    await conn.execute("CREATE TABLE bench_texts (category text, n int, txt text)")
    await conn.execute("CREATE TABLE bench_anchors (i int PRIMARY KEY, lat float8, lon float8)")
    kinds = {
        r["code"]: r["kind"]
        for r in await conn.fetch(
            "SELECT code, kind FROM categories WHERE tenant_id = $1", tenant_id
        )
    }
    cum, rows = 0.0, []
    for code, w in weights.items():
        cum += w
        rows.append((code, kinds[code], cum))
    rows[-1] = (rows[-1][0], rows[-1][1], 1.0000001)
    await conn.executemany("INSERT INTO bench_cats VALUES ($1, $2, $3)", rows)
    await conn.executemany(
        "INSERT INTO bench_texts VALUES ($1, $2, $3)",
        [(c, i, t) for c, ts in texts.items() for i, t in enumerate(ts)],
    )
    await conn.executemany(
        "INSERT INTO bench_anchors VALUES ($1, $2, $3)",
        [(i, a, b) for i, (a, b) in enumerate(anchor_list)],
    )
    await conn.execute("CREATE INDEX ON bench_texts (category, n)")
    await conn.execute("ANALYZE bench_cats; ANALYZE bench_texts; ANALYZE bench_anchors")


async def top_up_issues(
    conn: asyncpg.Connection,
    tenant_id: int,
    target: int,
    spread: str,
    sd_m: float,
    n_anchors: int,
    n_texts: int,
) -> dict[str, float]:
    have = await conn.fetchval("SELECT count(*) FROM issues WHERE tenant_id = $1", tenant_id)
    todo = max(0, target - have)
    t0 = time.perf_counter()
    chunk = 250_000
    done = 0
    while done < todo:
        n = min(chunk, todo - done)
        await conn.execute(SEED_ISSUES, tenant_id, n, spread == "uniform", sd_m, n_anchors, n_texts)
        done += n
    seeded = time.perf_counter() - t0
    t1 = time.perf_counter()
    await conn.execute("VACUUM (ANALYZE) issues")
    await conn.execute("VACUUM (ANALYZE) reports")
    return {
        "inserted": todo,
        "insert_seconds": round(seeded, 1),
        "vacuum_analyze_seconds": round(time.perf_counter() - t1, 1),
    }


async def insert_reports(
    conn: asyncpg.Connection,
    tenant_id: int,
    n: int,
    rnd: random.Random,
    spread: str,
    anchor_list: list[tuple[float, float]],
    sd_m: float,
    weights: dict[str, float],
    texts: dict[str, list[str]],
    dup_share: float,
) -> list[uuid.UUID]:
    cats = rnd.choices(list(weights), list(weights.values()), k=n)
    n_dup = round(n * dup_share)
    # Duplicates of open issues: a random open issue's category, about 15 m off its location
    # (sd per axis), same-category text from the pool.
    targets = await conn.fetch(
        "SELECT lat, lon, category FROM issues WHERE tenant_id = $1 "
        "AND civicpulse_is_open(status) ORDER BY random() LIMIT $2",
        tenant_id,
        n_dup,
    )
    ids, txt, lats, lons = [], [], [], []
    for i, c in enumerate(cats):
        if i < len(targets):
            c = cats[i] = targets[i]["category"]
            lat0, lon0 = targets[i]["lat"], targets[i]["lon"]
            lat = lat0 + rnd.gauss(0, 15) / geo.METRES_PER_DEGREE
            lon = lon0 + rnd.gauss(0, 15) / (geo.METRES_PER_DEGREE * math.cos(math.radians(lat0)))
        else:
            lat, lon = point(rnd, spread, anchor_list, sd_m)
        ids.append(uuid7())
        txt.append(rnd.choice(texts[c]))
        lats.append(lat)
        lons.append(lon)
    order = list(range(n))
    rnd.shuffle(order)
    ids = [ids[i] for i in order]
    txt = [txt[i] for i in order]
    lats = [lats[i] for i in order]
    lons = [lons[i] for i in order]
    cats = [cats[i] for i in order]
    found = [classified(t) for t in txt]
    await conn.execute(
        INSERT_REPORTS,
        tenant_id,
        ids,
        txt,
        lats,
        lons,
        cats,
        OWNER,
        [f[0] for f in found],
        [f[1] for f in found],
        [f[2] for f in found],
    )
    return ids


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def measure(
    ctx: group.GroupContext,
    tenant_id: int,
    ids: list[uuid.UUID],
    claim: int,
    concurrency: int,
    clock: StepClock,
) -> dict[str, Any]:
    claims = [Claim(tenant_id, tuple(ids[i : i + claim])) for i in range(0, len(ids), claim)]
    queue: asyncio.Queue[Claim] = asyncio.Queue()
    for c in claims:
        queue.put_nowait(c)
    latencies: list[float] = []
    linked = 0

    async def worker() -> None:
        nonlocal linked
        while not queue.empty():
            c = queue.get_nowait()
            t0 = time.perf_counter()
            n = await group.group_claim(ctx, c)
            linked += n  # (not `linked += await ...`: that reads linked before awaiting)
            latencies.append(time.perf_counter() - t0)

    clock.reset()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {
        "claims": len(claims),
        "reports": len(ids),
        "linked": linked,
        "wall_seconds": round(wall, 3),
        "reports_per_second": round(len(ids) / wall, 1),
        "ms_per_report": round(1000 * wall / len(ids), 3),
        "claim_latency_ms_p50": round(1000 * pct(latencies, 0.5), 1),
        "claim_latency_ms_p95": round(1000 * pct(latencies, 0.95), 1),
        "claim_latency_ms_max": round(1000 * max(latencies), 1),
        "candidates_per_claim_mean": round(statistics.mean(clock.candidates), 1)
        if clock.candidates
        else 0,
        "candidates_per_claim_max": max(clock.candidates) if clock.candidates else 0,
        "step_ms_per_claim": {
            k: round(1000 * v / len(claims), 2)
            for k, v in sorted(clock.seconds.items(), key=lambda kv: -kv[1])
        },
    }


async def explain_candidates(
    pool: asyncpg.Pool, tenant_id: int, owner_conn: asyncpg.Connection, ids: list[uuid.UUID]
) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of open_issue_candidates as the app role, with the cells and
    look-back group_claim computes for these (still unclaimed) reports."""
    async with tenant_transaction(pool, tenant_id) as conn:
        reports = await issues_repo.load_classified_reports(conn, tenant_id, ids, OWNER)
        # The pairs and boxes group_claim probes (own and next likely categories).
        search = grouping.search_for(reports, {})
        pairs = {(p.category, p.cell) for p in search.probes}
        cells = {cell for _, cell in pairs}
        rows = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS) " + q("open_issue_candidates"),
            tenant_id,
            *issues_repo.candidate_args(search, grouping.NEAREST),
        )
        plan = "\n".join(r[0] for r in rows)
        role = await conn.fetchval("SELECT current_user")
    return (
        f"-- as role {role}, {len(reports)} reports, {len(pairs)} (category, cell) pairs in "
        f"{len(cells)} cells, "
        f"since {datetime.fromtimestamp(min(p.since for p in search.probes), UTC):%Y-%m-%d %H:%M}"
        f" UTC\n{plan}"
    )


async def run_spread(
    args: argparse.Namespace, spread: str, commands: list[str], clock: StepClock
) -> dict[str, Any]:
    """One scratch database, issues topped up level by level, N reports grouped per run."""
    db = f"{args.db}_{spread}"
    dsn = f"{ADMIN}/{db}"
    psql(f"{ADMIN}/postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    psql(f"{ADMIN}/postgres", f'CREATE DATABASE "{db}"')
    commands.append(
        f"psql {ADMIN}/postgres -c 'DROP DATABASE IF EXISTS {db} WITH (FORCE)'"
        f" -c 'CREATE DATABASE {db}'"
    )
    civicpulse_cli(["migrate"], dsn, commands)
    civicpulse_cli(["tenant", "create", "scale", "--name", "Scale"], dsn, commands)
    rnd = random.Random(args.seed)
    weights = category_weights()
    texts = text_pool(100, rnd)
    anchor_list = anchors()
    owner = await asyncpg.connect(dsn)
    tenant_id = await owner.fetchval("SELECT id FROM tenants WHERE slug = 'scale'")
    await owner.execute("SELECT setseed($1)", (args.seed % 1000) / 1000)
    await setup_seed_tables(owner, tenant_id, weights, texts, anchor_list)

    inner = ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("forkserver"))
    executor = TimedExecutor(inner, clock)
    pool = await create_pool(Settings(), dsn)
    ctx = group.GroupContext(pool=pool, executor=executor, metrics=Metrics(), owner=OWNER)
    levels: list[dict[str, Any]] = []
    explain = ""

    async def new_reports(n: int) -> list[uuid.UUID]:
        return await insert_reports(
            owner,
            tenant_id,
            n,
            rnd,
            spread,
            anchor_list,
            args.sd_m,
            weights,
            texts,
            args.dup_share,
        )

    try:
        # Warm the process pool (forkserver start, imports) before anything is timed.
        await asyncio.get_running_loop().run_in_executor(
            inner, grouping.group_batch, [], [], {}, set()
        )
        print(f"== spread {spread!r}, database {db}", flush=True)
        for level in args.levels:
            seeding = await top_up_issues(
                owner, tenant_id, level, spread, args.sd_m, len(anchor_list), 100
            )
            open_now = await owner.fetchval(
                "SELECT count(*) FROM issues WHERE tenant_id = $1 AND civicpulse_is_open(status)",
                tenant_id,
            )
            size = await owner.fetchval("SELECT pg_size_pretty(pg_total_relation_size('issues'))")
            print(
                f"== {open_now:,} open issues (seeded {seeding['inserted']:,} in "
                f"{seeding['insert_seconds']} s, vacuum analyze "
                f"{seeding['vacuum_analyze_seconds']} s, issues table {size})",
                flush=True,
            )
            entry: dict[str, Any] = {
                "target_issues": level,
                "open_issues": open_now,
                "issues_table_size": size,
                "seeding": seeding,
                "runs": {},
            }
            for conc in args.concurrency:
                await measure(ctx, tenant_id, await new_reports(args.claim), args.claim, 1, clock)
                ids = await new_reports(args.reports)
                await owner.execute("ANALYZE reports")
                if level == args.levels[-1] and conc == args.concurrency[0]:
                    explain = await explain_candidates(pool, tenant_id, owner, ids[: args.claim])
                load_before = load_average()
                res = await measure(ctx, tenant_id, ids, args.claim, conc, clock)
                res["load_average_before_after"] = [load_before, load_average()]
                created = await owner.fetchval(
                    "SELECT count(*) FROM issue_events WHERE tenant_id = $1 AND "
                    "kind = 'issue_created' AND report_id = ANY($2::uuid[])",
                    tenant_id,
                    ids,
                )
                res["issues_created"] = created
                res["attached_to_existing"] = res["linked"] - created
                res["grouped_in_db"] = await owner.fetchval(
                    "SELECT count(*) FROM reports WHERE tenant_id = $1 AND id = ANY($2::uuid[]) "
                    "AND state = 'grouped' AND issue_id IS NOT NULL",
                    tenant_id,
                    ids,
                )
                entry["runs"][str(conc)] = res
                print(
                    f"   concurrency {conc}: {res['reports_per_second']:>8.1f} reports/s, "
                    f"{res['ms_per_report']:.2f} ms/report, claim p50 "
                    f"{res['claim_latency_ms_p50']:.0f} ms p95 "
                    f"{res['claim_latency_ms_p95']:.0f} ms, candidates/claim "
                    f"{res['candidates_per_claim_mean']:.0f}, new issues {created}",
                    flush=True,
                )
                print(f"      step ms per claim: {res['step_ms_per_claim']}", flush=True)
            levels.append(entry)
    finally:
        await pool.close()
        inner.shutdown()
        await owner.close()
    return {"database": db, "levels": levels, "explain_at_largest": explain}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    commands: list[str] = []
    clock = StepClock()
    clock.install()
    spreads = {}
    for spread in args.spread:
        spreads[spread] = await run_spread(args, spread, commands, clock)
    return {"commands": commands, "spreads": spreads}


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    for spread, sp in payload["spreads"].items():
        concs = sorted({c for lv in sp["levels"] for c in lv["runs"]}, key=int)
        for c in concs:
            lv = [x for x in sp["levels"] if c in x["runs"]]
            xs = [x["open_issues"] for x in lv]
            ys = [x["runs"][c]["ms_per_report"] for x in lv]
            style = "-" if spread == "anchors" else "--"
            ax.plot(xs, ys, style, marker="o", label=f"{spread}, {c} claim(s) at a time")
            if c == concs[0]:
                for x, y in zip(xs, ys, strict=True):
                    ax.annotate(
                        f"{y:.2f}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(6, -4 if spread == "uniform" else 6),
                        fontsize=8,
                    )

            if c == concs[0]:
                ax2.plot(
                    xs,
                    [x["runs"][c]["candidates_per_claim_mean"] / 200 for x in lv],
                    style,
                    marker="o",
                    label=spread,
                )
    ax.axhline(
        1.0, color="grey", linestyle=":", linewidth=1, label="target: 1 ms/report (1,000 reports/s)"
    )
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xlabel("open issues in the database")
        a.grid(True, which="both", alpha=0.3)
    ax.set_ylabel("grouping cost per report (ms, wall clock)")
    ax.set_ylim(bottom=0)
    ax.set_title("Group stage: cost per report vs open issues", fontsize=10)
    ax.legend(fontsize=7)
    ax2.set_yscale("log")
    ax2.set_ylabel("candidate issues fetched per report")
    ax2.set_title("Why: candidates fetched grow with open issues", fontsize=10)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def markdown(p: dict[str, Any]) -> str:
    a = p["args"]
    out = [
        "# Grouping throughput vs open issues",
        "",
        f"Command: `{p['command']}` (total {p['total_seconds']:.0f} s)",
        "",
        "Setup commands run by the benchmark:",
        "",
    ]
    out += [f"    {c}" for c in p["commands"]]
    out += ["", "## Machine", ""]
    for k, v in p["machine"].items():
        if isinstance(v, dict):
            v = ", ".join(f"{x} {y}" for x, y in v.items())
        out.append(f"- {k}: {v}")
    out += [
        "",
        "## Set-up",
        "",
        f"- {a['reports']:,} reports per run, claims of {a['claim']} through "
        f"`civicpulse.pipeline.group.group_claim`, ProcessPoolExecutor({a['workers']}, "
        "forkserver), app-role pool from `create_pool(Settings(), dsn)`; one warm-up claim "
        "before each run.",
        f"- {a['dup_share']:.0%} of the reports are placed ~15 m (sd per axis) from a random "
        "open issue of the same category; the rest land as the issues do.",
        "- spreads: `anchors` = around the 9,989 real LA 311 record locations, normal with "
        f"sd {a['sd_m']:g} m (dense where LA files reports); `uniform` = uniform over the box "
        "lat 33.70-34.35, lon -118.70 to -118.10.",
        "- seeded issues: status new, category in the real LA+SF mix, resident-style text, "
        "last report within the last 4 days (so every look-back, 1-30 days, reaches them).",
        "",
    ]
    out += findings(p)
    steps = ["engine (process pool)", *STEPS]
    for spread, sp in p["spreads"].items():
        out += [
            f"## Results, spread `{spread}`",
            "",
            "| open issues | claims at a time | reports/s | ms/report | claim p50 ms | "
            "claim p95 ms | candidates/claim (mean) | new issues | attached | load avg "
            "before/after |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for lv in sp["levels"]:
            for c, r in lv["runs"].items():
                out.append(
                    f"| {lv['open_issues']:,} | {c} | {r['reports_per_second']:,.0f} | "
                    f"{r['ms_per_report']:.2f} | {r['claim_latency_ms_p50']:.0f} | "
                    f"{r['claim_latency_ms_p95']:.0f} | "
                    f"{r['candidates_per_claim_mean']:,.0f} | {r['issues_created']} | "
                    f"{r['attached_to_existing']} | "
                    f"{' / '.join(r['load_average_before_after'])} |"
                )
        out += [
            "",
            "Where a claim's time goes (ms per claim; with 2 claims at a time the steps of "
            "both overlap, and lock_regions is time spent waiting for the other claim):",
            "",
            "| open issues | claims at a time | " + " | ".join(steps) + " |",
            "|---:|---:|" + "---:|" * len(steps),
        ]
        for lv in sp["levels"]:
            for c, r in lv["runs"].items():
                out.append(
                    f"| {lv['open_issues']:,} | {c} | "
                    + " | ".join(f"{r['step_ms_per_claim'].get(s, 0):.1f}" for s in steps)
                    + " |"
                )
        out += [
            "",
            f"EXPLAIN (ANALYZE, BUFFERS) of `open_issue_candidates` at the largest level "
            f"(spread `{spread}`; the long cell list is cut):",
            "",
            "```",
            _cut_cells(sp["explain_at_largest"]),
            "```",
            "",
        ]
    out += ["![cost per report](dedup_scale.png)", ""]
    return "\n".join(out)


def findings(p: dict[str, Any]) -> list[str]:
    """Generated reading: throughput at the largest level vs the target, growth, steps."""
    out = ["## Findings (generated from the figures below)", ""]
    for spread, sp in p["spreads"].items():
        lv = sp["levels"]
        if not lv:
            continue
        lo, hi = lv[0], lv[-1]
        for c in sorted(hi["runs"], key=int):
            r0, r1 = lo["runs"][c], hi["runs"][c]
            top = sorted(r1["step_ms_per_claim"].items(), key=lambda kv: -kv[1])[:3]
            flat = r1["ms_per_report"] <= 1.25 * r0["ms_per_report"]
            out.append(
                f"- `{spread}`, {c} claim(s) at a time: {r1['reports_per_second']:,.0f} "
                f"reports/s at {hi['open_issues']:,} open issues (target 1,000: "
                f"{'met' if r1['reports_per_second'] >= 1000 else 'missed'}); cost per report "
                f"{r0['ms_per_report']:.2f} ms at {lo['open_issues']:,} -> "
                f"{r1['ms_per_report']:.2f} ms ({r1['ms_per_report'] / r0['ms_per_report']:.1f}x; "
                f"flat within 1.25x: {'yes' if flat else 'no'}); "
                f"candidates per claim {r0['candidates_per_claim_mean']:,.0f} -> "
                f"{r1['candidates_per_claim_mean']:,.0f}; biggest steps per claim: "
                + ", ".join(f"{k} {v:.0f} ms" for k, v in top)
            )
    out.append("")
    return out


def _cut_cells(plan: str) -> str:
    out = []
    for line in plan.splitlines():
        if "cell = ANY" in line and len(line) > 200:
            head, _, tail = line.partition("'{")
            cells = tail.split("}'", 1)
            n = cells[0].count(",") + 1
            line = f"{head}'{{...{n} cells...}}'{cells[1] if len(cells) > 1 else ''}"
        out.append(line)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.dedup_scale.run",
        description=__doc__.split("\n\n")[2],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--levels",
        type=int,
        nargs="+",
        default=[10_000, 100_000, 1_000_000],
        help="open issues to measure at (ascending; issues are added between)",
    )
    ap.add_argument("--reports", type=int, default=5_000, help="reports grouped per run")
    ap.add_argument("--claim", type=int, default=200, help="reports per claim (service default)")
    ap.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 2],
        help="claims in flight at once (the service runs one per pool process)",
    )
    ap.add_argument("--workers", type=int, default=2, help="process pool size")
    ap.add_argument(
        "--spread",
        choices=("anchors", "uniform"),
        nargs="+",
        default=["anchors", "uniform"],
        help="anchors: around real LA 311 locations (sd --sd-m); uniform: the LA box",
    )
    ap.add_argument("--sd-m", type=float, default=400.0)
    ap.add_argument(
        "--dup-share",
        type=float,
        default=0.3,
        help="share of new reports placed ~15 m from a random open issue of the "
        "same category (the rest land anywhere, as --spread)",
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--db",
        default="bench_dedup_scale",
        help="scratch database name prefix (<db>_<spread> is DROPPED and recreated)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "dedup_scale",
        help="results path without suffix (.md, .json, .png)",
    )
    ap.add_argument(
        "--replot",
        type=Path,
        help="only rewrite the .md and .png of --out from this earlier results .json",
    )
    args = ap.parse_args(argv)
    if args.replot:
        payload = json.loads(args.replot.read_text())
        plot(payload, args.out.with_suffix(".png"))
        args.out.with_suffix(".md").write_text(markdown(payload))
        print(f"rewrote {args.out.with_suffix('.md')} and .png from {args.replot}")
        return 0
    pg = f"{ADMIN}/postgres"
    ctx = machine_context(
        {
            "postgresql": psql(pg, "SELECT version()").split(" on ")[0],
            "postgresql_settings": psql(
                pg,
                "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' "
                "ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers', 'work_mem', "
                "'synchronous_commit', 'fsync', 'max_wal_size', 'jit', 'effective_cache_size')",
            ),
        }
    )
    print_context(ctx)
    t0 = time.perf_counter()
    result = asyncio.run(run(args))
    payload = {
        "command": shlex.join(
            [
                ".venv/bin/python",
                "-m",
                "bench.dedup_scale.run",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "machine": ctx,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "engine": {
            "rules_version": grouping.RULES_VERSION,
            "reach_m": {c: t.radius_m for c, t in grouping.MODEL.categories.items()},
            "lookback_s": grouping.CATEGORY_LOOKBACK_S,
            "cell_degrees": geo.CELL_DEGREES,
            "region_cells": geo.REGION_CELLS,
        },
        "total_seconds": round(time.perf_counter() - t0, 1),
        **result,
    }
    for spread, sp in result["spreads"].items():
        print(f"\n== EXPLAIN (ANALYZE, BUFFERS) open_issue_candidates, {spread}, largest level")
        print(_cut_cells(sp["explain_at_largest"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str))
    plot(payload, args.out.with_suffix(".png"))
    args.out.with_suffix(".md").write_text(markdown(payload))
    print(f"\nwrote {args.out.with_suffix('.md')}, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
