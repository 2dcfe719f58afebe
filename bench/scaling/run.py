"""Scaling benchmark: intake and live-stream delivery at 1, 2 and 4 processes behind HAProxy.

On one machine, with one PostgreSQL, for each N in --processes (and, for N=1, once more with
the load sent straight to the process, no HAProxy: the proxy's cost), each repeat in turn:
  1. a fresh database `scaling_bench_<N>`, ops/cluster.py started on it exactly as an operator
     starts it (service environment in cluster.py), a tenant and a key of each scope;
  2. one report posted and waited for until grouped: the issue the comments go to, and a
     warm pipeline (its process pool and the tenant's classifier start cold);
  3. for each --streams count S (HAProxy cells only): S staff streams opened through HAProxy
     from --readers processes (leastconn spreads them over the processes), then, while a
     paced intake load runs, --comments comments made one after another on the issue
     through HAProxy; per comment and stream, the time from the comment's request start to
     its frame's arrival on that stream;
  4. single-report intake: --connections keep-alive connections from a load process of its
     own POST one report each (with an Idempotency-Key) as fast as they are answered, for
     --warmup then --seconds measured: acknowledged reports/s, latency, non-2xx;
  5. batch intake: the same with --batch-size reports per POST .../reports/batch;
  6. the cluster stopped (its processes drain), the database dropped.
CPU of every role (service processes, their pools, HAProxy, PostgreSQL, the load and reader
processes, this driver) is read from /proc over each measured window. Medians over repeats
go to <out>.md and <out>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp
import asyncpg
import msgspec

from bench.ingest import data
from bench.ingest.common import PG_ADMIN_URL, RESULTS, ROOT, db_url, machine_context, print_context
from bench.pipeline.load import build_bodies
from bench.pipeline.run import uncommitted_service_files
from bench.scaling import cluster, cpu, load, readers, report
from bench.streams.clients import recv
from bench.streams.procs import raise_nofile
from civicpulse.config import Settings

BACKLOG_SQL = (
    "SELECT count(*) FROM reports WHERE tenant_id = $1 AND state IN ('received', 'classified')"
)
COMMENTS_SQL = (
    "SELECT seq, note FROM issue_events WHERE tenant_id = $1 AND issue_id = $2 "
    "AND kind = 'comment' AND note LIKE $3"
)
GAUGE = "civicpulse_streams_open "  # /metrics: live streams in the process
_RUNNING: list[cluster.Cluster] = []


@dataclass(frozen=True)
class Cell:
    """One configuration: N processes, load through HAProxy or straight to the process."""

    processes: int
    direct: bool = False

    @property
    def label(self) -> str:
        return f"{self.processes} direct" if self.direct else str(self.processes)

    @property
    def db(self) -> str:
        return f"scaling_bench_{self.processes}" + ("_direct" if self.direct else "")


@dataclass
class Ctx:
    """What one cell's phases share."""

    args: argparse.Namespace
    cell: Cell
    repeat: int
    cl: cluster.Cluster
    keys: cluster.Keys
    conn: asyncpg.Connection
    http: aiohttp.ClientSession
    singles: tuple[bytes, ...]
    batches: tuple[bytes, ...]
    issue_id: str = ""
    version: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def lb(self) -> str:
        return f"http://{self.cl.host}:{self.cl.lb_port}"

    @property
    def intake_port(self) -> int:
        """Where intake goes: HAProxy, or the only process in a direct cell."""
        return self.cl.apps[0][1] if self.cell.direct else self.cl.lb_port

    def roles(
        self, loadgen: frozenset[int] = frozenset(), reader_pids: frozenset[int] = frozenset()
    ) -> cpu.Roles:
        return cpu.Roles(self.cl.app_pids, self.cl.haproxy_pid, loadgen, reader_pids)

    async def value(self, sql: str, *params: object) -> Any:
        async with self.lock:
            return await self.conn.fetchval(sql, *params)

    def sample(self, roles: cpu.Roles) -> cpu.Sample:
        return cpu.sample(time.monotonic(), roles, self.cell.db)


