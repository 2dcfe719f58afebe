"""Dashboard benchmark: query latency at scale, and server-sent-event fan-out.

Steps:
  1. print the machine context;
  2. recreate the database, migrate, create --tenants tenants (sizes skewed like cities: a
     few large, many small) and --issues issues spread over them and the last year
     (categories and locations drawn from the real LA sample's coordinates), then build
     every tenant's rollups the way the aggregator does;
  3. start the service and time, over HTTP, the dashboard's data read and the trends
     endpoint for the largest tenants and a sample of the rest (p50/p95);
  4. in the same run, the baseline: the same per-day trend computed straight from issues
     (what a dashboard without rollups would run), timed in SQL beside the rollup query;
  5. open --streams concurrent SSE clients on the one service process, log events into
     the database at a steady rate, and measure each delivery's delay (receive time minus
     the event's commit time);
  6. write bench/results/dashboard.{md,json}.

Only what the dashboard reads is generated (issues, from which rollups are built): neither
the dashboard queries nor their plans read the reports table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asyncpg

from bench.ingest.common import (
    PG_ADMIN_URL,
    RESULTS,
    TMP,
    VENV_BIN,
    db_url,
    git_state,
    machine_context,
    percentile,
    print_context,
    reset_database,
)
from bench.ingest.run import start_server, stop_server

CATEGORIES = (
    "road_defect",
    "streetlight",
    "graffiti",
    "litter_dumping",
    "bulky_items",
    "water_sewer",
    "flooding",
    "trees",
    "noise",
    "abandoned_vehicle",
    "parks",
    "signs_signals",
    "other",
)


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 0.5), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "max_ms": round(max(ms), 2),
    }


async def setup(url: str, tenants: int, issues: int, seed: int) -> dict[str, Any]:
    """Tenants with Zipf-like sizes, issues over the last year, rollups built."""
    from civicpulse.db import migrate
    from civicpulse.db import tenants as tenants_repo

    await migrate.migrate(url, None)
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        ids = []
        for i in range(tenants):
            t = await tenants_repo.create_tenant(
                conn, f"city-{i:04d}", f"City {i}", "America/Los_Angeles"
            )
            ids.append(t.id)
        made_tenants = time.perf_counter() - started
        # Size of tenant rank r is proportional to 1 / (r + 1): city-0000 is the largest.
        weights = [1.0 / (r + 1) for r in range(tenants)]
        total_w = sum(weights)
        sizes = [max(1, round(issues * w / total_w)) for w in weights]
        sizes[0] += issues - sum(sizes)
        started = time.perf_counter()
        await conn.execute("ALTER TABLE issues DISABLE TRIGGER issues_mark_rollups_insert")
        await conn.execute(
            """
            INSERT INTO issues (tenant_id, id, status, category, kind, title, lat, lon, cell,
                                report_count, first_reported, last_reported, opened_at,
                                sla_started_at, resolved_at, closed_at, resolution_business_s,
                                resolution_target_s, visibility, area, team)
            SELECT t.id, gen_random_uuid(), CASE WHEN c THEN 'closed' ELSE 'new' END, cat,
                   'other', 'generated', lat, lon, civicpulse_cell(lat, lon), 1, op, op, op,
                   op, CASE WHEN c THEN op + dur END, CASE WHEN c THEN op + dur END,
                   CASE WHEN c THEN extract(epoch FROM dur) * 0.3 END,
                   CASE WHEN c THEN 172800 END,
                   CASE WHEN random() < 0.9 THEN 'public' ELSE 'private' END, NULL, NULL
              FROM unnest($1::bigint[], $2::int[]) AS t (id, n),
                   LATERAL (SELECT random() < 0.8 AS c,
                                   ($3::text[])[1 + floor(random() * array_length($3, 1))::int]
                                       AS cat,
                                   33.8 + random() * 0.5 AS lat, -118.6 + random() * 0.5 AS lon,
                                   now() - random() * interval '365 days' AS op,
                                   random() * random() * interval '30 days' AS dur
                              FROM generate_series(1, t.n)) AS g
            """,
            ids,
            sizes,
            list(CATEGORIES),
        )
        await conn.execute("ALTER TABLE issues ENABLE TRIGGER issues_mark_rollups_insert")
        made_issues = time.perf_counter() - started
        started = time.perf_counter()
        from civicpulse.db import analytics

        for tenant_id in ids:
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('civicpulse.tenant_id', $1, true)", str(tenant_id)
                )
                await analytics.rebuild_rollups(conn, tenant_id)
        await conn.execute("TRUNCATE rollup_dirty")
        await conn.execute("ANALYZE")
        made_rollups = time.perf_counter() - started
        rollup_rows = await conn.fetchval("SELECT count(*) FROM rollup_hourly")
        keys = {}
        for i in [0, 1, 2, *random.Random(seed).sample(range(3, tenants), min(27, tenants - 3))]:
            keys[f"city-{i:04d}"] = await tenants_repo.create_api_key(
                conn, f"city-{i:04d}", "staff"
            )
    finally:
        await conn.close()
    return {
        "tenants": tenants,
        "issues": issues,
        "largest_tenant_issues": sizes[0],
        "median_tenant_issues": sorted(sizes)[len(sizes) // 2],
        "rollup_rows": rollup_rows,
        "seconds": {
            "tenants": round(made_tenants, 1),
            "issues": round(made_issues, 1),
            "rollups": round(made_rollups, 1),
        },
        "keys": keys,
    }


async def existing(url: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The data of an earlier run with the same sizes, with fresh keys; None if not there."""
    from civicpulse.db import migrate
    from civicpulse.db import tenants as tenants_repo

    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        await migrate.migrate(url, None)
        n_tenants = await conn.fetchval("SELECT count(*) FROM tenants")
        n_issues = await conn.fetchval("SELECT count(*) FROM issues")
        if (n_tenants, n_issues) != (args.tenants, args.issues):
            return None
        sizes = [
            r[0]
            for r in await conn.fetch(
                "SELECT count(*) FROM issues GROUP BY tenant_id ORDER BY 1 DESC"
            )
        ]
        keys = {}
        for i in [
            0,
            1,
            2,
            *random.Random(args.seed).sample(range(3, args.tenants), min(27, args.tenants - 3)),
        ]:
            keys[f"city-{i:04d}"] = await tenants_repo.create_api_key(
                conn, f"city-{i:04d}", "staff"
            )
        return {
            "tenants": n_tenants,
            "issues": n_issues,
            "largest_tenant_issues": sizes[0],
            "median_tenant_issues": sizes[len(sizes) // 2],
            "rollup_rows": await conn.fetchval("SELECT count(*) FROM rollup_hourly"),
            "seconds": "reused from an earlier run",
            "keys": keys,
        }
    finally:
        await conn.close()


def timed_get(url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        r.read()
        assert r.status == 200
    return (time.perf_counter() - started) * 1000


def http_latency(port: int, keys: dict[str, str], rounds: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}/v1/tenants"
    out: dict[str, Any] = {}
    for label, slugs in (
        ("largest 3 tenants", list(keys)[:3]),
        ("27 sampled tenants", list(keys)[3:]),
    ):
        for name, path, auth in (
            ("dashboard data, public (30 days)", "dashboard/data?days=30", False),
            ("dashboard data, staff (30 days)", "dashboard/data?days=30", True),
            (
                "trends by category, staff (365 days)",
                "analytics/trends?interval=week&by=category"
                "&from=" + time.strftime("%Y-%m-%d", time.gmtime(time.time() - 365 * 86400)),
                True,
            ),
        ):
            ms = []
            for _ in range(rounds):
                for slug in slugs:
                    headers = {"Authorization": f"Bearer {keys[slug]}"} if auth else {}
                    ms.append(timed_get(f"{base}/{slug}/{path}", headers))
            out[f"{name} | {label}"] = summary(ms[len(slugs) :])  # first round warms caches
    return out


async def sql_baseline(url: str, rounds: int) -> dict[str, Any]:
    """The largest tenant's daily trend for a year: from rollups vs straight from issues."""
    from civicpulse.db.queries import q

    conn = await asyncpg.connect(url)
    try:
        tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE slug = 'city-0000'")
        start = await conn.fetchval("SELECT now() - interval '365 days'")
        end = await conn.fetchval("SELECT now() + interval '1 hour'")
        raw = """
            SELECT date_trunc('day', opened_at AT TIME ZONE 'America/Los_Angeles') AS period,
                   category, count(*)
              FROM issues
             WHERE tenant_id = $1 AND opened_at >= $2 AND opened_at < $3
               AND status <> 'duplicate'
             GROUP BY 1, 2"""
        out = {}
        for name, sql, args in (
            (
                "rollups (trend_rows)",
                q("trend_rows"),
                (
                    tenant_id,
                    "day",
                    "category",
                    start,
                    end,
                    "America/Los_Angeles",
                    False,
                    None,
                    None,
                ),
            ),
            ("raw issues (GROUP BY over the year)", raw, (tenant_id, start, end)),
        ):
            ms = []
            for _ in range(rounds + 1):
                started = time.perf_counter()
                await conn.fetch(sql, *args)
                ms.append((time.perf_counter() - started) * 1000)
            out[name] = summary(ms[1:])
        return out
    finally:
        await conn.close()


async def fan_out(
    port: int, url: str, streams: int, tenants: int, seconds: float, rate: float
) -> dict[str, Any]:
    """`streams` public SSE clients over `tenants` tenants; events logged at `rate`/s."""
    slugs = [f"city-{i:04d}" for i in range(tenants)]
    delays: list[float] = []
    connected = 0
    done = asyncio.Event()
    errors: list[str] = []

    async def client(slug: str) -> None:
        nonlocal connected
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
            writer.write(
                f"GET /v1/tenants/{slug}/stream HTTP/1.1\r\nHost: x\r\n"
                "Accept: text/event-stream\r\n\r\n".encode()
            )
            await writer.drain()
            status = await reader.readline()
            if b" 200 " not in status:
                errors.append(status.decode().strip())
                return
            connected += 1
            while not done.is_set():
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"data: {") and b'"at"' in line:
                    # chunked encoding wraps frames; the data line itself is intact
                    body = json.loads(line[6:])
                    sent = body["at"]
                    delays.append(time.time() - _epoch(sent))
            writer.close()
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors.append(repr(exc))

    tasks = [asyncio.create_task(client(slugs[i % tenants])) for i in range(streams)]
    for _ in range(200):
        if connected >= streams or errors:
            break
        await asyncio.sleep(0.1)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT ON (t.id) t.id AS tenant_id, i.id AS issue_id FROM tenants t "
            "JOIN issues i ON i.tenant_id = t.id AND i.visibility = 'public' "
            "WHERE t.slug = ANY($1::text[]) ORDER BY t.id",
            slugs,
        )
        sent = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            row = rows[sent % len(rows)]
            await conn.execute(
                "INSERT INTO issue_events (tenant_id, issue_id, kind, actor, from_status, "
                "to_status) VALUES ($1, $2, 'status_changed', 'bench', 'new', 'triaged')",
                row["tenant_id"],
                row["issue_id"],
            )
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
        await asyncio.sleep(3)
    finally:
        await conn.close()
    done.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    expected = sent * streams // tenants
    ms = [d * 1000 for d in delays]
    return {
        "streams": streams,
        "connected": connected,
        "tenants": tenants,
        "events_logged": sent,
        "deliveries_expected": expected,
        "deliveries": len(delays),
        "errors": errors[:5],
        **(summary(ms) if ms else {}),
    }


