"""A real streaming replica (pg_basebackup from the Debian PostgreSQL): the read-only surfaces
read from it while it keeps up, fall back to the primary past the lag limit, and come back.

The test makes its own primary and replica in a temporary folder (the system cluster need not
allow replication connections), and tells which database answered by pausing the replica's
replay: what the primary has and the replica does not is visible only in the primary's
answers."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import glob
import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from civicpulse.config import Secret
from civicpulse.db import migrate
from tests.support import TenantKeys, free_port, make_tenant, metric, running_server
from tests.support import test_settings as settings_for


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_basebackup"))
    if found:
        return Path(found[-1]).parent
    basebackup = shutil.which("pg_basebackup")
    return Path(basebackup).parent if basebackup else None


BINDIR = _bindir()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        BINDIR is None and not os.environ.get("CI"), reason="no PostgreSQL server binaries"
    ),
]


def _run(*cmd: str | Path) -> None:
    """A PostgreSQL tool, as the postgres user when we are root (the server refuses root)."""
    assert BINDIR is not None, "CI must have the Debian PostgreSQL server (pg_basebackup)"
    args = [str(BINDIR / str(cmd[0])), *map(str, cmd[1:])]
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    subprocess.run(args, check=True, capture_output=True, timeout=120)


@dataclass
class Replication:
    primary: str  # URLs of the civicpulse database on each
    replica: str


@pytest.fixture(scope="module")
def replication() -> Iterator[Replication]:
    base = Path(tempfile.mkdtemp(prefix="civicpulse-replica-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    primary, replica = base / "primary", base / "replica"
    p_port, r_port = free_port(), free_port()
    started: list[Path] = []
    try:
        _run("initdb", "-D", primary, "-U", "postgres", "-A", "trust", "--no-locale",
             "-E", "UTF8", "--no-sync")  # fmt: skip
        with (primary / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {p_port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{base}'\nwal_level = replica\n"
                "max_wal_senders = 4\nfsync = off\nhot_standby_feedback = on\n"
            )
        with (primary / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        _run("pg_ctl", "-D", primary, "-l", base / "primary.log", "-w", "start")
        started.append(primary)
        _run("createdb", "-h", "127.0.0.1", "-p", p_port, "-U", "postgres", "civicpulse")
        primary_url = f"postgresql://postgres@127.0.0.1:{p_port}/civicpulse"
        asyncio.run(migrate.migrate(primary_url))
        _run("pg_basebackup", "-h", "127.0.0.1", "-p", p_port, "-U", "postgres",
             "-D", replica, "-R", "-X", "stream", "-c", "fast")  # fmt: skip
        with (replica / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"port = {r_port}\n")
        _run("pg_ctl", "-D", replica, "-l", base / "replica.log", "-w", "start")
        started.append(replica)
        yield Replication(primary_url, f"postgresql://postgres@127.0.0.1:{r_port}/civicpulse")
    finally:
        try:
            for data in reversed(started):
                with contextlib.suppress(subprocess.SubprocessError):
                    _run("pg_ctl", "-D", data, "-m", "immediate", "stop")
        finally:
            shutil.rmtree(base, ignore_errors=True)


async def _sql(url: str, query: str, *args: object) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def _open_issues(url: str, tenant: TenantKeys, n: int) -> None:
    """n open public issues, each with its creation event (as an import makes them)."""
    await _sql(
        url,
        "WITH made AS (INSERT INTO issues (tenant_id, id, category, lat, lon, opened_at) "
        "SELECT $1, civicpulse_uuid7(), 'other', 34.0, -118.0, now() "
        "FROM generate_series(1, $2) RETURNING tenant_id, id) "
        "INSERT INTO issue_events (tenant_id, issue_id, kind, actor, to_status) "
        "SELECT tenant_id, id, 'issue_created', 'test', 'new' FROM made",
        tenant.id,
        n,
    )


async def _replayed(replication: Replication, tenant: TenantKeys, n: int) -> None:
    for _ in range(200):
        seen = await _sql(
            replication.replica, "SELECT count(*) FROM issues WHERE tenant_id = $1", tenant.id
        )
        if seen == n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the replica never had {n} issues")


@pytest.fixture
async def tenant(replication: Replication) -> AsyncIterator[TenantKeys]:
    yield await make_tenant(replication.primary)


def _exported(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return len(list(csv.reader(io.StringIO(response.text)))) - 1


async def _wait_lag(client: httpx.AsyncClient, ok: bool, limit: float) -> float:
    """Wait until the service's lag metric is within (ok) or past (not ok) `limit`."""
    lag = float("nan")
    for _ in range(150):
        lag = metric((await client.get("/metrics")).text, "civicpulse_read_replica_lag_seconds")
        if (lag <= limit) == ok and lag == lag:  # NaN: not measured yet
            return lag
        await asyncio.sleep(0.1)
    raise AssertionError(f"lag {lag} never {'within' if ok else 'past'} {limit}")


