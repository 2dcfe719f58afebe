"""Places, ordering, priority and why-not in the running service: a hotel's rooms told apart,
building-wide problems grouped, grouping in submission order whatever order classification
finishes in, the most urgent problem first, and the issue a report did not join."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import asyncpg
import httpx

from civicpulse.config import Settings
from civicpulse.db import tenants as tenants_repo
from civicpulse.db.pool import create_pool, tenant_transaction
from civicpulse.engine import grouping
from civicpulse.pipeline.models import ModelStore
from tests.e2e.test_grouping import grouped, near, submit
from tests.fake_llm import running_fake_llm
from tests.support import TenantKeys, make_tenant, running_server

HOTEL = (37.7946, -122.3999)
HOTEL_PLACES = [
    {"code": "hotel", "kind": "building", "name": "Harbor View Hotel", "lat": HOTEL[0],
     "lon": HOTEL[1]},
    {"code": "hotel-f4", "kind": "floor", "name": "4th floor", "parent": "hotel"},
    {"code": "hotel-412", "kind": "room", "name": "Room 412", "aliases": ["412"],
     "parent": "hotel-f4"},
    {"code": "hotel-415", "kind": "room", "name": "Room 415", "aliases": ["415"],
     "parent": "hotel-f4"},
    {"code": "hotel-lift-1", "kind": "asset", "name": "Lift 1", "parent": "hotel"},
]  # fmt: skip


async def issue(client: httpx.AsyncClient, tenant: TenantKeys, issue_id: str) -> dict[str, Any]:
    r = await client.get(
        f"/v1/tenants/{tenant.slug}/issues/{issue_id}", headers=tenant.headers("staff")
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_a_hotel_tells_rooms_apart_and_groups_building_wide_problems(
    settings: Settings, db_url: str
) -> None:
    hotel = await make_tenant(db_url, template="facility")
    async with running_server(settings) as client:
        r = await client.post(
            f"/v1/tenants/{hotel.slug}/places", json=HOTEL_PLACES, headers=hotel.headers("admin")
        )
        assert r.status_code == 200 and r.json() == {"created": 5, "updated": 0}, r.text
        # Every report comes from the same building, a few metres apart.
        pins = [near(*HOTEL, 3 * k, -2 * k) for k in range(6)]
        texts = [
            ("The AC in room 412 is blowing warm air", None),
            ("air con broken, not cooling at all", "hotel-412"),  # the room picked in the app
            ("AC not cooling in room 415", None),
            ("The wifi is down, I'm in room 412", None),
            ("no internet here in 415 either", None),
            ("lift 1 stuck between floors", None),
        ]
        ids = [
            await submit(client, hotel, text, *pin, **({"place": code} if code else {}))
            for (text, code), pin in zip(texts, pins, strict=True)
        ]
        reports = await grouped(client, hotel, ids)
        bad = await client.post(
            f"/v1/tenants/{hotel.slug}/reports",
            json={"text": "tv broken", "lat": HOTEL[0], "lon": HOTEL[1], "place": "hotel-999"},
            headers=hotel.headers(),
        )
        ac_412, ac_412_app, ac_415, wifi_412, wifi_415, lift = reports
        assert ac_412["issue_id"] == ac_412_app["issue_id"]  # the same room's AC: one issue
        assert ac_415["issue_id"] != ac_412["issue_id"]  # another room: never merged
        assert wifi_412["issue_id"] == wifi_415["issue_id"]  # the wifi is building-wide
        assert len({r["issue_id"] for r in reports}) == 4
        assert ac_412["place"]["code"] == "hotel-412"
        assert ac_412["place"]["label"] == "Harbor View Hotel, Room 412"
        assert ac_412_app["place"]["requested"] == "hotel-412"
        assert lift["place"]["asset"] == "hotel-lift-1"
        assert (ac_412["category"], wifi_412["category"]) == ("heating_cooling", "network")
        ac = await issue(client, hotel, ac_412["issue_id"])
        wifi = await issue(client, hotel, wifi_412["issue_id"])
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "place"
    assert ac["place"]["unit"] == "hotel-412" and ac["scope"] == "local"
    # A building-wide issue is placed at the building, not at its first reporter's room.
    assert wifi["scope"] == "building"
    assert wifi["place"]["building"] == "hotel" and "unit" not in wifi["place"]


async def test_grouping_follows_submission_order_whatever_order_classification_finishes(
    settings: Settings, db_url: str
) -> None:
    """Three spots, three reports each. The first report of every spot is classified last
    (a slow answer); still, each issue is founded by its spot's first report, and a run with
    no delays gives the same issues."""
    spots = [near(34.05, -118.25, 400 * k, 0) for k in range(3)]
    stream = [
        (f"Deep pothole number {k} on Elm, report {r}", spot)
        for r in range(3)
        for k, spot in enumerate(spots)
    ]

    async def run(slow_first: bool) -> tuple[list[str], dict[str, Any]]:
        tenant = await make_tenant(db_url)

        def delay(body: dict[str, Any]) -> float:
            return 1.5 if slow_first and "report 0" in json.dumps(body) else 0.0

        async with running_fake_llm(delay_for=delay) as llm:
            fast = settings.replace(
                llm_base_url=llm.base_url,
                llm_model="fake",
                llm_json_mode="json_object",
                llm_deadline_seconds=10.0,  # the slow answers must be the LLM's, not fallbacks
                pipeline_claim_batch=3,
                process_pool_workers=2,
            )
            async with running_server(fast) as client:
                ids = [await submit(client, tenant, text, *pin) for text, pin in stream]
                reports = await grouped(client, tenant, ids, timeout=30)
                issues = {
                    r["issue_id"]: await issue(client, tenant, r["issue_id"]) for r in reports
                }
        return [r["issue_id"] for r in reports], issues

    slow, issues = await run(slow_first=True)
    assert len(set(slow)) == 3
    for issue_id, body in issues.items():
        founder = next(e["report_id"] for e in body["events"] if e["kind"] == "issue_created")
        members = [n for n, i in enumerate(slow) if i == issue_id]
        assert founder == body["reports"][0]["id"]  # the earliest report of the issue
        assert members[0] < 3  # ... which is its spot's first report, classified last
    plain, _ = await run(slow_first=False)
    partition = {frozenset(n for n, i in enumerate(slow) if i == x) for x in set(slow)}
    assert partition == {frozenset(n for n, i in enumerate(plain) if i == x) for x in set(plain)}


async def test_a_gas_hazard_outranks_graffiti(settings: Settings, tenant_a: TenantKeys) -> None:
    async with running_server(settings) as client:
        gas, graffiti = [
            await submit(client, tenant_a, text, *near(34.05, -118.25, 500 * k, 0))
            for k, text in enumerate(
                ["Strong smell of gas outside the school", "Graffiti on the wall of the school"]
            )
        ]
        gas_report, graffiti_report = await grouped(client, tenant_a, [gas, graffiti])
        gas_issue = await issue(client, tenant_a, gas_report["issue_id"])
        graffiti_issue = await issue(client, tenant_a, graffiti_report["issue_id"])
    # 1 is the most urgent, as in the SLA policies and the rules.
    assert (gas_issue["priority"], gas_issue["sla"]["policy"]) == (1, "urgent")
    assert graffiti_issue["priority"] >= 3 and graffiti_issue["sla"]["policy"] == "standard"
    assert gas_issue["sla"]["response_due_at"] < graffiti_issue["sla"]["response_due_at"]


async def test_staff_see_the_issue_a_report_did_not_join_and_why(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        first = await submit(
            client, tenant_a, "Graffiti on the wall at 1200 Oak St", *near(34.05, -118.25, 0, 0)
        )
        (first_report,) = await grouped(client, tenant_a, [first])
        second = await submit(
            client,
            tenant_a,
            "Tags sprayed on the fence at 1290 Oak St",
            *near(34.05, -118.25, 180, 0),
        )
        (second_report,) = await grouped(client, tenant_a, [second])
        staff = await issue(client, tenant_a, second_report["issue_id"])
        resident = (
            await client.get(
                f"/v1/tenants/{tenant_a.slug}/issues/{second_report['issue_id']}",
                headers=tenant_a.headers(),
            )
        ).json()
    assert second_report["issue_id"] != first_report["issue_id"]
    why_not = staff["reports"][0]["grouping"]["why_not"]
    assert why_not["issue_id"] == first_report["issue_id"]
    assert why_not["scores"]["total"] < grouping.THRESHOLD
    assert why_not["scores"]["distance_m"] > 150 and why_not["reason"]
    # A resident app sees the issue's public facts: no reports, so no grouping either.
    assert resident["view"] == "public" and "reports" not in resident


async def test_a_model_trained_elsewhere_is_used_from_the_next_claim(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    """`civicpulse classifier train` stores a model from its own process; the service uses
    it at once, not after its label check interval."""
    patient = settings.replace(retrain_check_seconds=3600.0)
    async with running_server(patient) as client:
        before = await submit(client, tenant_a, "Pothole on Elm", 34.05, -118.25)
        (first,) = await grouped(client, tenant_a, [before])
        pool = await create_pool(settings, db_url, min_size=1, max_size=2)
        try:
            async with tenant_transaction(pool, tenant_a.id) as conn:
                categories = await tenants_repo.list_categories(conn, tenant_a.id)
            with ProcessPoolExecutor(max_workers=1) as executor:
                store = ModelStore(pool, executor, retrain_after=1_000)
                trained = await store.train(tenant_a.id, categories, reason="command")
        finally:
            await pool.close()
        after = await submit(client, tenant_a, "Pothole on Oak", 34.06, -118.25)
        (second,) = await grouped(client, tenant_a, [after])
    assert first["classification"]["model"] == "linear-v2@v1"
    assert trained.version == 2
    assert second["classification"]["model"] == "linear-v2@v2"


async def test_places_are_managed_by_admins_and_private_to_their_tenant(
    settings: Settings, db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    base = f"/v1/tenants/{tenant_a.slug}/places"
    async with running_server(settings) as client:
        denied = await client.put(
            f"{base}/hall",
            json={"kind": "building", "name": "Hall"},
            headers=tenant_a.headers("staff"),
        )
        made = await client.put(
            f"{base}/hall",
            json={"kind": "building", "name": "Hall"},
            headers=tenant_a.headers("admin"),
        )
        again = await client.put(
            f"{base}/hall",
            json={"kind": "building", "name": "Main Hall", "aliases": ["the hall"]},
            headers=tenant_a.headers("admin"),
        )
        room = await client.put(
            f"{base}/hall-1", json={"kind": "room", "name": "Room 1", "parent": "hall"},
            headers=tenant_a.headers("admin"),
        )  # fmt: skip
        orphan = await client.put(
            f"{base}/x-1", json={"kind": "room", "name": "X", "parent": "nowhere"},
            headers=tenant_a.headers("admin"),
        )  # fmt: skip
        half_point = await client.put(
            f"{base}/y", json={"kind": "space", "name": "Y", "lat": 1.0},
            headers=tenant_a.headers("admin"),
        )  # fmt: skip
        parent_gone = await client.delete(f"{base}/hall", headers=tenant_a.headers("admin"))
        listed = (await client.get(base, headers=tenant_a.headers())).json()
        other = await client.get(
            f"/v1/tenants/{tenant_a.slug}/places/hall", headers=tenant_b.headers()
        )
        other_list = (
            await client.get(f"/v1/tenants/{tenant_b.slug}/places", headers=tenant_b.headers())
        ).json()
        deleted = await client.delete(f"{base}/hall-1", headers=tenant_a.headers("admin"))
        gone = await client.get(f"{base}/hall-1", headers=tenant_a.headers())
    assert denied.status_code == 403
    assert (made.status_code, again.status_code, room.status_code) == (201, 200, 201)
    assert orphan.status_code == 409 and orphan.json()["error"]["field"] == "parent"
    assert half_point.status_code == 422 and half_point.json()["error"]["field"] == "lat"
    assert parent_gone.status_code == 409  # it has a child
    assert [p["code"] for p in listed["items"]] == ["hall", "hall-1"]
    assert listed["items"][0]["aliases"] == ["the hall"]
    assert other.status_code == 404 and other_list["items"] == []
    assert deleted.status_code == 204 and gone.status_code == 404


async def test_places_import_reads_a_file_and_refuses_a_bad_one_whole(
    db_url: str, tenant_a: TenantKeys, tmp_path: Any
) -> None:
    import asyncio
    import sys
    from pathlib import Path

    from tests.support import env_without_civicpulse

    good = tmp_path / "places.csv"
    good.write_text(
        "code,kind,name,aliases,parent,lat,lon\n"
        "r-101,room,Room 101,101|one-oh-one,b,,\n"  # the parent comes later in the file
        "b,building,Block B,,,34.1,-118.2\n"
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("code,kind,name\nr-1,room,Room 1\nr 2,closet,Room 2\n")
    exe = str(Path(sys.executable).parent / "civicpulse")
    env = env_without_civicpulse() | {"CIVICPULSE_DATABASE_URL": db_url}

    async def run(path: Path) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            exe, "places", "import", str(path), "--tenant", tenant_a.slug, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, _ = await run(good)
    assert code == 0 and "2 created" in out
    code, _, err = await run(bad)
    assert code == 1 and f"{bad}:3: " in err and "nothing imported" in err
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT code, parent, aliases FROM places WHERE tenant_id = $1 ORDER BY code",
            tenant_a.id,
        )
    finally:
        await conn.close()
    assert [(r["code"], r["parent"], list(r["aliases"])) for r in rows] == [
        ("b", None, []),
        ("r-101", "b", ["101", "one-oh-one"]),
    ]
