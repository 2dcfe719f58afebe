"""Grouping in the running pipeline: issues, aggregates, resident lookups, staff tools, and
race safety across two service processes."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import asyncpg
import httpx

from civicpulse.config import Settings
from civicpulse.engine import geo, grouping
from tests.support import TenantKeys, running_server


def near(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return (
        lat + north_m / geo.METRES_PER_DEGREE,
        lon + east_m / (geo.METRES_PER_DEGREE * math.cos(math.radians(lat))),
    )


async def submit(
    client: httpx.AsyncClient, tenant: TenantKeys, text: str, lat: float, lon: float, **extra: Any
) -> str:
    r = await client.post(
        f"/v1/tenants/{tenant.slug}/reports",
        json={"text": text, "lat": lat, "lon": lon, **extra},
        headers=tenant.headers(),
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def version_of(client: httpx.AsyncClient, tenant: TenantKeys, issue_id: str) -> int:
    """The issue's current version, as a client about to write it reads it."""
    r = await client.get(
        f"/v1/tenants/{tenant.slug}/issues/{issue_id}", headers=tenant.headers("staff")
    )
    return int(r.json()["version"])


async def grouped(
    client: httpx.AsyncClient, tenant: TenantKeys, ids: list[str], timeout: float = 15.0
) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    for _ in range(int(timeout / 0.05)):
        reports = [
            (
                await client.get(f"/v1/tenants/{tenant.slug}/reports/{i}", headers=tenant.headers())
            ).json()
            for i in ids
        ]
        if all(r["status"] == "grouped" for r in reports):
            return reports
        await asyncio.sleep(0.05)
    raise AssertionError(f"not grouped in {timeout}s: {[r['status'] for r in reports]}")


