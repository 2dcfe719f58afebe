"""Kill a real serving process mid-load (SIGKILL, then SIGTERM): every acknowledged report
must be on disk, and a SIGTERM must drain and exit cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support import TenantKeys, env_without_civicpulse, free_port

pytestmark = pytest.mark.slow


@asynccontextmanager
async def serving(
    db_url: str, log_path: Path, log_level: str = "warning"
) -> AsyncIterator[tuple[subprocess.Popen[bytes], httpx.AsyncClient]]:
    port = free_port()
    env = {
        **env_without_civicpulse(),
        "CIVICPULSE_DATABASE_URL": db_url,
        "CIVICPULSE_LOG_LEVEL": log_level,
        "CIVICPULSE_LOG_FORMAT": "json",
        "CIVICPULSE_RATE_LIMIT_KEY_PER_SECOND": "0",  # the load comes from one key
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "civicpulse.cli", "serve", "--port", str(port), "--no-demo"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(300):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("server did not start: " + log_path.read_text())
            yield proc, client
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def load_until_signal(
    client: httpx.AsyncClient,
    tenant: TenantKeys,
    proc: subprocess.Popen[bytes],
    sig: int,
) -> tuple[set[str], int]:
    """Post from 32 clients; after 300 acknowledgements send `sig` to the server."""
    acknowledged: set[str] = set()
    failures = 0
    deadline = time.monotonic() + 15

    async def hammer(worker: int) -> None:
        nonlocal failures
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                r = await client.post(
                    f"/v1/tenants/{tenant.slug}/reports",
                    json={"text": f"load {worker}/{i}", "lat": 1.0, "lon": 2.0},
                    headers=tenant.headers(),
                )
            except httpx.TransportError:
                failures += 1
                return  # the server is gone
            if r.status_code == 202:
                acknowledged.add(r.json()["id"])
            elif r.status_code == 503:
                failures += 1
                return  # shutting down

    workers = [asyncio.create_task(hammer(w)) for w in range(32)]
    while len(acknowledged) < 300 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    await asyncio.gather(*workers)
    assert len(acknowledged) >= 300, "the load never got going"
    assert failures > 0, "the signal did not interrupt any request"
    return acknowledged, failures


async def missing_from_db(db_url: str, ids: set[str]) -> set[str]:
    conn = await asyncpg.connect(db_url)
    try:
        stored = {
            str(r["id"])
            for r in await conn.fetch(
                "SELECT id FROM reports WHERE id = ANY($1::uuid[])", list(ids)
            )
        }
    finally:
        await conn.close()
    return ids - stored


async def test_sigkill_mid_load_loses_no_acknowledged_report(
    db_url: str, tenant_a: TenantKeys, tmp_path: Path
) -> None:
    async with serving(db_url, tmp_path / "serve.log") as (proc, client):
        acknowledged, _ = await load_until_signal(client, tenant_a, proc, signal.SIGKILL)
    assert await missing_from_db(db_url, acknowledged) == set()


async def test_sigterm_drains_and_exits_cleanly(
    db_url: str, tenant_a: TenantKeys, tmp_path: Path
) -> None:
    log_path = tmp_path / "serve.log"
    async with serving(db_url, log_path, "info") as (proc, client):
        acknowledged, _ = await load_until_signal(client, tenant_a, proc, signal.SIGTERM)
        # uvicorn re-raises the signal once its graceful shutdown is complete.
        assert await asyncio.to_thread(proc.wait, 20) in (0, -signal.SIGTERM)
    log = log_path.read_text()
    for event in ("writer_stopped", "claimer_stopped", "classify_stopped", "service_stopped"):
        assert f'"event": "{event}"' in log, log
    assert await missing_from_db(db_url, acknowledged) == set()
    # Nothing was left half-done: every stored report is either processed or waiting
    # unclaimed for the next start (no lease left behind by a clean stop).
    conn = await asyncpg.connect(db_url)
    try:
        leased = await conn.fetchval("SELECT count(*) FROM reports WHERE lease_owner IS NOT NULL")
    finally:
        await conn.close()
    assert leased == 0
