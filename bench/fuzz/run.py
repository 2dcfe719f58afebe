"""Fuzz benchmark: fuzzed requests across every route of the OpenAPI document (issue 13).

Steps (each run starts from a fresh database):
  1. print the machine context;
  2. drop/create the database, migrate, create two tenants and their keys with the CLI;
  3. start `civicpulse serve` as a subprocess with the rate limits off, seed real data
     (places, teams, areas, a calendar, a policy, a few hundred LA311-derived reports),
     wait for grouping and read the ids back;
  4. fetch /openapi.json and send --requests cases drawn from it (bench/fuzz/cases.py):
     every route, valid requests mutated one or two parts at a time, plus the poison inputs
     issue 13 lists; count statuses per route and every server error, hang and cut body;
  5. replay each distinct failure alone, wait for the pipeline to finish the reports the
     fuzz sent, check /readyz, stop the server and read its log for tracebacks;
  6. optionally (--limited-requests) a second, shorter phase with the default rate limits;
  7. write bench/results/fuzz.{json,md}.

A failure is a 5xx other than a documented 503 (overloaded, storage_unavailable, or
/readyz not ready), a hang (no complete answer within --timeout), a truncated body, or a
connection closed without an answer. Contract anomalies (an answer with a valid status
that the document or the key's scope does not allow) are listed apart.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import contextlib

from bench.fuzz.cases import SCOPE_RANK, Case, Corpus, Generator, Op, operations
from bench.fuzz.client import Connection, Outcome
from bench.ingest.common import (
    PG_ADMIN_URL,
    RESULTS,
    ROOT,
    TMP,
    VENV_BIN,
    db_url,
    git_state,
    machine_context,
    percentile,
    print_context,
    psql,
    reset_database,
    shell,
)
from bench.ingest.data import load_la311, report_body
from bench.ingest.run import start_server, stop_server

TENANT, OTHER = "fuzz", "other"
HOST = "127.0.0.1"
DOCUMENTED_503 = {"overloaded", "storage_unavailable"}
QUEUE_PER_WORKER = 4  # cases generated ahead of the workers
RSS_EVERY_S = 2.0
KEEPER_EVERY_S = 1.0
# The rate-limited phase's tenant limits: low, so that the throttle answers a good share.
LIMITED = {"key_per_second": 20, "key_burst": 40, "public_per_second": 2, "public_burst": 5}


# -- setup -------------------------------------------------------------------------------


def setup_database(args: argparse.Namespace, url: str) -> tuple[dict[str, str], list[str]]:
    """Fresh database, schema, two tenants, their keys; returns the keys and the commands."""
    reset_database(args.pg_url, args.db)
    env = {**os.environ, "CIVICPULSE_DATABASE_URL": url}
    cli = str(VENV_BIN / "civicpulse")
    cmds: list[tuple[str | None, list[str]]] = [
        (None, [cli, "migrate"]),
        (None, [cli, "tenant", "create", TENANT, "--name", "Fuzz City"]),
        (None, [cli, "tenant", "create", OTHER, "--name", "Other", "--template", "facility"]),
    ]
    for scope in ("submit", "staff", "admin"):
        cmds.append((scope, [cli, "key", "create", "--tenant", TENANT, "--scope", scope]))
        cmds.append((f"other_{scope}", [cli, "key", "create", "--tenant", OTHER, "--scope", scope]))
    # The keeper's own keys: their rate-limit buckets are not the fuzz's.
    cmds.append(("keeper", [cli, "key", "create", "--tenant", TENANT, "--scope", "admin"]))
    cmds.append(("other_keeper", [cli, "key", "create", "--tenant", OTHER, "--scope", "admin"]))
    keys: dict[str, str] = {}
    for label, cmd in cmds:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{shell(cmd)} failed: {done.stderr}")
        if label:
            keys[label] = done.stdout.strip().splitlines()[0]
    shown = [
        f'psql {args.pg_url}/postgres -c \'DROP DATABASE IF EXISTS "{args.db}" WITH '
        f"(FORCE)' -c 'CREATE DATABASE \"{args.db}\"'"
    ]
    shown += [shell(c, {"CIVICPULSE_DATABASE_URL": url}) for _, c in cmds]
    return keys, shown


def server_command(port: int, url: str, limited: bool) -> tuple[list[str], dict[str, str]]:
    cmd = [
        str(VENV_BIN / "civicpulse"),
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-demo",
    ]
    env = {"CIVICPULSE_DATABASE_URL": url, "CIVICPULSE_LOG_FORMAT": "json"}
    if not limited:
        # Rate limits would answer 429 before most handlers run.
        env["CIVICPULSE_RATE_LIMIT_KEY_PER_SECOND"] = "0"
        env["CIVICPULSE_RATE_LIMIT_PUBLIC_PER_SECOND"] = "0"
    return cmd, env


class Api:
    """Plain calls for seeding and upkeep (not counted in the fuzz figures)."""

    def __init__(self, port: int) -> None:
        self.conn = Connection(HOST, port)
        self.host = f"{HOST}:{port}"
        self.problems: list[str] = []

    async def call(
        self, method: str, path: str, key: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        headers: list[bytes] = [f"{method} {path} HTTP/1.1".encode(), f"Host: {self.host}".encode()]
        payload = b""
        if key:
            headers.append(f"Authorization: Bearer {key}".encode())
        if body is not None:
            payload = json.dumps(body).encode()
            headers += [b"Content-Type: application/json", b"Content-Length: %d" % len(payload)]
        raw = b"\r\n".join(headers) + b"\r\n\r\n" + payload
        out = await self.conn.exchange(raw, head=False, timeout=60, stream_peek=0)
        if out.status is None:
            raise RuntimeError(f"{method} {path}: {out.kind} {out.detail}")
        try:
            data = json.loads(out.body) if out.body else None
        except ValueError:
            data = out.body.decode(errors="replace")
        return out.status, data

    async def ok(self, method: str, path: str, key: str, body: Any = None) -> Any:
        status, data = await self.call(method, path, key, body)
        if status >= 300:
            raise RuntimeError(f"seeding {method} {path}: {status} {data}")
        return data

    async def setting(self, method: str, path: str, key: str, body: Any = None) -> None:
        """A configuration step of the seed: a failure is noted, and the fuzz goes on
        without that piece (it is itself a finding)."""
        status, data = await self.call(method, path, key, body)
        if status >= 300:
            self.problems.append(f"seeding {method} {path} answered {status}: {data}")
            print("  WARNING: " + self.problems[-1], flush=True)


async def seed(port: int, url: str, keys: dict[str, str], reports: int, seed_: int) -> Corpus:
    """Create configuration and reports in both tenants, wait for grouping, read ids back."""
    api = Api(port)
    rng = random.Random(seed_)
    records = load_la311()
    codes: dict[str, dict[str, list[str]]] = {}
    report_ids: dict[str, list[str]] = {}
    issue_ids: dict[str, list[str]] = {}
    versions: dict[str, int] = {}
    cursors: dict[str, str] = {}
    for slug, prefix, count in ((TENANT, "", reports), (OTHER, "other_", max(50, reports // 4))):
        admin = keys[f"{prefix}admin"]
        t = f"/v1/tenants/{slug}"
        for team in ("roads", "parks", "facilities"):
            await api.setting("PUT", f"{t}/teams/{team}", admin, {"name": team.title()})
        for code, (lon, lat, d) in {
            "downtown": (-118.26, 34.04, 0.03),
            "valley": (-118.55, 34.17, 0.15),
        }.items():
            ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
            geometry = {"type": "Polygon", "coordinates": [ring]}
            area = {"name": code, "geometry": geometry}
            await api.setting("PUT", f"{t}/areas/{code}", admin, area)
        hours = {d: [["08:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
        await api.setting(
            "PUT",
            f"{t}/calendars/office",
            admin,
            {"timezone": "America/Los_Angeles", "hours": hours, "holidays": ["2026-12-25"]},
        )
        await api.setting(
            "PUT",
            f"{t}/sla-policies/standard",
            admin,
            {"name": "Standard", "calendar": "office", "response_minutes": 240,
             "resolution_minutes": 4320},
        )  # fmt: skip
        places = [
            {"code": "BLD-1", "kind": "building", "name": "Hall", "lat": 34.05, "lon": -118.24},
            {"code": "BLD-1-F1", "kind": "floor", "name": "Floor 1", "parent": "BLD-1"},
            {"code": "RM-101", "kind": "room", "name": "Room 101", "parent": "BLD-1-F1"},
            {"code": "PARK-7", "kind": "site", "name": "Echo Park", "lat": 34.07, "lon": -118.26},
        ]  # fmt: skip
        await api.setting("POST", f"{t}/places", admin, places)
        bodies = [report_body(rng, rng.choice(records)) for _ in range(count)]
        for i in range(0, count, 100):
            await api.ok("POST", f"{t}/reports/batch", keys[f"{prefix}submit"], bodies[i : i + 100])
    waited = wait_for_pipeline(url, 180)
    for slug, prefix in ((TENANT, ""), (OTHER, "other_")):
        staff, t = keys[f"{prefix}staff"], f"/v1/tenants/{slug}"
        page = await api.ok("GET", f"{t}/reports?limit=500", staff)
        report_ids[slug] = [r["id"] for r in page["items"]]
        page = await api.ok("GET", f"{t}/issues?limit=500", staff)
        issue_ids[slug] = [i["id"] for i in page["items"]]
        versions.update({i["id"]: i["version"] for i in page["items"]})
        codes[slug] = {}
        for kind in ("categories", "places", "teams", "areas", "calendars", "sla-policies"):
            data = await api.ok("GET", f"{t}/{kind}", staff)
            codes[slug][kind] = [item["code"] for item in data["items"]]
        if slug == TENANT:
            page = await api.ok("GET", f"{t}/issues?limit=2", staff)
            cursors["issues"] = page.get("next_cursor") or ""
            page = await api.ok("GET", f"{t}/reports?limit=2", staff)
            cursors["reports"] = page.get("next_cursor") or ""
    api.conn.close()
    print(
        f"  seeded: {sum(map(len, report_ids.values()))} reports, "
        f"{sum(map(len, issue_ids.values()))} issues (pipeline done in {waited['seconds']} s)",
        flush=True,
    )
    return Corpus(
        slug=TENANT,
        other_slug=OTHER,
        keys=keys,
        report_ids=report_ids,
        issue_ids=issue_ids,
        versions=versions,
        codes=codes,
        cursors=cursors,
        records=records,
        seed_problems=api.problems,
    )


def wait_for_pipeline(url: str, max_wait: float) -> dict[str, Any]:
    """Wait until no report waits for classification or grouping."""
    started = time.monotonic()
    sql = "SELECT count(*) FROM reports WHERE state IN ('received', 'classified')"
    left = int(psql(url, sql))
    while left and time.monotonic() - started < max_wait:
        time.sleep(1)
        left = int(psql(url, sql))
    return {"seconds": round(time.monotonic() - started, 1), "unfinished": left}


def report_states(url: str) -> dict[str, Any]:
    rows = psql(
        url,
        "SELECT t.slug || ' ' || r.state || ' ' || count(*) FROM reports r "
        "JOIN tenants t ON t.id = r.tenant_id GROUP BY t.slug, r.state ORDER BY 1",
    )
    states: dict[str, dict[str, int]] = {}
    for line in rows.splitlines():
        slug, state, n = line.rsplit(" ", 2)
        states.setdefault(slug, {})[state] = int(n)
    reasons = psql(
        url,
        "SELECT left(failure, 200) || ' | ' || count(*) FROM reports WHERE state = 'failed' "
        "GROUP BY left(failure, 200) ORDER BY count(*) DESC LIMIT 10",
    )
    return {"by_tenant": states, "failed_reasons": reasons.splitlines()}


# -- one fuzz phase ----------------------------------------------------------------------


@dataclass
class Stats:
    sent: int = 0
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    by_route: dict[str, collections.Counter[str]] = field(default_factory=dict)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    anomalies: dict[str, dict[str, Any]] = field(default_factory=dict)
    documented_503: dict[str, dict[str, Any]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    cases: dict[str, Case] = field(default_factory=dict)  # signature -> first case
    server_errors: int = 0
    unmutated_503: int = 0


def error_code(out: Outcome) -> str | None:
    try:
        return str(json.loads(out.body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def judge(case: Case, op: Op | None, out: Outcome) -> tuple[str | None, str | None]:
    """(failure, anomaly): what is wrong with this answer, if anything."""
    if out.kind in ("hang", "truncated", "dropped"):
        return out.kind, None
    status = out.status or 0
    if status >= 500:
        code = error_code(out)
        readyz = op is not None and op.path == "/readyz"
        if status == 503 and (code in DOCUMENTED_503 or readyz):
            return None, None
        return "server_error", None
    if op is None or case.method == "HEAD":
        return None, None
    if 400 <= status < 500 and error_code(out) is None:
        if out.body.startswith(b"Invalid HTTP request received"):
            return None, "framework_400(uvicorn/httptools refused the request)"
        return None, "4xx_without_json_error"
    if op.scope != "public":
        anomaly = auth_anomaly(case, op.scope, status, error_code(out))
        if anomaly:
            return None, anomaly
    if status == 307 and case.target.split("?", 1)[0].endswith("/"):
        return None, None  # Starlette's redirect to the path without the trailing slash
    if status not in op.statuses:
        return None, "undocumented_status"
    return None, None


def auth_anomaly(case: Case, scope: str, status: int, code: str | None) -> str | None:
    """An answer the key sent cannot earn: success without the right key, or a body or
    parameter error before the key was checked (issue 13's status order)."""
    early = status in (413, 415, 422) or (status == 400 and code != "invalid_character")
    if case.key_scope is None:
        if case.auth == "none" and scope == "optional":
            return None  # the public view
        if 200 <= status < 300:
            return "auth_bypass(no valid key)"
        return f"status_order({status} before 401)" if early else None
    if case.path_slug is not None and case.key_tenant != case.path_slug:
        if 200 <= status < 300:
            return "cross_tenant(the key is not the path tenant's)"
        return f"status_order({status} before 404)" if early else None
    need = 1 if scope == "optional" else SCOPE_RANK[scope]
    if SCOPE_RANK[case.key_scope] < need:
        if 200 <= status < 300:
            return "scope_bypass"
        return f"status_order({status} before 403)" if early else None
    return None


def signature(case: Case, kind: str, out: Outcome) -> str:
    labels = ",".join(sorted(case.mutations)) or "valid"
    return f"{kind}|{case.method} {case.op}|{out.status}|{labels}"


def record(stats: Stats, case: Case, op: Op | None, out: Outcome) -> None:
    stats.sent += 1
    label = str(out.status) if out.kind in ("ok", "stream") else out.kind
    stats.statuses[label] += 1
    stats.kinds[out.kind] += 1
    route = case.op if case.method == (op.method if op else case.method) else f"{case.op} [HEAD]"
    stats.by_route.setdefault(route, collections.Counter())[label] += 1
    if out.kind in ("ok", "stream"):
        stats.latencies.append(out.elapsed)
    failure, anomaly = judge(case, op, out)
    if out.status == 503 and failure is None:
        sig = signature(case, f"503 {error_code(out)}", out)
        _note(stats.documented_503, stats, sig, case, out)
        if not case.mutations:
            stats.unmutated_503 += 1
    if failure:
        if failure == "server_error":
            stats.server_errors += 1
        _note(stats.failures, stats, signature(case, failure, out), case, out, failure)
    elif anomaly:
        if anomaly.startswith(("framework_400", "undocumented_status", "4xx_without")):
            sig = f"{anomaly}|{out.status}|{error_code(out)}"  # one cause, many routes
        else:
            sig = f"{anomaly}|{case.method} {case.op}|{out.status}"
        _note(stats.anomalies, stats, sig, case, out, anomaly)


def _note(
    table: dict[str, dict[str, Any]],
    stats: Stats,
    sig: str,
    case: Case,
    out: Outcome,
    kind: str = "",
) -> None:
    entry = table.get(sig)
    if entry is None:
        table[sig] = {
            "kind": kind or sig.split("|", 1)[0],
            "route": case.op,
            "method": case.method,
            "status": out.status,
            "mutations": list(case.mutations),
            "auth": case.auth,
            "count": 1,
            "case_index": case.index,
            "detail": out.detail,
            "response_excerpt": out.body[:300].decode("utf-8", "replace"),
            "routes": {_route(case): 1},
        }
        stats.cases[sig] = case
    else:
        entry["count"] += 1
        entry["routes"][_route(case)] = entry["routes"].get(_route(case), 0) + 1


def _route(case: Case) -> str:
    """The operation, with the method sent when it is not the operation's (HEAD)."""
    return case.op if case.op.startswith(case.method + " ") else f"{case.op} [{case.method}]"


def group_rss(pgid: int) -> dict[int, tuple[str, int]]:
    """VmRSS (KiB) of every process in the server's process group: pid -> (role, KiB)."""
    found: dict[int, tuple[int, str, int]] = {}  # pid -> (parent, cmdline, KiB)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                raw = fh.read()
            fields = raw[raw.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:
                continue
            with open(f"/proc/{entry}/status") as fh:
                rss = next((int(x.split()[1]) for x in fh if x.startswith("VmRSS:")), 0)
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        found[int(entry)] = (int(fields[1]), cmdline, rss)
    out: dict[int, tuple[str, int]] = {}
    for pid, (parent, cmdline, rss) in found.items():
        if pid == pgid:
            role = "server"
        elif "resource_tracker" in cmdline:
            role = "resource tracker"
        elif parent == pgid:
            role = "forkserver" if "forkserver" in cmdline else "child"
        else:
            role = "pool worker"  # forked by the forkserver
        out[pid] = (role, rss)
    return out


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS of the server process, VmRSS of its whole process group) in KiB."""
    procs = group_rss(pid)
    return procs.get(pid, ("server", 0))[1], sum(rss for _, rss in procs.values())


async def run_phase(
    args: argparse.Namespace,
    name: str,
    proc: subprocess.Popen[bytes],
    port: int,
    gen: Generator,
    cases: Iterable[Case],
    count: int,
    keeper_body: dict[str, Any],
    keys: dict[str, str],
) -> dict[str, Any]:
    """Send `count` cases with args.concurrency connections; count everything."""
    stats = Stats()
    ops = {op.name: op for op in gen.ops}
    host = f"{HOST}:{port}"
    queue: asyncio.Queue[Case | None] = asyncio.Queue(maxsize=args.concurrency * QUEUE_PER_WORKER)
    rss: list[tuple[float, int, int]] = []
    started = time.monotonic()
    stop = asyncio.Event()

    async def produce() -> None:
        for case in cases:
            await queue.put(case)
        for _ in range(args.concurrency):
            await queue.put(None)

    async def work() -> None:
        conn = Connection(HOST, port)
        while (case := await queue.get()) is not None:
            op = ops.get(case.op)
            out = await conn.exchange(
                case.encode(host),
                head=case.method == "HEAD",
                timeout=args.timeout,
                stream_peek=args.stream_peek,
            )
            record(stats, case, op, out)
        conn.close()

    async def keep_limits() -> None:
        """Put the phase's rate limits back: fuzzed PUT .../rate-limits may change them."""
        api = Api(port)
        while not stop.is_set():
            for slug, key in ((TENANT, keys["keeper"]), (OTHER, keys["other_keeper"])):
                with contextlib.suppress(RuntimeError):
                    await api.call("PUT", f"/v1/tenants/{slug}/rate-limits", key, keeper_body)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), KEEPER_EVERY_S)
        api.conn.close()

    async def watch() -> None:
        last_print = time.monotonic()
        while not stop.is_set():
            main, group = rss_kib(proc.pid)
            rss.append((round(time.monotonic() - started, 1), main, group))
            if proc.poll() is not None:
                print(f"  SERVER EXITED with {proc.returncode}", flush=True)
            if time.monotonic() - last_print >= 10:
                last_print = time.monotonic()
                el = last_print - started
                print(
                    f"  [{name}] {stats.sent:,}/{count:,} in {el:.0f}s ({stats.sent / el:,.0f} "
                    f"req/s); 5xx {stats.server_errors}, hangs {stats.kinds['hang']}, "
                    f"truncated {stats.kinds['truncated']}, dropped {stats.kinds['dropped']}; "
                    f"server RSS {main / 1024:.0f} MiB",
                    flush=True,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RSS_EVERY_S)

    rss_start = rss_kib(proc.pid)
    procs_start = group_rss(proc.pid)
    side = [asyncio.create_task(keep_limits()), asyncio.create_task(watch())]
    await asyncio.gather(produce(), *(work() for _ in range(args.concurrency)))
    elapsed = time.monotonic() - started
    rss_end = rss_kib(proc.pid)
    procs_end = group_rss(proc.pid)
    stop.set()
    await asyncio.gather(*side)

    replays = await replay(stats, ops, port, args)
    lat = stats.latencies or [0.0]
    return {
        "name": name,
        "requests": stats.sent,
        "elapsed_s": round(elapsed, 1),
        "requests_per_s": round(stats.sent / elapsed, 1),
        "server_errors": stats.server_errors,
        "hangs": stats.kinds["hang"],
        "truncated": stats.kinds["truncated"],
        "dropped": stats.kinds["dropped"],
        "streams_peeked": stats.kinds["stream"],
        "documented_503": sum(e["count"] for e in stats.documented_503.values()),
        "unmutated_503": stats.unmutated_503,
        "status_429": stats.statuses.get("429", 0),
        "latency_ms": {
            "p50": round(1000 * percentile(lat, 0.5), 1),
            "p99": round(1000 * percentile(lat, 0.99), 1),
            "max": round(1000 * max(lat), 1),
        },
        "statuses": dict(sorted(stats.statuses.items())),
        "by_route": {r: dict(sorted(c.items())) for r, c in sorted(stats.by_route.items())},
        "failures": _listing(stats.failures, stats, port, replays),
        "anomalies": _listing(stats.anomalies, stats, port, {}),
        "documented_503_examples": _listing(stats.documented_503, stats, port, {})[:20],
        "rss_kib": {
            "server_start": rss_start[0],
            "server_end": rss_end[0],
            "server_peak": max([r[1] for r in rss] + [rss_end[0]]),
            "group_start": rss_start[1],
            "group_end": rss_end[1],
            "series": rss[:: max(1, len(rss) // 60)],
            # Each process of the group (the server, the forkserver, the pool workers).
            "processes": {
                str(pid): {"role": role, "start": procs_start.get(pid, ("", 0))[1], "end": rss}
                for pid, (role, rss) in sorted({**procs_start, **procs_end}.items())
                for rss in [procs_end.get(pid, (role, 0))[1]]
            },
        },
    }


async def replay(
    stats: Stats, ops: dict[str, Op], port: int, args: argparse.Namespace
) -> dict[str, str]:
    """Send each distinct failure again, alone: does it fail the same way?"""
    out: dict[str, str] = {}
    for sig, case in list(stats.cases.items()):
        if sig not in stats.failures:
            continue
        conn = Connection(HOST, port)
        again = await conn.exchange(
            case.encode(f"{HOST}:{port}"),
            head=case.method == "HEAD",
            timeout=args.timeout,
            stream_peek=args.stream_peek,
        )
        conn.close()
        failure, _ = judge(case, ops.get(case.op), again)
        status = again.status if again.kind == "ok" else again.kind
        if status == 429:
            out[sig] = "unknown (429: rate limited)"
        else:
            out[sig] = f"{'yes' if failure else 'no'} ({status})"
    return out


def _listing(
    table: dict[str, dict[str, Any]], stats: Stats, port: int, replays: dict[str, str]
) -> list[dict[str, Any]]:
    rows = []
    for sig, entry in sorted(table.items(), key=lambda kv: -kv[1]["count"]):
        case = stats.cases[sig]
        rows.append(
            {
                **entry,
                "reproduced_alone": replays.get(sig),
                "curl": curl(case, port),
                "request": request_text(case),
            }
        )
    return rows


# -- reproducers -------------------------------------------------------------------------

KEY_NAMES = {
    "submit": "SUBMIT_KEY",
    "staff": "STAFF_KEY",
    "admin": "ADMIN_KEY",
    "other_submit": "OTHER_SUBMIT_KEY",
    "other_staff": "OTHER_STAFF_KEY",
    "other_admin": "OTHER_ADMIN_KEY",
}
_keys: dict[str, str] = {}  # key -> its placeholder, filled once the keys exist


def _bash(value: bytes) -> str:
    """A shell word for these bytes: single-quoted, or $'...' with escapes when needed."""
    text = value.decode("latin-1")
    if all(32 <= b < 127 for b in value):
        return shlex.quote(text)
    out = "".join(
        c
        if 32 <= ord(c) < 127 and c not in "\\'"
        else ("\\" + c if c in "\\'" else f"\\x{ord(c):02x}")
        for c in text
    )
    return f"$'{out}'"


def _hide_keys(value: bytes) -> tuple[bytes, bool]:
    text = value.decode("latin-1")
    for key, name in _keys.items():
        if key in text:
            return text.replace(key, "${" + name + "}").encode("latin-1"), True
    return value, False


def curl(case: Case, port: int) -> str:
    """A command that sends the same request (keys as $NAME_KEY variables)."""
    words = ["curl", "-sS", "-i", "--path-as-is", "-g", "--max-time", "15"]
    words += ["-I"] if case.method == "HEAD" else ["-X", shlex.quote(case.method)]
    for name, value in case.headers:
        line, hidden = _hide_keys(name.encode() + b": " + value)
        if hidden:
            words += ["-H", '"' + line.decode("latin-1") + '"']
        elif value == b"":
            words += ["-H", shlex.quote(f"{name};")]
        else:
            words += ["-H", _bash(line)]
    if case.body is not None:
        if not any(n.lower() == "content-type" for n, _ in case.headers):
            words += ["-H", "'Content-Type:'"]
        if len(case.body) <= 2000 and b"\x00" not in case.body:
            words += ["--data-binary", _bash(case.body)]
        else:
            path = TMP / "fuzz" / f"case_{case.index}.body"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(case.body)
            words += ["--data-binary", "@" + str(path.relative_to(ROOT))]
    words.append(_bash(f"http://{HOST}:{port}{case.target}".encode("latin-1")))
    return " ".join(words)


def request_text(case: Case, limit: int = 1500) -> str:
    raw, _ = _hide_keys(case.encode("127.0.0.1"))
    text = raw.decode("latin-1")
    if len(text) > limit:
        text = text[:limit] + f"... ({len(raw):,} bytes in all)"
    return text.encode("unicode_escape").decode("ascii").replace("\\r\\n", "\n")


# -- the server's log --------------------------------------------------------------------

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')
_HEX = re.compile(r"0x[0-9a-f]+")
_NUMBERS = re.compile(r"0x[0-9a-f]+|[0-9a-f-]{36}|\d+")


def scan_log(path: Path) -> dict[str, Any]:
    """Tracebacks and error events in the server's log, grouped by where they were raised."""
    tracebacks: dict[str, dict[str, Any]] = {}
    events: collections.Counter[str] = collections.Counter()
    warnings: collections.Counter[str] = collections.Counter()
    raw_blocks: list[str] = []
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    for i, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            if line.startswith("Traceback"):
                raw_blocks.append("\n".join(lines[i : i + 40])[:4000])
            continue
        if not isinstance(entry, dict):
            continue
        level = entry.get("level", "")
        event = _HEX.sub("0x#", str(entry.get("event", ""))).strip()
        if level == "warning":
            warnings[event[:120]] += 1
        exc = entry.get("exception") or entry.get("exc_info")
        if level not in ("error", "critical", "exception") and not exc:
            continue
        events[event[:120]] += 1
        if not exc:
            continue
        if isinstance(exc, list):  # a stdlib record's exc_info: (type, value, traceback)
            # uvicorn's "Exception in ASGI application" repeats a request_failed entry.
            where, last = "(uvicorn, same as request_failed)", str(exc[1])[:300]
        else:
            frames = _FRAME.findall(str(exc))
            own = [f for f in frames if "/civicpulse/" in f[0]] or frames
            where = (
                f"{own[-1][0].split('/civicpulse/')[-1]}:{own[-1][1]} {own[-1][2]}" if own else "?"
            )
            lines_ = [x for x in str(exc).strip().splitlines() if x.strip()]
            errors = [x for x in lines_ if not x.startswith((" ", "DETAIL", "HINT", "Process "))]
            last = (errors or lines_)[-1][:300]
        key = f"{event.strip()} | {where} | {_NUMBERS.sub('#', last)}"
        slot = tracebacks.setdefault(
            key,
            {"event": event.strip(), "where": where, "error": last, "count": 0,
             "path": entry.get("path"), "traceback": str(exc)[-4000:]},
        )  # fmt: skip
        slot["count"] += 1
    return {
        "tracebacks": sorted(tracebacks.values(), key=lambda t: -t["count"]),
        "error_events": dict(events.most_common()),
        "warnings": dict(warnings.most_common(15)),
        "raw_tracebacks": raw_blocks[:20],
        "lines": len(lines),
    }


# -- report ------------------------------------------------------------------------------


def write_markdown(path: Path, res: dict[str, Any]) -> None:
    ctx = res["context"]
    lines = [
        "# Fuzz benchmark",
        "",
        f"Run {ctx['date_utc']} by `{res['invocation']}`.",
        "",
        f"Targets (issue 13), phase `{res['phases'][0]['name']}`: "
        + ", ".join(f"{k} {v}" for k, v in res["targets"].items())
        + ".",
        "",
        "## Summary",
        "",
        "| phase | requests | req/s | 5xx (not documented) | hangs | truncated | dropped "
        "| documented 503 | 429 | p50 / p99 / max ms | server RSS start / end / peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for ph in res["phases"]:
        r, lat = ph["rss_kib"], ph["latency_ms"]
        lines.append(
            f"| {ph['name']} | {ph['requests']:,} | {ph['requests_per_s']:,} | "
            f"{ph['server_errors']} | {ph['hangs']} | {ph['truncated']} | {ph['dropped']} | "
            f"{ph['documented_503']} | {ph['status_429']:,} | {lat['p50']} / {lat['p99']} / "
            f"{lat['max']} | {r['server_start'] / 1024:.0f} / {r['server_end'] / 1024:.0f} / "
            f"{r['server_peak'] / 1024:.0f} |"
        )
        flood = ph.get("slug_flood")
        if flood:
            r = flood["rss_kib"]
            lines.append(
                f"| {ph['name']}: slug flood | {flood['requests']:,} | "
                f"{flood['requests_per_s']:,} | {flood['server_errors']} | {flood['hangs']} | "
                f"{flood['truncated']} | {flood['dropped']} | {flood['documented_503']} | "
                f"{flood['status_429']:,} | - | {r['server_start'] / 1024:.0f} / "
                f"{r['server_end'] / 1024:.0f} / {r['server_peak'] / 1024:.0f} |"
            )
    lines += ["", "Memory of each process of the server's group (VmRSS, MiB, start -> end):", ""]
    for ph in res["phases"]:
        procs = ph["rss_kib"]["processes"]
        lines.append(
            f"- {ph['name']}: "
            + "; ".join(
                f"{p['role']} {p['start'] / 1024:.0f} -> {p['end'] / 1024:.0f}"
                for p in procs.values()
            )
        )
    lines += [
        "",
        "The slug flood runs on the first phase's server right after its fuzz: requests for "
        "made-up tenant slugs (with a real key, and without a key) and made-up keys, each "
        "one new, the input that grew memory for good in issue 13.",
        "",
        f"Seeded: {res['seed_data']}. Operations in the served document: "
        f"{res['operations']}; every one was sent at least "
        f"{min(v for k, v in res['phases'][0]['by_route_totals'].items() if '[' not in k):,} "
        "requests in the first phase.",
        "",
    ]
    for ph in res["phases"]:
        lines += [
            f"## Phase `{ph['name']}`",
            "",
            f"Server: `{ph['server_command']}` (service files sha1 {ph['service_files_sha1']} "
            f"at its start). Elapsed {ph['elapsed_s']} s. Statuses: "
            + ", ".join(f"{k} x {v:,}" for k, v in ph["statuses"].items())
            + ".",
            "",
        ]
        lines += _failure_section("Failures (5xx, hangs, truncated or dropped)", ph["failures"])
        if ph["documented_503_examples"]:
            lines += [
                f"Documented 503s: {ph['documented_503']} (of which {ph['unmutated_503']} "
                "answered a request with no mutation at all). First kinds:",
                "",
            ]
            lines += [
                f"- {e['count']} x `{e['route']}` {e['kind']}: "
                f"`{e['response_excerpt'][:120]}`, "
                f"mutations {e['mutations'] or 'none'}"
                for e in ph["documented_503_examples"][:10]
            ]
            lines.append("")
        lines += _failure_section(
            "Contract anomalies (not counted as failures)", ph["anomalies"], brief=True
        )
        log = ph["log"]
        lines += [
            f"### Server log ({log['lines']:,} lines)",
            "",
        ]
        if log["tracebacks"]:
            lines += ["| count | event | where | error |", "|---:|---|---|---|"]
            for t in log["tracebacks"]:
                err = t["error"].replace("|", "\\|")[:160]
                lines.append(f"| {t['count']} | {t['event']} | `{t['where']}` | `{err}` |")
            lines.append("")
        else:
            lines += ["No traceback in the server's log.", ""]
        if log["error_events"]:
            lines += [
                "Error events: "
                + ", ".join(f"`{k}` x {v}" for k, v in log["error_events"].items()),
                "",
            ]
        if log["warnings"]:
            lines += [
                "Warnings: " + ", ".join(f"`{k}` x {v}" for k, v in log["warnings"].items()),
                "",
            ]
        p = ph["pipeline_after"]
        lines += [
            f"Pipeline after the fuzz: {p['wait']['unfinished']} reports still waiting after "
            f"{p['wait']['seconds']} s; states {p['states']['by_tenant']}; /readyz "
            f"{ph['readyz_after']}.",
            "",
        ]
        if p["states"]["failed_reasons"]:
            lines += ["Set-aside reasons:", ""]
            lines += [f"- {x}" for x in p["states"]["failed_reasons"]]
            lines.append("")
        lines += [
            "### Per route",
            "",
            "| route | requests | answers |",
            "|---|---:|---|",
        ]
        for route, counts in ph["by_route"].items():
            lines.append(
                f"| `{route}` | {sum(counts.values()):,} | "
                + ", ".join(f"{k}: {v}" for k, v in counts.items())
                + " |"
            )
        lines.append("")
    lines += [
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    for k, v in ctx.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a} {b}" for a, b in v.items())
        lines.append(f"| {k} | {v} |")
    lines += [
        "",
        "## Command lines",
        "",
        "```sh",
        "# benchmark driver",
        res["invocation"],
        "# setup",
        *res["setup_commands"],
        "# servers",
        *[ph["server_command"] for ph in res["phases"]],
        "```",
        "",
        "Reproducers use the keys as variables (`SUBMIT_KEY`, `STAFF_KEY`, `ADMIN_KEY`, "
        "`OTHER_ADMIN_KEY`...): create keys with `civicpulse key create` on a database set "
        "up as above, export them, start the server, and paste the `curl` line. Bodies "
        "over 2 KB or holding NUL bytes are in `bench/results/tmp/fuzz/` (git-ignored); "
        "`--seed` regenerates the same cases.",
        "",
    ]
    if res.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in res["notes"]], ""]
    path.write_text("\n".join(lines))


def _failure_section(title: str, rows: list[dict[str, Any]], brief: bool = False) -> list[str]:
    total = sum(r["count"] for r in rows)
    out = [f"### {title}: {len(rows)} distinct, {total:,} in all", ""]
    if not rows:
        return [*out, "None.", ""]
    for n, r in enumerate(rows[: 40 if brief else 200], 1):
        replay = f"; alone again: {r['reproduced_alone']}" if r.get("reproduced_alone") else ""
        route = r["route"]
        if not route.startswith(r["method"] + " "):
            route += f" [{r['method']}]"
        more = ""
        if len(r["routes"]) > 1:
            more = f"; on {len(r['routes'])} routes: " + ", ".join(
                f"`{k}` {v}" for k, v in sorted(r["routes"].items(), key=lambda kv: -kv[1])[:8]
            )
        out += [
            f"{n}. **{r['kind']}** `{route}` -> {r['status']} ({r['count']} x{replay}); "
            f"mutations: {', '.join(f'`{m}`' for m in r['mutations']) or 'none (a valid request)'}"
            + (f"; {r['detail']}" if r["detail"] else "")
            + more,
        ]
        if not brief:
            out += ["", "   ```sh", "   " + r["curl"][:3000], "   ```"]
            if r["response_excerpt"]:
                out += [f"   Answer: `{r['response_excerpt'][:200]!r}`"]
        else:
            out += [f"   `{r['curl'][:400]}`"]
    if len(rows) > (40 if brief else 200):
        out.append(f"... and {len(rows) - (40 if brief else 200)} more in the JSON.")
    return [*out, ""]


# -- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.fuzz.run",
        description="Fuzz benchmark (issue 13): fuzzed requests across every route of the "
        "served OpenAPI document; counts server errors (5xx other than a documented 503), "
        "hangs, truncated bodies and contract anomalies, and reads the server's log for "
        "tracebacks. Drops and recreates the database given by --db. Writes "
        "bench/results/fuzz.md and .json.",
    )
    p.add_argument("--requests", "-n", type=int, default=100_000, help="fuzzed requests (100000)")
    p.add_argument("--seed", type=int, default=13, help="random seed of the cases (13)")
    p.add_argument("--concurrency", "-c", type=int, default=48, help="connections (48)")
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds for a complete answer; longer is a hang (10)",
    )
    p.add_argument(
        "--stream-peek",
        type=float,
        default=0.5,
        help="seconds to read an SSE stream's first bytes before closing it (0.5)",
    )
    p.add_argument(
        "--limited-requests",
        type=int,
        default=5_000,
        help="requests of a second phase with rate limits on (the server's defaults, and "
        "each tenant's set low: 20/s per key, 2/s per address); 0 skips it (5000)",
    )
    p.add_argument(
        "--poison-share",
        type=float,
        default=0.01,
        help="share of requests taken from issue 13's poison inputs (0.01)",
    )
    p.add_argument(
        "--slug-flood",
        type=int,
        default=40_000,
        help="after the fuzz, requests for made-up tenant slugs and keys, to see whether "
        "the auth caches grow the server's memory (issue 13: 40,000 took 64 -> 131 MB); "
        "0 skips it (40000)",
    )
    p.add_argument("--seed-reports", type=int, default=300, help="reports seeded first (300)")
    p.add_argument(
        "--drain-wait",
        type=float,
        default=120.0,
        help="seconds to wait for the pipeline after a phase (120)",
    )
    p.add_argument("--db", default="bench_fuzz", help="database to recreate (bench_fuzz)")
    p.add_argument(
        "--pg-url",
        default=PG_ADMIN_URL,
        help=f"PostgreSQL server, superuser, no database ({PG_ADMIN_URL})",
    )
    p.add_argument("--port", type=int, default=8393, help="server port (8393)")
    p.add_argument(
        "--out",
        default=str(RESULTS / "fuzz"),
        help="results path without extension (bench/results/fuzz)",
    )
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        p.error("--requests and --concurrency must be at least 1")
    return args


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the server subprocess is stopped.
    raise KeyboardInterrupt(f"signal {signum}")