async def test_read_surfaces_use_the_replica_and_fall_back_past_the_lag_limit(
    replication: Replication, tenant: TenantKeys
) -> None:
    await _open_issues(replication.primary, tenant, 5)
    await _replayed(replication, tenant, 5)
    base = settings_for(
        replication.primary,
        read_database_url=Secret(replication.replica),
        read_lag_check_seconds=0.1,
    )
    staff = tenant.headers("staff")
    export = f"/v1/tenants/{tenant.slug}/exports/issues.csv"
    open311 = "/open311/v2/requests.json"
    async with (
        running_server(base.replace(read_max_lag_seconds=3600)) as patient,
        running_server(base.replace(read_max_lag_seconds=1.0)) as strict,
    ):
        await _wait_lag(patient, ok=True, limit=1.0)
        await _wait_lag(strict, ok=True, limit=1.0)
        # Every read-only surface reads the replica while it keeps up.
        assert _exported(await patient.get(export, headers=staff)) == 5
        r = await patient.get(f"/v1/tenants/{tenant.slug}/dashboard/data", headers=staff)
        assert r.status_code == 200 and r.json()["totals"]["open_now"] == 5
        r = await patient.get(f"/v1/tenants/{tenant.slug}/analytics/trends", headers=staff)
        assert r.status_code == 200
        r = await patient.get(open311, params={"jurisdiction_id": tenant.slug})
        assert r.status_code == 200 and len(r.json()) == 5
        # A stream resumed from the start reads its history from the table.
        async with patient.stream(
            "GET", f"/v1/tenants/{tenant.slug}/stream", headers={**staff, "Last-Event-ID": "0"}
        ) as resp:
            created = 0
            async with asyncio.timeout(10):
                async for line in resp.aiter_lines():
                    created += line == "event: issue_created"
                    if created == 5:
                        break
        metrics = (await patient.get("/metrics")).text
        for surface in ("export", "dashboard", "analytics", "open311", "stream"):
            assert metric(metrics, "civicpulse_reads_total", surface=surface,
                           database="replica") >= 1, surface  # fmt: skip
        assert metric(metrics, "civicpulse_reads_total", surface="export", database="primary") == 0

        # The replica stops replaying; the primary moves on.
        await _sql(replication.replica, "SELECT pg_wal_replay_pause()")
        try:
            await _open_issues(replication.primary, tenant, 3)
            # What staff act on comes from the primary...
            listed = await patient.get(
                f"/v1/tenants/{tenant.slug}/issues", headers=staff, params={"limit": 100}
            )
            assert len(listed.json()["items"]) == 8
            # ... the read-only surfaces from the replica, stale but within its limit ...
            assert _exported(await patient.get(export, headers=staff)) == 5
            r = await patient.get(open311, params={"jurisdiction_id": tenant.slug})
            assert len(r.json()) == 5
            # A dashboard that has seen the newest event is never answered without it.
            data = f"/v1/tenants/{tenant.slug}/dashboard/data"
            newest = await _sql(
                replication.primary,
                "SELECT max(seq) FROM issue_events WHERE tenant_id = $1",
                tenant.id,
            )
            r = await patient.get(data, headers=staff)
            assert r.json()["totals"]["open_now"] == 5
            for _ in range(100):  # the primary's rollups wait for its aggregator's next turn
                r = await patient.get(data, headers=staff, params={"seen": newest})
                if r.json()["totals"]["open_now"] == 8:
                    break
                await asyncio.sleep(0.1)
            assert r.json()["totals"]["open_now"] == 8  # the paused replica has 5
            # ... and where the limit is tighter, from the primary once the lag passes it.
            lag = await _wait_lag(strict, ok=False, limit=1.0)
            assert lag > 1.0
            assert _exported(await strict.get(export, headers=staff)) == 8
            r = await strict.get(open311, params={"jurisdiction_id": tenant.slug})
            assert len(r.json()) == 8
            metrics = (await strict.get("/metrics")).text
            assert metric(metrics, "civicpulse_reads_total", surface="export",
                           database="primary") >= 1  # fmt: skip
        finally:
            await _sql(replication.replica, "SELECT pg_wal_replay_resume()")

        # Caught up, it serves again.
        await _wait_lag(strict, ok=True, limit=1.0)
        before = metric((await strict.get("/metrics")).text, "civicpulse_reads_total",
                         surface="export", database="replica")  # fmt: skip
        assert _exported(await strict.get(export, headers=staff)) == 8
        after = metric((await strict.get("/metrics")).text, "civicpulse_reads_total",
                        surface="export", database="replica")  # fmt: skip
        assert after == before + 1


