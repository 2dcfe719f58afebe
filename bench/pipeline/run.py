"""Paced end-to-end benchmark: POST real reports at fixed rates, follow them to the stream.

Steps (the database is dropped and recreated at the start of every run):
  1. print the machine context;
  2. fresh database, migrate, a tenant, a submit key and a staff key;
  3. start `civicpulse serve` as a subprocess (again for every rate with --restart-per-rate);
  4. a short unmeasured warm-up at the lowest rate, then for each rate: wait until the
     backlog has drained, ANALYZE (unless --no-analyze), wait for a quiet machine, open the
     tenant's staff stream, POST LA311-derived reports open-loop at the rate for --seconds,
     sample the backlog every second and the CPU split at the window's start and end, wait
     --grace seconds for the last frames, then for the backlog to drain;
  5. write <out>.json, <out>.md and (with matplotlib) <out>.png.

Every report is timed from the moment it was due on the schedule: the POST latency, and the
POST->SSE latency to the first `issue_created` / `report_attached` frame naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp
import asyncpg

from bench.ingest import data
from bench.ingest.common import (
    PG_ADMIN_URL,
    RESULTS,
    ROOT,
    TMP,
    VENV_BIN,
    db_url,
    machine_context,
    print_context,
    reset_database,
    shell,
)
from bench.ingest.run import start_server, stop_server
from bench.pipeline import cpu, metrics, report
from bench.pipeline.load import Post, build_bodies, run_open_loop
from bench.pipeline.sse import StreamLog, follow

TENANT = "pipeline"
TIMEZONE = "America/Los_Angeles"  # the LA311 records' city
BACKLOG_SQL = "SELECT count(*) FROM reports WHERE state IN ('received', 'classified')"
TABLES = ("reports", "issues", "issue_events", "sla_timers")
# Service processes running now, so that main() can stop them however the run ends.
_RUNNING: set[subprocess.Popen[bytes]] = set()


# -- setup -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    submit: str
    staff: str


def setup_database(args: argparse.Namespace, url: str) -> tuple[Keys, list[str]]:
    """Fresh database, schema, tenant, a submit key and a staff key; the keys and commands."""
    reset_database(args.pg_url, args.db)
    env = {**os.environ, "CIVICPULSE_DATABASE_URL": url}
    cli = str(VENV_BIN / "civicpulse")
    cmds = [
        [cli, "migrate"],
        [cli, "tenant", "create", TENANT, "--name", "Pipeline", "--timezone", TIMEZONE],
        [cli, "key", "create", "--tenant", TENANT, "--scope", "submit", "--label", "bench"],
        [cli, "key", "create", "--tenant", TENANT, "--scope", "staff", "--label", "bench"],
    ]
    outputs = []
    for cmd in cmds:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{shell(cmd)} failed: {done.stderr}")
        outputs.append(done.stdout.strip().splitlines()[0] if done.stdout.strip() else "")
    shown = [
        f'psql {args.pg_url}/postgres -c \'DROP DATABASE IF EXISTS "{args.db}" WITH '
        f"(FORCE)' -c 'CREATE DATABASE \"{args.db}\"'"
    ]
    shown += [shell(c, {"CIVICPULSE_DATABASE_URL": url}) for c in cmds]
    return Keys(submit=outputs[2], staff=outputs[3]), shown


def service_command(args: argparse.Namespace, url: str) -> tuple[list[str], dict[str, str]]:
    cmd = [
        str(VENV_BIN / "civicpulse"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--no-demo",
    ]
    # All load comes from one key: its rate limit (100/s by default) would be what is
    # measured. --env may set it back.
    env = {"CIVICPULSE_DATABASE_URL": url, "CIVICPULSE_RATE_LIMIT_KEY_PER_SECOND": "0"}
    env.update(dict(kv.split("=", 1) for kv in args.env))
    return cmd, env


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Bench:
    """Everything one run shares across its rates."""

    args: argparse.Namespace
    url: str
    keys: Keys
    records: list[data.Record]
    conn: asyncpg.Connection  # the database owner's: backlog counts, ANALYZE
    posts: aiohttp.ClientSession  # the keep-alive pool the reports go through
    side: aiohttp.ClientSession  # the stream, /metrics, /readyz
    proc: subprocess.Popen[bytes] | None = None
    service_cmd: str = ""
    starts: int = 0
    # One connection, read by the backlog sampler and the waits at once: one query at a time.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.args.port}"

    async def backlog(self) -> int:
        async with self.lock:
            return int(await self.conn.fetchval(BACKLOG_SQL))

    async def fetch(self, sql: str, *params: object) -> list[asyncpg.Record]:
        async with self.lock:
            rows: list[asyncpg.Record] = await self.conn.fetch(sql, *params)
            return rows


@dataclass
class Sampler:
    """The backlog once a second from `start` (seconds since start, reports waiting)."""

    bench: Bench
    start: float
    points: list[tuple[float, int]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        tick = 0
        while not stop.is_set():
            self.points.append(
                (round(time.monotonic() - self.start, 3), await self.bench.backlog())
            )
            tick += 1
            delay = self.start + tick - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)


def start_service(bench: Bench) -> None:
    cmd, env = service_command(bench.args, bench.url)
    bench.service_cmd = shell(cmd, env)
    bench.starts += 1
    print(f"== service: {bench.service_cmd}", flush=True)
    bench.proc = start_server(
        cmd, env, TMP / f"pipeline_service_{bench.starts}.log", f"{bench.base}/readyz"
    )
    _RUNNING.add(bench.proc)


def stop_service(bench: Bench) -> None:
    if bench.proc is not None:
        stop_server(bench.proc)
        _RUNNING.discard(bench.proc)
        bench.proc = None


async def drain(bench: Bench, timeout: float) -> tuple[int, float]:
    """Wait until no report waits for the pipeline: (backlog left, seconds waited)."""
    started = time.monotonic()
    left = await bench.backlog()
    while left and time.monotonic() - started < timeout:
        await asyncio.sleep(0.5)
        left = await bench.backlog()
    return left, round(time.monotonic() - started, 1)


async def wait_quiet(bench: Bench) -> float:
    """Wait (up to --max-wait) until other processes use less than --quiet-threshold cores;
    returns the last reading."""
    args = bench.args
    pid = bench.proc.pid if bench.proc else None
    deadline = time.monotonic() + args.max_wait
    while True:
        a = cpu.sample(time.monotonic(), pid, bench.args.db)
        await asyncio.sleep(2.0)
        used = cpu.cores_used(a, cpu.sample(time.monotonic(), pid, bench.args.db))
        other = round(used["other"] + used["postgres_other_db"], 2)
        if other <= args.quiet_threshold or time.monotonic() >= deadline:
            if other > args.quiet_threshold:
                print(f"  other processes still use {other:.2f} cores; going on", flush=True)
            return other
        print(
            f"  other processes use {other:.2f} cores (> {args.quiet_threshold}); waiting",
            flush=True,
        )
        await asyncio.sleep(3.0)


async def table_stats(bench: Bench) -> dict[str, dict[str, Any]]:
    """Rows and statistics age of the tables the pipeline grows."""
    rows = await bench.fetch(
        "SELECT relname, n_live_tup, n_mod_since_analyze, "
        "COALESCE(last_analyze, last_autoanalyze) IS NOT NULL AS analysed "
        "FROM pg_stat_user_tables WHERE relname = ANY($1::text[]) ORDER BY relname",
        list(TABLES),
    )
    return {
        r["relname"]: {
            "live_rows": r["n_live_tup"],
            "changed_since_analyze": r["n_mod_since_analyze"],
            "analysed": r["analysed"],
        }
        for r in rows
    }


async def scrape(bench: Bench) -> dict[str, float]:
    """The service's counters that matter here, from /metrics."""
    try:
        async with bench.side.get(f"{bench.base}/metrics") as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return {}
    wanted = (
        "civicpulse_reports_grouped_total",
        "civicpulse_reports_written_total",
        "civicpulse_reports_failed_total",
        "civicpulse_stage_failures_total",
        "civicpulse_ingest_overload_total",
    )
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def readyz_warnings(bench: Bench) -> list[str]:
    try:
        async with bench.side.get(f"{bench.base}/readyz") as resp:
            body = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return ["readyz unreadable"]
    return list(body.get("warnings", []))


