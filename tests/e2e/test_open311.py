"""Open311 GeoReport v2, driven as a third-party app would drive it: over real HTTP, with
form posts, in JSON and in XML. XML is read with xml.dom.minidom, never with the code that
wrote it (xml.etree)."""

from __future__ import annotations

import asyncio
import datetime as dt
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


ROAD_ATTRIBUTES = [
    {"code": "depth", "datatype": "singlevaluelist", "required": True, "order": 1,
     "description": "How deep is it?",
     "values": [{"key": "shallow", "name": "Shallow"}, {"key": "deep", "name": "Deep"}]},
    {"code": "hazards", "datatype": "multivaluelist", "order": 2,
     "description": "What does it cause?",
     "values": [{"key": "cars swerving", "name": "Cars swerving"},
                {"key": "night", "name": "Hard to see at night"}]},
    {"code": "width_cm", "datatype": "number", "order": 3, "description": "Width in cm"},
    {"code": "note", "datatype": "text", "variable": False, "order": 4,
     "description": "Crews fill potholes within 3 business days."},
]  # fmt: skip


async def with_attributes(
    client: httpx.AsyncClient, tenant: TenantKeys, code: str, attributes: list[dict[str, Any]]
) -> None:
    """Give a category Open311 attributes through the REST API, as an admin would."""
    listed = await client.get(
        f"/v1/tenants/{tenant.slug}/categories", headers=tenant.headers("admin")
    )
    category = next(c for c in listed.json()["items"] if c["code"] == code)
    body = {k: v for k, v in category.items() if k != "code"} | {"attributes": attributes}
    put = await client.put(
        f"/v1/tenants/{tenant.slug}/categories/{code}", json=body, headers=tenant.headers("admin")
    )
    assert put.status_code == 200, put.text
    assert put.json()["attributes"][0]["code"] == attributes[0]["code"]


