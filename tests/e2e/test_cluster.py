"""Three service processes behind a real HAProxy on one PostgreSQL (ops/cluster.py): no
report processed twice, timers fire once, a stream on one process hears what another did,
and a process killed under load loses no acknowledged report while the others carry on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support import TenantKeys, env_without_civicpulse, metric

ROOT = Path(__file__).resolve().parents[2]
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        HAPROXY is None and not os.environ.get("CI"), reason="Debian's haproxy is not installed"
    ),
]


@dataclass
class Cluster:
    url: str
    processes: list[dict[str, int]]  # pid, port
    log_dir: Path

    def direct(self, i: int) -> str:
        return f"http://127.0.0.1:{self.processes[i]['port']}"

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text()[-3000:]}" for p in self.log_dir.glob("*.log")
        )


@pytest.fixture
async def cluster(db_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    assert HAPROXY is not None, "CI must have Debian's haproxy (ops/test.sh installs it)"
    run_dir = tmp_path / "cluster"
    env = {
        **env_without_civicpulse(),
        "CIVICPULSE_DATABASE_URL": db_url,
        "CIVICPULSE_LOG_FORMAT": "json",
        "CIVICPULSE_LOG_LEVEL": "warning",
        "CIVICPULSE_RATE_LIMIT_KEY_PER_SECOND": "0",  # the load comes from one key
        "CIVICPULSE_PROCESS_POOL_WORKERS": "1",  # three processes on two cores
        # A killed process's claims come back after this, not after the default minute.
        "CIVICPULSE_PIPELINE_LEASE_SECONDS": "5",
        "CIVICPULSE_SLA_TICK_SECONDS": "0.2",
    }
    run_dir.mkdir()
    with (run_dir / "cluster.out").open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "ops" / "cluster.py"),
                "--processes",
                "3",
                "--port",
                "0",  # free ports, named in cluster.json
                "--first-port",
                "0",
                "--run-dir",
                str(run_dir),
                "--haproxy",
                HAPROXY,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        info_path = run_dir / "cluster.json"  # "ready" once HAProxy answers
        info: dict[str, Any] = {}
        for _ in range(900):
            if info_path.exists():
                info = json.loads(info_path.read_text())
            if info.get("ready") or proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert info.get("ready"), "cluster did not start: " + (run_dir / "cluster.out").read_text()
        yield Cluster(info["url"], info["processes"], run_dir)
    finally:
        proc.send_signal(signal.SIGTERM)  # the script stops its processes, then HAProxy
        try:
            await asyncio.to_thread(proc.wait, 60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            if info_path.exists():  # nothing may outlive the test
                info = json.loads(info_path.read_text())
                pids = [p["pid"] for p in info["processes"]] + [info["haproxy"]]
                for pid in filter(None, pids):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)


async def _fetch(db_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def _wait_all_grouped(db_url: str, tenant: TenantKeys, n: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        (row,) = await _fetch(
            db_url,
            "SELECT count(*) FILTER (WHERE state = 'grouped') AS done, count(*) AS total "
            "FROM reports WHERE tenant_id = $1",
            tenant.id,
        )
        if row["total"] >= n and row["done"] == row["total"]:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"not all grouped after {seconds} s: {dict(row)}")


async def _processed_once(db_url: str, tenant: TenantKeys) -> None:
    """Every report joined exactly one issue once, and every issue counts exactly its
    reports."""
    twice = await _fetch(
        db_url,
        "SELECT report_id, count(*) FROM issue_events WHERE tenant_id = $1 "
        "AND kind IN ('issue_created', 'report_attached') GROUP BY 1 HAVING count(*) <> 1",
        tenant.id,
    )
    assert twice == []
    unlinked = await _fetch(
        db_url,
        "SELECT r.id FROM reports r WHERE r.tenant_id = $1 AND NOT EXISTS (SELECT 1 FROM "
        "issue_events e WHERE e.tenant_id = r.tenant_id AND e.report_id = r.id "
        "AND e.kind IN ('issue_created', 'report_attached'))",
        tenant.id,
    )
    assert unlinked == []
    miscounted = await _fetch(
        db_url,
        "SELECT i.id FROM issues i WHERE i.tenant_id = $1 AND i.report_count <> (SELECT "
        "count(*) FROM reports r WHERE r.tenant_id = i.tenant_id AND r.issue_id = i.id)",
        tenant.id,
    )
    assert miscounted == []


async def _streams_open(cluster: Cluster) -> list[float]:
    """Each process's open streams, from its /metrics."""
    out = []
    async with httpx.AsyncClient(timeout=5) as client:
        for i in range(len(cluster.processes)):
            metrics = (await client.get(cluster.direct(i) + "/metrics")).text
            out.append(metric(metrics, "civicpulse_streams_open"))
    return out


