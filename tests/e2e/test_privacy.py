"""The public view of every surface shows only what the public may see (civicpulse.visibility):
stream (live and replayed), dashboard data with its rankings and hotspots, exports, nearby
issues, a single issue, a report. A resident app's `submit` key sees public facts and its
own reports only. Staff see everything (which also proves each check could fail)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
from typing import Any

import asyncpg
import httpx

from civicpulse.config import Settings
from tests.e2e.test_dashboard import settled
from tests.privacy import LAT, LON, Secrets, seed
from tests.support import TenantKeys, running_server


def url(t: TenantKeys, path: str) -> str:
    return f"/v1/tenants/{t.slug}/{path}"


def leaks(body: str, secrets: Secrets, viewer: str) -> list[str]:
    return [s for s in secrets.forbidden(viewer) if s in body]


def frames(raw: str) -> list[dict[str, Any]]:
    """The issue events of a server-sent-events body (comments, retry lines and rollup
    notices skipped)."""
    out = []
    for block in raw.split("\n\n"):
        frame: dict[str, Any] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            if name in ("id", "event"):
                frame[name] = value
            elif name == "data":
                frame["data"] = json.loads(value)
        if "data" in frame and frame.get("event") != "rollup":
            out.append(frame)
    return out


async def read_for(
    client: httpx.AsyncClient, path: str, seconds: float, headers: dict[str, str] | None = None
) -> tuple[str, bool]:
    """A stream's body over `seconds`, and whether the server ended it by then."""
    chunks: list[str] = []
    ended = False
    async with client.stream("GET", path, headers=headers or {}) as resp:
        assert resp.status_code == 200, await resp.aread()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for chunk in resp.aiter_text():
                    chunks.append(chunk)
                ended = True
    return "".join(chunks), ended