async def test_an_unreachable_replica_sends_reads_to_the_primary(
    replication: Replication, tenant: TenantKeys
) -> None:
    await _open_issues(replication.primary, tenant, 2)
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/civicpulse"
    settings = settings_for(
        replication.primary, read_database_url=Secret(nowhere), read_lag_check_seconds=0.1
    )
    async with running_server(settings) as client:
        await asyncio.sleep(0.5)
        r = await client.get(
            f"/v1/tenants/{tenant.slug}/exports/issues.csv", headers=tenant.headers("staff")
        )
        assert _exported(r) == 2
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text  # the service itself is fine
        metrics = (await client.get("/metrics")).text
    assert metric(metrics, "civicpulse_read_replica_lag_seconds") != metric(
        metrics, "civicpulse_read_replica_lag_seconds"
    )  # NaN: unknown
    assert metric(metrics, "civicpulse_reads_total", surface="export", database="primary") == 1


async def test_a_replica_behind_at_start_is_not_used_until_it_catches_up(
    replication: Replication, tenant: TenantKeys
) -> None:
    """A process that starts while the replica is far behind must not trust it on its first
    look, whatever its lag limit."""
    await _open_issues(replication.primary, tenant, 4)
    await _replayed(replication, tenant, 4)
    await _sql(replication.replica, "SELECT pg_wal_replay_pause()")
    try:
        await _open_issues(replication.primary, tenant, 2)
        settings = settings_for(
            replication.primary,
            read_database_url=Secret(replication.replica),
            read_lag_check_seconds=0.1,
            read_max_lag_seconds=3600,
        )
        async with running_server(settings) as client:
            await asyncio.sleep(0.5)  # several looks
            lag = metric((await client.get("/metrics")).text, "civicpulse_read_replica_lag_seconds")
            assert lag == float("inf")
            r = await client.get(
                f"/v1/tenants/{tenant.slug}/exports/issues.csv", headers=tenant.headers("staff")
            )
            assert _exported(r) == 6  # the primary's answer
    finally:
        await _sql(replication.replica, "SELECT pg_wal_replay_resume()")
