"""The embedded PostgreSQL's life with `serve`: a SIGTERM stops it as Ctrl-C does, a killed
process does not keep it running for good, and `civicpulse db stop` stops it whatever
happened before (real processes, real signals, as the SIGKILL tests)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import env_without_civicpulse, free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Inside the project (as .civicpulse/ is): the server runs as its own user when the tests
    # run as root, and must be able to reach the folder.
    path = ROOT / ".civicpulse" / f"lifecycle-{uuid.uuid4().hex[:8]}"
    yield path
    db_stop(path)
    shutil.rmtree(path, ignore_errors=True)


def _env(data_dir: Path) -> dict[str, str]:
    return env_without_civicpulse() | {
        "CIVICPULSE_DATA_DIR": str(data_dir),
        "CIVICPULSE_LOG_LEVEL": "warning",
    }


def db_stop(data_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "civicpulse.cli", "db", "stop"]
    return subprocess.run(command, env=_env(data_dir), capture_output=True, text=True, check=False)


def postmaster(data_dir: Path) -> int | None:
    """The embedded server's pid while it runs."""
    try:
        pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


async def start_serving(data_dir: Path, demo: bool = False) -> subprocess.Popen[bytes]:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "serve.out").open("wb") as out:  # the child keeps its own copy
        proc = subprocess.Popen(
            [sys.executable, "-m", "civicpulse.cli", "serve", "--port", str(port)]
            + ([] if demo else ["--no-demo"]),
            env=_env(data_dir),
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(1200):
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "serve exited before it was ready"
            await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError("serve was not ready in 60 s")


async def wait_stopped(data_dir: Path, timeout: float = 20.0) -> bool:
    for _ in range(int(timeout / 0.1)):
        if postmaster(data_dir) is None:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_sigterm_stops_the_embedded_server_even_after_a_kill(data_dir: Path) -> None:
    killed = await start_serving(data_dir)
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    # The killed process never left: the server runs on, and it counts that process still.
    assert postmaster(data_dir) is not None
    served = await start_serving(data_dir)
    served.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(served.wait, 30) == 0
    assert await wait_stopped(data_dir), "SIGTERM left the embedded PostgreSQL running"


async def test_db_stop_stops_a_server_its_users_left_running(data_dir: Path) -> None:
    killed = await start_serving(data_dir, demo=True)
    # The demo's welcome names where to look next.
    welcome = (data_dir / "serve.out").read_text()
    assert "/t/demo/dashboard" in welcome and "/docs" in welcome, welcome
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    pid = postmaster(data_dir)
    assert pid is not None
    done = await asyncio.to_thread(db_stop, data_dir)
    assert done.returncode == 0 and f"pid {pid}" in done.stdout, done
    assert await wait_stopped(data_dir, 1.0)
    again = await asyncio.to_thread(db_stop, data_dir)
    assert again.returncode == 0 and "was not running" in again.stdout
