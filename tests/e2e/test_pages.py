"""The resident pages over real HTTP: the landing page lists the public tenants only; the
report form's post needs the page's token, drops what a robot sends, and answers a tracking
link that follows the report, and nothing else; nearby issues and issue pages follow the
public-view rule."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from typing import Any

import asyncpg
import httpx

from civicpulse.config import Settings
from tests.e2e.test_places_grouping import HOTEL, HOTEL_PLACES
from tests.privacy import LAT, LON, seed
from tests.support import TenantKeys, make_tenant, running_server


def config_of(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="config">(.*?)</script>', page, re.S)
    assert found, page[:300]
    value: dict[str, Any] = json.loads(found.group(1))
    return value


async def token_of(client: httpx.AsyncClient, slug: str) -> str:
    page = await client.get(f"/t/{slug}/report")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    return str(config_of(page.text)["token"])


async def test_the_landing_page_lists_public_tenants_only(
    settings: Settings, db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "INSERT INTO dashboards (tenant_id, public) VALUES ($1, false)", tenant_b.id
        )
    finally:
        await conn.close()
    async with running_server(settings) as client:
        landing = await client.get("/")
        assert landing.status_code == 200
        assert f'href="/t/{tenant_a.slug}"' in landing.text
        assert tenant_b.slug not in landing.text
        home = await client.get(f"/t/{tenant_a.slug}")
        assert f'href="/t/{tenant_a.slug}/report"' in home.text
        assert (await client.get("/t/nowhere")).status_code == 404
        css = await client.get("/static/pages.css")
        assert css.status_code == 200 and "text/css" in css.headers["content-type"]
        assert (await client.get("/static/vendor/leaflet.js")).status_code == 200


async def test_a_resident_reports_and_follows_it_with_the_link_only(
    settings: Settings, db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    slug = tenant_a.slug
    async with running_server(settings) as client:
        token = await token_of(client, slug)
        assert token == await token_of(client, slug)  # one per tenant, kept
        assert token != await token_of(client, tenant_b.slug)
        track = secrets.token_urlsafe(24)
        report = {"token": token, "text": "Streetlight out in front of the school",
                  "lat": LAT, "lon": LON, "track": track}  # fmt: skip
        # Another tenant's token, or none that is current: refused, naming the field.
        wrong = await client.post(f"/t/{slug}/report", json={**report, "token": "x" * 32})
        assert wrong.status_code == 403 and wrong.json()["error"]["field"] == "token"
        nowhere = await client.post(
            f"/t/{slug}/report", json={k: v for k, v in report.items() if k not in ("lat", "lon")}
        )
        assert nowhere.status_code == 422 and nowhere.json()["error"]["field"] == "lat"
        # A robot fills the honeypot: the same answer, nothing kept.
        robot = await client.post(
            f"/t/{slug}/report", json={**report, "website": "http://spam.example"}
        )
        assert robot.status_code == 202
        sent = await client.post(
            f"/t/{slug}/report", json=report, headers={"Idempotency-Key": "form-1"}
        )
        assert sent.status_code == 202, sent.text
        again = await client.post(
            f"/t/{slug}/report", json=report, headers={"Idempotency-Key": "form-1"}
        )
        assert again.json() == sent.json()  # a retry is the same report, the same link
        answer = sent.json()
        assert answer["track"] == f"/t/{slug}/track/{answer['id']}?k={track}"

        # The link follows it until it joins an issue.
        body: dict[str, Any] = {}
        for _ in range(200):
            followed = await client.get(f"/t/{slug}/track/{answer['id']}.json", params={"k": track})
            assert followed.status_code == 200, followed.text
            body = followed.json()
            if body["issue"]:
                break
            await asyncio.sleep(0.05)
        assert body["status"] == "grouped" and body["issue"]["status"] == "new"
        assert body["text"] == report["text"]
        assert body["issue"]["public"] is True
        # Without the secret, with another, or on another tenant: nothing, as if none.
        for params, tenant in (({}, slug), ({"k": "nope"}, slug), ({"k": track}, tenant_b.slug)):
            r = await client.get(f"/t/{tenant}/track/{answer['id']}.json", params=params)
            assert r.status_code == 404
        page = await client.get(answer["track"])
        assert page.status_code == 200 and config_of(page.text)["id"] == answer["id"]

        # The issue's public page and the nearby list show it, to anyone.
        issue_id = body["issue"]["id"]
        public = await client.get(f"/t/{slug}/issues/{issue_id}.json")
        assert public.status_code == 200 and public.json()["report_count"] == 1
        assert "Streetlight" not in public.text  # a report's words are never public
        near = await client.get(f"/t/{slug}/nearby.json", params={"lat": LAT, "lon": LON})
        assert [i["id"] for i in near.json()["items"]] == [issue_id]
        assert near.json()["items"][0]["links"]["self"] == f"/t/{slug}/issues/{issue_id}"

    conn = await asyncpg.connect(db_url)
    try:
        kept = await conn.fetch(
            "SELECT channel, track_hash IS NOT NULL AS tracked FROM reports WHERE tenant_id = $1",
            tenant_a.id,
        )
    finally:
        await conn.close()
    assert [(r["channel"], r["tracked"]) for r in kept] == [("web", True)]  # not the robot's


async def test_public_pages_show_only_what_the_public_may_see(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    secrets_ = await seed(db_url, tenant_a)
    slug = tenant_a.slug
    async with running_server(settings) as client:
        for name, issue_id in secrets_.issues.items():
            r = await client.get(f"/t/{slug}/issues/{issue_id}.json")
            if name.startswith("shown"):
                assert r.status_code == 200, (name, r.text)
            else:
                assert r.status_code == 404, name
            assert not [s for s in secrets_.forbidden("anonymous") if s in r.text], name
        near = await client.get(f"/t/{slug}/nearby.json", params={"lat": LAT, "lon": LON})
        assert {i["id"] for i in near.json()["items"]} <= {
            str(secrets_.issues["shown"]),
            str(secrets_.issues["shown_too"]),
        }


async def test_a_hotel_guest_picks_the_room_instead_of_a_pin(
    settings: Settings, db_url: str
) -> None:
    hotel = await make_tenant(db_url, template="facility")
    async with running_server(settings) as client:
        r = await client.post(
            f"/v1/tenants/{hotel.slug}/places", json=HOTEL_PLACES, headers=hotel.headers("admin")
        )
        assert r.status_code == 200, r.text
        page = await client.get(f"/t/{hotel.slug}/report")
        places = config_of(page.text)["places"]
        assert {"code": "hotel-412", "name": "Harbor View Hotel, Room 412"} in places
        assert not [p for p in places if p["code"] in ("hotel", "hotel-f4")]  # not rooms
        sent = await client.post(
            f"/t/{hotel.slug}/report",
            json={"token": config_of(page.text)["token"], "text": "The AC is not cooling",
                  "place": "hotel-412", "track": secrets.token_urlsafe(24)},
        )  # fmt: skip
        assert sent.status_code == 202, sent.text
        unknown = await client.post(
            f"/t/{hotel.slug}/report",
            json={"token": config_of(page.text)["token"], "text": "The AC is not cooling",
                  "place": "hotel-999", "track": secrets.token_urlsafe(24)},
        )  # fmt: skip
        assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "place"
        report = await client.get(
            f"/v1/tenants/{hotel.slug}/reports/{sent.json()['id']}",
            headers=hotel.headers("staff"),
        )
        body = report.json()
        assert (body["lat"], body["lon"]) == HOTEL  # the building's point
        assert body["channel"] == "web"


async def test_an_admin_rotates_or_turns_off_the_report_form(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    slug = tenant_a.slug
    async with running_server(settings) as client:
        old = await token_of(client, slug)
        report = {"text": "Pothole", "lat": LAT, "lon": LON, "track": secrets.token_urlsafe(24)}
        refused = await client.put(f"/v1/tenants/{slug}/web-form", json={"rotate": True},
                                   headers=tenant_a.headers("staff"))  # fmt: skip
        assert refused.status_code == 403  # an admin's
        rotated = await client.put(f"/v1/tenants/{slug}/web-form", json={"rotate": True},
                                   headers=tenant_a.headers("admin"))  # fmt: skip
        assert rotated.status_code == 200 and rotated.json() == {"enabled": True}
        stale = await client.post(f"/t/{slug}/report", json={**report, "token": old})
        assert stale.status_code == 403  # a page loaded before cannot post
        fresh = await token_of(client, slug)
        assert fresh != old
        assert (
            await client.post(f"/t/{slug}/report", json={**report, "token": fresh})
        ).status_code == 202
        off = await client.put(f"/v1/tenants/{slug}/web-form", json={"enabled": False},
                               headers=tenant_a.headers("admin"))  # fmt: skip
        assert off.json() == {"enabled": False}
        assert (await client.get(f"/t/{slug}/report")).status_code == 404
        closed = await client.post(f"/t/{slug}/report", json={**report, "token": fresh})
        assert closed.status_code == 403