async def lookup_states(bench: Bench, report_ids: list[str]) -> dict[str, int]:
    """How many of these reports are in each state now."""
    if not report_ids:
        return {}
    rows = await bench.fetch(
        "SELECT state, count(*) AS n FROM reports WHERE id = ANY($1::uuid[]) GROUP BY state",
        report_ids,
    )
    return {r["state"]: r["n"] for r in rows}


async def until_seen(log: StreamLog, wanted: set[str], deadline: float) -> None:
    """Return when every wanted report has had a frame, or at the deadline."""
    seen: set[str] = set()
    index = 0
    while time.monotonic() < deadline:
        frames = log.report_frames
        seen.update(r for _, _, r in frames[index:])
        index = len(frames)
        if wanted <= seen:
            return
        await asyncio.sleep(0.25)


async def run_rate(bench: Bench, rate: float, seconds: float, label: str) -> dict[str, Any]:
    """One paced run at `rate` reports/s for `seconds`, and everything measured about it."""
    args = bench.args
    if args.restart_per_rate and bench.proc is not None:
        await asyncio.to_thread(stop_service, bench)
    if bench.proc is None:
        await asyncio.to_thread(start_service, bench)
    assert bench.proc is not None
    pid = bench.proc.pid
    print(f"== {label}: {rate:g} reports/s for {seconds:g} s", flush=True)

    left, waited = await drain(bench, args.drain_timeout)
    if waited > 1:
        print(f"  backlog before the run drained in {waited} s ({left} left)", flush=True)
    if not args.no_analyze:
        async with bench.lock:
            await bench.conn.execute("ANALYZE")
    stats_before = await table_stats(bench)
    count = max(1, round(rate * seconds))
    bodies = build_bodies(bench.records, count, seed=args.seed + round(rate * 1000))
    background = await wait_quiet(bench)

    log = StreamLog()
    stream_stop = asyncio.Event()
    stream_url = f"{bench.base}/v1/tenants/{TENANT}/stream"
    stream = asyncio.create_task(follow(bench.side, stream_url, bench.keys.staff, log, stream_stop))
    try:
        await asyncio.wait_for(log.connected.wait(), 15)
    except TimeoutError:
        stream_stop.set()
        await stream
        raise RuntimeError("the staff stream did not connect within 15 s") from None
    counters_before = await scrape(bench)

    start = time.monotonic() + 0.2
    window_end = start + seconds
    sampler = Sampler(bench, start)
    sampler_stop = asyncio.Event()
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    cpu_start = cpu.sample(time.monotonic(), pid, bench.args.db)
    sampling = asyncio.create_task(sampler.run(sampler_stop))

    async def window_cpu() -> cpu.CpuSample:
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        return cpu.sample(time.monotonic(), pid, bench.args.db)

    cpu_window_task = asyncio.create_task(window_cpu())
    try:
        posts = await run_open_loop(
            bench.posts,
            f"{bench.base}/v1/tenants/{TENANT}/reports",
            bench.keys.submit,
            bodies,
            rate,
            start,
        )
        cpu_window_end = await cpu_window_task
        answered_at = time.monotonic()

        accepted = {p.report_id for p in posts if p.report_id is not None}
        grace_end = max(window_end, answered_at) + args.grace
        await until_seen(log, accepted, grace_end)
        grace_end = min(grace_end, time.monotonic())
        left, _ = await drain(bench, args.drain_timeout)
        drained_at = time.monotonic()
        cpu_done = cpu.sample(drained_at, pid, bench.args.db)
        # The frames of the last reports grouped follow the commit by a flush of the broker.
        await until_seen(log, accepted, time.monotonic() + 3.0)
    finally:
        cpu_window_task.cancel()
        sampler_stop.set()
        stream_stop.set()
        await asyncio.gather(cpu_window_task, sampling, stream, return_exceptions=True)
    if stream.exception() is not None:
        raise RuntimeError("the stream client failed") from stream.exception()
    counters_after = await scrape(bench)
    warnings = await readyz_warnings(bench)

    return summarise(
        label=label,
        rate=rate,
        seconds=seconds,
        posts=posts,
        log=log,
        start=start,
        window_end=window_end,
        grace_end=grace_end,
        drained_at=drained_at,
        backlog=sampler.points,
        drain_left=left,
        grace=args.grace,
        cpu_window=cpu.cores_used(cpu_start, cpu_window_end),
        cpu_after=cpu.cores_used(cpu_window_end, cpu_done),
        cpu_seconds_total={
            k: round(v, 2) for k, v in cpu.seconds_used(cpu_start, cpu_done).items()
        },
        background_before=background,
        stats_before=stats_before,
        counters={
            k: counters_after[k] - counters_before.get(k, 0.0)
            for k in counters_after
            if counters_after[k] != counters_before.get(k, 0.0)
        },
        readyz_warnings=warnings,
        missing_states=await lookup_states(bench, never_seen(posts, log)),
    )


