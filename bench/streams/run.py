"""Fan-out benchmark (issue 15): does intake keep its p99 with thousands of open streams?

"Fan-out to 10,000 streams keeps intake p99 within 2x of no streams." Steps (the database is
dropped and recreated at the start of every run):
  1. print the machine context;
  2. fresh database, migrate, a tenant, a submit, a staff and an admin key;
  3. start `civicpulse serve` as a subprocess (public and per-key rate limits off: every
     stream comes from 127.0.0.1), make the tenant's dashboard public (PUT .../dashboard);
  4. an unmeasured warm-up at --rate, then for each --streams count, in one service process:
     drain the backlog, ANALYZE, open that many public streams (no key) from one or two
     client processes at --open-rate, wait for every ": connected", measure the idle cost,
     open one staff stream, POST LA311-derived reports open-loop at --rate for --seconds,
     wait until the backlog drained and every stream has the last public event, then close
     the streams and gather what each received;
  5. write <out>.json and <out>.md.

POST latency is timed from the moment each report was due. The public streams' frames are
tied to POSTs through the staff stream (figures.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
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
from bench.pipeline import metrics
from bench.pipeline.load import Post, build_bodies, run_open_loop
from bench.pipeline.run import uncommitted_service_files, until_seen
from bench.pipeline.sse import StreamLog, follow
from bench.streams import figures, procs, report
from bench.streams.clients import ClientGroup
from civicpulse.live import PUBLIC_KINDS

TENANT = "streams"
TIMEZONE = "America/Los_Angeles"  # the LA311 records' city
BACKLOG_SQL = "SELECT count(*) FROM reports WHERE state IN ('received', 'classified')"
# The newest public event (what every public stream must reach) and how many there were.
PUBLIC_EVENTS_SQL = """
SELECT COALESCE(max(e.seq), 0) AS last, count(*) AS n
  FROM issue_events e
  JOIN issues i ON i.tenant_id = e.tenant_id AND i.id = e.issue_id
 WHERE e.tenant_id = $1 AND e.seq > $2 AND e.kind = ANY($3::text[])
   AND i.visibility = 'public'
