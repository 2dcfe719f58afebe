"""Workflows through the running service: configuration, the lifecycle with optimistic
concurrency, rules and SLA clocks on new issues, the event log, the staff list, SLA timers
firing exactly once across two processes, and tenant isolation."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import asyncpg
import httpx

from civicpulse.config import Settings
from tests.e2e.test_grouping import grouped, submit
from tests.support import TenantKeys, running_server

# A square around downtown Los Angeles, and a calendar that is always open (so due times
# are wall-clock arithmetic the test can check to the second).
DOWNTOWN = {
    "type": "Polygon",
    "coordinates": [
        [[-118.27, 34.04], [-118.23, 34.04], [-118.23, 34.06], [-118.27, 34.06], [-118.27, 34.04]]
    ],
}
ALWAYS = {
    "timezone": "America/Los_Angeles",
    "hours": {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
}


def url(tenant: TenantKeys, path: str) -> str:
    return f"/v1/tenants/{tenant.slug}/{path}"


async def configure(client: httpx.AsyncClient, t: TenantKeys) -> None:
    admin = t.headers("admin")
    for path, body in (
        ("teams/roads", {"name": "Street Services"}),
        ("areas/downtown", {"name": "Downtown", "geometry": DOWNTOWN}),
        ("calendars/always", ALWAYS),
        (
            "sla-policies/std",
            {
                "name": "Standard",
                "calendar": "always",
                "response_minutes": 60,
                "resolution_minutes": 240,
                "priorities": [1, 2, 3, 4, 5],
            },
        ),
    ):
        r = await client.put(url(t, path), json=body, headers=admin)
        assert r.status_code == 200, r.text
    r = await client.put(
        url(t, "rules"),
        json={
            "mode": "first",
            "rules": [
                {
                    "id": "downtown-roads",
                    "when": {"areas": ["downtown"], "categories": ["road_defect"]},
                    "then": {"team": "roads", "priority": 2, "sla_policy": "std"},
                },
            ],
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text


async def issue_of(client: httpx.AsyncClient, t: TenantKeys, report_id: str) -> dict[str, Any]:
    (report,) = await grouped(client, t, [report_id])
    r = await client.get(url(t, f"issues/{report['issue_id']}"), headers=t.headers("staff"))
    assert r.status_code == 200
    assert r.headers["etag"] == f'"{r.json()["version"]}"'
    return dict(r.json())


def ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


async def test_configuration_is_validated_named_and_versioned(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    admin = tenant_a.headers("admin")
    bad = [
        (
            "areas/x",
            {"name": "X", "geometry": {"type": "Point", "coordinates": [0, 0]}},
            "geometry.type",
        ),
        (
            "calendars/c",
            {"timezone": "Mars/Olympus", "hours": {"mon": [["09:00", "17:00"]]}},
            "timezone",
        ),
        (
            "calendars/c",
            {"timezone": "UTC", "hours": {"funday": [["09:00", "17:00"]]}},
            "hours.funday",
        ),
        ("calendars/c", {"timezone": "UTC", "hours": {"mon": [["17:00", "09:00"]]}}, "hours"),
        ("sla-policies/p", {"name": "P", "calendar": "nope", "resolution_minutes": 5}, "calendar"),
        (
            "sla-policies/p",
            {
                "name": "P",
                "calendar": "nope",
                "pause_statuses": ["closed"],
                "resolution_minutes": 5,
            },
            "pause_statuses[0]",
        ),
        ("rules", {"rules": [{"id": "a", "then": {"team": "ghosts"}}]}, "rules[0].then.team"),
        (
            "rules",
            {"rules": [{"id": "a", "when": {"python": "1"}, "then": {"priority": 1}}]},
            "rules[0].when.python",
        ),
        ("teams/Bad Code", {"name": "x"}, "code"),
    ]
    async with running_server(settings) as client:
        for path, body, field in bad:
            r = await client.put(url(tenant_a, path), json=body, headers=admin)
            assert r.status_code in (400, 422), (path, r.text)
            assert r.json()["error"]["field"] == field, (path, r.json())
        r = await client.put(
            url(tenant_a, "teams/roads"), json={"name": "R"}, headers=tenant_a.headers("staff")
        )
        assert r.status_code == 403
        await configure(client, tenant_a)
        again = await client.put(
            url(tenant_a, "rules"), json={"mode": "all", "rules": []}, headers=admin
        )
        assert again.json()["version"] == 2
        current = await client.get(url(tenant_a, "rules"), headers=tenant_a.headers("staff"))
        assert current.json()["version"] == 2 and current.json()["mode"] == "all"
        cal = await client.get(url(tenant_a, "calendars"), headers=tenant_a.headers("staff"))
        assert cal.json()["items"][0]["hours"]["sun"] == [["00:00", "24:00"]]


async def test_lifecycle_rules_sla_clock_and_event_log(
    settings: Settings, tenant_a: TenantKeys, db_url: str
) -> None:
    staff = tenant_a.headers("staff")
    async with running_server(settings) as client:
        await configure(client, tenant_a)
        report = await submit(
            client,
            tenant_a,
            "Deep pothole in the left lane",
            34.05,
            -118.25,
            category="road_defect",
        )
        issue = await issue_of(client, tenant_a, report)
        iid = issue["id"]
        # Rules ran when grouping opened the issue: area from the polygon, then the rule.
        assert (issue["area"], issue["team"], issue["priority"]) == ("downtown", "roads", 2)
        assert issue["sla"]["policy"] == "std" and issue["sla"]["running"]
        opened = ts(issue["opened_at"])
        assert ts(issue["sla"]["response_due_at"]) == opened + dt.timedelta(minutes=60)
        assert ts(issue["expected_datetime"]) == opened + dt.timedelta(minutes=240)

        move = url(tenant_a, f"issues/{iid}/transition")
        version = issue["version"]
        r = await client.post(move, json={"to": "triaged"}, headers=staff)
        assert r.status_code == 428 and r.json()["error"]["field"] == "if-match"
        r = await client.post(move, json={"to": "triaged"}, headers={**staff, "If-Match": '"999"'})
        assert r.status_code == 412
        r = await client.post(
            move, json={"to": "closed"}, headers={**staff, "If-Match": f'"{version}"'}
        )
        assert r.status_code == 409 and r.json()["error"]["field"] == "to"
        r = await client.post(move, json={"to": "triaged"}, headers=tenant_a.headers())
        assert r.status_code == 403

        r = await client.post(
            move,
            json={"to": "triaged", "note": "seen it"},
            headers={**staff, "If-Match": f'"{version}"'},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "triaged" and body["version"] == version + 1
        assert body["sla"]["acknowledged_at"] is not None
        assert body["sla"]["response_due_at"] is None  # response met: no more response timer
        assert r.headers["etag"] == f'"{version + 1}"'
        # The same stale version again is refused: two staff cannot both move it.
        r = await client.post(
            move, json={"to": "in_progress"}, headers={**staff, "If-Match": f'"{version}"'}
        )
        assert r.status_code == 412

        r = await client.post(
            url(tenant_a, f"issues/{iid}/assign"),
            json={"assignee": "maria", "version": version + 1},
            headers=staff,
        )
        assert r.status_code == 200 and r.json()["status"] == "assigned"
        assert r.json()["assignee"] == "maria"
        v = r.json()["version"]
        r = await client.post(
            move,
            json={"to": "waiting", "note": "waiting on the utility"},
            headers={**staff, "If-Match": f'"{v}"'},
        )
        paused = r.json()
        assert not paused["sla"]["running"] and paused["sla"]["resolution_due_at"] is None
        r = await client.post(
            move,
            json={"to": "in_progress"},
            headers={**staff, "If-Match": f'"{paused["version"]}"'},
        )
        resumed = r.json()
        assert resumed["sla"]["running"]
        # The pause moved the due time later by the time spent waiting.
        assert ts(resumed["sla"]["resolution_due_at"]) > ts(issue["sla"]["resolution_due_at"])
        r = await client.post(
            url(tenant_a, f"issues/{iid}/comments"),
            json={"note": "crew on site", "version": resumed["version"]},
            headers=staff,
        )
        assert r.status_code == 200
        for to in ("resolved", "closed", "reopened"):
            r = await client.post(
                move, json={"to": to}, headers={**staff, "If-Match": f'"{r.json()["version"]}"'}
            )
            assert r.status_code == 200, r.text
        reopened = r.json()
        assert reopened["sla"]["cycle"] == 2 and reopened["sla"]["running"]
        assert reopened["closed_at"] is None

        full = (await client.get(url(tenant_a, f"issues/{iid}"), headers=staff)).json()
        kinds = [(e["kind"], e["from_status"], e["to_status"]) for e in full["events"]]
        assert kinds[:2] == [("issue_created", None, "new"), ("rules_applied", None, None)]
        assert full["events"][1]["data"]["matched"] == ["downtown-roads"]
        assert ("status_changed", "new", "triaged") in kinds
        assert ("assigned", "triaged", "assigned") in kinds
        assert ("status_changed", "assigned", "waiting") in kinds
        assert ("comment", None, None) in kinds
        assert ("status_changed", "closed", "reopened") in kinds
        triaged = next(e for e in full["events"] if e["to_status"] == "triaged")
        assert triaged["note"] == "seen it" and triaged["actor"].startswith("key:")

    conn = await asyncpg.connect(db_url)
    try:
        timers = await conn.fetch(
            "SELECT cycle, target, kind, fire_at FROM sla_timers WHERE issue_id = $1 "
            "AND fired_at IS NULL ORDER BY cycle, target, kind",
            uuid.UUID(iid),
        )
    finally:
        await conn.close()
    # Only the new cycle's timers are pending: response and resolution, warning and breach.
    assert [(t["cycle"], t["target"], t["kind"]) for t in timers] == [
        (2, "resolution", "breach"),
        (2, "resolution", "warning"),
        (2, "response", "breach"),
        (2, "response", "warning"),
    ]
    breach = next(t for t in timers if (t["target"], t["kind"]) == ("resolution", "breach"))
    assert breach["fire_at"] == ts(reopened["sla"]["resolution_due_at"])


async def test_staff_list_filters_and_pages(
    settings: Settings, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    staff = tenant_a.headers("staff")
    async with running_server(settings) as client:
        ids = []
        for i in range(7):  # far apart: seven issues
            ids.append(
                await submit(
                    client,
                    tenant_a,
                    f"Graffiti tag number {i} on the wall",
                    34.0 + i * 0.05,
                    -118.3,
                    category="graffiti",
                )
            )
        ids.append(
            await submit(
                client, tenant_a, "Pothole by the school", 34.9, -118.9, category="road_defect"
            )
        )
        await grouped(client, tenant_a, ids)
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            page = (await client.get(url(tenant_a, "issues"), params=params, headers=staff)).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 8
        only = (
            await client.get(
                url(tenant_a, "issues"), params={"category": "road_defect"}, headers=staff
            )
        ).json()["items"]
        assert [i["title"] for i in only] == ["Pothole by the school"]
        found = (
            await client.get(url(tenant_a, "issues"), params={"q": "number 3"}, headers=staff)
        ).json()["items"]
        assert len(found) == 1 and "number 3" in found[0]["title"]
        none = (
            await client.get(url(tenant_a, "issues"), params={"status": "closed"}, headers=staff)
        ).json()["items"]
        assert none == []
        for params, field in (
            ({"status": "done"}, "status"),
            ({"limit": "0"}, "limit"),
            ({"cursor": "garbage"}, "cursor"),
            ({"overdue": "maybe"}, "overdue"),
        ):
            r = await client.get(url(tenant_a, "issues"), params=params, headers=staff)
            assert r.status_code == 422 and r.json()["error"]["field"] == field
        assert (
            await client.get(url(tenant_a, "issues"), headers=tenant_a.headers())
        ).status_code == 403
        # Another tenant sees none of them, and cannot touch one.
        other = (
            await client.get(url(tenant_b, "issues"), headers=tenant_b.headers("staff"))
        ).json()
        assert other["items"] == []
        r = await client.post(
            url(tenant_b, f"issues/{seen[0]}/transition"),
            json={"to": "triaged", "version": 1},
            headers=tenant_b.headers("staff"),
        )
        assert r.status_code == 404


async def _open_issues(db_url: str, tenant: TenantKeys, n: int) -> list[uuid.UUID]:
    """n open issues made the way an import makes them (no SLA policy needed)."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "INSERT INTO issues (tenant_id, id, category, lat, lon, opened_at) "
            "SELECT $1, civicpulse_uuid7(), 'other', 34.0, -118.0, now() "
            "FROM generate_series(1, $2) RETURNING id",
            tenant.id,
            n,
        )
        return [r["id"] for r in rows]
    finally:
        await conn.close()