def never_seen(posts: list[Post], log: StreamLog) -> list[str]:
    named = {r for _, _, r in log.report_frames}
    return [p.report_id for p in posts if p.report_id is not None and p.report_id not in named]


def summarise(
    *,
    label: str,
    rate: float,
    seconds: float,
    posts: list[Post],
    log: StreamLog,
    start: float,
    window_end: float,
    grace_end: float,
    drained_at: float,
    backlog: list[tuple[float, int]],
    drain_left: int,
    grace: float,
    cpu_window: dict[str, float],
    cpu_after: dict[str, float],
    cpu_seconds_total: dict[str, float],
    background_before: float,
    stats_before: dict[str, dict[str, Any]],
    counters: dict[str, float],
    readyz_warnings: list[str],
    missing_states: dict[str, int],
) -> dict[str, Any]:
    matched = metrics.match(posts, log)
    post = metrics.post_figures(posts, seconds)
    sse, missing = metrics.stream_figures(posts, matched, grace_end)
    half = [(t, float(n)) for t, n in backlog if seconds / 2 <= t <= seconds + 0.5]
    slope = metrics.slope(half)
    in_window = [n for t, n in backlog if t <= seconds + 0.5]
    accepted: int = post["accepted"]
    server_cpu = (
        sum(cpu_seconds_total[k] for k in ("service", "workers", "postgres"))
        - cpu_seconds_total["postgres_other_db"]
    )
    res: dict[str, Any] = {
        "label": label,
        "rate": rate,
        "seconds": seconds,
        **post,
        "achieved_ratio": round(post["sent_per_s"] / rate, 3),
        **sse,
        # Lost: accepted reports without a frame by the end of the grace period. Of those,
        # some came later (while the backlog drained) and some never did; the ones that
        # never did, by the state their report is in after the drain: "grouped" ones are
        # frames the stream lost, the others reports the pipeline never finished.
        "lost": sse["not_by_grace"],
        "lost_arrived_later": sse["arrived_after_grace"],
        "never_arrived": sum(missing_states.values()),
        "never_arrived_states": missing_states,
        "grouped_without_frame": missing_states.get("grouped", 0),
        "duplicate_reports": matched.duplicate_reports,
        "duplicate_frames": matched.duplicate_frames,
        "foreign_frames": matched.foreign_frames,
        "repeated_ids": matched.repeated_ids,
        "out_of_order_ids": matched.out_of_order_ids,
        "stream": {
            "frames": log.frames,
            "kinds": dict(sorted(log.kinds.items())),
            "bad_frames": log.bad_frames,
            "connects": log.connects,
            "disconnects": log.disconnect_reasons,
        },
        "backlog_slope_per_s": None if slope is None else round(slope, 2),
        "backlog_at_window_end": in_window[-1] if in_window else None,
        "backlog_max": max(in_window, default=None),
        "drain_s_after_window": round(drained_at - window_end, 1),
        # How fast the backlog left at the window's end was worked off (when there was at
        # least a second's worth of it to measure).
        "catch_up_per_s": (
            round(in_window[-1] / (drained_at - window_end), 1)
            if in_window and in_window[-1] >= rate and drained_at > window_end
            else None
        ),
        "backlog_left_after_drain": drain_left,
        "grace_s": grace,
        "grace_wait_s": round(grace_end - window_end, 1),
        "cpu_cores_window": cpu_window,
        "cpu_cores_after_window": cpu_after,
        "cpu_seconds_window_to_drained": cpu_seconds_total,
        # Server-side CPU (service, its workers, PostgreSQL less other databases' backends)
        # per accepted report, from the window's start until the backlog drained: the whole
        # cost of taking one report in.
        "server_cpu_ms_per_report": round(1000 * server_cpu / accepted, 2) if accepted else None,
        "background_cores_before": background_before,
        "table_stats_before": stats_before,
        "service_counters": counters,
        "readyz_warnings": readyz_warnings,
        "backlog_series": backlog,
        "per_second": metrics.per_second(posts, matched, start),
        "not_by_grace_ids_sample": missing[:20],
    }
    return res


