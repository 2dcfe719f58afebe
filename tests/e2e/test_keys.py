"""API key lifecycle: list, create with an expiry, rotate with or without a grace period,
revoke (refused on every process within seconds), usage stamps, and the audit log."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from civicpulse.config import Settings
from civicpulse.db import tenants
from tests.support import TenantKeys, env_without_civicpulse, running_server


def url(t: TenantKeys, path: str) -> str:
    return f"/v1/tenants/{t.slug}/{path}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


REPORT = {"text": "Streetlight out on 5th", "lat": 34.05, "lon": -118.25}


async def test_admins_list_create_rotate_and_revoke_keys(
    settings: Settings, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    admin = tenant_a.headers("admin")
    async with running_server(settings.replace(key_usage_flush_seconds=0.2)) as client:
        made = await client.post(
            url(tenant_a, "keys"), json={"scope": "submit", "label": "kiosk"}, headers=admin
        )
        assert made.status_code == 201, made.text
        key = made.json()
        assert key["key"].startswith(f"cp_{key['prefix']}_") and key["status"] == "active"
        assert (
            await client.post(url(tenant_a, "reports"), json=REPORT, headers=bearer(key["key"]))
        ).status_code == 202

        listed = (await client.get(url(tenant_a, "keys"), headers=admin)).json()["items"]
        assert [k["scope"] for k in listed[:3]] == ["submit", "staff", "admin"]
        assert all("key" not in k and "key_hash" not in k for k in listed)
        # Used keys are stamped (at most once a minute each).
        for _ in range(50):
            listed = (await client.get(url(tenant_a, "keys"), headers=admin)).json()["items"]
            if next(k for k in listed if k["id"] == key["id"])["last_used_at"]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("last_used_at was not stamped")

        # Rotation with a grace period: both work until it ends.
        rotated = await client.post(
            url(tenant_a, f"keys/{key['id']}/rotate"), json={"grace_seconds": 600}, headers=admin
        )
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()
        assert new["scope"] == "submit" and new["label"] == "kiosk"
        assert new["rotated_from"] == key["id"] and new["replaced"]["expires_at"] is not None
        for k in (key["key"], new["key"]):
            assert (
                await client.post(url(tenant_a, "reports"), json=REPORT, headers=bearer(k))
            ).status_code == 202
        # Rotation without one: the old key stops at once.
        again = await client.post(
            url(tenant_a, f"keys/{new['id']}/rotate"), json={"grace_seconds": 0}, headers=admin
        )
        assert again.status_code == 201
        refused = await client.post(
            url(tenant_a, "reports"), json=REPORT, headers=bearer(new["key"])
        )
        assert refused.status_code == 401 and refused.json()["error"]["field"] == "authorization"
        newest = again.json()
        # A revoked or expired key cannot be rotated into life.
        r = await client.post(url(tenant_a, f"keys/{new['id']}/rotate"), json={}, headers=admin)
        assert r.status_code == 409

        revoked = await client.delete(url(tenant_a, f"keys/{newest['id']}"), headers=admin)
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        assert (
            await client.delete(url(tenant_a, f"keys/{newest['id']}"), headers=admin)
        ).json() == revoked.json()
        assert (
            await client.post(url(tenant_a, "reports"), json=REPORT, headers=bearer(newest["key"]))
        ).status_code == 401

        # Not an admin, not this tenant, not a key.
        assert (
            await client.get(url(tenant_a, "keys"), headers=tenant_a.headers("staff"))
        ).status_code == 403
        assert (
            await client.delete(
                url(tenant_b, f"keys/{key['id']}"), headers=tenant_b.headers("admin")
            )
        ).status_code == 404
        assert (await client.delete(url(tenant_a, "keys/999999"), headers=admin)).status_code == 404
        assert (await client.delete(url(tenant_a, "keys/x"), headers=admin)).status_code == 404
        bad = await client.post(
            url(tenant_a, "keys"),
            json={"scope": "submit", "expires_at": "2001-01-01T00:00:00Z"},
            headers=admin,
        )
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "expires_at"

        # Every change is in the audit log, newest first, with who made it.
        log = (await client.get(url(tenant_a, "audit"), headers=admin)).json()["items"]
        actions = [e["action"] for e in log]
        assert actions[:4] == ["key.revoked", "key.rotated", "key.rotated", "key.created"]
        admin_prefix = tenant_a.admin.split("_")[1]
        assert {e["actor"] for e in log[:4]} == {f"key:{admin_prefix}"}
        page = (
            await client.get(url(tenant_a, "audit"), params={"limit": "2"}, headers=admin)
        ).json()
        assert len(page["items"]) == 2 and page["next_before"] == page["items"][-1]["id"]
        older = (
            await client.get(
                url(tenant_a, "audit"), params={"before": str(page["next_before"])}, headers=admin
            )
        ).json()["items"]
        assert older[0]["id"] < page["next_before"]
        only = (
            await client.get(
                url(tenant_a, "audit"), params={"action": "key.created"}, headers=admin
            )
        ).json()["items"]
        assert {e["action"] for e in only} == {"key.created"}
        # Tenant B's log has none of it: only the three keys its set-up made.
        theirs = (
            await client.get(url(tenant_b, "audit"), headers=tenant_b.headers("admin"))
        ).json()["items"]
        assert [(e["actor"], e["action"]) for e in theirs] == [("cli", "key.created")] * 3


async def test_an_expired_key_is_refused_even_from_the_cache(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    async with running_server(settings.replace(auth_cache_seconds=600.0)) as client:
        soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).isoformat()
        made = await client.post(
            url(tenant_a, "keys"),
            json={"scope": "submit", "expires_at": soon},
            headers=tenant_a.headers("admin"),
        )
        key = made.json()["key"]
        assert (
            await client.post(url(tenant_a, "reports"), json=REPORT, headers=bearer(key))
        ).status_code == 202
        await asyncio.sleep(2.2)
        r = await client.post(url(tenant_a, "reports"), json=REPORT, headers=bearer(key))
        assert r.status_code == 401

        # A rotated key works through its grace period, then not; its successor keeps the
        # expiry it had, unless given one.
        lasting = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
        old = (
            await client.post(
                url(tenant_a, "keys"),
                json={"scope": "submit", "expires_at": lasting},
                headers=tenant_a.headers("admin"),
            )
        ).json()
        assert (
            await client.post(url(tenant_a, "reports"), json=REPORT, headers=bearer(old["key"]))
        ).status_code == 202
        new = (
            await client.post(
                url(tenant_a, f"keys/{old['id']}/rotate"),
                json={"grace_seconds": 1},
                headers=tenant_a.headers("admin"),
            )
        ).json()
        assert new["expires_at"] == old["expires_at"]
        assert (
            await client.post(url(tenant_a, "reports"), json=REPORT, headers=bearer(old["key"]))
        ).status_code == 202
        # Rotated once: a second rotation of the same key would leave two successors.
        again = await client.post(
            url(tenant_a, f"keys/{old['id']}/rotate"), json={}, headers=tenant_a.headers("admin")
        )
        assert again.status_code == 409 and "already rotated" in again.text
        await asyncio.sleep(1.2)
        assert (
            await client.post(url(tenant_a, "reports"), json=REPORT, headers=bearer(old["key"]))
        ).status_code == 401
        assert (
            await client.post(url(tenant_a, "reports"), json=REPORT, headers=bearer(new["key"]))
        ).status_code == 202


@pytest.fixture
async def two_processes(
    settings: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    # Caches that would trust a key for 10 minutes: only the revocation notice can end it.
    slow = settings.replace(auth_cache_seconds=600.0)
    async with running_server(slow) as a, running_server(slow) as b:
        yield a, b


async def test_a_revoked_key_is_refused_on_every_process_within_seconds(
    two_processes: tuple[httpx.AsyncClient, httpx.AsyncClient], tenant_a: TenantKeys
) -> None:
    a, b = two_processes
    made = await a.post(
        url(tenant_a, "keys"), json={"scope": "staff"}, headers=tenant_a.headers("admin")
    )
    key = made.json()
    for client in (a, b):  # both processes now hold it in their caches
        assert (
            await client.get(url(tenant_a, "issues"), headers=bearer(key["key"]))
        ).status_code == 200
    started = time.monotonic()
    assert (
        await a.delete(url(tenant_a, f"keys/{key['id']}"), headers=tenant_a.headers("admin"))
    ).status_code == 200
    for client in (b, a):
        while (
            await client.get(url(tenant_a, "issues"), headers=bearer(key["key"]))
        ).status_code != 401:
            assert time.monotonic() - started < 5.0, "a revoked key still worked after 5 s"
            await asyncio.sleep(0.05)
    print(f"revoked key refused on both processes after {time.monotonic() - started:.3f} s")


async def test_the_audit_log_cannot_be_changed_by_the_service(
    db_url: str, tenant_a: TenantKeys
) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "INSERT INTO audit_log (tenant_id, actor, action) VALUES ($1, 'cli', 'key.created')",
            tenant_a.id,
        )
        before = await conn.fetch("SELECT * FROM audit_log ORDER BY id")

        async def as_service(sql: str, grant: bool = False) -> None:
            async with conn.transaction():
                if grant:  # even were the role granted it by mistake, the trigger refuses
                    await conn.execute("GRANT UPDATE, DELETE ON audit_log TO civicpulse_app")
                await conn.execute("SET LOCAL ROLE civicpulse_app")
                await conn.execute(
                    "SELECT set_config('civicpulse.tenant_id', $1, true)", str(tenant_a.id)
                )
                await conn.execute(sql)

        for sql in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
            for grant in (False, True):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await as_service(sql, grant)
        assert await conn.fetch("SELECT * FROM audit_log ORDER BY id") == before
        # Deleting the tenant (the owner, not the service) takes its log with it.
        async with conn.transaction():
            await tenants.delete_tenant(conn, tenant_a.slug)
        assert await conn.fetchval("SELECT count(*) FROM audit_log") == 0
    finally:
        await conn.close()


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**env_without_civicpulse(), "CIVICPULSE_DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "civicpulse", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=os.getcwd(),
    )


async def test_the_key_commands(settings: Settings, db_url: str, tenant_a: TenantKeys) -> None:
    made = await asyncio.to_thread(
        cli, db_url, "key", "create", "--tenant", tenant_a.slug, "--scope", "staff",
        "--label", "night crew", "--expires-in", "30d",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("cp_") and "expires" in made.stderr

    listed = await asyncio.to_thread(cli, db_url, "key", "list", "--tenant", tenant_a.slug)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()[1:]]
    mine = next(r for r in rows if r[-1] == "night crew")
    key_id = mine[0]
    assert key_id.isdigit() and mine[1] == key.split("_")[1]
    assert mine[2] == "staff" and mine[3] == "active" and mine[5] != "-"

    async with running_server(settings) as client:
        assert (await client.get(url(tenant_a, "issues"), headers=bearer(key))).status_code == 200
        rotated = await asyncio.to_thread(
            cli, db_url, "key", "rotate", "--tenant", tenant_a.slug, key_id, "--grace", "0s"
        )
        assert rotated.returncode == 0, rotated.stderr
        new = rotated.stdout.strip()
        assert (await client.get(url(tenant_a, "issues"), headers=bearer(key))).status_code == 401
        assert (await client.get(url(tenant_a, "issues"), headers=bearer(new))).status_code == 200
        new_id = next(
            line.split("\t")[0]
            for line in (
                await asyncio.to_thread(cli, db_url, "key", "list", "--tenant", tenant_a.slug)
            ).stdout.splitlines()[1:]
            if line.split("\t")[3] == "active" and line.split("\t")[1] == new.split("_")[1]
        )
        revoked = await asyncio.to_thread(
            cli, db_url, "key", "revoke", "--tenant", tenant_a.slug, new_id
        )
        assert revoked.returncode == 0, revoked.stderr
        assert (await client.get(url(tenant_a, "issues"), headers=bearer(new))).status_code == 401
        audit = (await client.get(url(tenant_a, "audit"), headers=tenant_a.headers("admin"))).json()
        assert [(e["actor"], e["action"]) for e in audit["items"][:3]] == [
            ("cli", "key.revoked"),
            ("cli", "key.rotated"),
            ("cli", "key.created"),
        ]
    bad = await asyncio.to_thread(cli, db_url, "key", "revoke", "--tenant", tenant_a.slug, "999999")
    assert bad.returncode != 0 and "999999" in bad.stderr
    wrong = await asyncio.to_thread(
        cli, db_url, "key", "create", "--tenant", tenant_a.slug, "--scope", "staff",
        "--expires-in", "soon",
    )  # fmt: skip
    assert wrong.returncode == 2 and "duration" in wrong.stderr


async def _stream_ends_within(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], seconds: float
) -> float:
    """Open a stream; how long it took the server to end it (fails after `seconds`)."""
    started = time.monotonic()
    async with client.stream("GET", path, headers=headers) as resp:
        assert resp.status_code == 200
        async with asyncio.timeout(seconds):
            async for _ in resp.aiter_bytes():
                pass
    return time.monotonic() - started


async def test_open_staff_streams_end_when_their_credential_does(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    admin = tenant_a.headers("admin")
    stream = url(tenant_a, "stream")
    async with running_server(settings) as client:
        # Revoked: the stream opened with the key ends, however long the client would stay.
        key = (
            await client.post(url(tenant_a, "keys"), json={"scope": "staff"}, headers=admin)
        ).json()

        async def revoke_soon() -> None:
            await asyncio.sleep(0.5)
            r = await client.delete(url(tenant_a, f"keys/{key['id']}"), headers=admin)
            assert r.status_code == 200

        revoker = asyncio.create_task(revoke_soon())
        took = await _stream_ends_within(client, stream, bearer(key["key"]), 5.0)
        await revoker
        assert took < 5.0
        reopened = await client.get(stream, headers=bearer(key["key"]))
        assert reopened.status_code == 401
        # Expiring: it ends when the key does.
        soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)).isoformat()
        brief = (
            await client.post(
                url(tenant_a, "keys"), json={"scope": "staff", "expires_at": soon}, headers=admin
            )
        ).json()
        took = await _stream_ends_within(client, stream, bearer(brief["key"]), 5.0)
        assert 0.5 < took < 5.0


async def test_a_resident_app_reads_its_reports_through_every_rotation(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    admin = tenant_a.headers("admin")
    async with running_server(settings) as client:
        first = (
            await client.post(url(tenant_a, "keys"), json={"scope": "submit"}, headers=admin)
        ).json()
        sent = await client.post(
            url(tenant_a, "reports"), json=REPORT, headers=bearer(first["key"])
        )
        report = url(tenant_a, f"reports/{sent.json()['id']}")
        key = first
        for _ in range(3):
            key = (
                await client.post(
                    url(tenant_a, f"keys/{key['id']}/rotate"),
                    json={"grace_seconds": 0},
                    headers=admin,
                )
            ).json()
            assert (await client.get(report, headers=bearer(key["key"]))).status_code == 200
        # Another app's key, however new, does not.
        other = (
            await client.post(url(tenant_a, "keys"), json={"scope": "submit"}, headers=admin)
        ).json()
        assert (await client.get(report, headers=bearer(other["key"]))).status_code == 404
