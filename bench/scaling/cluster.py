"""One cell of the benchmark: a fresh database, ops/cluster.py on it, a tenant with keys.

Design rule: the cluster is started exactly as an operator would start it (ops/cluster.py,
the same HAProxy configuration), and nothing it starts outlives the cell: it is stopped with
SIGTERM (its processes drain, then HAProxy stops), and whatever is left is killed by its
process group, by pid, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.ingest.common import ROOT, db_url, psql
from civicpulse.db import tenants

CLUSTER = ROOT / "ops" / "cluster.py"
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
TENANT = "scaling"
TIMEZONE = "America/Los_Angeles"  # the LA311 records' city
# The service environment of every cell (the task's brief, and why):
SERVICE_ENV = {
    # All intake comes from one key: the per-key limit would be what is measured.
    "CIVICPULSE_RATE_LIMIT_KEY_PER_SECOND": "0",
    "CIVICPULSE_LOG_LEVEL": "warning",
    "CIVICPULSE_LOG_FORMAT": "json",
    # The default is a pool worker per CPU in every process: 4 processes would start 8
    # classifier workers on 2 cores. One each keeps the pipeline's share of the cores the
    # same per process at every N, and memory flat, as tests/e2e/test_cluster.py does.
    "CIVICPULSE_PROCESS_POOL_WORKERS": "1",
}


@dataclass(frozen=True)
class Keys:
    tenant_id: int
    submit: str
    staff: str
    admin: str


@dataclass
class Cluster:
    """A running ops/cluster.py: HAProxy's address, the processes' pids and ports."""

    proc: subprocess.Popen[bytes]
    run_dir: Path
    host: str
    lb_port: int
    haproxy_pid: int
    apps: list[tuple[int, int]]  # (pid, port)
    command: str

    @property
    def app_pids(self) -> frozenset[int]:
        return frozenset(pid for pid, _ in self.apps)


def create_database(admin_url: str, db: str) -> None:
    maintenance = db_url("postgres", admin_url)
    psql(maintenance, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    psql(maintenance, f'CREATE DATABASE "{db}"')


def drop_database(admin_url: str, db: str) -> None:
    psql(db_url("postgres", admin_url), f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def service_env(url: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVICPULSE_")}
    env.update(SERVICE_ENV)
    env.update(extra)
    env["CIVICPULSE_DATABASE_URL"] = url
    return env


def start(n: int, url: str, run_dir: Path, extra_env: dict[str, str]) -> Cluster:
    """Start ops/cluster.py with n processes on `url`; returns once HAProxy answers."""
    if HAPROXY is None:
        raise RuntimeError("haproxy not found: install Debian's haproxy package")
    run_dir.mkdir(parents=True, exist_ok=True)
    info_path = run_dir / "cluster.json"
    info_path.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(CLUSTER),
        "--processes",
        str(n),
        "--port",
        "0",  # free ports, picked by cluster.py and named in cluster.json
        "--first-port",
        "0",
        "--run-dir",
        str(run_dir),
        "--haproxy",
        HAPROXY,
    ]
    with (run_dir / "cluster.out").open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=service_env(url, extra_env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while True:
        info = _read_info(info_path)
        # cluster.json names the pids and ports from the start and says "ready" once
        # HAProxy answers.
        if info is not None and info.get("ready"):
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (run_dir / "cluster.out").read_text(errors="replace")[-3000:]
            _end(proc, info or {})
            raise RuntimeError(f"ops/cluster.py did not become ready:\n{tail}")
        time.sleep(0.1)
    shown = " ".join(
        ["CIVICPULSE_DATABASE_URL=" + url]
        + [f"{k}={v}" for k, v in {**SERVICE_ENV, **extra_env}.items()]
        + [".venv/bin/python", "ops/cluster.py", *cmd[2:]]
    )
    host, _, lb_port = str(info["url"]).removeprefix("http://").rpartition(":")
    return Cluster(
        proc=proc,
        run_dir=run_dir,
        host=host,
        lb_port=int(lb_port),
        haproxy_pid=int(info["haproxy"]),
        apps=[(int(p["pid"]), int(p["port"])) for p in info["processes"]],
        command=shown,
    )


def _read_info(path: Path) -> dict[str, Any] | None:
    """cluster.json, or None while it is missing or half written."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _end(proc: subprocess.Popen[bytes], info: dict[str, Any], timeout: float = 60.0) -> None:
    """SIGTERM the script (its processes drain, then HAProxy); then kill the process group
    of each pid cluster.json names (each leads its own) in case anything is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    pids = [p["pid"] for p in info.get("processes", [])] + [info.get("haproxy")]
    for pid in pids:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)


def stop(cluster: Cluster) -> None:
    """Stop a cluster and everything it started."""
    info = {
        "haproxy": cluster.haproxy_pid,
        "processes": [{"pid": pid} for pid in cluster.app_pids],
    }
    _end(cluster.proc, info)


async def make_tenant(url: str) -> Keys:
    """A tenant and a key of each scope, as tests/support.py make_tenant does."""
    conn = await asyncpg.connect(url)
    try:
        tenant = await tenants.create_tenant(conn, TENANT, TENANT.title(), TIMEZONE, "city")
        keys = {s: await tenants.create_api_key(conn, TENANT, s, "bench") for s in tenants.SCOPES}
    finally:
        await conn.close()
    return Keys(tenant_id=tenant.id, **keys)
