"""Staff accounts over real HTTP: logins and their cookie, sessions on staff and admin routes,
CSRF on a session's writes, failures that look alike, lockout, the login rate limit, tenant
isolation, ending sessions (logout, disabling, a new password, idleness, age), the audit
log, and the `civicpulse user` commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher

from civicpulse import accounts
from civicpulse.app import create_app
from civicpulse.config import Settings
from tests.support import TenantKeys, env_without_civicpulse, running_server
from tests.support import test_settings as make_settings

PASSWORD = "correct horse battery staple"
COOKIE = "civicpulse_session"


@pytest.fixture
def settings(db_url: str) -> Settings:
    # Most tests log in often from one address: the login rate limit has a test of its own.
    return make_settings(db_url, login_per_minute=0.0)


def url(tenant: TenantKeys, path: str) -> str:
    return f"/v1/tenants/{tenant.slug}/{path}"


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={token}"}


async def make_user(
    client: httpx.AsyncClient,
    tenant: TenantKeys,
    login: str,
    role: str = "staff",
    password: str = PASSWORD,
) -> dict[str, Any]:
    r = await client.post(
        url(tenant, "users"),
        json={"login": login, "password": password, "role": role, "display_name": login},
        headers=tenant.headers("admin"),
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def log_in(
    client: httpx.AsyncClient, tenant: TenantKeys, login: str, password: str = PASSWORD
) -> tuple[str, str]:
    """Log in; the session token (from Set-Cookie) and its CSRF token. The client's own
    cookie jar is emptied, so each request names its session explicitly."""
    r = await client.post(url(tenant, "session"), json={"login": login, "password": password})
    assert r.status_code == 200, r.text
    token = r.cookies[COOKIE]
    client.cookies.clear()
    return token, r.json()["csrf_token"]


async def audit(db_url: str, tenant: TenantKeys) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT actor, action, target, data FROM audit_log WHERE tenant_id = $1 ORDER BY id",
            tenant.id,
        )
    finally:
        await conn.close()
    return [{**dict(r), "data": json.loads(r["data"])} for r in rows]


async def cli(db_url: str, *args: str, password: str | None = None) -> tuple[int, str, str]:
    env = {**env_without_civicpulse(), "CIVICPULSE_DATABASE_URL": db_url}
    if password is not None:
        env["CIVICPULSE_NEW_PASSWORD"] = password
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "civicpulse",
        "user",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def asgi_client(settings: Settings, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process with its lifespan, addressed at `base_url` (https:// gives the
    request an https scope, as a TLS-terminating server would)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


def cookie_attributes(response: httpx.Response) -> dict[str, str]:
    (header,) = [v for v in response.headers.get_list("set-cookie") if v.startswith(f"{COOKIE}=")]
    parts = [p.strip() for p in header.split(";")]
    return {p.split("=", 1)[0].lower(): (p.split("=", 1)[1] if "=" in p else "") for p in parts}


async def test_login_sets_the_cookie_and_the_session_works_by_role(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        ana = await make_user(client, tenant_a, "Ana@Example.org", "staff")
        assert ana["login"] == "ana@example.org"  # stored lower-cased
        assert not {"password", "password_hash"} & set(ana) and "argon2" not in json.dumps(ana)
        await make_user(client, tenant_a, "boss@example.org", "admin")

        r = await client.post(
            url(tenant_a, "session"), json={"login": "ANA@example.org", "password": PASSWORD}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user"] == {
            "id": ana["id"],
            "login": "ana@example.org",
            "display_name": "Ana@Example.org",
            "role": "staff",
        }
        assert len(body["csrf_token"]) >= 32 and body["expires_at"]
        attributes = cookie_attributes(r)
        assert len(attributes[COOKIE]) >= 32
        assert "httponly" in attributes
        assert attributes["samesite"].lower() == "lax"
        assert attributes["path"] == "/"
        assert attributes["max-age"] == str(12 * 3600)
        assert "secure" not in attributes  # plain http
        assert r.headers["cache-control"] == "no-store"
        token = r.cookies[COOKIE]
        client.cookies.clear()

        who = await client.get(url(tenant_a, "session"), headers=cookie(token))
        assert who.status_code == 200
        assert who.json() == body
        # A staff session does staff work...
        issues = await client.get(url(tenant_a, "issues"), headers=cookie(token))
        assert issues.status_code == 200, issues.text
        # ...and no admin work.
        users = await client.get(url(tenant_a, "users"), headers=cookie(token))
        assert users.status_code == 403
        assert error_of(users)["field"] == "session"
        # No cookie, no session.
        assert (await client.get(url(tenant_a, "issues"))).status_code == 401
        assert (await client.get(url(tenant_a, "session"))).status_code == 401
        bogus = await client.get(url(tenant_a, "issues"), headers=cookie("made-up"))
        assert bogus.status_code == 401
        assert error_of(bogus)["field"] == "session"

        boss, _ = await log_in(client, tenant_a, "boss@example.org")
        listing = await client.get(url(tenant_a, "users"), headers=cookie(boss))
        assert listing.status_code == 200
        assert [u["login"] for u in listing.json()["items"]] == [
            "ana@example.org",
            "boss@example.org",
        ]
        assert "argon2" not in listing.text and "hash" not in listing.text
        assert all("password" not in u for u in listing.json()["items"])
        # A key still works as it did, and wins over a cookie sent beside it.
        keyed = await client.get(
            url(tenant_a, "users"), headers={**tenant_a.headers("admin"), **cookie(token)}
        )
        assert keyed.status_code == 200

    entries = await audit(db_url, tenant_a)
    created = [e for e in entries if e["action"] == "user.created"]
    assert [e["target"] for e in created] == ["user:ana@example.org", "user:boss@example.org"]
    assert all(e["actor"].startswith("key:") for e in created)
    logins = [e for e in entries if e["action"] == "user.logged_in"]
    assert [e["actor"] for e in logins] == ["user:ana@example.org", "user:boss@example.org"]
    assert logins[0]["data"]["address"] == "127.0.0.1"


async def test_over_https_the_cookie_is_secure(settings: Settings, tenant_a: TenantKeys) -> None:
    async with asgi_client(settings, "https://civic.example") as client:
        await make_user(client, tenant_a, "ana")
        r = await client.post(url(tenant_a, "session"), json={"login": "ana", "password": PASSWORD})
        assert r.status_code == 200, r.text
        attributes = cookie_attributes(r)
        assert "secure" in attributes and "httponly" in attributes
        # The client keeps a Secure cookie for https and sends it back by itself.
        assert (await client.get(url(tenant_a, "session"))).status_code == 200
    async with asgi_client(settings, "http://civic.example") as client:
        r = await client.post(url(tenant_a, "session"), json={"login": "ana", "password": PASSWORD})
        assert r.status_code == 200
        assert "secure" not in cookie_attributes(r)


async def test_a_sessions_writes_need_its_csrf_token(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        await make_user(client, tenant_a, "boss", "admin")
        token, csrf = await log_in(client, tenant_a, "boss")
        team = url(tenant_a, "teams/roads")

        missing = await client.put(team, json={"name": "Roads"}, headers=cookie(token))
        assert missing.status_code == 403
        assert error_of(missing)["field"] == "x-csrf-token"
        wrong = await client.put(
            team, json={"name": "Roads"}, headers={**cookie(token), "X-CSRF-Token": "nope"}
        )
        assert wrong.status_code == 403
        assert error_of(wrong)["field"] == "x-csrf-token"
        right = await client.put(
            team, json={"name": "Roads"}, headers={**cookie(token), "X-CSRF-Token": csrf}
        )
        assert right.status_code == 200, right.text
        # Reads need none.
        assert (await client.get(url(tenant_a, "teams"), headers=cookie(token))).status_code == 200

        # An HTML form may carry it as a field instead: a wrong one is refused, the right one
        # passes (and this JSON route then refuses the form itself).
        form = {**cookie(token), "Content-Type": "application/x-www-form-urlencoded"}
        forged = await client.put(team, content=b"name=Roads&csrf_token=nope", headers=form)
        assert forged.status_code == 403
        assert error_of(forged)["field"] == "x-csrf-token"
        fielded = await client.put(
            team, content=f"name=Roads&csrf_token={csrf}".encode(), headers=form
        )
        assert fielded.status_code == 415

        # The admin routes of this feature too; and a key needs no CSRF token at all.
        create = await client.post(
            url(tenant_a, "users"),
            json={"login": "cara", "password": PASSWORD},
            headers=cookie(token),
        )
        assert create.status_code == 403
        create = await client.post(
            url(tenant_a, "users"),
            json={"login": "cara", "password": PASSWORD},
            headers={**cookie(token), "X-CSRF-Token": csrf},
        )
        assert create.status_code == 201, create.text
        keyed = await client.put(team, json={"name": "Roads"}, headers=tenant_a.headers("admin"))
        assert keyed.status_code == 200
        # Logging out is a write as well.
        out = await client.delete(url(tenant_a, "session"), headers=cookie(token))
        assert out.status_code == 403


async def test_form_login(settings: Settings, tenant_a: TenantKeys) -> None:
    async with running_server(settings) as client:
        await make_user(client, tenant_a, "ana@example.org")
        r = await client.post(
            url(tenant_a, "session"),
            data={"login": "ana@example.org", "password": PASSWORD, "go": "Log in"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["user"]["login"] == "ana@example.org"
        token = r.cookies[COOKIE]
        client.cookies.clear()
        assert (
            await client.get(url(tenant_a, "session"), headers=cookie(token))
        ).status_code == 200
        wrong = await client.post(
            url(tenant_a, "session"), data={"login": "ana@example.org", "password": "nope"}
        )
        assert wrong.status_code == 401
        missing = await client.post(url(tenant_a, "session"), data={"login": "ana@example.org"})
        assert missing.status_code == 422
        assert error_of(missing)["field"] == "password"
        other = await client.post(
            url(tenant_a, "session"), content=b"x", headers={"Content-Type": "text/plain"}
        )
        assert other.status_code == 415


async def test_wrong_password_unknown_and_disabled_logins_answer_alike(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        await make_user(client, tenant_a, "ana")
        gone = await make_user(client, tenant_a, "gone")
        r = await client.patch(
            url(tenant_a, f"users/{gone['id']}"),
            json={"disabled": True},
            headers=tenant_a.headers("admin"),
        )
        assert r.status_code == 200 and r.json()["disabled"] is True
        answers = [
            await client.post(url(tenant_a, "session"), json=body)
            for body in (
                {"login": "ana", "password": "not the password"},
                {"login": "nobody", "password": "not the password"},
                {"login": "gone", "password": PASSWORD},  # right password, disabled user
                {"login": "not a login!", "password": "not the password"},
            )
        ]
        assert [a.status_code for a in answers] == [401, 401, 401, 401]
        assert len({a.content for a in answers}) == 1
        assert error_of(answers[0])["message"] == "wrong login or password"
        assert all(COOKIE not in a.headers.get("set-cookie", "") for a in answers)
    failures = [e for e in await audit(db_url, tenant_a) if e["action"] == "user.login_failed"]
    # Only the known, enabled user's failure is audited (the lock bounds how many there can
    # be); unknown and disabled logins are logged instead, as nothing bounds those.
    assert [(e["actor"], e["data"]["reason"]) for e in failures] == [
        ("user:ana", "wrong_password"),
    ]
    # What was typed into the login field of an unknown login is not kept.
    assert "nobody" not in json.dumps(failures)


async def test_lockout_after_consecutive_failures_then_unlock(
    db_url: str, tenant_a: TenantKeys
) -> None:
    settings = make_settings(
        db_url, login_per_minute=0.0, login_max_failures=3, login_lockout_seconds=2.0
    )
    wrong = {"login": "ana", "password": "not the password"}
    right = {"login": "ana", "password": PASSWORD}
    async with running_server(settings) as client:
        await make_user(client, tenant_a, "ana")
        # A success in between starts the count again.
        for body in (wrong, wrong, right, wrong, wrong):
            r = await client.post(url(tenant_a, "session"), json=body)
            assert r.status_code == (200 if body is right else 401), r.text
        client.cookies.clear()
        third = await client.post(url(tenant_a, "session"), json=wrong)
        assert third.status_code == 401
        # Locked: even the right password is refused, without being checked.
        locked = await client.post(url(tenant_a, "session"), json=right)
        assert locked.status_code == 429
        assert 1 <= int(locked.headers["retry-after"]) <= 2
        assert error_of(locked)["field"] == "login"
        listed = (
            await client.get(url(tenant_a, "users"), headers=tenant_a.headers("admin"))
        ).json()
        assert listed["items"][0]["failed_logins"] == 3
        assert listed["items"][0]["locked_until"] is not None

        await asyncio.sleep(2.1)
        again = await client.post(url(tenant_a, "session"), json=right)
        assert again.status_code == 200, again.text
        listed = (
            await client.get(url(tenant_a, "users"), headers=tenant_a.headers("admin"))
        ).json()
        assert listed["items"][0]["failed_logins"] == 0
        assert listed["items"][0]["locked_until"] is None
    actions = [e["action"] for e in await audit(db_url, tenant_a)]
    assert actions.count("user.locked") == 1
    locked_at = actions.index("user.locked")
    # The attempt refused while locked is logged, not audited.
    assert actions[locked_at - 1 : locked_at + 1] == ["user.login_failed", "user.locked"]
    assert actions[locked_at + 1 :].count("user.login_failed") == 0


async def test_a_password_reset_lifts_a_lockout(db_url: str, tenant_a: TenantKeys) -> None:
    settings = make_settings(
        db_url, login_per_minute=0.0, login_max_failures=1, login_lockout_seconds=900.0
    )
    async with running_server(settings) as client:
        ana = await make_user(client, tenant_a, "ana")
        r = await client.post(url(tenant_a, "session"), json={"login": "ana", "password": "x"})
        assert r.status_code == 401
        r = await client.post(url(tenant_a, "session"), json={"login": "ana", "password": PASSWORD})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) > 800
        new = "a brand new passphrase"
        r = await client.patch(
            url(tenant_a, f"users/{ana['id']}"),
            json={"password": new},
            headers=tenant_a.headers("admin"),
        )
        assert r.status_code == 200 and r.json()["locked_until"] is None
        await log_in(client, tenant_a, "ana", new)


async def test_logins_are_rate_limited_per_address_and_tenant(
    db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    settings = make_settings(db_url, login_per_minute=3.0)
    async with running_server(settings) as client:
        statuses = []
        for _ in range(4):
            r = await client.post(
                url(tenant_a, "session"), json={"login": "nobody", "password": "whatever"}
            )
            statuses.append(r.status_code)
        assert statuses == [401, 401, 401, 429]
        assert int(r.headers["retry-after"]) >= 1
        assert error_of(r)["field"] == "client"
        # Another tenant's login page has a budget of its own.
        r = await client.post(
            url(tenant_b, "session"), json={"login": "nobody", "password": "whatever"}
        )
        assert r.status_code == 401


async def test_a_session_is_its_tenants_only(
    settings: Settings, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    async with running_server(settings) as client:
        await make_user(client, tenant_a, "ana", "admin")
        token, csrf = await log_in(client, tenant_a, "ana")
        for path in ("session", "issues", "users"):
            r = await client.get(url(tenant_b, path), headers=cookie(token))
            assert r.status_code == 401, (path, r.text)
        r = await client.post(
            url(tenant_b, "users"),
            json={"login": "mole", "password": PASSWORD},
            headers={**cookie(token), "X-CSRF-Token": csrf},
        )
        assert r.status_code == 401
        # A login is per tenant: tenant B has no "ana".
        r = await client.post(url(tenant_b, "session"), json={"login": "ana", "password": PASSWORD})
        assert r.status_code == 401
        assert (
            await client.get(url(tenant_a, "session"), headers=cookie(token))
        ).status_code == 200


async def test_user_management_through_the_api(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    admin = tenant_a.headers("admin")
    async with running_server(settings) as client:
        ana = await make_user(client, tenant_a, "ana")
        staff_token, _ = await log_in(client, tenant_a, "ana")
        other_token, _ = await log_in(client, tenant_a, "ana")

        dup = await client.post(
            url(tenant_a, "users"), json={"login": "ANA", "password": PASSWORD}, headers=admin
        )
        assert dup.status_code == 409 and error_of(dup)["field"] == "login"
        weak = await client.post(
            url(tenant_a, "users"), json={"login": "bo", "password": "short"}, headers=admin
        )
        assert weak.status_code == 422 and error_of(weak)["field"] == "password"
        same = await client.post(
            url(tenant_a, "users"),
            json={"login": "bobbybobbybob", "password": "BobbyBobbyBob"},
            headers=admin,
        )
        assert same.status_code == 422 and error_of(same)["field"] == "password"
        bad_login = await client.post(
            url(tenant_a, "users"), json={"login": "two words", "password": PASSWORD}, headers=admin
        )
        assert bad_login.status_code == 422 and error_of(bad_login)["field"] == "login"
        role = await client.post(
            url(tenant_a, "users"),
            json={"login": "bo", "password": PASSWORD, "role": "submit"},
            headers=admin,
        )
        assert role.status_code == 422 and error_of(role)["field"] == "role"
        staff_key = await client.get(url(tenant_a, "users"), headers=tenant_a.headers("staff"))
        assert staff_key.status_code == 403
        for missing in ("users/999999", "users/abc", "users/99999999999999999999999"):
            r = await client.patch(url(tenant_a, missing), json={"role": "admin"}, headers=admin)
            assert r.status_code == 404, (missing, r.text)
        empty = await client.patch(url(tenant_a, f"users/{ana['id']}"), json={}, headers=admin)
        assert empty.status_code == 422

        # A new role applies to live sessions at once.
        r = await client.patch(
            url(tenant_a, f"users/{ana['id']}"),
            json={"role": "admin", "display_name": "Ana A."},
            headers=admin,
        )
        assert r.status_code == 200 and r.json()["role"] == "admin"
        assert r.json()["display_name"] == "Ana A."
        r = await client.get(url(tenant_a, "users"), headers=cookie(staff_token))
        assert r.status_code == 200

        # Disabling ends every session of the user at once, and logging in.
        r = await client.patch(
            url(tenant_a, f"users/{ana['id']}"), json={"disabled": True}, headers=admin
        )
        assert r.status_code == 200 and r.json()["disabled"] is True
        for token in (staff_token, other_token):
            r = await client.get(url(tenant_a, "session"), headers=cookie(token))
            assert r.status_code == 401
        r = await client.post(url(tenant_a, "session"), json={"login": "ana", "password": PASSWORD})
        assert r.status_code == 401
        # Enabling lets the user log in again (the old sessions stay ended).
        r = await client.patch(
            url(tenant_a, f"users/{ana['id']}"), json={"disabled": False}, headers=admin
        )
        assert r.status_code == 200 and r.json()["disabled"] is False
        assert (
            await client.get(url(tenant_a, "session"), headers=cookie(staff_token))
        ).status_code == 401
        token, _ = await log_in(client, tenant_a, "ana")

        # A new password ends the sessions; the old password stops working.
        new = "another long passphrase"
        r = await client.patch(
            url(tenant_a, f"users/{ana['id']}"), json={"password": new}, headers=admin
        )
        assert r.status_code == 200
        assert (
            await client.get(url(tenant_a, "session"), headers=cookie(token))
        ).status_code == 401
        r = await client.post(url(tenant_a, "session"), json={"login": "ana", "password": PASSWORD})
        assert r.status_code == 401
        await log_in(client, tenant_a, "ana", new)

    entries = [e for e in await audit(db_url, tenant_a) if e["target"] == "user:ana"]
    changes = [(e["action"], e["data"]) for e in entries if not e["action"].startswith("user.log")]
    assert changes == [
        ("user.created", {"id": ana["id"], "role": "staff", "display_name": "ana"}),
        (
            "user.updated",
            {
                "before": {"role": "staff", "display_name": "ana"},
                "after": {"role": "admin", "display_name": "Ana A."},
            },
        ),
        ("user.disabled", {"sessions_ended": 2}),
        ("user.enabled", {}),
        ("user.password_reset", {"sessions_ended": 1}),
    ]
    admin_key = f"key:{tenant_a.admin.split('_')[1]}"
    assert {e["actor"] for e in entries if not e["action"].startswith("user.log")} == {admin_key}


async def test_logout_ends_the_session(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        await make_user(client, tenant_a, "ana")
        token, csrf = await log_in(client, tenant_a, "ana")
        kept, _ = await log_in(client, tenant_a, "ana")
        r = await client.delete(
            url(tenant_a, "session"), headers={**cookie(token), "X-CSRF-Token": csrf}
        )
        assert r.status_code == 204
        cleared = cookie_attributes(r)
        assert cleared[COOKIE] in ("", '""') and cleared["max-age"] == "0"
        assert (
            await client.get(url(tenant_a, "session"), headers=cookie(token))
        ).status_code == 401
        assert (await client.get(url(tenant_a, "issues"), headers=cookie(token))).status_code == 401
        # The user's other session is another browser's: it lives on.
        assert (await client.get(url(tenant_a, "session"), headers=cookie(kept))).status_code == 200
    actions = [(e["actor"], e["action"]) for e in await audit(db_url, tenant_a)]
    assert ("user:ana", "user.logged_out") in actions


async def test_sessions_end_when_idle_and_when_old(db_url: str, tenant_a: TenantKeys) -> None:
    # Idle after 3 s (so last_seen_at is rewritten every 1.5 s at most).
    settings = make_settings(db_url, login_per_minute=0.0, session_idle_minutes=0.05)
    async with running_server(settings) as client:
        await make_user(client, tenant_a, "ana")
        token, _ = await log_in(client, tenant_a, "ana")
        for _ in range(8):  # 4 s of use, longer than the idle timeout
            r = await client.get(url(tenant_a, "session"), headers=cookie(token))
            assert r.status_code == 200
            await asyncio.sleep(0.5)
        await asyncio.sleep(3.5)
        assert (
            await client.get(url(tenant_a, "session"), headers=cookie(token))
        ).status_code == 401

    settings = make_settings(db_url, login_per_minute=0.0, session_max_hours=1.5 / 3600)
    async with running_server(settings) as client:
        token, _ = await log_in(client, tenant_a, "ana")
        assert (
            await client.get(url(tenant_a, "session"), headers=cookie(token))
        ).status_code == 200
        await asyncio.sleep(1.6)
        assert (
            await client.get(url(tenant_a, "session"), headers=cookie(token))
        ).status_code == 401


async def test_the_user_commands(settings: Settings, db_url: str, tenant_a: TenantKeys) -> None:
    first = "the first long passphrase"
    code, out, err = await cli(
        db_url,
        "create",
        "--tenant",
        tenant_a.slug,
        "--login",
        "Ana@Example.org",
        "--name",
        "Ana",
        "--role",
        "admin",
        password=first,
    )
    assert code == 0, err
    assert "ana@example.org" in out
    assert first not in out + err
    code, _, err = await cli(
        db_url, "create", "--tenant", tenant_a.slug, "--login", "cara", password="short"
    )
    assert code == 2 and "(password)" in err
    code, _, err = await cli(
        db_url, "create", "--tenant", tenant_a.slug, "--login", "ana@example.org", password=first
    )
    assert code == 2 and "(login)" in err and "already exists" in err
    code, _, err = await cli(
        db_url, "create", "--tenant", "nowhere", "--login", "x", password=first
    )
    assert code == 2 and "(tenant)" in err

    async with running_server(settings) as client:
        token, _ = await log_in(client, tenant_a, "ana@example.org", first)
        assert (await client.get(url(tenant_a, "users"), headers=cookie(token))).status_code == 200

        code, out, _ = await cli(db_url, "list", "--tenant", tenant_a.slug)
        assert code == 0
        (line,) = out.splitlines()
        user_id, login, role, status, name = line.split("\t")
        assert int(user_id) > 0
        assert (login, role, status, name) == ("ana@example.org", "admin", "active", "Ana")

        second = "the second long passphrase"
        code, out, err = await cli(
            db_url,
            "reset-password",
            "--tenant",
            tenant_a.slug,
            "--login",
            "ana@example.org",
            password=second,
        )
        assert code == 0, err
        assert (
            await client.get(url(tenant_a, "session"), headers=cookie(token))
        ).status_code == 401
        r = await client.post(
            url(tenant_a, "session"), json={"login": "ana@example.org", "password": first}
        )
        assert r.status_code == 401
        token, _ = await log_in(client, tenant_a, "ana@example.org", second)

        code, out, err = await cli(
            db_url, "disable", "--tenant", tenant_a.slug, "--login", "ana@example.org"
        )
        assert code == 0, err
        assert (
            await client.get(url(tenant_a, "session"), headers=cookie(token))
        ).status_code == 401
        r = await client.post(
            url(tenant_a, "session"), json={"login": "ana@example.org", "password": second}
        )
        assert r.status_code == 401
        code, out, _ = await cli(db_url, "list", "--tenant", tenant_a.slug)
        assert out.split("\t")[3] == "disabled"
        code, _, err = await cli(db_url, "disable", "--tenant", tenant_a.slug, "--login", "nobody")
        assert code == 2 and "(login)" in err

    by_cli = [
        (e["action"], e["target"])
        for e in await audit(db_url, tenant_a)
        if e["actor"] == "cli" and e["action"].startswith("user.")
    ]
    assert by_cli == [
        ("user.created", "user:ana@example.org"),
        ("user.password_reset", "user:ana@example.org"),
        ("user.disabled", "user:ana@example.org"),
    ]


async def test_the_user_commands_help() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "civicpulse",
        "user",
        "--help",
        env=env_without_civicpulse(),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    for action in ("create", "reset-password", "disable", "list"):
        assert action in out.decode()
    # No password option on the command line.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "civicpulse",
        "user",
        "create",
        "--help",
        env=env_without_civicpulse(),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert "--password" not in out.decode()


async def test_a_hash_with_old_parameters_is_replaced_at_login(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    old = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    async with running_server(settings) as client:
        ana = await make_user(client, tenant_a, "ana")
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute("UPDATE users SET password_hash = $1 WHERE id = $2", old, ana["id"])
            await log_in(client, tenant_a, "ana")
            stored = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", ana["id"])
        finally:
            await conn.close()
        assert stored != old and not accounts.needs_rehash(stored)
        assert accounts.verify_password(stored, PASSWORD)
        await log_in(client, tenant_a, "ana")  # and the new hash logs in
    logins = [e["data"] for e in await audit(db_url, tenant_a) if e["action"] == "user.logged_in"]
    assert [d["rehashed"] for d in logins] == [True, False]


async def test_a_staff_stream_ends_when_its_session_does(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        await make_user(client, tenant_a, "watcher@example.org")
        token, csrf = await log_in(client, tenant_a, "watcher@example.org")

        async def log_out_soon() -> None:
            await asyncio.sleep(0.5)
            r = await client.delete(
                url(tenant_a, "session"), headers={**cookie(token), "X-CSRF-Token": csrf}
            )
            assert r.status_code == 204, r.text

        leaving = asyncio.create_task(log_out_soon())
        async with client.stream("GET", url(tenant_a, "stream"), headers=cookie(token)) as resp:
            assert resp.status_code == 200
            async with asyncio.timeout(5.0):  # ended by the server, not by this timeout
                body = b"".join([chunk async for chunk in resp.aiter_bytes()])
        await leaving
        assert b"connected" in body
        # Reopened with the ended session: the public view, as for anyone without one.
        again = await client.get(url(tenant_a, "dashboard/data"), headers=cookie(token))
        assert again.json()["view"] == "public"


async def test_a_login_posted_from_another_site_is_refused(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        await make_user(client, tenant_a, "ana@example.org")
        creds = {"login": "ana@example.org", "password": PASSWORD}
        host = client.base_url.netloc.decode()
        for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                        {"Sec-Fetch-Site": "cross-site"}):  # fmt: skip
            r = await client.post(url(tenant_a, "session"), json=creds, headers=headers)
            assert r.status_code == 403 and error_of(r)["field"] == "origin", headers
            assert "set-cookie" not in r.headers
        for headers in ({"Origin": f"http://{host}"}, {"Sec-Fetch-Site": "same-origin"}, {}):
            r = await client.post(url(tenant_a, "session"), json=creds, headers=headers)
            assert r.status_code == 200, (headers, r.text)