async def _add_timers(db_url: str, tenant: TenantKeys, ids: list[uuid.UUID], due: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "INSERT INTO sla_timers (tenant_id, issue_id, cycle, target, kind, fire_at) "
            f"SELECT $1, i, 1, 'resolution', 'breach', {due} FROM unnest($2::uuid[]) AS i",
            tenant.id,
            ids,
        )
    finally:
        await conn.close()


async def _breaches(db_url: str, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db_url)
    try:
        return list(
            await conn.fetch(
                "SELECT e.issue_id, e.created_at, t.fire_at FROM issue_events e "
                "JOIN sla_timers t ON t.tenant_id = e.tenant_id AND t.issue_id = e.issue_id "
                "WHERE e.kind = 'sla_breached' AND e.issue_id = ANY($1::uuid[])",
                ids,
            )
        )
    finally:
        await conn.close()


async def test_timers_fire_once_and_on_time_with_two_processes(
    settings: Settings, tenant_a: TenantKeys, db_url: str
) -> None:
    ids = await _open_issues(db_url, tenant_a, 200)
    fast = settings.replace(sla_tick_seconds=0.2, sla_fire_batch=25)
    async with running_server(fast), running_server(fast):
        await _add_timers(db_url, tenant_a, ids, "now() + interval '1.5 seconds'")
        for _ in range(100):
            await asyncio.sleep(0.1)
            fired = await _breaches(db_url, ids)
            if len(fired) >= len(ids):
                break
        await asyncio.sleep(0.5)  # time for a wrong second firing to show up
        fired = await _breaches(db_url, ids)
    assert sorted(r["issue_id"] for r in fired) == sorted(ids)  # each exactly once
    lags = sorted((r["created_at"] - r["fire_at"]).total_seconds() for r in fired)
    assert lags[0] >= 0  # never early
    assert lags[len(lags) // 2] < 1.0 and lags[-1] < 3.0  # within seconds


async def test_timers_due_during_downtime_fire_at_start(
    settings: Settings, tenant_a: TenantKeys, db_url: str
) -> None:
    ids = await _open_issues(db_url, tenant_a, 5)
    await _add_timers(db_url, tenant_a, ids, "now() - interval '2 hours'")
    async with running_server(settings.replace(sla_tick_seconds=0.2)) as client:
        for _ in range(50):
            if len(await _breaches(db_url, ids)) == len(ids):
                break
            await asyncio.sleep(0.1)
        metrics = (await client.get("/metrics")).text
    assert len(await _breaches(db_url, ids)) == len(ids)
    assert 'civicpulse_sla_events_total{kind="breach",target="resolution"} 5.0' in metrics


async def test_workflow_tables_are_tenant_isolated_in_the_database(
    settings: Settings, tenant_a: TenantKeys, tenant_b: TenantKeys, db_url: str
) -> None:
    async with running_server(settings) as client:
        await configure(client, tenant_a)
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE civicpulse_app")
            await conn.execute(
                "SELECT set_config('civicpulse.tenant_id', $1, true)", str(tenant_b.id)
            )
            # B sees its own default calendars and policies, and nothing of A's.
            assert await conn.fetchval("SELECT count(*) FROM sla_policies") == 3
            for table in ("teams", "areas", "calendars", "sla_policies", "rule_sets"):
                assert (
                    await conn.fetchval(
                        f"SELECT count(*) FROM {table} WHERE tenant_id = $1", tenant_a.id
                    )
                    == 0
                ), table
            try:
                await conn.execute(
                    "INSERT INTO teams (tenant_id, code, name) VALUES ($1, 'x', 'x')", tenant_a.id
                )
            except asyncpg.InsufficientPrivilegeError:
                pass
            else:
                raise AssertionError("wrote a row for another tenant")
    finally:
        await conn.close()


async def test_raising_the_priority_keeps_the_clock_running_from_the_opening(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    # The new tenant's own policies: standard on business hours, urgent (priority 1) around
    # the clock with 8 hours to resolve. Urgent's 8 hours run from the opening, whatever
    # the business calendar counted before the change.
    staff = tenant_a.headers("staff")
    async with running_server(settings) as client:
        (r,) = await grouped(
            client, tenant_a, [await submit(client, tenant_a, "Graffiti on the wall", 34.0, -118.2)]
        )
        issue = (await client.get(url(tenant_a, f"issues/{r['issue_id']}"), headers=staff)).json()
        assert issue["sla"]["policy"] == "standard"
        await asyncio.sleep(1.0)
        r2 = await client.patch(
            url(tenant_a, f"issues/{issue['id']}"),
            json={"priority": 1, "version": issue["version"]},
            headers=staff,
        )
        assert r2.status_code == 200, r2.text
        urgent = r2.json()
    assert urgent["sla"]["policy"] == "urgent"
    conn = await asyncpg.connect(db_url)
    started = await conn.fetchval("SELECT sla_started_at FROM issues WHERE id = $1", issue["id"])
    await conn.close()
    due = ts(urgent["sla"]["resolution_due_at"])
    assert abs((due - started).total_seconds() - 8 * 3600) < 1, (due, started)
