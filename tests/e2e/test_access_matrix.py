"""Every route x every kind of caller x every visibility, generated from the route table.

The routes come from the app itself, and each one's access from its OpenAPI entry
(`openapi.OPERATIONS[...].scope`; tests/unit/test_openapi.py fails a route without one), so
a new route joins this matrix by existing. Path parameters are filled from the privacy
seed (tests/privacy.py): a route with `{issue_id}` is tried on every seeded issue (public,
private, hidden by category, hidden by area, private but holding the caller's own report),
one with `{report_id}` on every report; required query parameters aim at the seeded
issues. A parameter this file does not know fails the test, so a new kind of route must say
what to try it on.

Two properties are checked for every cell:
- access: below the route's scope the answer is 401 (no credential) or 403 (too small); a
  key of another tenant gets 404; a key where a person's session is needed, 401; at or
  above it, never 401/403 (sessions send their CSRF token, as the pages do);
- privacy: nothing an anonymous caller or the resident app (`submit`) receives, whatever
  the status, holds another person's words, address or contact, or the id of anything the
  public may not see (streams are read, replaying everything, for a moment).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections import Counter
from typing import Any

import httpx

from civicpulse.accounts import SESSION_COOKIE
from civicpulse.api import open311, openapi
from civicpulse.app import create_app
from civicpulse.config import Settings
from tests.privacy import LAT, LON, Secrets, seed
from tests.support import TenantKeys, running_server
from tests.unit.test_openapi import served_routes

RANK = {"submit": 0, "staff": 1, "admin": 2}
# Keys of each scope, another tenant's admin key, and people's sessions of each role.
CALLERS = (
    "anonymous",
    "submit",
    "staff",
    "admin",
    "stranger",
    "revoked",  # a staff key, revoked
    # A cross-site page riding the cookie (before the sessions: DELETE .../session by them
    # logs that session out).
    "staff session, no CSRF token",
    "staff session",
    "admin session",
)
READS = {"GET"}
PASSWORD = "correct horse battery staple"
QUERY = {"lat": str(LAT), "lon": str(LON), "k": "not-its-secret"}  # the seeded place
GEOREPORT = openapi.Operation("Open311", "open311", "public", {})


def _values(name: str, secrets: Secrets, slug: str, user_id: int) -> list[str]:
    """What to try a path parameter with."""
    if name == "slug":
        return [slug]
    if name == "issue_id":
        return [str(i) for i in secrets.issues.values()]
    if name == "report_id":
        return [str(r) for r in secrets.reports.values()]
    if name == "code":
        return ["road_defect"]
    if name == "key_id":
        return [str(secrets.spare_key_id)]
    if name == "user_id":
        return [str(user_id)]
    # Open311
    if name == "fmt":
        return ["json", "xml"]
    if name == "service_code":
        return ["ROAD"]
    if name == "service_request_id":
        return [str(i) for i in secrets.issues.values()]
    if name == "token":
        return [str(r) for r in secrets.reports.values()]
    raise AssertionError(f"the access matrix does not know what to try {{{name}}} with")


def _paths(template: str, secrets: Secrets, slug: str, user_id: int) -> list[str]:
    names = re.findall(r"\{(\w+)\}", template)
    out = []
    for combo in itertools.product(*(_values(n, secrets, slug, user_id) for n in names)):
        path = template
        for name, value in zip(names, combo, strict=True):
            path = path.replace(f"{{{name}}}", value)
        out.append(path)
    return out


def _headers(
    caller: str, a: TenantKeys, b: TenantKeys, sessions: dict[str, dict[str, str]]
) -> dict[str, str]:
    if caller == "anonymous":
        return {}
    if caller == "stranger":
        return b.headers("admin")
    if caller in sessions:
        return sessions[caller]
    if caller.endswith("no CSRF token"):
        return {"Cookie": sessions["staff session"]["Cookie"]}
    return a.headers(caller)


def _expected(scope: str, caller: str, method: str) -> set[int] | None:
    """The refusal a caller must get on a route (None: it must be let in)."""
    if scope == "public":
        return None
    session = caller.startswith(("staff session", "admin session"))
    if caller == "revoked" or (caller == "anonymous" and scope != "optional"):
        return {401}
    if scope == "session" and not session:
        return {401}  # a key is not a session
    if caller == "stranger":
        return {404}
    if session and method not in READS and caller.endswith("no CSRF token"):
        return {403}
    if scope in ("optional", "session") or caller == "anonymous":
        return None
    role = caller.split(" ")[0]
    return None if RANK[role] >= RANK[scope] else {403}


def _query(operation: openapi.Operation) -> dict[str, str]:
    """The route's required query parameters, aimed at the seeded issues."""
    out = {}
    for param in operation.query:
        if param.required:
            if param.name not in QUERY:
                raise AssertionError(
                    f"the access matrix does not know what to send as {param.name}"
                )
            out[param.name] = QUERY[param.name]
    return out


