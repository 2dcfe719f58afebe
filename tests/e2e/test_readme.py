"""The README's examples, run as written against a fresh embedded server: every `curl` and
CLI line of "Try it" and of "Places", and the rules example. Only what cannot be verbatim is
filled in: the port this test got, the key `serve` printed (`$KEY`), the id the first
answer gave (`<id>`), and where the shared data lie."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.support import SHARED_DATA, env_without_civicpulse, free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The README's text under `## title`, up to the next section."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else None]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.DOTALL)


def commands(block: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, comments left out."""
    joined = block.replace("\\\n", " ")
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


class Readme:
    def __init__(self, data_dir: Path, port: int, key: str) -> None:
        self.data_dir = data_dir
        self.port = port
        self.key = key

    def run(self, command: str, **fill: str) -> str:
        """One README line through bash, with the blanks filled in; its stdout."""
        command = command.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
        command = command.replace("../shared/data", str(SHARED_DATA))
        for blank, value in fill.items():
            command = command.replace(blank, value)
        env = env_without_civicpulse() | {
            "KEY": self.key,
            "CIVICPULSE_DATA_DIR": str(self.data_dir),
            "CIVICPULSE_LOG_LEVEL": "warning",
        }
        done = subprocess.run(
            ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        return done.stdout


@asynccontextmanager
async def fresh_server() -> AsyncIterator[Readme]:
    """`civicpulse serve` on a new embedded database, as the README's first command leaves
    it (demo tenant and key)."""
    data_dir = ROOT / ".civicpulse" / f"readme-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir(parents=True)
    port = free_port()
    env = env_without_civicpulse() | {"CIVICPULSE_DATA_DIR": str(data_dir)}
    with (data_dir / "serve.out").open("wb") as out:
        proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "civicpulse"), "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
    try:
        key = None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(1200):
                found = re.search(
                    r"API key \(admin, shown once\): (\S+)", (data_dir / "serve.out").read_text()
                )
                try:
                    ready = (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    ready = False
                if found and ready:
                    key = found.group(1)
                    break
                assert proc.poll() is None, (data_dir / "serve.out").read_text()
                await asyncio.sleep(0.05)
        assert key, "serve printed no key"
        yield Readme(data_dir, port, key)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
        stop = [str(ROOT / ".venv" / "bin" / "civicpulse"), "db", "stop"]
        await asyncio.to_thread(subprocess.run, stop, env=env, capture_output=True, check=False)
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_the_readme_examples_run_as_written() -> None:
    try_it = section("Try it")
    first, imports = blocks(try_it, "sh")[:2]
    post, get = commands(first)
    async with fresh_server() as readme:
        # The first report: 202, and (with the same Idempotency-Key) the same report again.
        accepted = json.loads(readme.run(post))
        assert accepted["status"] == "received" and accepted["links"]["self"].endswith(
            accepted["id"]
        )
        assert json.loads(readme.run(post))["id"] == accepted["id"]
        # Within about a second it is classified and grouped as the README shows.
        report: dict[str, object] = {}
        for _ in range(100):
            report = json.loads(readme.run(get, **{"<id>": accepted["id"]}))
            if report["status"] == "grouped":
                break
            await asyncio.sleep(0.1)
        assert report["status"] == "grouped", report
        assert report["category"] == "water_sewer" and report["issue_id"]
        classification = report["classification"]
        assert isinstance(classification, dict) and classification["decided_by"] == "local"
        # The real samples import, and the SLA figures answer.
        for command in commands(imports):
            readme.run(command + " --quiet")
        inline = re.findall(r"`(curl -s '[^`]*metrics/sla[^`]*)`", try_it)
        assert inline, "the SLA curl is no longer in Try it"
        figures = json.loads(readme.run(inline[0]))
        assert figures["group_by"] == "category" and figures["groups"]

        # Places: the facility tenant and its places file, as printed.
        places = section("Places: hotels, campuses and office buildings")
        create, load = commands(blocks(places, "sh")[0])
        csv_text = re.search(r"```\n(code,kind,name.*?)```", places, re.DOTALL)
        assert csv_text is not None
        places_file = ROOT / "places.csv"
        places_file.write_text(csv_text.group(1))
        try:
            readme.run(create)
            assert readme.run(load).strip() == "read 4 places: 4 created, 0 replaced"
        finally:
            places_file.unlink()

        # Rules: the example is accepted once the teams and area it names exist, as the
        # README says.
        rules = json.loads(blocks(section("Workflows and SLAs"), "json")[0])
        headers = {"Authorization": f"Bearer {readme.key}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{readme.port}/v1/tenants/demo", headers=headers
        ) as api:
            refused = await api.put("/rules", json=rules)
            assert refused.status_code == 422 and "emergency" in refused.text
            for team in ("emergency", "roads"):
                r = await api.put(f"/teams/{team}", json={"name": team.title()})
                assert r.status_code == 200, r.text
            square = [[-118.27, 34.04], [-118.23, 34.04], [-118.23, 34.06], [-118.27, 34.04]]
            r = await api.put(
                "/areas/downtown",
                json={"name": "Downtown", "geometry": {"type": "Polygon", "coordinates": [square]}},
            )
            assert r.status_code == 200, r.text
            r = await api.put("/rules", json=rules)
            assert r.status_code == 201, r.text

        # Open311: the curls as printed, a token polled until its request is known.
        services, definition, post, token, synced = commands(blocks(section("Open311"), "bash")[0])
        assert "ROAD" in {s["service_code"] for s in json.loads(readme.run(services))}
        assert "<service_definition>" in readme.run(definition)
        since = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        (answer,) = json.loads(readme.run(post))
        for _ in range(100):
            if "<service_request_id>" in readme.run(token, **{"$TOKEN": answer["token"]}):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the README's Open311 request never got an id")
        # Changed since just before the post (the README's date would list the imports too).
        (request,) = json.loads(readme.run(synced, **{"2026-11-01T00:00:00Z": since}))
        assert request["lat"] is None and request["notes"]  # located by address only