def _accepted(metrics: str) -> float:
    """Reports this process acknowledged, from its /metrics."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("civicpulse_http_requests_total{")
        and 'method="POST"' in line
        and 'status="202"' in line
    )


async def _post_until_acknowledged(
    client: httpx.AsyncClient, tenant: TenantKeys, body: dict[str, Any], key: str
) -> str | None:
    """What a careful client does: retry with the same Idempotency-Key until acknowledged."""
    for attempt in range(20):
        try:
            r = await client.post(
                f"/v1/tenants/{tenant.slug}/reports",
                json=body,
                headers={**tenant.headers(), "Idempotency-Key": key},
            )
        except httpx.TransportError:
            await asyncio.sleep(0.1 * (attempt + 1))
            continue
        if r.status_code in (200, 201, 202):
            return str(r.json()["id"])
        assert r.status_code in (502, 503, 504), r.text
        await asyncio.sleep(0.1 * (attempt + 1))
    return None


async def test_a_killed_process_loses_no_acknowledged_report_and_none_is_processed_twice(
    cluster: Cluster, tenant_a: TenantKeys, db_url: str
) -> None:
    acknowledged: dict[str, str] = {}  # idempotency key -> report id
    after_kill: list[float] = []
    killed_at: float | None = None
    stop = time.monotonic() + 60

    async def client_loop(worker: int) -> None:
        async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:
            i = 0
            while time.monotonic() < stop:
                i += 1
                key = f"w{worker}-{i}"
                body = {
                    "text": f"Streetlight out on block {worker * 1000 + i}",
                    "lat": 34.0 + worker * 0.01 + i * 1e-4,
                    "lon": -118.3,
                }
                report_id = await _post_until_acknowledged(client, tenant_a, body, key)
                assert report_id is not None, f"{key} never acknowledged"
                acknowledged[key] = report_id
                if killed_at is not None:
                    after_kill.append(time.monotonic())

    workers = [asyncio.create_task(client_loop(w)) for w in range(24)]
    try:
        while len(acknowledged) < 400:
            await asyncio.sleep(0.01)
            assert not any(w.done() for w in workers), [w.exception() for w in workers if w.done()]
        victim = cluster.processes[1]
        os.killpg(victim["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        while len(after_kill) < 400 and time.monotonic() < killed_at + 30:
            await asyncio.sleep(0.05)
        stop = time.monotonic()
        await asyncio.gather(*workers)
    finally:
        stop = 0.0
        for w in workers:
            w.cancel()
    assert len(after_kill) >= 400, f"only {len(after_kill)} acknowledged after the kill"

    # Every acknowledged report is stored, once per key, however often it was retried.
    ids = set(acknowledged.values())
    assert len(ids) == len(acknowledged)
    stored = await _fetch(db_url, "SELECT id FROM reports WHERE tenant_id = $1", tenant_a.id)
    assert {str(r["id"]) for r in stored} == ids, cluster.logs()

    # The dead process's claims came back to the living, and each report was grouped once.
    await _wait_all_grouped(db_url, tenant_a, len(ids), 60)
    await _processed_once(db_url, tenant_a)

    # The survivors still answer, and both took a share of the intake.
    async with httpx.AsyncClient(timeout=5) as client:
        for i in (0, 2):
            assert (await client.get(cluster.direct(i) + "/readyz")).status_code == 200
            metrics = (await client.get(cluster.direct(i) + "/metrics")).text
            assert _accepted(metrics) > 100, metrics
        assert (await client.get(cluster.url + "/readyz")).status_code == 200


async def test_timers_fire_once_and_streams_hear_other_processes(
    cluster: Cluster, tenant_a: TenantKeys, db_url: str
) -> None:
    # SLA timers due in two seconds on 300 issues: three processes race for them.
    conn = await asyncpg.connect(db_url)
    try:
        ids = [
            r["id"]
            for r in await conn.fetch(
                "INSERT INTO issues (tenant_id, id, category, lat, lon, opened_at) "
                "SELECT $1, civicpulse_uuid7(), 'other', 34.0, -118.0, now() "
                "FROM generate_series(1, 301) RETURNING id",
                tenant_a.id,
            )
        ]
        # The last one is for comments: a staff action changes an issue's clocks.
        commented = ids.pop()
        await conn.execute(
            "INSERT INTO sla_timers (tenant_id, issue_id, cycle, target, kind, fire_at) "
            "SELECT $1, i, 1, 'resolution', 'breach', now() + interval '2 seconds' "
            "FROM unnest($2::uuid[]) AS i",
            tenant_a.id,
            ids,
        )
    finally:
        await conn.close()

    # A stream on process 1 hears comments made on process 2.
    staff = tenant_a.headers("staff")
    issue_id = str(commented)
    delays: list[float] = []
    async with (
        httpx.AsyncClient(base_url=cluster.direct(0), timeout=30) as watcher,
        httpx.AsyncClient(base_url=cluster.direct(1), timeout=10) as writer,
        watcher.stream("GET", f"/v1/tenants/{tenant_a.slug}/stream", headers=staff) as resp,
    ):
        assert resp.status_code == 200
        lines = resp.aiter_lines()
        issue = (
            await writer.get(f"/v1/tenants/{tenant_a.slug}/issues/{issue_id}", headers=staff)
        ).json()
        version = issue["version"]
        for n in range(60):
            started = time.monotonic()
            r = await writer.post(
                f"/v1/tenants/{tenant_a.slug}/issues/{issue_id}/comments",
                json={"note": f"crew note {n}", "version": version},
                headers=staff,
            )
            assert r.status_code == 200, r.text
            version = r.json()["version"]
            async with asyncio.timeout(10):  # one comment at a time: the next comment frame
                async for line in lines:
                    if line == "event: comment":
                        break
            delays.append(time.monotonic() - started)
    delays.sort()
    p95 = delays[int(len(delays) * 0.95) - 1]
    assert p95 < 1.0, delays

    # Streams through the balancer spread over the processes, and end on them as soon as
    # their clients leave (not at the next keep-alive, 15 s on).
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as viewers:
        opened = [
            viewers.stream("GET", f"/v1/tenants/{tenant_a.slug}/stream", headers=staff)
            for _ in range(6)
        ]
        lines = []
        for s in opened:
            lines.append((await s.__aenter__()).aiter_lines())
            assert (await anext(lines[-1])).startswith("retry:")
        per_process = await _streams_open(cluster)
        assert sum(per_process) == 6 and max(per_process) <= 3, per_process
        for s in opened:
            await s.__aexit__(None, None, None)
    for _ in range(60):
        if sum(await _streams_open(cluster)) == 0:
            break
        await asyncio.sleep(0.05)
    assert await _streams_open(cluster) == [0, 0, 0]

    # Each timer fired exactly once, none early.
    deadline = time.monotonic() + 20
    while True:
        fired = await _fetch(
            db_url,
            "SELECT e.issue_id, e.created_at, t.fire_at FROM issue_events e JOIN sla_timers t "
            "ON t.tenant_id = e.tenant_id AND t.issue_id = e.issue_id "
            "WHERE e.tenant_id = $1 AND e.kind = 'sla_breached'",
            tenant_a.id,
        )
        if len(fired) >= len(ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # time for a wrong second firing to show up
    fired = await _fetch(
        db_url,
        "SELECT e.issue_id, e.created_at >= t.fire_at AS on_time FROM issue_events e "
        "JOIN sla_timers t ON t.tenant_id = e.tenant_id AND t.issue_id = e.issue_id "
        "WHERE e.tenant_id = $1 AND e.kind = 'sla_breached'",
        tenant_a.id,
    )
    assert sorted(r["issue_id"] for r in fired) == sorted(ids), cluster.logs()
    assert all(r["on_time"] for r in fired)  # none early