async def _call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    query: dict[str, str],
) -> tuple[int, str]:
    if path.endswith("/stream"):
        # Everything from the first event on, for a moment.
        chunks: list[str] = []
        async with client.stream("GET", path, headers={**headers, "Last-Event-ID": "0"}) as resp:
            if resp.status_code != 200:
                return resp.status_code, (await resp.aread()).decode()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.7):
                    async for chunk in resp.aiter_text():
                        chunks.append(chunk)
            return 200, "".join(chunks)
    kwargs: dict[str, Any] = {}
    if method not in READS:
        kwargs["json"] = {}
    resp = await client.request(method, path, headers=headers, params=query, **kwargs)
    return resp.status_code, resp.text


async def _log_in(
    client: httpx.AsyncClient, keys: TenantKeys
) -> tuple[dict[str, dict[str, str]], int]:
    """A staff and an admin person, logged in: the headers a browser sends for each (the
    cookie, and the CSRF token its page holds), and the staff user's id."""
    sessions: dict[str, dict[str, str]] = {}
    user_id = 0
    for role in ("staff", "admin"):
        login = f"{role}@example.org"
        made = await client.post(
            f"/v1/tenants/{keys.slug}/users",
            json={"login": login, "role": role, "password": PASSWORD},
            headers=keys.headers("admin"),
        )
        assert made.status_code == 201, made.text
        if role == "staff":
            user_id = made.json()["id"]
        r = await client.post(
            f"/v1/tenants/{keys.slug}/session", json={"login": login, "password": PASSWORD}
        )
        assert r.status_code == 200, r.text
        client.cookies.clear()  # sent explicitly, per caller
        sessions[f"{role} session"] = {
            "Cookie": f"{SESSION_COOKIE}={r.cookies[SESSION_COOKIE]}",
            "X-CSRF-Token": r.json()["csrf_token"],
        }
    return sessions, user_id


async def _revoked_key(client: httpx.AsyncClient, keys: TenantKeys) -> dict[str, str]:
    made = await client.post(
        f"/v1/tenants/{keys.slug}/keys", json={"scope": "staff"}, headers=keys.headers("admin")
    )
    gone = await client.delete(
        f"/v1/tenants/{keys.slug}/keys/{made.json()['id']}", headers=keys.headers("admin")
    )
    assert gone.status_code == 200
    return {"Authorization": f"Bearer {made.json()['key']}"}


async def test_every_route_for_every_caller_and_visibility(
    settings: Settings, db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    secrets = await seed(db_url, tenant_a)
    # Open311 routes are public (their api_key is a field of their own), documented by
    # GeoReport v2 rather than OpenAPI: they join with that scope.
    geo = {(m, r.path) for r in open311.routes for m in (r.methods or ()) if m != "HEAD"}
    routes = sorted(served_routes(create_app(settings)) | geo)
    # Reads first: some writes below change settings (a `{}` dashboard makes everything
    # public), and what is read must be read under the seeded view. Logging out, last.
    routes.sort(key=lambda r: (r[0] not in READS, r == ("DELETE", "/v1/tenants/{slug}/session")))
    cells: Counter[str] = Counter()
    wrong: list[str] = []
    leaked: list[str] = []
    async with running_server(settings) as client:
        sessions, user_id = await _log_in(client, tenant_a)
        sessions["revoked"] = await _revoked_key(client, tenant_a)
        for method, template in routes:
            operation = openapi.OPERATIONS.get((method, template), GEOREPORT)
            scope = operation.scope
            for path in _paths(template, secrets, tenant_a.slug, user_id):
                for caller in CALLERS:
                    status, body = await _call(
                        client,
                        method,
                        path,
                        _headers(caller, tenant_a, tenant_b, sessions),
                        _query(operation)
                        | ({"jurisdiction_id": tenant_a.slug} if (method, template) in geo else {}),
                    )
                    cells["cells"] += 1
                    where = f"{method} {path} as {caller} (scope {scope}): {status}"
                    refusal = _expected(scope, caller, method)
                    if status >= 500:
                        wrong.append(where)
                    elif refusal is None:
                        if status in (401, 403):
                            wrong.append(where)
                    elif status not in refusal:
                        wrong.append(where)
                    if caller in ("anonymous", "submit"):
                        cells["privacy checks"] += 1
                        # (what the caller sent in the path is not a leak when echoed)
                        forbidden = secrets.forbidden(caller)
                        found = [s for s in forbidden if s in body and s not in path]
                        if found:
                            leaked.append(f"{where}: {found}")
    print(f"access matrix: {dict(cells)}, {len(routes)} routes")
    assert not wrong, "\n".join(wrong)
    assert not leaked, "\n".join(leaked)
    assert cells["cells"] > 5 * len(routes)