async def test_service_definitions_come_from_the_category(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    jurisdiction = {"jurisdiction_id": tenant_a.slug}
    async with running_server(settings) as client:
        await with_attributes(client, tenant_a, "road_defect", ROAD_ATTRIBUTES)
        listed = await client.get(f"{BASE}/services.json", params=jurisdiction)
        services = {s["service_code"]: s for s in listed.json()}
        assert services["ROAD"]["metadata"] is True and services["LIGHT"]["metadata"] is False
        definition = (await client.get(f"{BASE}/services/ROAD.json", params=jurisdiction)).json()
        assert definition["service_code"] == "ROAD"
        depth, hazards, width, note = definition["attributes"]
        assert depth == {
            "variable": True, "code": "depth", "datatype": "singlevaluelist", "required": True,
            "datatype_description": None, "order": 1, "description": "How deep is it?",
            "values": [{"key": "shallow", "name": "Shallow"}, {"key": "deep", "name": "Deep"}],
        }  # fmt: skip
        assert hazards["datatype"] == "multivaluelist" and width["values"] == []
        assert note["variable"] is False
        # The same in XML, read with an independent parser.
        xml = await client.get(f"{BASE}/services/ROAD.xml", params=jurisdiction)
        doc = minidom.parseString(xml.text)
        assert len(doc.getElementsByTagName("service_definition")) == 1
        codes = [
            a.getElementsByTagName("code")[0].firstChild.data
            for a in doc.getElementsByTagName("attribute")
        ]
        assert codes == ["depth", "hazards", "width_cm", "note"]
        keys = [v.getElementsByTagName("key")[0].firstChild.data
                for v in doc.getElementsByTagName("value")]  # fmt: skip
        assert keys == ["shallow", "deep", "cars swerving", "night"]
        # A definition the API cannot take is refused with the field named.
        bad = [{**ROAD_ATTRIBUTES[0], "values": []}]
        listed_rest = await client.get(
            f"/v1/tenants/{tenant_a.slug}/categories", headers=tenant_a.headers("admin")
        )
        road = next(c for c in listed_rest.json()["items"] if c["code"] == "road_defect")
        refused = await client.put(
            f"/v1/tenants/{tenant_a.slug}/categories/road_defect",
            json={k: v for k, v in road.items() if k != "code"} | {"attributes": bad},
            headers=tenant_a.headers("admin"),
        )
        assert refused.status_code == 422
        assert refused.json()["error"]["field"] == "attributes[0].values"


async def test_a_third_party_app_posts_with_attributes_polls_and_reads_back(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        await with_attributes(client, tenant_a, "road_defect", ROAD_ATTRIBUTES)
        base = {
            "jurisdiction_id": tenant_a.slug,
            "api_key": tenant_a.submit,
            "service_code": "ROAD",
            "lat": str(LAT),
            "long": str(LON),
        }
        # Answers the service's definition does not allow: the spec's 400, naming them.
        for wrong, says in [
            ({}, "attribute[depth] is required"),
            ({"attribute[depth]": "bottomless"}, "'bottomless' is not one of its values"),
            ({"attribute[depth]": "deep", "attribute[colour]": "red"}, "not an attribute"),
            ({"attribute[depth]": "deep", "attribute[width_cm]": "wide"}, "must be a number"),
            ({"attribute[depth][]": ["deep", "shallow"]}, "takes one value"),
        ]:
            refused = await client.post(f"{BASE}/requests.json", data={**base, **wrong})
            assert refused.status_code == 400, (wrong, refused.text)
            assert says in errors_of(refused)[0]["description"], refused.text
        # Every problem at once, as the spec's error lists allow.
        both = await client.post(f"{BASE}/requests.xml", data={**base, "attribute[colour]": "red"})
        assert both.status_code == 400
        assert [e["description"].split(" ")[0] for e in errors_of(both)] == [
            "attribute[colour]",
            "attribute[depth]",
        ]
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
                "attribute[width_cm]": "40",
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
            "width_cm": "40",
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


async def token_to_request(client: httpx.AsyncClient, slug: str, token: str) -> str:
    for _ in range(200):
        polled = await client.get(f"{BASE}/tokens/{token}.json", params={"jurisdiction_id": slug})
        request_id = polled.json()[0].get("service_request_id")
        if request_id:
            return str(request_id)
        await asyncio.sleep(0.05)
    raise AssertionError("the request never got an id")


async def test_a_back_office_syncs_changes_history_and_updates(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    """A request located by address only, worked through by staff; a back office follows it
    by incremental sync, notes[] and mySociety's servicerequestupdates."""
    slug = tenant_a.slug
    staff = tenant_a.headers("staff")
    async with running_server(settings) as client:
        started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        posted = await client.post(
            f"{BASE}/requests.xml",
            data={
                "jurisdiction_id": slug,
                "api_key": tenant_a.submit,
                "service_code": "LIGHT",
                "address_string": "1200 Victory Blvd, Apt 3",
                "description": "Street light out in front of the building",
            },
        )
        assert posted.status_code == 201, posted.text
        (answer,) = xml_items(posted.text, "request")
        request_id = await token_to_request(client, slug, answer["token"])
        (fresh,) = (
            await client.get(f"{BASE}/requests/{request_id}.json", params={"jurisdiction_id": slug})
        ).json()
        assert fresh["lat"] is None and fresh["long"] is None  # located by address only
        (full,) = (
            await client.get(
                f"{BASE}/requests/{request_id}.json",
                params={"jurisdiction_id": slug, "api_key": tenant_a.staff},
            )
        ).json()
        assert full["address"] == "1200 Victory Blvd, Apt 3"

        # Staff work it: triage, a comment, in progress, resolved.
        path = f"/v1/tenants/{slug}/issues/{request_id}"
        for step, body in [
            ("transition", {"to": "triaged", "note": "SECRETNOTE checked the pole"}),
            ("comments", {"note": "SECRETCOMMENT crew booked"}),
            ("transition", {"to": "in_progress"}),
            ("transition", {"to": "resolved", "note": "lamp replaced"}),
        ]:
            version = (await client.get(path, headers=staff)).json()["version"]
            r = await client.post(
                f"{path}/{step}", json={**body, "version": version}, headers=staff
            )
            assert r.status_code in (200, 201), r.text
        after_work = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)

        # Incremental sync: what changed since the client's last look, oldest change first.
        synced = await client.get(
            f"{BASE}/requests.json",
            params={"jurisdiction_id": slug, "updated_after": started.isoformat()},
        )
        assert synced.status_code == 200, synced.text
        (item,) = synced.json()
        assert item["service_request_id"] == request_id and item["status"] == "closed"
        nothing = await client.get(
            f"{BASE}/requests.json",
            params={"jurisdiction_id": slug, "updated_after": after_work.isoformat()},
        )
        assert nothing.json() == []
        bad = await client.get(
            f"{BASE}/requests.json", params={"jurisdiction_id": slug, "updated_after": "soon"}
        )
        assert bad.status_code == 400 and "updated_after" in errors_of(bad)[0]["description"]

        # notes[]: the public sees status changes without staff's words; staff see all.
        public = await client.get(
            f"{BASE}/requests/{request_id}.json",
            params={"jurisdiction_id": slug, "extensions": "true"},
        )
        (with_notes,) = public.json()
        summaries = [n["summary"] for n in with_notes["notes"]]
        assert summaries == [
            "Status changed to new",
            "Status changed to triaged",
            "Status changed to in progress",
            "Status changed to resolved",
        ], summaries
        assert "SECRET" not in public.text
        assert with_notes["extended_attributes"] == {"civicpulse_status": "resolved"}
        as_staff = await client.get(
            f"{BASE}/requests/{request_id}.xml",
            params={"jurisdiction_id": slug, "extensions": "true", "api_key": tenant_a.staff},
        )
        notes = xml_items(as_staff.text, "note")
        assert [n["type"] for n in notes] == ["status", "status", "comment", "status", "status"]
        assert notes[2]["summary"] == "SECRETCOMMENT crew booked"
        assert notes[1]["summary"] == "Status changed to triaged: SECRETNOTE checked the pole"

        # mySociety's update feed, with its extended statuses.
        updates = await client.get(
            f"{BASE}/servicerequestupdates.xml",
            params={"jurisdiction_id": slug, "start_date": started.isoformat()},
        )
        assert updates.status_code == 200, updates.text
        feed = xml_items(updates.text, "request_update")
        assert [(u["service_request_id"], u["status"]) for u in feed] == [
            (request_id, "open"),
            (request_id, "investigating"),
            (request_id, "in_progress"),
            (request_id, "fixed"),
        ]
        assert all(u["update_id"] and u["updated_datetime"] for u in feed)
        assert "SECRET" not in updates.text
        assert len({u["update_id"] for u in feed}) == 4


async def test_a_host_that_serves_one_tenant_needs_no_jurisdiction(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    one_host = settings.replace(open311_hosts=f"311.springfield.example={tenant_a.slug}")
    async with running_server(one_host) as client:
        named = await client.get(f"{BASE}/services.json", params={"jurisdiction_id": tenant_a.slug})
        own = await client.get(
            f"{BASE}/services.json", headers={"Host": "311.Springfield.example:443"}
        )
        assert own.status_code == 200 and own.json() == named.json()
        posted = await client.post(
            f"{BASE}/requests.json",
            data={"api_key": tenant_a.submit, "service_code": "LIGHT", "lat": str(LAT),
                  "long": str(LON)},
            headers={"Host": "311.springfield.example"},
        )  # fmt: skip
        assert posted.status_code == 201, posted.text
        elsewhere = await client.get(f"{BASE}/services.json")  # 127.0.0.1 serves every tenant
        assert elsewhere.status_code == 400
        assert "jurisdiction_id is required" in errors_of(elsewhere)[0]["description"]