async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.monotonic()))


class LoadProcess:
    """A load.py process: spawned, connected, then told when to start."""

    def __init__(self, spec: load.Spec) -> None:
        ctx = mp.get_context("spawn")  # never fork a process with a running event loop
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=load.serve, args=(child, spec), name="intake-load")
        self.proc.daemon = True
        self.proc.start()
        child.close()
        self.drain = spec.drain

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    async def _answer(self, kind: str, timeout: float) -> Any:
        try:
            got, body = await asyncio.to_thread(recv, self.pipe, timeout, "the load process")
        except EOFError:
            raise RuntimeError(f"the load process exited ({self.proc.exitcode})") from None
        if got != kind:
            raise RuntimeError(f"the load process answered {got!r} to {kind!r}")
        return body

    async def ready(self) -> None:
        await self._answer("ready", 60.0)

    def go(self, start: float, measure_from: float, measure_to: float) -> None:
        self.pipe.send(("go", (start, measure_from, measure_to)))

    async def figures(self, measure_to: float) -> dict[str, Any]:
        wait = measure_to - time.monotonic() + self.drain + 30
        return dict(await self._answer("figures", max(wait, 30.0)))

    def close(self) -> None:
        self.pipe.close()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


def load_spec(
    ctx: Ctx, *, batch: bool, port: int, connections: int, rate: float, tag: str
) -> load.Spec:
    path = f"/v1/tenants/{cluster.TENANT}/reports" + ("/batch" if batch else "")
    return load.Spec(
        host=ctx.cl.host,
        port=port,
        path=path,
        key=ctx.keys.submit,
        bodies=ctx.batches if batch else ctx.singles,
        items_per_body=ctx.args.batch_size if batch else 1,
        connections=connections,
        rate=rate,
        key_prefix=f"r{ctx.repeat}-n{ctx.cell.label.replace(' ', '')}-{tag}",
    )


# -- intake ----------------------------------------------------------------------------------


async def intake(ctx: Ctx, *, batch: bool) -> dict[str, Any]:
    """Closed-loop intake through HAProxy (or straight to the process): figures and CPU."""
    args = ctx.args
    connections = args.batch_connections if batch else args.connections
    warmup = args.batch_warmup if batch else args.warmup
    seconds = args.batch_seconds if batch else args.seconds
    backlog = int(await ctx.value(BACKLOG_SQL, ctx.keys.tenant_id))
    spec = load_spec(
        ctx,
        batch=batch,
        port=ctx.intake_port,
        connections=connections,
        rate=0.0,
        tag="batch" if batch else "single",
    )
    lp = LoadProcess(spec)
    try:
        await lp.ready()
        start = time.monotonic() + 0.2
        measure_from = start + warmup
        measure_to = measure_from + seconds
        lp.go(start, measure_from, measure_to)
        roles = ctx.roles(frozenset({lp.pid}))
        await sleep_until(measure_from)
        a = ctx.sample(roles)
        await sleep_until(measure_to)
        b = ctx.sample(roles)
        figures = await lp.figures(measure_to)
    finally:
        lp.close()
    figures.update(
        connections=connections,
        warmup_s=warmup,
        seconds=seconds,
        backlog_before=backlog,
        cpu=cpu.cores(a, b),
    )
    what = f"batch x{args.batch_size}" if batch else "single"
    print(
        f"    {what:<11} {figures['acked_per_s']:>9,.0f} reports/s  p50 {_ms(figures['p50_s'])}"
        f"  p99 {_ms(figures['p99_s'])} ms  non-2xx {figures['non_2xx']}  "
        f"cores {_cores(figures['cpu'])}",
        flush=True,
    )
    return figures


# -- streams ---------------------------------------------------------------------------------


class _Version(msgspec.Struct):
    version: int


_version = msgspec.json.Decoder(_Version).decode


