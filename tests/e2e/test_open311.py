"""Open311 GeoReport v2, driven as a third-party app would drive it: over real HTTP, with
form posts, in JSON and in XML. XML is read with xml.dom.minidom, never with the code that
wrote it (xml.etree)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from xml.dom import minidom

import httpx

from civicpulse.config import Settings
from tests.privacy import LAT, LON, seed
from tests.support import TenantKeys, running_server

BASE = "/open311/v2"


def xml_items(text: str, item: str) -> list[dict[str, str]]:
    """The <item> elements of an XML document as {child: text} (nested lists skipped)."""
    doc = minidom.parseString(text)
    out = []
    for node in doc.getElementsByTagName(item):
        fields = {}
        for child in node.childNodes:
            if child.nodeType == child.ELEMENT_NODE:
                fields[child.tagName] = "".join(
                    t.data for t in child.childNodes if t.nodeType == t.TEXT_NODE
                )
        out.append(fields)
    return out


def errors_of(response: httpx.Response) -> list[dict[str, Any]]:
    if response.headers["content-type"].startswith("text/xml"):
        return [
            {"code": int(e["code"]), "description": e["description"]}
            for e in xml_items(response.text, "error")
        ]
    body: list[dict[str, Any]] = response.json()
    return body


async def test_discovery_services_and_definitions_in_json_and_xml(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    jurisdiction = {"jurisdiction_id": tenant_a.slug}
    async with running_server(settings) as client:
        found = await client.get(f"{BASE}/discovery.json")
        assert found.status_code == 200
        (endpoint,) = found.json()["endpoints"]
        assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
        assert endpoint["url"].endswith("/open311/v2")
        assert set(endpoint["formats"]) == {"text/xml", "application/json"}
        xml = await client.get(f"{BASE}/discovery.xml")
        assert xml.headers["content-type"] == "text/xml; charset=utf-8"
        formats = minidom.parseString(xml.text).getElementsByTagName("format")
        assert {f.firstChild.data for f in formats} == {"text/xml", "application/json"}

        listed = await client.get(f"{BASE}/services.json", params=jurisdiction)
        assert listed.headers["content-type"] == "application/json; charset=utf-8"
        services = {s["service_code"]: s for s in listed.json()}
        road = services["ROAD"]
        assert road["metadata"] is False and road["type"] == "realtime"
        assert set(road) == {
            "service_code",
            "service_name",
            "description",
            "metadata",
            "type",
            "keywords",
            "group",
        }
        as_xml = xml_items(
            (await client.get(f"{BASE}/services.xml", params=jurisdiction)).text, "service"
        )
        assert {s["service_code"] for s in as_xml} == set(services)
        assert next(s for s in as_xml if s["service_code"] == "ROAD")["metadata"] == "false"

        definition = await client.get(f"{BASE}/services/ROAD.json", params=jurisdiction)
        assert definition.json() == {"service_code": "ROAD", "attributes": []}
        missing = await client.get(f"{BASE}/services/NOPE.xml", params=jurisdiction)
        assert missing.status_code == 404 and errors_of(missing)[0]["code"] == 404


async def test_a_third_party_app_posts_with_attributes_polls_and_reads_back(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        posted = await client.post(
            f"{BASE}/requests.json",
            data={
                "jurisdiction_id": tenant_a.slug,
                "api_key": tenant_a.submit,
                "service_code": "ROAD",
                "lat": str(LAT),
                "long": str(LON),
                "address_string": "12 Main St",
                "description": "Deep pothole in the right lane, cars swerving",
                "attribute[depth]": "deep",
                "attribute[hazards][]": ["cars swerving", "night"],
                "media_url": "https://example.org/pothole.jpg",
                "first_name": "Ana",
                "last_name": "Ruiz",
                "email": "ana@example.org",
                "device_id": "phone-7",
            },
        )
        assert posted.status_code == 201, posted.text
        (answer,) = posted.json()
        token = answer["token"]
        assert "service_request_id" not in answer  # never both; the id comes later

        # Poll the token until the report has joined an issue.
        request_id = None
        for _ in range(200):
            polled = await client.get(
                f"{BASE}/tokens/{token}.json", params={"jurisdiction_id": tenant_a.slug}
            )
            assert polled.status_code == 200
            request_id = polled.json()[0].get("service_request_id")
            if request_id:
                break
            await asyncio.sleep(0.05)
        assert request_id, "the request never got an id"

        read = await client.get(
            f"{BASE}/requests/{request_id}.json", params={"jurisdiction_id": tenant_a.slug}
        )
        (public,) = read.json()
        assert public["status"] == "open" and public["service_code"] == "ROAD"
        assert public["description"] is None and public["address"] is None  # public view
        assert public["requested_datetime"] and public["lat"] == LAT
        staff = await client.get(
            f"{BASE}/requests/{request_id}.xml",
            params={"jurisdiction_id": tenant_a.slug, "api_key": tenant_a.staff},
        )
        (full,) = xml_items(staff.text, "request")
        assert full["description"].startswith("Deep pothole")
        assert full["address"] == "12 Main St"
        assert full["media_url"] == "https://example.org/pothole.jpg"

        # The report kept the attributes, multi-valued ones as lists, and the contact.
        report = (
            await client.get(
                f"/v1/tenants/{tenant_a.slug}/reports/{token}", headers=tenant_a.headers("staff")
            )
        ).json()
        assert report["attributes"] == {
            "depth": "deep",
            "hazards": ["cars swerving", "night"],
            "device_id": "phone-7",
        }

        # Idempotent on retry, like the REST intake.
        once = {
            "jurisdiction_id": tenant_a.slug,
            "api_key": tenant_a.submit,
            "service_code": "LIGHT",
            "lat": str(LAT),
            "long": str(LON),
        }
        first = await client.post(
            f"{BASE}/requests.json", data=once, headers={"Idempotency-Key": "retry-1"}
        )
        again = await client.post(
            f"{BASE}/requests.json", data=once, headers={"Idempotency-Key": "retry-1"}
        )
        assert first.json()[0]["token"] == again.json()[0]["token"]


async def test_errors_are_the_specs_lists_with_its_codes(
    settings: Settings, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    good = {
        "jurisdiction_id": tenant_a.slug,
        "api_key": tenant_a.submit,
        "service_code": "ROAD",
        "lat": str(LAT),
        "long": str(LON),
    }
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "services.json", {}, 400),
        ("GET", "services.json", {"jurisdiction_id": "nowhere"}, 404),
        ("GET", "services.yaml", {"jurisdiction_id": tenant_a.slug}, 404),
        ("POST", "requests.json", {**good, "api_key": ""}, 403),
        ("POST", "requests.xml", {**good, "api_key": "cp_nope"}, 403),
        ("POST", "requests.json", {**good, "api_key": tenant_b.submit}, 403),
        ("POST", "requests.json", {**good, "service_code": ""}, 400),
        ("POST", "requests.json", {**good, "service_code": "NOPE"}, 404),
        ("POST", "requests.xml", {k: v for k, v in good.items() if k != "lat"}, 400),
        ("POST", "requests.json", {**good, "lat": "north"}, 400),
        ("POST", "requests.json", {**good, "description": "x" * 4001}, 400),
        ("POST", "requests.xml", {**good, "description": "x" * 70_000}, 413),  # 64 KiB
        (
            "GET",
            "requests.json",
            {
                "jurisdiction_id": tenant_a.slug,
                "start_date": "2024-01-01",
                "end_date": "2024-06-01",
            },
            400,
        ),
        ("GET", "requests.json", {"jurisdiction_id": tenant_a.slug, "status": "lost"}, 400),
        ("GET", "requests/nope.json", {"jurisdiction_id": tenant_a.slug}, 404),
        ("GET", "tokens/nope.xml", {"jurisdiction_id": tenant_a.slug}, 404),
    ]
    async with running_server(settings) as client:
        for method, path, params, status in cases:
            if method == "GET":
                r = await client.get(f"{BASE}/{path}", params=params)
            else:
                r = await client.post(f"{BASE}/{path}", data=params)
            assert r.status_code == status, (method, path, params, r.text)
            (error,) = errors_of(r)
            assert error["code"] == status and error["description"], (path, r.text)
        # A JSON body is not the spec's form.
        r = await client.post(f"{BASE}/requests.json", json=good)
        assert r.status_code == 400 and "form" in errors_of(r)[0]["description"]


async def test_public_reads_show_what_the_public_may_see_only(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    secrets = await seed(db_url, tenant_a)
    shown = {str(secrets.issues["shown"]), str(secrets.issues["shown_too"])}
    jurisdiction = {"jurisdiction_id": tenant_a.slug}
    async with running_server(settings) as client:
        for fmt in ("json", "xml"):
            r = await client.get(f"{BASE}/requests.{fmt}", params=jurisdiction)
            assert r.status_code == 200, r.text
            items = r.json() if fmt == "json" else xml_items(r.text, "request")
            assert {i["service_request_id"] for i in items} == shown
            assert not [s for s in secrets.forbidden("anonymous") if s in r.text], r.text
            statuses = {i["service_request_id"]: i["status"] for i in items}
            assert statuses[str(secrets.issues["shown_too"])] == "closed"
            assert statuses[str(secrets.issues["shown"])] == "open"
        # Named ones the public may not see are simply not there.
        named = ",".join(str(i) for i in secrets.issues.values())
        r = await client.get(
            f"{BASE}/requests.json", params={**jurisdiction, "service_request_id": named}
        )
        assert {i["service_request_id"] for i in r.json()} == shown
        r = await client.get(
            f"{BASE}/requests/{secrets.issues['private']}.json", params=jurisdiction
        )
        assert r.status_code == 404
        # Filters: status, and a service with nothing public.
        r = await client.get(f"{BASE}/requests.json", params={**jurisdiction, "status": "open"})
        assert [i["service_request_id"] for i in r.json()] == [str(secrets.issues["shown"])]
        r = await client.get(
            f"{BASE}/requests.json", params={**jurisdiction, "service_code": "GRAF"}
        )
        assert r.json() == []
        # Staff (an api_key of staff scope) read every request, with its words.
        r = await client.get(
            f"{BASE}/requests.json", params={**jurisdiction, "api_key": tenant_a.staff}
        )
        assert {i["service_request_id"] for i in r.json()} == {
            str(i) for i in secrets.issues.values()
        }
        assert "SECRETTEXT-private" in json.dumps(r.json())
        # Pages.
        r = await client.get(
            f"{BASE}/requests.json",
            params={**jurisdiction, "api_key": tenant_a.staff, "page_size": "4", "page": "2"},
        )
        assert len(r.json()) == 2


async def test_a_merged_duplicate_says_what_it_duplicates(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    secrets = await seed(db_url, tenant_a)
    source, target = secrets.issues["shown"], secrets.issues["hidden_area"]
    staff = tenant_a.headers("staff")
    async with running_server(settings) as client:
        issue = (
            await client.get(f"/v1/tenants/{tenant_a.slug}/issues/{source}", headers=staff)
        ).json()
        merged = await client.post(
            f"/v1/tenants/{tenant_a.slug}/issues/{source}/merge",
            json={"into": str(target), "version": issue["version"]},
            headers=staff,
        )
        assert merged.status_code == 200, merged.text
        r = await client.get(
            f"{BASE}/requests/{source}.json", params={"jurisdiction_id": tenant_a.slug}
        )
        (request,) = r.json()
        assert request["status"] == "closed"
        assert request["status_notes"] == f"Duplicate of {target}"