"""
LAST_SEQ_SQL = "SELECT COALESCE(max(seq), 0) FROM issue_events WHERE tenant_id = $1"
# Sockets the service holds besides the streams (pool, listener, logs), with room to spare.
SERVICE_FDS = 300
_RUNNING: set[subprocess.Popen[bytes]] = set()


# -- setup -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    submit: str
    staff: str
    admin: str


def setup_database(args: argparse.Namespace, url: str) -> tuple[Keys, list[str]]:
    """Fresh database, schema, tenant, a submit, a staff and an admin key."""
    reset_database(args.pg_url, args.db)
    env = {**os.environ, "CIVICPULSE_DATABASE_URL": url}
    cli = str(VENV_BIN / "civicpulse")
    cmds = [
        [cli, "migrate"],
        [cli, "tenant", "create", TENANT, "--name", "Streams", "--timezone", TIMEZONE],
        *(
            [cli, "key", "create", "--tenant", TENANT, "--scope", scope, "--label", "bench"]
            for scope in ("submit", "staff", "admin")
        ),
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
    return Keys(submit=outputs[2], staff=outputs[3], admin=outputs[4]), shown


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
    env = {
        "CIVICPULSE_DATABASE_URL": url,
        # All reports come from one key, and every stream from one address: either limit
        # would be what is measured. --env may set them back.
        "CIVICPULSE_RATE_LIMIT_KEY_PER_SECOND": "0",
        "CIVICPULSE_RATE_LIMIT_PUBLIC_PER_SECOND": "0",
    }
    env.update(dict(kv.split("=", 1) for kv in args.env))
    return cmd, env


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Bench:
    """Everything one run shares across its phases."""

    args: argparse.Namespace
    url: str
    keys: Keys
    records: list[data.Record]
    conn: asyncpg.Connection  # the database owner's: backlog, event numbers, ANALYZE
    posts: aiohttp.ClientSession  # the keep-alive pool the reports go through
    side: aiohttp.ClientSession  # the staff stream, the dashboard settings
    tenant_id: int = 0
    proc: subprocess.Popen[bytes] | None = None
    service_cmd: str = ""
    base_fds: int = 0  # the service's open files before any stream
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.args.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def value(self, sql: str, *params: object) -> Any:
        async with self.lock:
            return await self.conn.fetchval(sql, *params)

    async def row(self, sql: str, *params: object) -> asyncpg.Record:
        async with self.lock:
            return await self.conn.fetchrow(sql, *params)


def start_service(bench: Bench) -> None:
    cmd, env = service_command(bench.args, bench.url)
    bench.service_cmd = shell(cmd, env)
    print(f"== service: {bench.service_cmd}", flush=True)
    bench.proc = start_server(cmd, env, TMP / "streams_service.log", f"{bench.base}/readyz")
    _RUNNING.add(bench.proc)


def stop_service(bench: Bench) -> None:
    if bench.proc is not None:
        stop_server(bench.proc)
        _RUNNING.discard(bench.proc)
        bench.proc = None


async def make_public(bench: Bench) -> dict[str, Any]:
    """PUT the tenant's dashboard settings with public on (the admin key's job)."""
    async with bench.side.put(
        f"{bench.base}/v1/tenants/{TENANT}/dashboard",
        json={"public": True},
        headers={"Authorization": f"Bearer {bench.keys.admin}"},
    ) as resp:
        body = await resp.json()
        if resp.status != 200 or body.get("public") is not True:
            raise RuntimeError(f"PUT dashboard answered {resp.status}: {body}")
        return dict(body)


async def drain(bench: Bench, timeout: float) -> tuple[int, float]:
    """Wait until no report waits for the pipeline: (backlog left, seconds waited)."""
    started = time.monotonic()
    left = int(await bench.value(BACKLOG_SQL))
    while left and time.monotonic() - started < timeout:
        await asyncio.sleep(0.5)
        left = int(await bench.value(BACKLOG_SQL))
    return left, round(time.monotonic() - started, 1)


async def wait_quiet(bench: Bench, clients: set[int]) -> float:
    """Wait (up to --max-wait) until processes outside the run use less than
    --quiet-threshold cores; returns the last reading."""
    args = bench.args
    deadline = time.monotonic() + args.max_wait
    while True:
        a = procs.cpu_sample(time.monotonic(), bench.pid, clients, args.db)
        await asyncio.sleep(2.0)
        used = procs.cores_used(a, procs.cpu_sample(time.monotonic(), bench.pid, clients, args.db))
        other = used["other"]
        if other <= args.quiet_threshold or time.monotonic() >= deadline:
            if other > args.quiet_threshold:
                print(f"  other processes still use {other:.2f} cores; going on", flush=True)
            return other
        print(
            f"  other processes use {other:.2f} cores (> {args.quiet_threshold}); waiting",
            flush=True,
        )
        await asyncio.sleep(3.0)


async def wait_sockets_closed(bench: Bench, timeout: float = 60.0) -> int:
    """Wait until the service holds no more files than before the first phase (the last
    phase's streams have ended); returns how many it holds."""
    deadline = time.monotonic() + timeout
    fds = procs.memory(bench.pid).service_fds
    while fds > bench.base_fds + 50 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        fds = procs.memory(bench.pid).service_fds
    return fds


async def pipeline_share(bench: Bench) -> float | None:
    """The pipeline's share of the service process (it shrinks while intake is slow)."""
    try:
        async with bench.side.get(f"{bench.base}/metrics") as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    for line in text.splitlines():
        if line.startswith("civicpulse_pipeline_share "):
            return float(line.split()[1])
    return None


@dataclass
class Resources:
    """Every second: the service's memory and open files, the client processes' memory,
    and the pipeline's share of the service (a sign of intake slowing down)."""

    bench: Bench
    clients: set[int]
    points: list[tuple[float, float, float, int, float, float | None]] = field(default_factory=list)

    async def run(self, start: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            m = procs.memory(self.bench.pid)
            self.points.append(
                (
                    round(time.monotonic() - start, 2),
                    m.service_mib,
                    m.workers_mib,
                    m.service_fds,
                    procs.rss_mib(self.clients),
                    await pipeline_share(self.bench),
                )
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


async def wait_caught_up(group: ClientGroup, target: int, deadline: float) -> dict[str, Any]:
    """Poll the clients until every live stream has event `target`, or the deadline."""
    while True:
        status = await group.status(target)
        if status["caught_up"] >= status["alive"] or time.monotonic() >= deadline:
            return status
        await asyncio.sleep(0.5)


async def post_load(
    bench: Bench, rate: float, seconds: float, seed: int, start: float
) -> list[Post]:
    bodies = build_bodies(bench.records, max(1, round(rate * seconds)), seed=seed)
    return await run_open_loop(
        bench.posts,
        f"{bench.base}/v1/tenants/{TENANT}/reports",
        bench.keys.submit,
        bodies,
        rate,
        start,
    )


async def open_streams(bench: Bench, n: int) -> tuple[ClientGroup | None, dict[str, Any]]:
    args = bench.args
    if n == 0:
        return None, {"connected": 0, "failed": 0, "reasons": {}, "extra_attempts": 0}
    started = time.monotonic()
    group = ClientGroup.start(
        n,
        args.client_processes,
        host="127.0.0.1",
        port=args.port,
        path=f"/v1/tenants/{TENANT}/stream",
        open_rate=args.open_rate,
        sample=args.sample,
        connect_timeout=args.connect_timeout,
    )
    try:
        opened = await group.opened(n / args.open_rate + args.connect_timeout + 60)
    except BaseException:
        group.close()
        raise
    opened["wall_s"] = round(time.monotonic() - started, 2)
    print(
        f"  opened {opened['connected']:,} of {n:,} public streams in {opened['wall_s']} s "
        f"({len(group.procs)} client process(es)); failed {opened['failed']} "
        f"{opened['reasons'] or ''}",
        flush=True,
    )
    return group, opened


async def run_phase(bench: Bench, n: int, index: int) -> dict[str, Any]:
    """One phase: n open public streams, then the paced load, and everything measured."""
    args = bench.args
    label = f"{n:,} streams"
    what = "opened and closed" if args.open_only else f"then {args.rate:g} reports/s"
    print(f"== phase {index + 1}: {label}, {what}", flush=True)
    left, waited = await drain(bench, args.drain_timeout)
    if waited > 1:
        print(f"  backlog before the phase drained in {waited} s ({left} left)", flush=True)
    if not args.no_analyze and not args.open_only:
        async with bench.lock:
            await bench.conn.execute("ANALYZE")
    fds_left = await wait_sockets_closed(bench)
    mem_before = procs.memory(bench.pid)
    group, opened = await open_streams(bench, n)
    out: dict[str, Any] = {"label": label, "streams": n, "open": opened}
    try:
        clients = group.pids if group else set()
        mem_open = procs.memory(bench.pid)
        a = procs.cpu_sample(time.monotonic(), bench.pid, clients, args.db)
        await asyncio.sleep(args.settle)
        idle = procs.cores_used(a, procs.cpu_sample(time.monotonic(), bench.pid, clients, args.db))
        out["memory"] = {
            "service_fds_left_from_before": fds_left,
            "before_open": dataclasses.asdict(mem_before),
            "all_open": dataclasses.asdict(mem_open),
            "clients_mib": procs.rss_mib(clients),
            "service_kib_per_stream": (
                round(1024 * (mem_open.service_mib - mem_before.service_mib) / n, 1) if n else None
            ),
        }
        out["idle_cores"] = idle
        print(
            f"  service RSS {mem_before.service_mib} -> {mem_open.service_mib} MiB, fds "
            f"{mem_before.service_fds} -> {mem_open.service_fds}; idle with the streams open: "
            f"service {idle['service']:.2f} cores, clients {idle['clients']:.2f}",
            flush=True,
        )
        if args.open_only:
            if group is not None:
                now = time.monotonic()
                parts = await group.report(seq_before=0, t0=now, t1=now, bins=0)
                out["streams_ended_early"] = sum(
                    1 for p in parts for s in p["streams"] if s[1] and s[-1]
                )
            return out
        out.update(await measure(bench, n, index, group, clients))
    finally:
        if group is not None:
            group.close()
    return out


async def measure(
    bench: Bench, n: int, index: int, group: ClientGroup | None, clients: set[int]
) -> dict[str, Any]:
    """The load with the streams open: POSTs, the staff stream, then the streams' reports."""
    args = bench.args
    background = await wait_quiet(bench, clients)
    seq_before = int(await bench.value(LAST_SEQ_SQL, bench.tenant_id))
    log = StreamLog()
    stream_stop = asyncio.Event()
    staff = asyncio.create_task(
        follow(
            bench.side,
            f"{bench.base}/v1/tenants/{TENANT}/stream",
            bench.keys.staff,
            log,
            stream_stop,
        )
    )
    resources = Resources(bench, clients)
    sampler_stop = asyncio.Event()
    sampler: asyncio.Task[None] | None = None
    window_cpu: asyncio.Task[procs.CpuSample] | None = None
    try:
        try:
            await asyncio.wait_for(log.connected.wait(), 30)
        except TimeoutError:
            raise RuntimeError("the staff stream did not connect within 30 s") from None
        start = time.monotonic() + 0.2
        window_end = start + args.seconds
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        cpu_start = procs.cpu_sample(time.monotonic(), bench.pid, clients, args.db)
        sampler = asyncio.create_task(resources.run(start, sampler_stop))

        async def at_window_end() -> procs.CpuSample:
            await asyncio.sleep(max(0.0, window_end - time.monotonic()))
            return procs.cpu_sample(time.monotonic(), bench.pid, clients, args.db)

        window_cpu = asyncio.create_task(at_window_end())
        posts = await post_load(bench, args.rate, args.seconds, args.seed + 1 + index, start)
        cpu_end = await window_cpu
        answered_at = time.monotonic()
        accepted = {p.report_id for p in posts if p.report_id is not None}
        grace_end = max(window_end, answered_at) + args.grace
        await until_seen(log, accepted, grace_end)
        left, _ = await drain(bench, args.drain_timeout)
        # The last reports' frames follow their commit by a broker flush and a paced wake-up.
        await until_seen(log, accepted, time.monotonic() + 3.0)
        public = await bench.row(PUBLIC_EVENTS_SQL, bench.tenant_id, seq_before, PUBLIC_KINDS)
        target = int(public["last"])
        caught: dict[str, Any] = {}
        if group is not None:
            caught = await wait_caught_up(group, target, time.monotonic() + args.grace)
            caught["seconds_after_window"] = round(time.monotonic() - window_end, 1)
            print(
                f"  {caught['caught_up']:,} of {caught['alive']:,} live streams have the last "
                f"public event ({target}) {caught['seconds_after_window']} s after the window; "
                f"{caught['ended']} ended early",
                flush=True,
            )
        cpu_done = procs.cpu_sample(time.monotonic(), bench.pid, clients, args.db)
    finally:
        stream_stop.set()
        sampler_stop.set()
        for task in (window_cpu, sampler):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(
            staff, *(t for t in (window_cpu, sampler) if t is not None), return_exceptions=True
        )
    if staff.exception() is not None:
        raise RuntimeError("the staff stream failed") from staff.exception()

    reports: list[dict[str, Any]] = []
    if group is not None:
        bins = math.ceil(time.monotonic() - start) + 1
        reports = await group.report(seq_before=seq_before, t0=start, t1=window_end, bins=bins)
    post = metrics.post_figures(posts, args.seconds)
    matched = metrics.match(posts, log)
    sse, _ = metrics.stream_figures(posts, matched, grace_end)
    fan = figures.fan_out(
        reports,
        figures.due_by_event(posts, log),
        t0=start,
        seconds=args.seconds,
        expected_public=int(public["n"]),
    )
    peak = max(resources.points, key=lambda p: p[1]) if resources.points else None
    shares = [p[5] for p in resources.points if p[5] is not None and p[0] <= args.seconds]
    res: dict[str, Any] = {
        "rate": args.rate,
        "seconds": args.seconds,
        "background_cores_before": background,
        **post,
        "achieved_ratio": round(post["sent_per_s"] / args.rate, 3),
        "staff_stream": {
            **sse,
            "frames": log.frames,
            "connects": log.connects,
            "disconnects": log.disconnect_reasons,
        },
        "backlog_left_after_drain": left,
        "caught_up": caught,
        "public": fan,
        "cpu_cores_window": procs.cores_used(cpu_start, cpu_end),
        "cpu_cores_after_window": procs.cores_used(cpu_end, cpu_done),
        "service_rss_max_mib": peak[1] if peak else None,
        "workers_rss_max_mib": max((p[2] for p in resources.points), default=None),
        "clients_rss_max_mib": max((p[4] for p in resources.points), default=None),
        "pipeline_share_mean": round(sum(shares) / len(shares), 3) if shares else None,
        "pipeline_share_min": min(shares, default=None),
        "resources_series": resources.points,
        "post_p99_by_second": figures.post_seconds(posts, start),
    }
    report.print_phase(res)
    return res


async def warm_up(bench: Bench) -> dict[str, Any]:
    """Unmeasured load with no streams: the process pool and the classifier start cold."""
    args = bench.args
    print(f"== warm-up: {args.rate:g} reports/s for {args.warmup:g} s, no streams", flush=True)
    posts = await post_load(bench, args.rate, args.warmup, args.seed, time.monotonic() + 0.2)
    post = metrics.post_figures(posts, args.warmup)
    print(
        f"  POST p50 {1000 * (post['post_p50_s'] or 0):.1f} ms, p99 "
        f"{1000 * (post['post_p99_s'] or 0):.1f} ms, statuses {post['status']}",
        flush=True,
    )
    return post


async def run(args: argparse.Namespace, url: str, keys: Keys) -> dict[str, Any]:
    records = data.load_la311()
    conn = await asyncpg.connect(url)
    posts = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.connections, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(total=args.post_timeout),
    )
    side = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
    bench = Bench(args, url, keys, records, conn, posts, side)
    out: dict[str, Any] = {"phases": []}
    try:
        bench.tenant_id = int(await bench.value("SELECT id FROM tenants WHERE slug = $1", TENANT))
        await asyncio.to_thread(start_service, bench)
        bench.base_fds = procs.memory(bench.pid).service_fds
        out["dashboard"] = await make_public(bench)
        if args.warmup > 0 and not args.open_only:
            out["warmup"] = await warm_up(bench)
        for index, n in enumerate(args.stream_list):
            out["phases"].append(await run_phase(bench, n, index))
    finally:
        await asyncio.to_thread(stop_service, bench)
        await posts.close()
        await side.close()
        await conn.close()
    out["service_command"] = bench.service_cmd
    return out


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.streams.run",
        description="Fan-out benchmark (issue 15): POST latency of intake at a fixed rate "
        "with 0, 1,000 and 10,000 open public live streams on one `civicpulse serve` "
        "process; frames delivered, missed events, fan-out lag, the service's memory and "
        "CPU. Drops and recreates the database given by --db.",
    )
    p.add_argument(
        "--streams",
        default="0,1000,10000",
        help="public streams per phase, comma-separated, in order; the first 0 is the "
        "baseline of the p99 ratio (0,1000,10000)",
    )
    p.add_argument("--rate", type=float, default=300.0, help="reports per second (300)")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of load per phase (30)")
    p.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds of unmeasured load before the first phase, no streams (5); 0: none",
    )
    p.add_argument(
        "--open-rate",
        type=float,
        default=400.0,
        help="public streams opened per second, all client processes together (400)",
    )
    p.add_argument(
        "--client-processes",
        type=int,
        default=2,
        help="processes holding the public streams (2; at most one per stream)",
    )
    p.add_argument(
        "--sample",
        type=int,
        default=100,
        help="streams whose every frame is timed against its POST (100)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds with the streams open and no load, to measure what idle streams cost (3)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="seconds a stream may take to send ': connected' (30)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds after the window that the staff stream, then the public streams, may "
        "take to get the last events (30)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=300.0,
        help="longest wait for the pipeline's backlog to drain, seconds (300)",
    )
    p.add_argument("--connections", type=int, default=64, help="keep-alive POST connections (64)")
    p.add_argument("--post-timeout", type=float, default=30.0, help="per POST, seconds (30)")
    p.add_argument(
        "--open-only",
        action="store_true",
        help="only open the streams of each phase, measure them idle and close them: no load",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the service, e.g. CIVICPULSE_STREAM_MAX_WAKEUPS=20000 "
        "(repeatable; the benchmark sets CIVICPULSE_RATE_LIMIT_KEY_PER_SECOND=0 and "
        "CIVICPULSE_RATE_LIMIT_PUBLIC_PER_SECOND=0 unless given)",
    )
    p.add_argument(
        "--no-analyze",
        action="store_true",
        help="do not ANALYZE before each phase (statistics are then the service's own)",
    )
    p.add_argument("--db", default="bench_streams", help="database to recreate (bench_streams)")
    p.add_argument(
        "--pg-url",
        default=PG_ADMIN_URL,
        help=f"PostgreSQL server, superuser, no database ({PG_ADMIN_URL})",
    )
    p.add_argument("--port", type=int, default=8395, help="service port (8395)")
    p.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.25,
        help="before each phase's load, wait until other processes use less than this many "
        "cores (0.25)",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        default=60.0,
        help="longest wait for a quiet machine before each phase, seconds (60)",
    )
    p.add_argument("--seed", type=int, default=15, help="seed of the report bodies (15)")
    p.add_argument(
        "--out",
        default=str(RESULTS / "streams"),
        help="results path without extension: writes .json and .md (bench/results/streams)",
    )
    args = p.parse_args(argv)
    try:
        args.stream_list = [int(s) for s in args.streams.split(",") if s.strip()]
    except ValueError:
        p.error(f"--streams {args.streams!r}: expected counts such as 0,1000,10000")
    if not args.stream_list or any(n < 0 for n in args.stream_list):
        p.error("--streams: give at least one count, none below 0")
    for name in ("rate", "seconds", "open_rate"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be above 0")
    if args.client_processes < 1:
        p.error("--client-processes must be at least 1")
    for kv in args.env:
        if "=" not in kv:
            p.error(f"--env {kv!r}: expected KEY=VALUE")
    return args


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the service subprocess is stopped.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    invocation = ".venv/bin/python -m bench.streams.run " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    # The service inherits this limit, and needs a socket per stream.
    nofile = procs.raise_nofile()
    most = max(args.stream_list)
    if most + SERVICE_FDS > nofile:
        print(
            f"error: {most:,} streams need about {most + SERVICE_FDS:,} open files in the "
            f"service, and the limit here is {nofile:,} (`ulimit -Hn` raises the ceiling)",
            file=sys.stderr,
        )
        return 2
    ctx = machine_context(args.pg_url)
    ctx.pop("wrk", None)  # not used here
    ctx["service_files_changed"] = uncommitted_service_files()
    ctx["aiohttp (load generator)"] = aiohttp.__version__
    ctx["open_files_limit"] = nofile
    with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
        ctx["ephemeral_ports"] = fh.read().strip().replace("\t", "-")
    print_context(ctx)
    url = db_url(args.db, args.pg_url)
    TMP.mkdir(parents=True, exist_ok=True)
    print(f"== setup: fresh database {args.db}, tenant {TENANT}", flush=True)
    keys, setup_cmds = setup_database(args, url)
    started = time.monotonic()
    try:
        import uvloop

        measured = uvloop.run(run(args, url, keys))
    finally:
        for proc in list(_RUNNING):
            stop_server(proc)
    results: dict[str, Any] = {
        "context": ctx,
        "invocation": invocation.strip(),
        "setup_commands": setup_cmds,
        "config": {
            "streams": args.stream_list,
            "rate": args.rate,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "open_rate": args.open_rate,
            "client_processes": args.client_processes,
            "sample": args.sample,
            "settle_s": args.settle,
            "grace_s": args.grace,
            "connections": args.connections,
            "env": args.env,
            "open_only": args.open_only,
            "analyze_before_each_phase": not args.no_analyze,
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
    for line in report.summary_lines(results):
        print(line)
    written = [out.with_suffix(".json"), out.with_suffix(".md")]
    print(
        "== wrote "
        + ", ".join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in written)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