async def probe_issue(ctx: Ctx) -> float:
    """Post one report and wait until it is grouped: the issue the comments go to. Returns
    the seconds it took (the pipeline's cold start)."""
    started = time.monotonic()
    submit = {"Authorization": f"Bearer {ctx.keys.submit}", "Content-Type": "application/json"}
    async with ctx.http.post(
        f"{ctx.lb}/v1/tenants/{cluster.TENANT}/reports", data=ctx.singles[0], headers=submit
    ) as resp:
        body = await resp.json()
        if resp.status != 202:
            raise RuntimeError(f"the probe report was answered {resp.status}: {body}")
    report_id = body["id"]
    deadline = time.monotonic() + ctx.args.grace * 4
    while True:
        issue = await ctx.value("SELECT issue_id FROM reports WHERE id = $1", report_id)
        if issue is not None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the probe report was not grouped in time: see the cluster logs")
        await asyncio.sleep(0.2)
    ctx.issue_id = str(issue)
    ctx.version = await current_version(ctx)
    return round(time.monotonic() - started, 2)


async def current_version(ctx: Ctx) -> int:
    async with ctx.http.get(
        f"{ctx.lb}/v1/tenants/{cluster.TENANT}/issues/{ctx.issue_id}",
        headers={"Authorization": f"Bearer {ctx.keys.staff}"},
    ) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET issue answered {resp.status}: {raw[:300]!r}")
        return _version(raw).version


@dataclass(frozen=True)
class Comment:
    k: int
    started: float  # time.monotonic() at the request's start (of the attempt that counted)
    done: float
    status: int
    attempts: int


async def comment(ctx: Ctx, note: str) -> tuple[float, int, int]:
    """One comment with the version read; a 412 (the pipeline moved the issue meanwhile)
    reads the version again and retries. Returns (start of the last attempt, status,
    attempts)."""
    url = f"{ctx.lb}/v1/tenants/{cluster.TENANT}/issues/{ctx.issue_id}/comments"
    headers = {"Authorization": f"Bearer {ctx.keys.staff}"}
    status = 0
    for attempt in range(1, 6):
        started = time.monotonic()
        async with ctx.http.post(
            url, json={"note": note, "version": ctx.version}, headers=headers
        ) as resp:
            raw = await resp.read()
            status = resp.status
        if status == 200:
            ctx.version = _version(raw).version
            return started, status, attempt
        if status != 412:
            raise RuntimeError(f"a comment was answered {status}: {raw[:300]!r}")
        ctx.version = await current_version(ctx)
    return started, status, attempt


async def comments(ctx: Ctx, tag: str, first: float) -> list[Comment]:
    """--comments comments, one after another, the k-th due at first + k / --comment-rate."""
    out = []
    for k in range(ctx.args.comments):
        await sleep_until(first + k / ctx.args.comment_rate)
        started, status, attempts = await comment(ctx, f"scaling probe {tag}-{k}")
        out.append(Comment(k, started, time.monotonic(), status, attempts))
    return out


async def streams_open(ctx: Ctx) -> list[int]:
    """Streams each process holds, from its civicpulse_streams_open gauge (-1: unknown)."""
    out = []
    for _, port in ctx.cl.apps:
        async with ctx.http.get(f"http://{ctx.cl.host}:{port}/metrics") as resp:
            text = await resp.text()
        values = [line.split()[1] for line in text.splitlines() if line.startswith(GAUGE)]
        out.append(int(float(values[0])) if values else -1)
    return out


async def wait_caught_up(group: readers.Readers, target: int, deadline: float) -> dict[str, int]:
    while True:
        status = await group.status(target)
        if status["caught_up"] >= status["alive"] or time.monotonic() >= deadline:
            return status
        await asyncio.sleep(0.25)


