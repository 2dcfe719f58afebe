"""Test helpers: databases from a migrated template, tenants, keys, an in-process server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import uvicorn

from civicpulse.app import create_app
from civicpulse.config import Secret, Settings
from civicpulse.db import tenants

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    """The real 311 samples: CIVICPULSE_TEST_SHARED_DATA, else shared/ beside the checkout
    (CI and developers), else shared/ beside the repository this clone was made from."""
    if "CIVICPULSE_TEST_SHARED_DATA" in os.environ:
        return Path(os.environ["CIVICPULSE_TEST_SHARED_DATA"])
    beside = ROOT.parent / "shared" / "data"
    if beside.is_dir():
        return beside
    origin = subprocess.run(
        ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        from_origin = Path(origin).resolve().parent / "shared" / "data"
        if from_origin.is_dir():
            return from_origin
    return beside  # missing: the tests that need it fail and name this path


SHARED_DATA = _shared_data()


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def reachable(url: str) -> bool:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(url), 3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_settings(db_url: str, **changes: object) -> Settings:
    base = Settings(
        database_url=Secret(db_url),
        db_pool_min=1,
        db_pool_max=4,
        pipeline_poll_seconds=0.1,
        process_pool_workers=1,
        shutdown_timeout=5.0,
        auth_cache_seconds=0.0,
        tenant_cache_seconds=0.0,
        # Tests post as fast as they can; the rate-limit tests turn the limits on.
        rate_limit_key_per_second=0.0,
        rate_limit_public_per_second=0.0,
        login_per_minute=0.0,
        map_tile_url="",  # no tile server here: the pages' maps draw on a plain background
    )
    return base.replace(**changes) if changes else base


@dataclass(frozen=True)
class TenantKeys:
    slug: str
    id: int
    submit: str
    staff: str
    admin: str

    def headers(self, scope: str = "submit") -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, scope)}"}


async def make_tenant(db_url: str, slug: str | None = None, template: str = "city") -> TenantKeys:
    slug = slug or f"t-{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(db_url)
    try:
        tenant = await tenants.create_tenant(
            conn, slug, slug.title(), "America/Los_Angeles", template
        )
        keys = {s: await tenants.create_api_key(conn, slug, s) for s in tenants.SCOPES}
    finally:
        await conn.close()
    return TenantKeys(slug=slug, id=tenant.id, **keys)


@contextlib.asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app under a real uvicorn on a free port; yields a client for it."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        assert server.started, "server did not start"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await task


def metric(text: str, name: str, **labels: str) -> float:
    """One sample from a Prometheus text exposition (/metrics): the metric `name` with exactly
    these labels; 0 when it has no such sample."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # as the client writes
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}" if want else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def env_without_civicpulse() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CIVICPULSE_")}
