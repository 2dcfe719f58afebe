"""The app against its own OpenAPI contract: served as generated, and fuzzed by schemathesis.

The fuzzing drives the real ASGI app in-process (its lifespan, pipeline and database) with
inputs generated from /openapi.json, valid and invalid, as a tenant's admin. Every response
must be no server error, carry a documented status and content type, and match its schema
exactly (response objects are closed for the run, so an undocumented field fails too).
Each operation gets a fixed, derandomized budget; every distinct failure is collected and
reported together, with a curl command that reproduces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hypothesis
import msgspec
import schemathesis
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from civicpulse.accounts import SESSION_COOKIE
from civicpulse.api import openapi
from civicpulse.app import create_app
from civicpulse.config import Settings
from tests.support import TenantKeys, make_tenant, running_server

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_MODE = 12
REPORT = {"text": "Pothole on Main St near the school", "lat": 34.05, "lon": -118.25}
REQUEST_TIMEOUT_S = 20.0
# An event stream never ends by itself: it is read this long, then cut (what came is kept).
# Its headers must come before then, which takes milliseconds: the margin is for a busy CI.
STREAM_TIMEOUT_S = 1.0


async def test_document_is_served_and_valid(settings: Settings, tenant_a: TenantKeys) -> None:
    app = create_app(settings)
    async with running_server(settings) as client:
        r = await client.get("/openapi.json")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        served = r.json()
        docs = await client.get("/docs")
    validate(served)
    # The served document is the one the routes and settings generate.
    generated = openapi.document(app.routes, settings)
    assert served == msgspec.json.decode(msgspec.json.encode(generated))
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    for methods in served["paths"].values():
        for op in methods.values():
            assert f"id={op['operationId']}" in docs.text


@dataclass
class Found:
    """One distinct failure: where, what, a reproduction, and how often it was seen."""

    operation: str
    kind: str
    detail: str
    reproduce: str
    seen: int = 1


def _closed(raw: dict[str, Any]) -> dict[str, Any]:
    """The document with every object schema closed to undocumented fields."""
    doc = copy.deepcopy(raw)
    for schema in doc["components"]["schemas"].values():
        if "properties" in schema:
            schema.setdefault("additionalProperties", False)
    return doc


def _crash_summary(exc: BaseException) -> str:
    """The exception and the innermost frames of the service's own code."""
    frames = [
        f"{f.filename.rsplit('civicpulse/', 1)[-1]}:{f.lineno} {f.name}"
        for f in traceback.extract_tb(exc.__traceback__)
        if "/civicpulse/" in f.filename
        and not f.filename.endswith(("civicpulse/app.py", "civicpulse/api/direct.py"))
    ]
    return (
        f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        + " at "
        + " < ".join(reversed(frames[-3:]))
    )


def _fuzz(app: Any, tenant: TenantKeys) -> tuple[list[Found], dict[str, Counter[int]]]:
    """Run every operation, valid and invalid inputs: the distinct failures, and the
    statuses each operation answered with."""
    config = schemathesis.Config()  # not one discovered from a schemathesis.toml
    served = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    schema = schemathesis.openapi.from_dict(_closed(served.raw_schema), config=config)
    schema.app = app
    auth = {"Authorization": f"Bearer {tenant.admin}"}
    found: dict[tuple[str, str, str], Found] = {}
    statuses: dict[str, Counter[int]] = defaultdict(Counter)

    def record(operation: str, kind: str, detail: str, key: str, reproduce: str) -> None:
        known = found.get((operation, kind, key))
        if known is not None:
            known.seen += 1
        else:
            found[(operation, kind, key)] = Found(operation, kind, detail, reproduce)

    def curl(case: schemathesis.Case) -> str:
        return case.as_curl_command(headers=auth)

    def check(case: schemathesis.Case) -> None:
        label = case.operation.label
        stream = case.operation.path.endswith("/stream")
        timeout = STREAM_TIMEOUT_S if stream else REQUEST_TIMEOUT_S
        try:
            response = case.call(timeout=timeout)
        except Exception as exc:  # raised by the app: a 500 for a real client
            statuses[label][500] += 1
            summary = _crash_summary(exc)
            where = summary.split(" at ", 1)[-1]
            record(label, "server error (exception)", summary, where, curl(case))
            return
        statuses[label][response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=auth)
        except FailureGroup as group:
            for failure in group.exceptions:
                detail = f"{response.status_code} {failure.title}: {failure.message}"[:600]
                key = f"{failure.title} {response.status_code}"
                record(label, failure.title, detail, key, curl(case))

    # Random rate limits would throttle whatever ran after them: they are set last.
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda op: op.method.upper() == "PUT" and op.path.endswith("/rate-limits"),
    )
    for operation in operations:
        statuses[operation.label] = Counter()
    try:
        existing = _seed(app, tenant.slug, auth)
        for operation in operations:
            # Generated ids name nothing (404); a second pass names what exists.
            passes = [{"slug": tenant.slug}]
            known = dict(param for part, param in existing.items() if part in operation.path)
            if known:
                passes.append({"slug": tenant.slug, **known})
            headers = auth
            if operation.path.endswith("/session") and operation.method.upper() != "POST":
                # Routes of a person's session: a fresh one (an earlier user change or
                # logout may have ended the last), sent as a browser does.
                headers = _session(app, tenant.slug)
            for path_parameters in passes:
                for mode in schemathesis.GenerationMode:
                    strategy = operation.as_strategy(
                        generation_mode=mode, path_parameters=path_parameters, headers=headers
                    )
                    _explore(strategy, check)
    finally:
        shutdown_lifespans()
    return list(found.values()), statuses