async def streams_phase(ctx: Ctx, n: int) -> dict[str, Any]:
    """n staff streams through HAProxy; comments while paced intake runs; deliveries."""
    args = ctx.args
    tag = f"r{ctx.repeat}-s{n}"
    group: readers.Readers | None = None
    out: dict[str, Any] = {"streams": n}
    try:
        if n:
            group = readers.Readers.start(
                n,
                args.readers,
                readers.Config(
                    host=ctx.cl.host,
                    port=ctx.cl.lb_port,
                    path=f"/v1/tenants/{cluster.TENANT}/stream",
                    key=ctx.keys.staff,
                    count=n,
                    open_rate=args.open_rate,
                    connect_timeout=args.connect_timeout,
                ),
            )
            out["open"] = await group.opened(n / args.open_rate + args.connect_timeout + 60)
        await asyncio.sleep(args.settle)
        out["backlog_before"] = int(await ctx.value(BACKLOG_SQL, ctx.keys.tenant_id))
        spec = load_spec(
            ctx,
            batch=False,
            port=ctx.cl.lb_port,
            connections=args.stream_connections,
            rate=args.stream_rate,
            tag=f"s{n}",
        )
        lp_proc = LoadProcess(spec)
        try:
            await lp_proc.ready()
            window = max(args.stream_seconds, args.comments / args.comment_rate + 1.0)
            start = time.monotonic() + 0.2
            end = start + window
            lp_proc.go(start, start, end)
            roles = ctx.roles(frozenset({lp_proc.pid}), frozenset(group.pids if group else ()))
            await sleep_until(start)
            a = ctx.sample(roles)
            made = await comments(ctx, tag, start + 0.5)
            await sleep_until(end)
            b = ctx.sample(roles)
            out["intake"] = await lp_proc.figures(end)
        finally:
            lp_proc.close()
        out["cpu"] = cpu.cores(a, b)
        out["window_s"] = round(window, 2)
        async with ctx.lock:
            rows = await ctx.conn.fetch(
                COMMENTS_SQL, ctx.keys.tenant_id, ctx.issue_id, f"scaling probe {tag}-%"
            )
        by_k = {c.k: c for c in made}
        started = {int(r["seq"]): by_k[int(r["note"].rsplit("-", 1)[1])].started for r in rows}
        lat = [c.done - c.started for c in made]
        out["comment_post"] = {
            "made": len(made),
            "logged": len(rows),
            "retried": sum(1 for c in made if c.attempts > 1),
            "p50_s": readers.pct(lat, 0.5),
            "p99_s": readers.pct(lat, 0.99),
        }
        if group is not None:
            target = max(started, default=0)
            out["caught_up"] = await wait_caught_up(group, target, time.monotonic() + args.grace)
            # Counted now, not as they opened: the last phase's streams, closed by their
            # clients, stay open in the service until it next writes to them (HAProxy keeps
            # the server side of an aborted response), and the comments were such writes.
            out["streams_per_process"] = await streams_open(ctx)
            seen = await group.report()
            out["delivery"] = readers.deliveries(seen, started)
    finally:
        if group is not None:
            group.close()
    _print_streams(out)
    return out


def _print_streams(out: dict[str, Any]) -> None:
    intake_fig = out["intake"]
    line = (
        f"    {out['streams']:>5,} streams  intake {intake_fig['acked_per_s']:,.0f}/s "
        f"p99 {_ms(intake_fig['p99_s'])} ms"
    )
    if "delivery" in out:
        d = out["delivery"]
        line += (
            f"  delivery p50 {_ms(d['p50_s'])} p95 {_ms(d['p95_s'])} p99 {_ms(d['p99_s'])} ms"
            f" ({d['deliveries']:,} deliveries, {d['missed']} missed)"
            f"  spread {out.get('streams_per_process')}"
        )
    print(line + f"  cores {_cores(out['cpu'])}", flush=True)


# -- a cell ----------------------------------------------------------------------------------