async def fetch_spec(port: int) -> dict[str, Any]:
    api = Api(port)
    status, spec = await api.call("GET", "/openapi.json")
    api.conn.close()
    if status != 200 or not isinstance(spec, dict) or "paths" not in spec:
        raise RuntimeError(f"GET /openapi.json answered {status}: the document is not served")
    return spec


async def readyz(port: int) -> str:
    api = Api(port)
    try:
        status, data = await api.call("GET", "/readyz")
    except RuntimeError as exc:
        return f"no answer ({exc})"
    finally:
        api.conn.close()
    return f"{status} {json.dumps(data)[:200]}"


def phase(
    args: argparse.Namespace,
    name: str,
    url: str,
    limited: bool,
    corpus: Corpus | None,
    keys: dict[str, str],
    count: int,
    seed_: int,
) -> tuple[dict[str, Any], Corpus, dict[str, Any]]:
    cmd, env = server_command(args.port, url, limited)
    log = TMP / f"fuzz_server_{name}.log"
    print(f"== phase {name}: {shell(cmd, env)}", flush=True)
    code = git_state()["service_files_sha1"]
    proc = start_server(cmd, env, log, f"http://{HOST}:{args.port}/readyz")
    try:
        if corpus is None:
            corpus = asyncio.run(seed(args.port, url, keys, args.seed_reports, args.seed))
        spec = asyncio.run(fetch_spec(args.port))
        keeper = LIMITED if limited else {"key_per_second": 0, "public_per_second": 0}
        gen = Generator(spec, corpus, seed_, poison_share=args.poison_share, limits=keeper)
        res = asyncio.run(
            run_phase(args, name, proc, args.port, gen, gen.cases(count), count, keeper, keys)
        )
        res["server_command"] = shell(cmd, env)
        res["service_files_sha1"] = code
        print(
            f"  {res['requests']:,} requests in {res['elapsed_s']} s "
            f"({res['requests_per_s']:,} req/s): 5xx {res['server_errors']}, hangs "
            f"{res['hangs']}, truncated {res['truncated']}, dropped {res['dropped']}, "
            f"{len(res['failures'])} distinct failures, {len(res['anomalies'])} distinct "
            f"anomalies; server RSS {res['rss_kib']['server_start'] / 1024:.0f} -> "
            f"{res['rss_kib']['server_end'] / 1024:.0f} MiB",
            flush=True,
        )
        if not limited and args.slug_flood:
            flood = asyncio.run(
                run_phase(
                    args,
                    "slug_flood",
                    proc,
                    args.port,
                    gen,
                    gen.flood(args.slug_flood),
                    args.slug_flood,
                    keeper,
                    keys,
                )
            )
            res["slug_flood"] = {k: v for k, v in flood.items() if k != "by_route"}
            print(
                f"  slug flood: {flood['requests']:,} requests for made-up tenants and keys; "
                f"server RSS {flood['rss_kib']['server_start'] / 1024:.0f} -> "
                f"{flood['rss_kib']['server_end'] / 1024:.0f} MiB; 5xx {flood['server_errors']}",
                flush=True,
            )
        wait = wait_for_pipeline(url, args.drain_wait)
        res["pipeline_after"] = {"wait": wait, "states": report_states(url)}
        res["readyz_after"] = asyncio.run(readyz(args.port))
        res["server_exit"] = proc.poll()
    finally:
        stop_server(proc)
    res["log"] = scan_log(log)
    res["log_file"] = str(log.relative_to(ROOT))
    res["by_route_totals"] = {r: sum(c.values()) for r, c in res["by_route"].items()}
    print(
        f"  server log: {len(res['log']['tracebacks'])} distinct tracebacks, error events "
        f"{res['log']['error_events']}",
        flush=True,
    )
    return res, corpus, spec


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    invocation = ".venv/bin/python -m bench.fuzz.run " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    ctx = machine_context(args.pg_url)
    print_context(ctx)
    url = db_url(args.db, args.pg_url)
    TMP.mkdir(parents=True, exist_ok=True)
    print(f"== setup: fresh database {args.db}", flush=True)
    keys, setup_cmds = setup_database(args, url)
    _keys.update({keys[label]: name for label, name in KEY_NAMES.items()})
    _keys.update({keys["keeper"]: "KEEPER_KEY", keys["other_keeper"]: "OTHER_KEEPER_KEY"})

    first, corpus, spec = phase(args, "unlimited", url, False, None, keys, args.requests, args.seed)
    phases = [first]
    if args.limited_requests:
        second, _, _ = phase(
            args, "rate_limited", url, True, corpus, keys, args.limited_requests, args.seed + 1
        )
        phases.append(second)

    notes = list(corpus.seed_problems)
    end_state = git_state()
    if end_state["service_files_sha1"] != ctx["git"]["service_files_sha1"]:
        notes.append(
            f"The service's code changed while this ran (start: {ctx['git']}; end: "
            f"{end_state}); the figures may mix two versions."
        )
        print("WARNING: " + notes[-1], flush=True)
    results = {
        "context": ctx,
        "invocation": invocation.strip(),
        "setup_commands": setup_cmds,
        "config": {
            "requests": args.requests,
            "limited_requests": args.limited_requests,
            "seed": args.seed,
            "concurrency": args.concurrency,
            "timeout_s": args.timeout,
            "stream_peek_s": args.stream_peek,
            "poison_share": args.poison_share,
        },
        "operations": len(operations(spec)),
        "seed_data": {
            "reports": {k: len(v) for k, v in corpus.report_ids.items()},
            "issues": {k: len(v) for k, v in corpus.issue_ids.items()},
            "codes": {k: {kind: len(c) for kind, c in v.items()} for k, v in corpus.codes.items()},
        },
        "targets": {
            "server_errors": f"{first['server_errors']} (target 0)",
            "hangs": f"{first['hangs']} (target 0)",
            "truncated": f"{first['truncated']} (target 0)",
        },
        "phases": phases,
        "notes": notes,
    }
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_markdown(out.with_suffix(".md"), results)
    shown = [out.with_suffix(".json"), out.with_suffix(".md")]
    print("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in shown if p.is_relative_to(ROOT)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