def _epoch(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def write_results(out: Path, result: dict[str, Any]) -> None:
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    ctx = result["context"]
    lines = [
        "# Dashboard benchmark",
        "",
        f"Command: `{result['command']}`",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in ctx.items()],
        "",
        "## Data",
        "",
        f"{result['data']['tenants']:,} tenants, {result['data']['issues']:,} issues over the "
        f"last year (largest tenant {result['data']['largest_tenant_issues']:,}, median "
        f"{result['data']['median_tenant_issues']:,}); {result['data']['rollup_rows']:,} rollup "
        f"rows. Built in {result['data']['seconds']}.",
        "",
        "## Dashboard API over HTTP (sequential requests, one client)",
        "",
        "| request | tenants | n | p50 ms | p95 ms | max ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, s in result["http"].items():
        name, group = key.split(" | ")
        lines.append(
            f"| {name} | {group} | {s['n']} | {s['p50_ms']} | {s['p95_ms']} | {s['max_ms']} |"
        )
    lines += [
        "",
        "## Baseline in the same run: a year's daily trend of the largest tenant, in SQL",
        "",
        "| source | n | p50 ms | p95 ms |",
        "|---|---:|---:|---:|",
    ]
    for name, s in result["sql"].items():
        lines.append(f"| {name} | {s['n']} | {s['p50_ms']} | {s['p95_ms']} |")
    f = result["fan_out"]
    lines += [
        "",
        "## Server-sent events fan-out (one service process)",
        "",
        f"{f['connected']:,} of {f['streams']:,} public streams connected over "
        f"{f['tenants']} tenants; {f['events_logged']} events logged at a steady rate; "
        f"{f['deliveries']:,} deliveries of {f['deliveries_expected']:,} expected.",
        "",
    ]
    if "p50_ms" in f:
        lines += [
            f"Delivery delay (commit to client): p50 {f['p50_ms']} ms, p95 {f['p95_ms']} ms, "
            f"max {f['max_ms']} ms.",
            "",
        ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.dashboard.run",
        description="Dashboard query latency at scale and SSE fan-out. Recreates --db.",
    )
    p.add_argument("--issues", type=int, default=1_000_000, help="issues to generate (1M)")
    p.add_argument("--tenants", type=int, default=1000, help="tenants (1000)")
    p.add_argument("--streams", type=int, default=1000, help="concurrent SSE clients (1000)")
    p.add_argument("--stream-tenants", type=int, default=10, help="tenants they watch (10)")
    p.add_argument("--events", type=float, default=20.0, help="events per second (20)")
    p.add_argument("--seconds", type=float, default=10.0, help="fan-out duration (10)")
    p.add_argument("--rounds", type=int, default=10, help="HTTP rounds per tenant (10)")
    p.add_argument("--db", default="bench_dashboard")
    p.add_argument("--port", type=int, default=8393)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default=str(RESULTS / "dashboard"))
    p.add_argument(
        "--reuse",
        action="store_true",
        help="keep --db when it already holds data of these sizes (skips generation)",
    )
    args = p.parse_args(argv)
    # A thousand streams need a thousand sockets here and in the server (which inherits it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    ctx = machine_context(PG_ADMIN_URL)
    ctx.update(git_state())
    print_context(ctx)
    url = db_url(args.db)
    data = asyncio.run(existing(url, args)) if args.reuse else None
    if data is None:
        reset_database(PG_ADMIN_URL, args.db)
        print(f"== generating {args.issues:,} issues over {args.tenants:,} tenants", flush=True)
        data = asyncio.run(setup(url, args.tenants, args.issues, args.seed))
    else:
        print(f"== reusing {args.db}: {args.issues:,} issues over {args.tenants:,} tenants")
    keys = data.pop("keys")
    print(f"  {data}", flush=True)
    sql = asyncio.run(sql_baseline(url, args.rounds))
    print(f"== SQL: {sql}", flush=True)
    proc = start_server(
        [str(VENV_BIN / "civicpulse"), "serve", "--port", str(args.port), "--no-demo"],
        {
            "CIVICPULSE_DATABASE_URL": url,
            "CIVICPULSE_PIPELINE_ENABLED": "false",
            "CIVICPULSE_RATE_LIMIT_KEY_PER_SECOND": "0",  # many viewers share keys
            "CIVICPULSE_RATE_LIMIT_PUBLIC_PER_SECOND": "0",  # and one address
            "CIVICPULSE_LOG_LEVEL": "warning",
        },
        TMP / "dashboard-server.log",
        f"http://127.0.0.1:{args.port}/readyz",
    )
    try:
        http = http_latency(args.port, keys, args.rounds)
        for k, v in http.items():
            print(f"  {k}: {v}", flush=True)
        fan = asyncio.run(
            fan_out(args.port, url, args.streams, args.stream_tenants, args.seconds, args.events)
        )
        print(f"== fan-out: {fan}", flush=True)
    finally:
        stop_server(proc)
    result = {
        "command": "python -m bench.dashboard.run "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "context": ctx,
        "data": data,
        "http": http,
        "sql": sql,
        "fan_out": fan,
    }
    write_results(Path(args.out), result)
    print(f"wrote {args.out}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