async def run_cell(
    args: argparse.Namespace,
    cell: Cell,
    repeat: int,
    singles: tuple[bytes, ...],
    batches: tuple[bytes, ...],
) -> dict[str, Any]:
    url = db_url(cell.db, args.pg_url)
    out: dict[str, Any] = {"processes": cell.processes, "direct": cell.direct, "repeat": repeat}
    out["background_cores_before"] = await asyncio.to_thread(wait_quiet, args)
    t0 = time.monotonic()
    await asyncio.to_thread(cluster.create_database, args.pg_url, cell.db)
    run_dir = Path(args.run_dir) / f"r{repeat}-n{cell.label.replace(' ', '')}"
    cl = await asyncio.to_thread(cluster.start, cell.processes, url, run_dir, args.env_dict)
    _RUNNING.append(cl)
    try:
        out["startup_s"] = round(time.monotonic() - t0, 1)
        out["cluster_command"] = cl.command
        keys = await cluster.make_tenant(url)
        conn = await asyncpg.connect(url)
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        try:
            ctx = Ctx(args, cell, repeat, cl, keys, conn, http, singles, batches)
            out["probe_grouped_s"] = await probe_issue(ctx)
            if not cell.direct:
                out["streams"] = [await streams_phase(ctx, n) for n in args.stream_list]
            out["single"] = await intake(ctx, batch=False)
            if not args.no_batch:
                out["batch"] = await intake(ctx, batch=True)
        finally:
            await http.close()
            await conn.close()
    finally:
        t1 = time.monotonic()
        await asyncio.to_thread(cluster.stop, cl)
        _RUNNING.remove(cl)
        out["stop_s"] = round(time.monotonic() - t1, 1)
        await asyncio.to_thread(cluster.drop_database, args.pg_url, cell.db)
    return out


def wait_quiet(args: argparse.Namespace) -> float:
    """Wait (up to --max-wait s) until the machine uses less than --quiet-threshold cores
    (nothing of this benchmark runs now: it is all someone else's); returns the reading."""
    deadline = time.monotonic() + args.max_wait
    roles = cpu.Roles(frozenset())
    while True:
        a = cpu.sample(time.monotonic(), roles, "")
        time.sleep(2.0)
        busy = cpu.cores(a, cpu.sample(time.monotonic(), roles, ""))["machine"]
        if busy <= args.quiet_threshold or time.monotonic() >= deadline:
            if busy > args.quiet_threshold:
                print(f"  the machine is busy ({busy:.2f} cores) already; going on", flush=True)
            return busy
        time.sleep(1.0)