async def log_events(db_url: str, keys: TenantKeys, secrets: Secrets) -> None:
    """One more event for every issue, as the workflow would log it."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.executemany(
            """INSERT INTO issue_events (tenant_id, issue_id, kind, actor, to_status, data)
               VALUES ($1, $2, 'status_changed', 'key:x', 'in_progress', '{}')""",
            [(keys.id, issue_id) for issue_id in secrets.issues.values()],
        )
    finally:
        await conn.close()


async def test_public_stream_shows_nothing_hidden_live_or_replayed(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    secrets = await seed(db_url, tenant_a)
    shown = {str(secrets.issues["shown"]), str(secrets.issues["shown_too"])}
    async with running_server(settings) as client:
        stream = url(tenant_a, "stream")
        # Replayed from the table: 2 events per issue were logged, 2 issues are public.
        raw, _ = await read_for(client, stream, 1.5, {"Last-Event-ID": "0"})
        replayed = frames(raw)
        assert {f["data"]["issue"]["id"] for f in replayed} == shown
        assert len(replayed) == 4, raw
        assert not leaks(raw, secrets, "anonymous"), raw
        # The same through a resident app's key.
        raw, _ = await read_for(client, stream, 1.0, {**tenant_a.headers(), "Last-Event-ID": "0"})
        assert {f["data"]["issue"]["id"] for f in frames(raw)} == shown
        # Staff see every issue's events, with their details.
        raw, _ = await read_for(
            client, stream, 1.5, {**tenant_a.headers("staff"), "Last-Event-ID": "0"}
        )
        assert {f["data"]["issue"]["id"] for f in frames(raw)} == {
            str(i) for i in secrets.issues.values()
        }
        assert "SECRETTEXT-private" in raw

        # Live: an event for every issue while streams are open.
        async def live(headers: dict[str, str] | None) -> str:
            return (await read_for(client, stream, 3.0, headers))[0]

        public_task = asyncio.create_task(live(None))
        staff_task = asyncio.create_task(live(tenant_a.headers("staff")))
        await asyncio.sleep(0.8)
        await log_events(db_url, tenant_a, secrets)
        public_raw, staff_raw = await public_task, await staff_task
        assert {f["data"]["issue"]["id"] for f in frames(public_raw)} == shown
        assert not leaks(public_raw, secrets, "anonymous"), public_raw
        assert len(frames(staff_raw)) == len(secrets.issues)


async def test_open_public_streams_end_when_the_view_changes(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    await seed(db_url, tenant_a)
    admin = tenant_a.headers("admin")
    async with running_server(settings) as client:
        stream = url(tenant_a, "stream")

        async def change_soon(body: dict[str, Any]) -> None:
            await asyncio.sleep(0.8)
            r = await client.put(url(tenant_a, "dashboard"), json=body, headers=admin)
            assert r.status_code == 200, r.text

        # Showing graffiti too: open public streams end (they reconnect to the new view);
        # a staff stream is not touched.
        changer = asyncio.create_task(
            change_soon(
                {"public_categories": ["road_defect", "graffiti"], "public_areas": ["north"]}
            )
        )
        staff_task = asyncio.create_task(read_for(client, stream, 4.0, tenant_a.headers("staff")))
        _, ended = await read_for(client, stream, 4.0)
        await changer
        assert ended
        assert not (await staff_task)[1]
        raw, _ = await read_for(client, stream, 1.5, {"Last-Event-ID": "0"})
        assert {f["data"]["issue"]["category"] for f in frames(raw)} == {"road_defect", "graffiti"}

        # Private: the open public stream ends, and a new one is refused.
        changer = asyncio.create_task(change_soon({"public": False}))
        _, ended = await read_for(client, stream, 4.0)
        await changer
        assert ended
        assert (await client.get(stream)).status_code == 404


async def test_public_dashboard_counts_ranks_and_maps_only_what_the_public_may_see(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    secrets = await seed(db_url, tenant_a)
    async with running_server(settings.replace(aggregate_tick_seconds=0.2)) as client:
        await settled(db_url)
        public_resp = await client.get(url(tenant_a, "dashboard/data"))
        staff_resp = await client.get(
            url(tenant_a, "dashboard/data"), headers=tenant_a.headers("staff")
        )
        assert public_resp.status_code == staff_resp.status_code == 200
        public, staff = public_resp.json(), staff_resp.json()
        assert not leaks(public_resp.text, secrets, "anonymous"), public_resp.text
        assert "SECRETTEXT" in staff_resp.text  # titles, for staff
        assert public["totals"]["opened"] == 2 and staff["totals"]["opened"] == 6
        assert {c["key"] for c in public["categories"]} == {"road_defect"}
        assert {r["id"] for r in public["recent"]} == {
            str(secrets.issues["shown"]),
            str(secrets.issues["shown_too"]),
        }
        # Rankings: the public's north has its one public resolved issue, which missed its
        # target; staff count the private one too (met) and see the south.
        (north,) = public["rankings"]["ranked"] + public["rankings"]["too_few"]
        assert north["key"] == "north" and north["resolved"] == 1
        assert north["within_sla_pct"] == 0.0
        staff_groups = {
            g["key"]: g for g in staff["rankings"]["ranked"] + staff["rankings"]["too_few"]
        }
        assert set(staff_groups) == {"north", "south"}
        assert staff_groups["north"]["resolved"] == 2
        assert staff_groups["north"]["within_sla_pct"] == 50.0
        # Hotspots: only public road defects are counted where the public looks.
        assert public["hotspots"], public
        for spot in public["hotspots"]:
            assert set(spot["categories"]) == {"road_defect"}
        assert sum(s["issues"] for s in public["hotspots"]) == 2
        assert any("graffiti" in s["categories"] for s in staff["hotspots"])
        # Trend % within SLA: public issues only.
        public_pct = [
            t["within_sla_pct"] for t in public["trend"] if t["within_sla_pct"] is not None
        ]
        staff_pct = [t["within_sla_pct"] for t in staff["trend"] if t["within_sla_pct"] is not None]
        assert public_pct == [0.0] and staff_pct == [round(200 / 3, 2)]


async def test_exports_give_the_public_the_public_view(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    secrets = await seed(db_url, tenant_a)
    async with running_server(settings.replace(aggregate_tick_seconds=0.2)) as client:
        await settled(db_url)
        public = await client.get(url(tenant_a, "exports/issues.csv"))
        staff = await client.get(
            url(tenant_a, "exports/issues.csv"), headers=tenant_a.headers("staff")
        )
        assert public.status_code == staff.status_code == 200
        public_rows = list(csv.DictReader(io.StringIO(public.text)))
        staff_rows = list(csv.DictReader(io.StringIO(staff.text)))
        assert {r["id"] for r in public_rows} == {
            str(secrets.issues["shown"]),
            str(secrets.issues["shown_too"]),
        }
        assert "title" not in public_rows[0] and "team" not in public_rows[0]
        assert not leaks(public.text, secrets, "anonymous"), public.text
        assert len(staff_rows) == 6 and "title" in staff_rows[0]
        trends = await client.get(url(tenant_a, "exports/trends.csv"))
        assert trends.status_code == 200
        rows = list(csv.DictReader(io.StringIO(trends.text)))
        assert {r["category"] for r in rows} == {"road_defect"}
        assert sum(int(r["opened"]) for r in rows) == 2
        # A private dashboard has no public export.
        r = await client.put(
            url(tenant_a, "dashboard"), json={"public": False}, headers=tenant_a.headers("admin")
        )
        assert r.status_code == 200
        assert (await client.get(url(tenant_a, "exports/issues.csv"))).status_code == 404


async def test_a_submit_key_reads_public_facts_and_its_own_reports_only(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    secrets = await seed(db_url, tenant_a)
    submit, staff = tenant_a.headers(), tenant_a.headers("staff")
    async with running_server(settings) as client:
        near = {"lat": str(LAT), "lon": str(LON)}
        r = await client.get(url(tenant_a, "issues/nearby"), params=near, headers=submit)
        assert r.status_code == 200, r.text
        assert [i["id"] for i in r.json()["items"]] == [str(secrets.issues["shown"])]
        assert "title" not in r.json()["items"][0]
        assert not leaks(r.text, secrets, "submit"), r.text
        r = await client.get(url(tenant_a, "issues/nearby"), params=near, headers=staff)
        assert len(r.json()["items"]) == 3 and "SECRETTEXT" in r.text  # all 3 open issues

        for name, issue_id in secrets.issues.items():
            r = await client.get(url(tenant_a, f"issues/{issue_id}"), headers=submit)
            if name.startswith("shown") or name == "own":
                assert r.status_code == 200, (name, r.text)
                body = r.json()
                assert body["view"] == "public" and "reports" not in body
                assert not leaks(r.text, secrets, "submit"), r.text
                assert "SECRETTEXT" not in r.text  # not even its own words, on an issue
            else:
                assert r.status_code == 404, (name, r.text)
            staff_view = await client.get(url(tenant_a, f"issues/{issue_id}"), headers=staff)
            assert staff_view.json()["view"] == "staff"
            assert f"SECRETTEXT-{name}" in staff_view.text

        for name, report_id in secrets.reports.items():
            r = await client.get(url(tenant_a, f"reports/{report_id}"), headers=submit)
            if name == "own":
                assert r.status_code == 200 and "SECRETTEXT-own" in r.text
            else:
                assert r.status_code == 404, (name, r.text)
            r = await client.get(url(tenant_a, f"reports/{report_id}"), headers=staff)
            assert r.status_code == 200

        # What the app sends now, it reads back; another app's key does not.
        sent = await client.post(
            url(tenant_a, "reports"),
            json={"text": "Streetlight out", "lat": LAT, "lon": LON},
            headers=submit,
        )
        assert sent.status_code == 202
        mine = await client.get(url(tenant_a, f"reports/{sent.json()['id']}"), headers=submit)
        assert mine.status_code == 200
        other_key = await client.post(
            url(tenant_a, "keys"), json={"scope": "submit"}, headers=tenant_a.headers("admin")
        )
        other = {"Authorization": f"Bearer {other_key.json()['key']}"}
        theirs = await client.get(url(tenant_a, f"reports/{sent.json()['id']}"), headers=other)
        assert theirs.status_code == 404


async def test_frames_of_an_issue_made_private_are_not_replayed_from_memory(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    secrets = await seed(db_url, tenant_a)
    shown = secrets.issues["shown"]
    staff = tenant_a.headers("staff")
    async with running_server(settings) as client:
        stream = url(tenant_a, "stream")
        conn = await asyncpg.connect(db_url)
        try:
            floor = await conn.fetchval(
                "SELECT max(seq) FROM issue_events WHERE tenant_id = $1", tenant_a.id
            )
        finally:
            await conn.close()
        # A public stream keeps the tenant's feed in memory while the issue is public...
        holder = asyncio.create_task(read_for(client, stream, 6.0))
        await asyncio.sleep(0.5)
        await log_events(db_url, tenant_a, secrets)
        await asyncio.sleep(0.5)
        # ... then staff make it private.
        issue = (await client.get(url(tenant_a, f"issues/{shown}"), headers=staff)).json()
        r = await client.patch(
            url(tenant_a, f"issues/{shown}"),
            json={"visibility": "private", "version": issue["version"]},
            headers=staff,
        )
        assert r.status_code == 200, r.text
        await asyncio.sleep(0.5)
        # A stream resuming inside what the feed holds gets nothing of it any more.
        raw, _ = await read_for(client, stream, 1.0, {"Last-Event-ID": str(floor)})
        assert str(shown) not in raw, raw
        # (the other public issue's new events are still there)
        assert {f["data"]["issue"]["id"] for f in frames(raw)} == {str(secrets.issues["shown_too"])}
        held, _ = await holder
        assert str(shown) in held  # it was sent live while it was public
        log = (await client.get(url(tenant_a, "audit"), headers=tenant_a.headers("admin"))).json()
        change = next(e for e in log["items"] if e["action"] == "issue.visibility_changed")
        assert change["target"] == str(shown) and change["actor"].startswith("key:")
        assert change["data"] == {"from": "public", "to": "private"}


async def test_idempotency_keys_belong_to_the_app_that_sent_them(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    admin = tenant_a.headers("admin")
    report = {"text": "Pothole by the school gate", "lat": LAT, "lon": LON}
    async with running_server(settings) as client:
        other_key = await client.post(
            url(tenant_a, "keys"), json={"scope": "submit"}, headers=admin
        )
        apps = [tenant_a.headers(), {"Authorization": f"Bearer {other_key.json()['key']}"}]
        sent = []
        for app in apps:
            r = await client.post(
                url(tenant_a, "reports"), json=report, headers={**app, "Idempotency-Key": "42"}
            )
            assert r.status_code == 202 and "idempotent-replayed" not in r.headers
            sent.append(r.json()["id"])
        assert sent[0] != sent[1]  # the second app's report was stored, not the first's replayed
        for app, report_id in zip(apps, sent, strict=True):
            again = await client.post(
                url(tenant_a, "reports"), json=report, headers={**app, "Idempotency-Key": "42"}
            )
            assert again.json()["id"] == report_id
            assert again.headers["idempotent-replayed"] == "true"
            mine = await client.get(url(tenant_a, f"reports/{report_id}"), headers=app)
            assert mine.status_code == 200
