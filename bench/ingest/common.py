"""Shared helpers for the ingest benchmark: paths, psql, machine context, CPU accounting."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
TMP = RESULTS / "tmp"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432"


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    xs = sorted(values)
    k = (len(xs) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def db_url(db: str, base: str = PG_ADMIN_URL) -> str:
    return f"{base.rstrip('/')}/{db}"


def psql(url: str, sql: str, *, check: bool = True) -> str:
    """Run one SQL command (or psql meta-command) with psql; returns unaligned output."""
    out = subprocess.run(
        ["psql", url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        check=False,
    )
    if check and out.returncode != 0:
        raise RuntimeError(f"psql failed ({sql!r}): {out.stderr.strip()}")
    return out.stdout.strip()


def reset_database(admin_url: str, db: str) -> None:
    """Drop and recreate the benchmark database."""
    maintenance = db_url("postgres", admin_url)
    psql(maintenance, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    psql(maintenance, f'CREATE DATABASE "{db}"')


def shell(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """A command line as it can be pasted into a shell from the repository root."""
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    words = []
    for word in cmd:
        if word.startswith(f"{ROOT}/"):
            word = word[len(f"{ROOT}/") :]
        words.append(shlex.quote(word))
    return (prefix + " " if prefix else "") + " ".join(words)


# -- machine context -------------------------------------------------------------------------


def _first(path: str, key: str) -> str:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "-"


def git_state() -> dict[str, str]:
    """The commit, and a hash of the service's files as they are on disk."""
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    digest = hashlib.sha1()
    files = [
        ROOT / "pyproject.toml",
        *sorted((ROOT / "civicpulse").rglob("*")),
        *sorted((ROOT / "schema").rglob("*")),
    ]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return {"commit": out.stdout.strip(), "service_files_sha1": digest.hexdigest()[:12]}


def machine_context(admin_url: str) -> dict[str, object]:
    mem_kb = int(_first("/proc/meminfo", "MemTotal").split()[0] or 0)
    pg = db_url("postgres", admin_url)
    settings = psql(
        pg,
        "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' "
        "ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers', "
        "'synchronous_commit', 'fsync', 'wal_level', 'max_wal_size', "
        "'commit_delay', 'full_page_writes')",
    )
    wrk_version = "not installed"
    if shutil.which("wrk"):
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        wrk_version = ((wrk.stdout + wrk.stderr).splitlines() or ["-"])[0]
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": psql(pg, "SELECT version()").split(" on ")[0],
        "postgresql_settings": settings,
        "wrk": wrk_version,
        "packages": ", ".join(
            f"{m} {_version(m)}"
            for m in (
                "civicpulse",
                "starlette",
                "uvicorn",
                "uvloop",
                "httptools",
                "asyncpg",
                "msgspec",
                "fastapi",
                "pydantic",
                "sqlalchemy",
            )
        ),
        "git": git_state(),
    }


def print_context(ctx: dict[str, object]) -> None:
    print("== machine context")
    for key, value in ctx.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        print(f"  {key:<20} {value}")
    print(flush=True)


# -- CPU accounting from /proc ---------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSample:
    at: float
    total_busy: float = 0.0
    total_all: float = 0.0
    groups: dict[str, float] = field(default_factory=dict)


def postmaster_pid(url: str) -> int | None:
    """The pid of the PostgreSQL server behind `url` (the checkpointer's parent)."""
    pid = psql(
        url, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'", check=False
    )
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            raw = fh.read()
    except (OSError, ValueError):
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[1])


@dataclass(frozen=True)
class Watch:
    """Which processes to account: the server's group, our PostgreSQL's, wrk."""

    server_pgid: int | None = None
    wrk_pid: int | None = None
    postmaster: int | None = None
    db: str = ""


def cpu_sample(at: float, watch: Watch) -> CpuSample:
    """CPU seconds so far: whole machine; server group; postgres for our db; wrk.

    "postgres" is the benchmark server's background processes plus its backends connected to
    the benchmark database; backends of other databases count as background load.
    """
    sample = CpuSample(at=at, groups={"server": 0.0, "postgres": 0.0, "wrk": 0.0})
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:]]
    idle = ticks[3] + ticks[4]
    sample.total_all = sum(ticks[:8]) / TICK
    sample.total_busy = (sum(ticks[:8]) - idle) / TICK
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2 :].split()
        ppid, pgrp, utime, stime = int(rest[1]), int(rest[2]), int(rest[11]), int(rest[12])
        seconds = (utime + stime) / TICK
        if watch.server_pgid is not None and pgrp == watch.server_pgid:
            sample.groups["server"] += seconds
        elif watch.wrk_pid is not None and int(entry) == watch.wrk_pid:
            sample.groups["wrk"] += seconds
        elif watch.postmaster is not None and (
            int(entry) == watch.postmaster or ppid == watch.postmaster
        ):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    title = fh.read().decode(errors="replace")
            except OSError:
                continue
            backend = "(" in title or "[local]" in title
            if not backend or f" {watch.db} " in title:
                sample.groups["postgres"] += seconds
    return sample


def cpu_usage(a: CpuSample, b: CpuSample) -> dict[str, float]:
    """Percent of one core used between two samples (200 = both cores of a 2-core box).

    other_pct is everything else that ran on the machine meanwhile (background load).
    """
    wall = b.at - a.at
    ncpu = os.cpu_count() or 1
    out = {f"{k}_pct": round(100 * (b.groups[k] - a.groups[k]) / wall, 1) for k in a.groups}
    all_ticks = b.total_all - a.total_all
    busy = 100 * ncpu * (b.total_busy - a.total_busy) / all_ticks if all_ticks else 0.0
    out["machine_busy_pct"] = round(busy, 1)
    out["other_pct"] = round(max(0.0, busy - sum(out[f"{k}_pct"] for k in a.groups)), 1)
    return out


def background_load(watch: Watch, seconds: float = 3.0, *, everything: bool = False) -> float:
    """Percent of one core used over `seconds` by processes outside `watch` (or by all)."""
    a = cpu_sample(time.monotonic(), watch)
    time.sleep(seconds)
    b = cpu_sample(time.monotonic(), watch)
    usage = cpu_usage(a, b)
    return usage["machine_busy_pct"] if everything else usage["other_pct"]


def wait_until_quiet(
    watch: Watch, threshold: float, max_wait: float, *, everything: bool = False
) -> float:
    """Wait (at most max_wait seconds) until the load is below threshold; returns it.

    The load is that of processes outside `watch`, or with everything=True of the whole
    machine (e.g. to let a server finish background work before measuring it again).
    """
    what = "machine load" if everything else "background load (other processes)"
    deadline = time.monotonic() + max_wait
    load = background_load(watch, everything=everything)
    waited = False
    while load > threshold and time.monotonic() < deadline:
        if not waited:
            print(
                f"  {what} {load:.0f}% of a core; waiting up to {max_wait:.0f}s for it to "
                f"drop below {threshold:.0f}%",
                flush=True,
            )
            waited = True
        time.sleep(5)
        load = background_load(watch, everything=everything)
    if waited:
        print(f"  {what} now {load:.0f}%", flush=True)
    return load