async def run(args: argparse.Namespace, cells: list[Cell]) -> list[dict[str, Any]]:
    records = data.load_la311()
    singles = tuple(build_bodies(records, 2000, seed=args.seed))
    # Each batch is --batch-size of those bodies in a JSON array.
    size = args.batch_size
    batches = tuple(
        b"[" + b",".join(singles[(j * size + i) % len(singles)] for i in range(size)) + b"]"
        for j in range(max(1, len(singles) // size))
    )
    runs = []
    for repeat in range(1, args.repeat + 1):
        for cell in cells:
            print(f"== repeat {repeat}/{args.repeat}, N={cell.label}", flush=True)
            res = await run_cell(args, cell, repeat, singles, batches)
            print(
                f"    (cell up in {res['startup_s']} s, probe grouped in "
                f"{res['probe_grouped_s']} s, stopped in {res['stop_s']} s)",
                flush=True,
            )
            runs.append(res)
    return runs


# -- helpers ---------------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{1000 * v:,.1f}"


def _cores(c: dict[str, float]) -> str:
    keys = ("service", "workers", "haproxy", "postgres", "loadgen", "readers", "other")
    return " ".join(f"{k[:4]} {c[k]:.2f}" for k in keys if c.get(k)) + f" = {c['machine']:.2f}"


# -- main ------------------------------------------------------------------------------------


QUICK = {
    "repeat": 1,
    "warmup": 1.0,
    "seconds": 5.0,
    "batch_warmup": 1.0,
    "batch_seconds": 4.0,
    "streams": "300",
    "comments": 10,
    "stream_seconds": 3.0,
    "max_wait": 5.0,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.scaling.run",
        description="Scaling benchmark: intake (acknowledged reports/s, latency) and staff "
        "live-stream delivery at 1, 2 and 4 service processes behind HAProxy "
        "(ops/cluster.py) on one PostgreSQL, with the load sent straight to one process "
        "as the baseline, and the CPU of every role. Creates and drops the databases "
        "scaling_bench_<N>.",
    )
    p.add_argument("--processes", default="1,2,4", help="service processes per cell (1,2,4)")
    p.add_argument("--repeat", type=int, default=3, help="runs of every cell; medians (3)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of about 2 minutes: one repeat, short windows, 300 streams; "
        "results go to a temporary directory unless --out is given",
    )
    p.add_argument(
        "--no-direct", action="store_true", help="no N=1 cell without HAProxy (the baseline)"
    )
    g = p.add_argument_group("intake")
    g.add_argument("--connections", type=int, default=64, help="single-report intake (64)")
    g.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (2)")
    g.add_argument("--seconds", type=float, default=10.0, help="measured seconds (10)")
    g.add_argument("--batch-size", type=int, default=100, help="reports per batch POST (100)")
    g.add_argument("--batch-connections", type=int, default=8, help="batch intake (8)")
    g.add_argument("--batch-warmup", type=float, default=2.0, help="batch: unmeasured s (2)")
    g.add_argument("--batch-seconds", type=float, default=6.0, help="batch: measured s (6)")
    g.add_argument("--no-batch", action="store_true", help="skip batch intake")
    g = p.add_argument_group("streams")
    g.add_argument(
        "--streams",
        default="500,2000",
        help="staff streams per phase, comma-separated; 0: the paced intake alone (500,2000)",
    )
    g.add_argument("--readers", type=int, default=2, help="reader processes (2)")
    g.add_argument("--open-rate", type=float, default=500.0, help="streams opened per s (500)")
    g.add_argument("--comments", type=int, default=20, help="comments per phase (20)")
    g.add_argument("--comment-rate", type=float, default=5.0, help="comments per second (5)")
    g.add_argument(
        "--stream-rate",
        type=float,
        default=20.0,
        help="reports per second posted (paced) while the streams are open (20)",
    )
    g.add_argument(
        "--stream-connections", type=int, default=8, help="connections for that intake (8)"
    )
    g.add_argument(
        "--stream-seconds",
        type=float,
        default=5.0,
        help="the paced intake's window, at least the comments' span plus 1 s (5)",
    )
    g.add_argument("--settle", type=float, default=1.0, help="s with the streams idle first (1)")
    g.add_argument("--connect-timeout", type=float, default=30.0, help="per stream, s (30)")
    g.add_argument(
        "--grace", type=float, default=30.0, help="s the streams may take to catch up (30)"
    )
    g = p.add_argument_group("environment")
    g.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="more service environment (repeatable), e.g. CIVICPULSE_STREAM_MAX_WAKEUPS=4000",
    )
    g.add_argument("--pg-url", default=PG_ADMIN_URL, help=f"superuser URL ({PG_ADMIN_URL})")
    g.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.3,
        help="before each cell, wait until the machine uses less than this many cores (0.3)",
    )
    g.add_argument("--max-wait", type=float, default=20.0, help="longest such wait, s (20)")
    g.add_argument("--seed", type=int, default=42, help="seed of the report bodies (42)")
    g.add_argument("--run-dir", help="the clusters' logs (default: a new temporary directory)")
    g.add_argument(
        "--render",
        metavar="JSON",
        help="run nothing: redraw the .md (and the .png, with matplotlib) from a run's .json",
    )
    g.add_argument(
        "--out",
        help="results path without extension (bench/results/scaling; with --quick a "
        "temporary directory)",
    )
    args = p.parse_args(argv)
    if args.quick:
        defaults = {a.dest: a.default for a in p._actions}
        for name, value in QUICK.items():
            if getattr(args, name) == defaults[name]:  # an explicit option wins
                setattr(args, name, value)
    try:
        args.process_list = [int(s) for s in args.processes.split(",") if s.strip()]
        args.stream_list = [int(s) for s in args.streams.split(",") if s.strip()]
    except ValueError:
        p.error("--processes and --streams take comma-separated whole numbers")
    if not args.process_list or min(args.process_list) < 1:
        p.error("--processes: at least one count, each at least 1")
    if any(n < 0 for n in args.stream_list):
        p.error("--streams: no count below 0")
    for kv in args.env:
        if "=" not in kv:
            p.error(f"--env {kv!r}: expected KEY=VALUE")
    args.env_dict = dict(kv.split("=", 1) for kv in args.env)
    for name in ("repeat", "connections", "batch_size", "batch_connections", "readers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("seconds", "batch_seconds", "comment_rate", "stream_rate", "open_rate"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be above 0")
    return args