SESSION_USER = {"login": "contract@example.org", "password": "a long enough password"}


def _session(app: Any, slug: str) -> dict[str, str]:
    """Headers carrying a new session of the seeded staff user, and its CSRF token."""
    with get_client(app) as client:
        r = client.post(f"/v1/tenants/{slug}/session", json=SESSION_USER)
        assert r.status_code == 200, r.text
        return {
            "Cookie": f"{SESSION_COOKIE}={r.cookies[SESSION_COOKIE]}",
            "X-CSRF-Token": r.json()["csrf_token"],
        }


def _seed(app: Any, slug: str, auth: dict[str, str]) -> dict[str, tuple[str, str]]:
    """A place, a staff user, and a report grouped into an issue: path part -> (parameter,
    value)."""
    base = f"/v1/tenants/{slug}"
    with get_client(app) as client:
        r = client.post(f"{base}/users", json={**SESSION_USER, "role": "staff"}, headers=auth)
        assert r.status_code == 201, r.text
        user_id = r.json()["id"]
        r = client.put(f"{base}/places/B1", json={"kind": "building", "name": "B1"}, headers=auth)
        assert r.status_code in (200, 201), r.text
        r = client.post(f"{base}/reports", json=REPORT, headers=auth)
        assert r.status_code == 202, r.text
        report_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while (report := client.get(f"{base}/reports/{report_id}", headers=auth).json())[
            "issue_id"
        ] is None:
            assert time.monotonic() < deadline, f"the report was not grouped: {report}"
            time.sleep(0.05)
    return {
        "/places/{code}": ("code", "B1"),
        "/users/{user_id}": ("user_id", str(user_id)),
        "{report_id}": ("report_id", report_id),
        "{issue_id}": ("issue_id", report["issue_id"]),
    }


def _explore(strategy: Any, check: Callable[[Any], None]) -> None:
    """A fixed number of derandomized examples; failures are collected, never raised, so
    there is no shrinking and the budget stays the same whatever is found."""

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_MODE,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(strategy)
    def run(case: Any) -> None:
        check(case)

    # Unsatisfiable: nothing invalid to send (every input is fixed); the positive run covers it.
    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        run()


def _report(found: list[Found]) -> str:
    lines = [f"{len(found)} distinct contract failures:"]
    for f in sorted(found, key=lambda f: (f.operation, f.kind)):
        lines += [f"- {f.operation} [{f.kind}] x{f.seen}: {f.detail}", f"    {f.reproduce}"]
    return "\n".join(lines)


async def test_api_conforms_to_its_contract(settings: Settings, db_url: str) -> None:
    tenant = await make_tenant(db_url)
    found, statuses = await asyncio.to_thread(_fuzz, create_app(settings), tenant)
    assert not found, _report(found)
    # Guard against a vacuous pass: every operation was called, and got past authentication.
    for label, seen in statuses.items():
        assert set(seen) - {401, 403, 429}, f"{label} answered only {dict(seen)}"