def print_rate(r: dict[str, Any]) -> None:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{1000 * v:,.1f}"

    c = r["cpu_cores_window"]
    print(
        f"  POST: sent {r['sent_per_s']:,}/s ({100 * r['achieved_ratio']:.1f}% of target), "
        f"accepted {r['accepted_per_s']:,}/s, statuses {r['status']}; "
        f"p50 {ms(r['post_p50_s'])} ms, p99 {ms(r['post_p99_s'])} ms; "
        f"generator lag p99 {ms(r['lag_p99_s'])} ms",
        flush=True,
    )
    print(
        f"  POST->SSE: p50 {ms(r['sse_p50_s'])} ms, p95 {ms(r['sse_p95_s'])} ms, "
        f"p99 {ms(r['sse_p99_s'])} ms, max {ms(r['sse_max_s'])} ms over "
        f"{r['frames_matched']:,} reports; lost (no frame within {r['grace_s']:g} s "
        f"grace) {r['lost']}: {r['lost_arrived_later']} came later, {r['never_arrived']} "
        f"never {r['never_arrived_states']}; duplicates {r['duplicate_frames']}; "
        f"repeated ids {r['repeated_ids']}, out-of-order ids {r['out_of_order_ids']}; "
        f"stream connects {r['stream']['connects']}",
        flush=True,
    )
    print(
        f"  backlog: slope {r['backlog_slope_per_s']} reports/s over the last half, "
        f"{r['backlog_at_window_end']} at the window's end (max {r['backlog_max']}), "
        f"drained {r['drain_s_after_window']} s after it ({r['backlog_left_after_drain']} "
        f"left; catch-up {r['catch_up_per_s']} reports/s)",
        flush=True,
    )
    print(
        "  cores in the window: "
        + ", ".join(f"{k} {v:.2f}" for k, v in c.items())
        + f"; server CPU per report {r['server_cpu_ms_per_report']} ms",
        flush=True,
    )
    if r["readyz_warnings"]:
        print(f"  /readyz warnings: {'; '.join(r['readyz_warnings'])}", flush=True)
    print(flush=True)