def cells_of(args: argparse.Namespace) -> list[Cell]:
    cells = [Cell(n) for n in args.process_list]
    if not args.no_direct:
        cells.insert(0, Cell(1, direct=True))
    return cells


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the clusters are stopped.
    raise KeyboardInterrupt(f"signal {signum}")


def haproxy_version() -> str:
    if cluster.HAPROXY is None:
        return "not installed"
    out = subprocess.run([cluster.HAPROXY, "-v"], capture_output=True, text=True, check=False)
    return (out.stdout.splitlines() or ["-"])[0]


def render(path: Path) -> int:
    """Redraw <out>.md (and .png) from a run's <out>.json, e.g. once matplotlib is there."""
    results = json.loads(path.read_text())
    cells = sorted({(r["processes"], r["direct"]) for r in results["runs"]}, key=_cell_order)
    results["summary"] = report.summary(results, cells)
    written = report.write(path.with_suffix(""), results)
    print("== wrote " + ", ".join(_shown(p) for p in written))
    return 0


def _cell_order(cell: tuple[int, bool]) -> tuple[bool, int]:
    return (not cell[1], cell[0])  # the direct baseline first, then by N


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(Path(args.render))
    signal.signal(signal.SIGTERM, _terminate)
    if args.run_dir is None:
        args.run_dir = tempfile.mkdtemp(prefix="civicpulse-scaling-")
    if args.out is None:  # a smoke run leaves the committed results alone
        args.out = (
            str(Path(tempfile.mkdtemp(prefix="civicpulse-scaling-quick-")) / "scaling")
            if args.quick
            else str(RESULTS / "scaling")
        )
    invocation = ".venv/bin/python -m bench.scaling.run " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    nofile = raise_nofile()  # HAProxy, the processes and the readers inherit it
    most = max(args.stream_list, default=0)
    if 2 * most + 500 > nofile:
        print(f"error: {most:,} streams need more open files than {nofile:,}", file=sys.stderr)
        return 2
    ctx = machine_context(args.pg_url)
    ctx.pop("wrk", None)  # not used here
    ctx["haproxy"] = haproxy_version()
    ctx["service_files_changed"] = uncommitted_service_files()
    ctx["aiohttp (comments)"] = aiohttp.__version__
    ctx["open_files_limit"] = nofile
    print_context(ctx)
    cells = cells_of(args)
    print(f"== clusters' logs in {args.run_dir}", flush=True)
    started = time.monotonic()
    try:
        import uvloop

        runs = uvloop.run(run(args, cells))
    finally:
        for cl in list(_RUNNING):
            cluster.stop(cl)
    results: dict[str, Any] = {
        "context": ctx,
        "invocation": invocation.strip(),
        "config": {
            k: v
            for k, v in vars(args).items()
            if k not in ("env_dict", "process_list", "stream_list", "run_dir", "out")
        }
        | {
            "service_env": {**cluster.SERVICE_ENV, **args.env_dict},
            "per_process_source": "gauge",  # see report.PER_PROCESS
            # Stream wake-ups per second per process: it bounds how soon a frame goes out.
            "stream_max_wakeups": float(
                args.env_dict.get("CIVICPULSE_STREAM_MAX_WAKEUPS", Settings().stream_max_wakeups)
            ),
        },
        "runs": runs,
        "wall_s": round(time.monotonic() - started, 1),
    }
    results["summary"] = report.summary(results, [(c.processes, c.direct) for c in cells])
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    written = report.write(out, results)
    for line in report.summary_lines(results):
        print(line)
    print("== wrote " + ", ".join(_shown(p) for p in written))
    return 0


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


if __name__ == "__main__":
    sys.exit(main())
