"""Reports located by address only: accepted, grouped by normalised address (house number,
street, unit), and given coordinates later by the tenant's geocoder, a real HTTP server that
speaks Nominatim's search API, asked once per address."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from aiohttp import web

from civicpulse.config import Settings
from tests.e2e.test_grouping import grouped
from tests.support import TenantKeys, free_port, running_server

MAIN_123 = (37.7793, -122.4193)


async def post(
    client: httpx.AsyncClient, tenant: TenantKeys, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        f"/v1/tenants/{tenant.slug}/reports", json=body, headers=tenant.headers()
    )


async def by_address(
    client: httpx.AsyncClient, tenant: TenantKeys, text: str, address: str, **extra: Any
) -> str:
    r = await post(client, tenant, {"text": text, "address": address, **extra})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def issue_of(client: httpx.AsyncClient, tenant: TenantKeys, issue_id: str) -> dict[str, Any]:
    r = await client.get(
        f"/v1/tenants/{tenant.slug}/issues/{issue_id}", headers=tenant.headers("staff")
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_reports_by_address_alone_are_grouped_by_their_normalised_address(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        # Neither a point nor an address: nowhere. Half a point: an error naming the field.
        nowhere = await post(client, tenant_a, {"text": "Pothole"})
        assert nowhere.status_code == 422 and nowhere.json()["error"]["field"] == "lat"
        half = await post(client, tenant_a, {"text": "Pothole", "lat": 37.7})
        assert half.status_code == 422 and half.json()["error"]["field"] == "lon"
        ids = [
            await by_address(client, tenant_a, "Deep pothole in the road", "123 N. Main Street"),
            await by_address(
                client, tenant_a, "pothole in the road, deep", "123 north main st, San Francisco"
            ),
            await by_address(client, tenant_a, "Deep pothole in the road", "125 N Main St"),
        ]
        first, second, next_door = await grouped(client, tenant_a, ids)
        assert first["lat"] is None and first["address"] == "123 N. Main Street"
        assert first["issue_id"] == second["issue_id"]  # the same address: one issue
        assert next_door["issue_id"] != first["issue_id"]  # the next house: another
        issue = await issue_of(client, tenant_a, first["issue_id"])
        assert issue["report_count"] == 2 and issue["lat"] is None and issue["lon"] is None
        # A report with a point at the same address joins the issue that has none, and
        # gives it its point.
        located = await by_address(
            client,
            tenant_a,
            "Deep pothole in the road here",
            "123 N Main St",
            lat=MAIN_123[0],
            lon=MAIN_123[1],
        )
        (report,) = await grouped(client, tenant_a, [located])
        assert report["issue_id"] == first["issue_id"]
        issue = await issue_of(client, tenant_a, first["issue_id"])
        assert issue["report_count"] == 3
        assert (issue["lat"], issue["lon"]) == MAIN_123  # the mean of the reports with points
        # Apartments at one address are different places.
        units = [
            await by_address(client, tenant_a, "No heat in the apartment", "40 Oak St Apt 4B"),
            await by_address(client, tenant_a, "no heat in my apartment", "40 Oak Street #4b"),
            await by_address(client, tenant_a, "No heat in the apartment", "40 Oak St Apt 7C"),
        ]
        a4, a4_again, a7 = await grouped(client, tenant_a, units)
        assert a4["issue_id"] == a4_again["issue_id"] != a7["issue_id"]


class Nominatim:
    """A Nominatim search endpoint over real HTTP that knows a few addresses and counts what
    it is asked."""

    def __init__(self, known: dict[str, tuple[float, float]]) -> None:
        self.known = known
        self.asked: list[dict[str, str]] = []
        self.fail_next = 0

    async def search(self, request: web.Request) -> web.Response:
        self.asked.append(dict(request.query))
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503, text="busy")
        query = request.query["q"].lower()
        hits = [
            {"lat": str(lat), "lon": str(lon), "display_name": name, "place_id": 1}
            for name, (lat, lon) in self.known.items()
            if query.startswith(name)
        ]
        return web.json_response(hits[:1])


@contextlib.asynccontextmanager
async def serving(nominatim: Nominatim) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/search", nominatim.search)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/search"
    finally:
        await runner.cleanup()


async def wait_for(check: Any, timeout: float = 20.0) -> Any:
    for _ in range(int(timeout / 0.1)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout}s")


async def test_the_geocoder_gives_points_later_once_per_address(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    nominatim = Nominatim({"123 n. main street": MAIN_123, "9 elm st": (37.76, -122.43)})
    fast = settings.replace(geocode_every_seconds=0.2, geocode_min_interval_seconds=0.0)
    async with serving(nominatim) as url, running_server(fast) as client:
        admin = tenant_a.headers("admin")
        geocoder = f"/v1/tenants/{tenant_a.slug}/geocoder"
        assert (await client.get(geocoder, headers=admin)).status_code == 404
        bad = await client.put(geocoder, json={"url": "ftp://x"}, headers=admin)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "url"
        # Two spellings of one address, an address it does not know, and a bare street.
        ids = [
            await by_address(client, tenant_a, "Streetlight out", "123 N. Main Street"),
            await by_address(client, tenant_a, "streetlight is out", "123 North Main St"),
            await by_address(client, tenant_a, "Streetlight out", "77 Nowhere Rd"),
            await by_address(client, tenant_a, "Streetlight out", "Main St"),
        ]
        before = await grouped(client, tenant_a, ids)
        assert all(r["lat"] is None for r in before)
        nominatim.fail_next = 1  # its first answer is a 503: retried on a later round
        put = await client.put(
            geocoder,
            json={"url": url, "email": "ops@example.org", "countrycodes": "us",
                  "suffix": "San Francisco, CA"},
            headers=admin,
        )  # fmt: skip
        assert put.status_code == 201, put.text

        async def located() -> list[dict[str, Any]] | None:
            reports = [
                (
                    await client.get(
                        f"/v1/tenants/{tenant_a.slug}/reports/{i}", headers=tenant_a.headers()
                    )
                ).json()
                for i in ids[:2]
            ]
            return reports if all(r["lat"] is not None for r in reports) else None

        main, main_again = await wait_for(located)
        assert (main["lat"], main["lon"]) == MAIN_123 == (main_again["lat"], main_again["lon"])
        issue = await wait_for(
            lambda: _issue_with_point(client, tenant_a, main["issue_id"]), timeout=10
        )
        assert (issue["lat"], issue["lon"]) == MAIN_123
        # Asked once per normalised address (plus the failed try), with the tenant's
        # settings; the bare street never.
        queries = [a["q"] for a in nominatim.asked]
        assert queries == [
            "123 N. Main Street, San Francisco, CA",  # the 503 (addresses go in key order)
            "77 Nowhere Rd, San Francisco, CA",  # not found: never asked again
            "123 N. Main Street, San Francisco, CA",  # the next round's retry
        ], queries
        assert all(
            a["format"] == "jsonv2" and a["email"] == "ops@example.org"
            and a["countrycodes"] == "us" and a["limit"] == "1"
            for a in nominatim.asked
        )  # fmt: skip
        # Rounds go on; nothing more is asked: the unknown address and the bare street are
        # given up on, the known one is cached.
        await asyncio.sleep(1.0)
        assert len(nominatim.asked) == 3
        nowhere, street = [
            (
                await client.get(
                    f"/v1/tenants/{tenant_a.slug}/reports/{i}", headers=tenant_a.headers()
                )
            ).json()
            for i in ids[2:]
        ]
        assert nowhere["lat"] is None and street["lat"] is None
        # A new report at the known address is placed from the cache, without asking.
        again = await by_address(client, tenant_a, "Streetlight out again", "123 n main st")

        async def cached() -> bool:
            r = await client.get(
                f"/v1/tenants/{tenant_a.slug}/reports/{again}", headers=tenant_a.headers()
            )
            return r.json()["lat"] is not None

        await wait_for(cached)
        assert len(nominatim.asked) == 3


async def _issue_with_point(
    client: httpx.AsyncClient, tenant: TenantKeys, issue_id: str
) -> dict[str, Any] | None:
    issue = await issue_of(client, tenant, issue_id)
    return issue if issue["lat"] is not None else None