async def run(args: argparse.Namespace, url: str, keys: Keys) -> dict[str, Any]:
    records = data.load_la311()
    conn = await asyncpg.connect(url)
    posts = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.connections, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(total=args.post_timeout),
    )
    side = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
    bench = Bench(args, url, keys, records, conn, posts, side)
    out: dict[str, Any] = {"rates": []}
    try:
        if args.warmup > 0:
            warm = await run_rate(bench, min(args.rate_list), args.warmup, "warm-up")
            print_rate(warm)
            out["warmup"] = {k: v for k, v in warm.items() if k not in ("per_second",)}
        for rate in args.rate_list:
            res = await run_rate(bench, rate, args.seconds, f"rate {rate:g}/s")
            print_rate(res)
            out["rates"].append(res)
    finally:
        await asyncio.to_thread(stop_service, bench)
        await posts.close()
        await side.close()
        await conn.close()
    out["service_command"] = bench.service_cmd.replace(keys.submit, "$SUBMIT_KEY")
    out["service_starts"] = bench.starts
    return out


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.pipeline.run",
        description="Paced end-to-end benchmark (issue 15): real LA311-derived reports POSTed "
        "open-loop at fixed rates to a `civicpulse serve` subprocess, each followed to its "
        "issue_created/report_attached frame on the tenant's staff stream; POST and "
        "POST->SSE latency, lost and duplicate frames, the pipeline's backlog and the CPU "
        "split. Drops and recreates the database given by --db.",
    )
    p.add_argument(
        "--rates", default="100,300,1000", help="reports per second, comma-separated (100,300,1000)"
    )
    p.add_argument("--seconds", type=float, default=60.0, help="seconds per rate (60)")
    p.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds of unmeasured load at the lowest rate first (the process pool and "
        "the classifier start cold); 0: none (5)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds after the window (and the last POST answer) that a report's frame "
        "may take before it counts as not arrived (30)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=300.0,
        help="longest wait for the backlog to drain after each rate, seconds (300)",
    )
    p.add_argument("--connections", type=int, default=64, help="keep-alive POST connections (64)")
    p.add_argument("--post-timeout", type=float, default=30.0, help="per POST, seconds (30)")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the service, e.g. CIVICPULSE_ANALYZE_CHECK_SECONDS=0 "
        "(repeatable; the benchmark sets CIVICPULSE_RATE_LIMIT_KEY_PER_SECOND=0 unless given)",
    )
    p.add_argument(
        "--no-analyze",
        action="store_true",
        help="start from un-analysed tables: the benchmark never runs ANALYZE itself (by "
        "default it analyses the database before each rate), so the planner's statistics "
        "are only what the service's own maintenance (CIVICPULSE_ANALYZE_CHECK_SECONDS) "
        "provides; autovacuum may be off on the server",
    )
    p.add_argument(
        "--restart-per-rate",
        action="store_true",
        help="start a new service process for every rate (default: one for the whole run)",
    )
    p.add_argument("--db", default="bench_pipeline", help="database to recreate (bench_pipeline)")
    p.add_argument(
        "--pg-url",
        default=PG_ADMIN_URL,
        help=f"PostgreSQL server, superuser, no database ({PG_ADMIN_URL})",
    )
    p.add_argument("--port", type=int, default=8394, help="service port (8394)")
    p.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.25,
        help="before each rate, wait until other processes use less than this many cores (0.25)",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        default=60.0,
        help="longest wait for a quiet machine before each rate, seconds (60)",
    )
    p.add_argument("--seed", type=int, default=15, help="seed of the report bodies (15)")
    p.add_argument(
        "--out",
        default=str(RESULTS / "pipeline"),
        help="results path without extension: writes .json, .md, .png (bench/results/pipeline)",
    )
    p.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    args = p.parse_args(argv)
    try:
        args.rate_list = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        p.error(f"--rates {args.rates!r}: expected numbers such as 100,300,1000")
    if not args.rate_list or any(r <= 0 for r in args.rate_list):
        p.error("--rates: give at least one rate above 0")
    if args.seconds <= 0:
        p.error("--seconds must be above 0")
    for kv in args.env:
        if "=" not in kv:
            p.error(f"--env {kv!r}: expected KEY=VALUE")
    return args