async def test_duplicates_become_one_issue_with_aggregates(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        first = await submit(
            client,
            tenant_a,
            "Deep pothole on Main St by the bakery",
            34.05,
            -118.25,
            submitted_at="2026-11-20T08:00:00Z",
        )
        await grouped(client, tenant_a, [first])
        second = await submit(
            client,
            tenant_a,
            "Huge pothole Main Street, near bakery",
            *near(34.05, -118.25, 20, 0),
            submitted_at="2026-11-21T09:00:00Z",
        )
        gas = await submit(
            client,
            tenant_a,
            "Smell of gas next to the pothole on Main St",
            *near(34.05, -118.25, 5, 5),
            submitted_at="2026-11-21T10:00:00Z",
        )
        a, b, g = await grouped(client, tenant_a, [first, second, gas])
        assert a["issue_id"] == b["issue_id"]
        assert g["issue_id"] != a["issue_id"]  # another category: another problem
        issue = (
            await client.get(
                f"/v1/tenants/{tenant_a.slug}/issues/{a['issue_id']}",
                headers=tenant_a.headers("staff"),
            )
        ).json()
    assert issue["report_count"] == 2
    assert [r["id"] for r in issue["reports"]] == [first, second]
    assert issue["first_reported"].startswith("2026-11-20T08:00:00")
    assert issue["last_reported"].startswith("2026-11-21T09:00:00")
    # Coordinates are kept to 1e-7 degrees (domain.limits.coordinate), about a centimetre.
    assert abs(issue["lat"] - (34.05 + near(34.05, -118.25, 20, 0)[0]) / 2) < 1e-7
    assert issue["status"] == "new" and issue["category"] == "road_defect"
    attached = issue["reports"][1]["grouping"]
    assert attached["created"] is False and attached["rule"].startswith(grouping.RULES_VERSION)
    assert attached["scores"]["distance_m"] < 25
    # The workflow ran when the issue opened: the default SLA policy for its priority.
    assert [e["kind"] for e in issue["events"]] == [
        "issue_created",
        "rules_applied",
        "report_attached",
    ]
    by_priority = {1: "urgent", 2: "high"}.get(issue["priority"], "standard")
    assert issue["events"][1]["data"]["changes"] == {"sla_policy": by_priority}
    assert issue["sla"]["policy"] == by_priority


async def test_report_count_feeds_priority_and_severity_is_the_maximum(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        ids = [
            await submit(
                client, tenant_a, "Streetlight out on Oak Ave", *near(37.77, -122.42, i * 3, 0)
            )
            for i in range(3)
        ]
        ids.append(
            await submit(
                client,
                tenant_a,
                "Streetlight out on Oak Ave, sparking wires",
                *near(37.77, -122.42, 2, 2),
            )
        )
        reports = await grouped(client, tenant_a, ids)
        assert len({r["issue_id"] for r in reports}) == 1
        issue = (
            await client.get(
                f"/v1/tenants/{tenant_a.slug}/issues/{reports[0]['issue_id']}",
                headers=tenant_a.headers("staff"),
            )
        ).json()
    assert issue["report_count"] == 4
    assert issue["severity"] == 5  # the sparking report
    assert issue["priority"] == 1  # the most urgent, as in the SLA policies and the rules
    assert issue["hazards"] == ["live_wire"]


async def test_nearby_suggests_open_issues_closest_first(
    settings: Settings, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    async with running_server(settings) as client:
        # The tenant narrows graffiti grouping to 30 m (its own rule), so seven tags 60 m
        # apart are seven open issues, whatever the model would make of them.
        base = f"/v1/tenants/{tenant_a.slug}/categories"
        listed = (await client.get(base, headers=tenant_a.headers())).json()["items"]
        graffiti = next(c for c in listed if c["code"] == "graffiti")
        assert graffiti["group_radius_m"] is None
        rule = {k: v for k, v in graffiti.items() if k != "code"} | {"group_radius_m": 30}
        put = await client.put(f"{base}/graffiti", json=rule, headers=tenant_a.headers("admin"))
        assert put.status_code == 200 and put.json()["group_radius_m"] == 30
        too_far = await client.put(
            f"{base}/graffiti",
            json=rule | {"group_radius_m": 5000},
            headers=tenant_a.headers("admin"),
        )
        assert too_far.status_code == 422 and too_far.json()["error"]["field"] == "group_radius_m"
        ids = [
            await submit(
                client, tenant_a, "Graffiti tag on the wall", *near(40.0, -75.0, 60 * i, 0)
            )
            for i in range(7)
        ]
        other = await submit(client, tenant_b, "Graffiti tag on the wall", 40.0, -75.0)
        await grouped(client, tenant_a, ids)
        await grouped(client, tenant_b, [other])
        r = await client.get(
            f"/v1/tenants/{tenant_a.slug}/issues/nearby",
            params={"lat": 40.0, "lon": -75.0, "category": "GRAF"},
            headers=tenant_a.headers(),
        )
        body = r.json()
        assert r.status_code == 200 and body["radius_m"] == 250
        distances = [item["distance_m"] for item in body["items"]]
        assert len(distances) == 5 and distances == sorted(distances)
        assert distances[0] < 1 and all(d <= 250 for d in distances)
        assert all(item["category"] == "graffiti" for item in body["items"])
        # Nothing of tenant B, and nothing for a category with no open issue here.
        none = await client.get(
            f"/v1/tenants/{tenant_a.slug}/issues/nearby",
            params={"lat": 40.0, "lon": -75.0, "category": "trees"},
            headers=tenant_a.headers(),
        )
        assert none.json()["items"] == []
        bad = await client.get(
            f"/v1/tenants/{tenant_a.slug}/issues/nearby",
            params={"lat": 95, "lon": 0},
            headers=tenant_a.headers(),
        )
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "lat"


async def test_merge_split_and_not_duplicate(settings: Settings, tenant_a: TenantKeys) -> None:
    base = f"/v1/tenants/{tenant_a.slug}/issues"
    staff = tenant_a.headers("staff")
    async with running_server(settings) as client:
        one = await submit(client, tenant_a, "Broken sign at the corner", 51.5, -0.12)
        two = await submit(client, tenant_a, "Stop sign knocked over", *near(51.5, -0.12, 400, 0))
        a, b = await grouped(client, tenant_a, [one, two])
        assert a["issue_id"] != b["issue_id"]
        denied = await client.post(
            f"{base}/{b['issue_id']}/merge",
            json={"into": a["issue_id"]},
            headers=tenant_a.headers(),
        )
        assert denied.status_code == 403
        target = await client.get(f"{base}/{a['issue_id']}", headers=staff)
        source = await client.get(f"{base}/{b['issue_id']}", headers=staff)
        body = {"into": a["issue_id"], "note": "same sign"}
        # Like every issue write: without the version read, 428; with an old one, 412.
        unversioned = await client.post(f"{base}/{b['issue_id']}/merge", json=body, headers=staff)
        assert unversioned.status_code == 428
        stale = int(source.headers["etag"].strip('"')) - 1
        r = await client.post(
            f"{base}/{b['issue_id']}/merge", json={**body, "version": stale}, headers=staff
        )
        assert r.status_code == 412
        merged = await client.post(
            f"{base}/{b['issue_id']}/merge",
            json=body,
            headers={**staff, "If-Match": source.headers["etag"]},
        )
        assert merged.status_code == 200 and merged.json()["report_count"] == 2
        # The target changed (its reports and centroid): a new version and ETag.
        assert merged.json()["version"] > target.json()["version"]
        assert merged.headers["etag"] == f'"{merged.json()["version"]}"'

        old = (await client.get(f"{base}/{b['issue_id']}", headers=staff)).json()
        assert old["status"] == "duplicate" and old["report_count"] == 0
        assert [e["kind"] for e in old["events"]][-1] == "merged_into"
        again = await client.post(
            f"{base}/{b['issue_id']}/merge",
            json={"into": a["issue_id"], "version": old["version"]},
            headers=staff,
        )
        assert again.status_code == 409

        split = await client.post(
            f"{base}/{a['issue_id']}/split",
            json={"report_id": two, "note": "different sign"},
            headers={**staff, "If-Match": merged.headers["etag"]},
        )
        assert split.status_code == 201
        new_issue = split.json()
        assert new_issue["report_count"] == 1 and new_issue["lat"] == b["lat"]
        kept = (await client.get(f"{base}/{a['issue_id']}", headers=staff)).json()
        assert [r["id"] for r in kept["reports"]] == [one]
        assert "report_split" in [e["kind"] for e in kept["events"]]
        assert kept["version"] > merged.json()["version"]
        missing = await client.post(
            f"{base}/{a['issue_id']}/split",
            json={"report_id": two, "version": kept["version"]},
            headers=staff,
        )
        assert missing.status_code == 404 and missing.json()["error"]["field"] == "report_id"


async def test_not_duplicate_feedback_is_respected_when_a_report_is_grouped_again(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    base = f"/v1/tenants/{tenant_a.slug}/issues"
    async with running_server(settings) as client:
        one = await submit(client, tenant_a, "Tree branch down on the path", 48.85, 2.35)
        two = await submit(
            client, tenant_a, "Tree branch down on the path", *near(48.85, 2.35, 10, 0)
        )
        a, b = await grouped(client, tenant_a, [one, two])
        assert a["issue_id"] == b["issue_id"]
        r = await client.post(
            f"{base}/{a['issue_id']}/split",
            json={"report_id": two, "version": await version_of(client, tenant_a, a["issue_id"])},
            headers=tenant_a.headers("staff"),
        )
        assert r.status_code == 201, r.text
        # Send the report through grouping again: it must not go back to that issue.
        conn = await asyncpg.connect(db_url)
        await conn.execute(
            "UPDATE reports SET state = 'classified', issue_id = NULL WHERE id = $1", two
        )
        await conn.close()
        (again,) = await grouped(client, tenant_a, [two])
    assert again["issue_id"] != a["issue_id"]


async def test_near_simultaneous_reports_in_two_processes_end_up_in_one_issue(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    rng = random.Random(4)
    places = [(34.0 + rng.uniform(0, 0.5), -118.5 + rng.uniform(0, 0.5)) for _ in range(40)]
    # Small claims, so both processes always get a share of the work at the same time.
    settings = settings.replace(pipeline_claim_batch=5)
    async with running_server(settings) as one, running_server(settings) as two:
        # Each process gets one report of every place in one batch, at the same moment, so
        # both group overlapping places concurrently.
        batches = [
            [
                {"text": "Water main burst, water everywhere", "lat": lat, "lon": lon}
                for lat, lon in places
            ],
            [
                {"text": "Burst water main leaking all over the street", "lat": p[0], "lon": p[1]}
                for p in (near(lat, lon, 8, 8) for lat, lon in places)
            ],
        ]
        answers = await asyncio.gather(
            *[
                client.post(
                    f"/v1/tenants/{tenant_a.slug}/reports/batch",
                    json=batch,
                    headers=tenant_a.headers(),
                )
                for client, batch in zip((one, two), batches, strict=True)
            ]
        )
        first, second = ([item["id"] for item in r.json()["results"]] for r in answers)
        pairs = list(zip(first, second, strict=True))
        ids = first + second
        reports = {r["id"]: r for r in await grouped(one, tenant_a, ids, timeout=30)}
    for a, b in pairs:
        assert reports[a]["issue_id"] == reports[b]["issue_id"]
    assert len({r["issue_id"] for r in reports.values()}) == len(places)
    conn = await asyncpg.connect(db_url)
    try:
        # Grouping claims of one tenant are taken one at a time, in submission order (schema
        # 0009), and a process that finishes one takes the next at once, so either process
        # may have grouped them all: what matters is that reports written through both at
        # the same moment end up in one issue per place, each counted once.
        groupers = await conn.fetchval("SELECT count(DISTINCT grouping->>'by') FROM reports")
        counts = await conn.fetch("SELECT report_count FROM issues")
    finally:
        await conn.close()
    assert groupers in (1, 2)
    assert sorted(r["report_count"] for r in counts) == [2] * len(places)
