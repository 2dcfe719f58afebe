"""SIGKILL a real serving process mid-load: every acknowledged report must be on disk."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support import TenantKeys, env_without_civicpulse, free_port

pytestmark = pytest.mark.slow


async def test_sigkill_mid_load_loses_no_acknowledged_report(
    db_url: str, tenant_a: TenantKeys, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **env_without_civicpulse(),
        "CIVICPULSE_DATABASE_URL": db_url,
        "CIVICPULSE_LOG_LEVEL": "warning",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "civicpulse.cli", "serve", "--port", str(port), "--no-demo"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    acknowledged: set[str] = set()
    failures = 0
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for _ in range(200):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("server did not start: " + log_path.read_text())

            deadline = time.monotonic() + 10

            async def hammer(worker: int) -> None:
                nonlocal failures
                i = 0
                while time.monotonic() < deadline:
                    i += 1
                    try:
                        r = await client.post(
                            f"/v1/tenants/{tenant_a.slug}/reports",
                            json={"text": f"load {worker}/{i}", "lat": 1.0, "lon": 2.0},
                            headers=tenant_a.headers(),
                        )
                    except httpx.TransportError:
                        failures += 1
                        return  # the server is gone
                    if r.status_code == 202:
                        acknowledged.add(r.json()["id"])

            workers = [asyncio.create_task(hammer(w)) for w in range(32)]
            while len(acknowledged) < 300 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.gather(*workers)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    assert len(acknowledged) >= 300, "the load never got going"
    assert failures > 0, "the kill did not interrupt any request"
    conn = await asyncpg.connect(db_url)
    try:
        stored = {
            str(r["id"])
            for r in await conn.fetch(
                "SELECT id FROM reports WHERE id = ANY($1::uuid[])", list(acknowledged)
            )
        }
    finally:
        await conn.close()
    assert acknowledged - stored == set()