def uncommitted_service_files() -> str:
    """The service's files that differ from the commit (the run measured them as on disk)."""
    out = subprocess.run(
        ["git", "status", "--porcelain", "--", "civicpulse", "schema", "pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    changed = [line[3:] for line in out.stdout.splitlines() if line.strip()]
    return ", ".join(changed) or "none"


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the service subprocess is stopped.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    invocation = ".venv/bin/python -m bench.pipeline.run " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    ctx = machine_context(args.pg_url)
    ctx.pop("wrk", None)  # not used here
    ctx["service_files_changed"] = uncommitted_service_files()
    ctx["aiohttp (load generator)"] = aiohttp.__version__
    print_context(ctx)
    url = db_url(args.db, args.pg_url)
    TMP.mkdir(parents=True, exist_ok=True)
    print(f"== setup: fresh database {args.db}, tenant {TENANT}", flush=True)
    keys, setup_cmds = setup_database(args, url)
    started = time.monotonic()
    try:
        try:
            import uvloop
        except ImportError:
            measured = asyncio.run(run(args, url, keys))
        else:
            measured = uvloop.run(run(args, url, keys))
    finally:
        for proc in list(_RUNNING):
            stop_server(proc)
    results: dict[str, Any] = {
        "context": ctx,
        "invocation": invocation.strip(),
        "setup_commands": setup_cmds,
        "config": {
            "rates": args.rate_list,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "grace_s": args.grace,
            "drain_timeout_s": args.drain_timeout,
            "connections": args.connections,
            "env": args.env,
            "analyze_before_each_rate": not args.no_analyze,
            "restart_per_rate": args.restart_per_rate,
            "database": args.db,
            "data": str(data.LA311),
        },
        **measured,
        "wall_s": round(time.monotonic() - started, 1),
    }
    results["summary"] = report.summary(results)
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    report.write_markdown(out.with_suffix(".md"), results)
    drawn = not args.no_chart and report.write_chart(out.with_suffix(".png"), results)
    for line in report.summary_lines(results):
        print(line)
    written = [out.with_suffix(".json"), out.with_suffix(".md")]
    if drawn:
        written.append(out.with_suffix(".png"))
    elif not args.no_chart:
        print("  (no chart: matplotlib is not importable; pip install -e '.[bench]')")
    print(
        "== wrote "
        + ", ".join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in written)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
