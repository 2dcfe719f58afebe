"""Open311 conformance against the GeoReport v2 spec's own example documents
(tests/data/open311_spec, copied from the spec page; see tests/data/README.md): every
document the service answers has the spec example's elements, in its order, in XML and in
JSON; and the spec's example requests.xml and requests.json import as a dump. XML is read
with xml.dom.minidom, never with the code that wrote it (xml.etree)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.dom import minidom

import asyncpg
import httpx
import pytest

from civicpulse.config import Settings
from tests.e2e.test_open311 import BASE, token_to_request, with_attributes
from tests.privacy import LAT, LON
from tests.support import TenantKeys, env_without_civicpulse, running_server

SPEC = Path(__file__).resolve().parents[1] / "data" / "open311_spec"


def elements(node: Any) -> list[Any]:
    return [c for c in node.childNodes if c.nodeType == c.ELEMENT_NODE]


def shape(node: Any) -> tuple[str, tuple[Any, ...]]:
    """An element's tag and its children's shapes, in order; repeated children (list items)
    once, so two lists of different lengths have one shape."""
    children: list[Any] = []
    for child in elements(node):
        s = shape(child)
        if not children or children[-1] != s:
            children.append(s)
    return node.tagName, tuple(children)


def xml_shape(text: str) -> tuple[str, tuple[Any, ...]]:
    return shape(minidom.parseString(text.encode()).documentElement)


def spec_xml(name: str) -> tuple[str, tuple[Any, ...]]:
    return xml_shape((SPEC / name).read_text())


def spec_json(name: str) -> Any:
    """The spec's JSON example. Its codes are written as numbers with leading zeros
    ("service_code":006), which no JSON parser takes: read as the strings they mean."""
    return json.loads(re.sub(r'":(0\d+)\b', r'":"\1"', (SPEC / name).read_text()))


def keys(value: Any) -> Any:
    """A JSON value's shape: objects as their keys in order (with their values' shapes),
    lists as their first item's shape."""
    if isinstance(value, dict):
        return tuple((k, keys(v)) for k, v in value.items())
    if isinstance(value, list):
        return ("[]", keys(value[0]) if value else None)
    return None


async def test_every_document_has_the_spec_examples_shape(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    jurisdiction = {"jurisdiction_id": tenant_a.slug}
    async with running_server(settings) as client:
        await with_attributes(
            client,
            tenant_a,
            "road_defect",
            [{"code": "WHISHETN", "datatype": "singlevaluelist", "required": True,
              "description": "What is the ticket/tag/DL number?",
              "values": [{"key": "123", "name": "Ford"}, {"key": "124", "name": "Chrysler"}]}],
        )  # fmt: skip

        async def get(path: str, **params: str) -> httpx.Response:
            r = await client.get(f"{BASE}/{path}", params={**jurisdiction, **params})
            assert r.status_code == 200, r.text
            return r

        # Discovery: the spec's first endpoint is the shape of every endpoint.
        ours = xml_shape((await get("discovery.xml")).text)
        assert ours == spec_xml("discovery.xml")
        assert keys((await get("discovery.json")).json()) == keys(spec_json("discovery.json"))

        # Services: the spec's first service (its others list the same fields reordered).
        root, services = spec_xml("services.xml")
        assert {frozenset(fields) for _, fields in services} == {frozenset(services[0][1])}
        assert xml_shape((await get("services.xml")).text) == (root, services[:1])
        ours_json = (await get("services.json")).json()
        assert keys(ours_json) == keys(spec_json("services.json"))

        # A service definition, with its attribute and values.
        assert xml_shape((await get("services/ROAD.xml")).text) == spec_xml(
            "service_definition.xml"
        )
        definition = (await get("services/ROAD.json")).json()
        assert keys(definition) == keys(spec_json("service_definition.json"))
        assert definition["attributes"][0]["values"] == [
            {"key": "123", "name": "Ford"},
            {"key": "124", "name": "Chrysler"},
        ]

        # POST: the spec's answer, with the token this service gives (never both).
        form = {**jurisdiction, "api_key": tenant_a.submit, "service_code": "ROAD",
                "lat": str(LAT), "long": str(LON), "attribute[WHISHETN]": "123",
                "description": "A large sinkhole is destroying the street"}  # fmt: skip
        posted = await client.post(f"{BASE}/requests.xml", data=form)
        assert posted.status_code == 201, posted.text
        spec_post = spec_xml("post_response.xml")
        token_first = ("service_requests", (("request", (("token", ()),
                       *spec_post[1][0][1][1:])),))  # fmt: skip
        assert xml_shape(posted.text) == token_first
        posted_json = await client.post(f"{BASE}/requests.json", data=form)
        (answer,) = posted_json.json()
        assert list(answer) == ["token", *list(spec_json("post_response.json")[0])[1:]]

        # The token, then the request, in the spec's field order.
        request_id = await token_to_request(client, tenant_a.slug, answer["token"])
        token = answer["token"]
        assert xml_shape((await get(f"tokens/{token}.xml")).text) == spec_xml("token.xml")
        assert keys((await get(f"tokens/{token}.json")).json()) == keys(spec_json("token.json"))
        staff = {"api_key": tenant_a.staff}
        assert xml_shape((await get("requests.xml", **staff)).text) == spec_xml("requests.xml")
        listed = (await get("requests.json", **staff)).json()
        assert keys(listed) == keys(spec_json("requests.json"))
        one = (await get(f"requests/{request_id}.xml")).text
        assert xml_shape(one) == spec_xml("requests.xml")

        # Errors.
        refused = await client.post(
            f"{BASE}/requests.xml", data={**form, "api_key": "cp_not_a_key"}
        )
        assert refused.status_code == 403
        assert xml_shape(refused.text) == spec_xml("error.xml")
        refused_json = await client.post(
            f"{BASE}/requests.json", data={**form, "api_key": "cp_not_a_key"}
        )
        assert keys(refused_json.json()) == keys(spec_json("error.json"))


def import_command(db_url: str, path: Path, slug: str) -> subprocess.CompletedProcess[str]:
    env = {**env_without_civicpulse(), "CIVICPULSE_DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "civicpulse", "import", str(path), "--tenant", slug,
         "--format", "open311", "--quiet"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["requests.xml", "requests.json"])
async def test_the_spec_example_requests_import_as_a_dump(
    db_url: str, tenant_a: TenantKeys, tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    if name.endswith(".json"):  # as a server would write it: valid JSON
        path.write_text(json.dumps(spec_json(name)))
    else:
        path.write_text((SPEC / name).read_text())
    done = import_command(db_url, path, tenant_a.slug)
    assert done.returncode == 0, done.stderr
    assert "read 2 rows: 2 imported" in done.stdout, done.stdout
    conn = await asyncpg.connect(db_url)
    try:
        rows = {
            r["source_id"]: r
            for r in await conn.fetch(
                """SELECT r.source_id, r.text, r.lat, r.lon, r.address, r.submitted_at,
                          r.attributes, i.status, i.closed_at
                     FROM reports r JOIN issues i ON i.tenant_id = r.tenant_id
                                                 AND i.id = r.issue_id
                    WHERE r.tenant_id = $1""",
                tenant_a.id,
            )
        }
    finally:
        await conn.close()
    closed, still_open = rows["638344"], rows["638349"]
    assert closed["text"] == "Sidewalk and Curb Issues"  # no description: the service's name
    assert (closed["lat"], closed["lon"]) == (37.762221815, -122.4651145)
    assert closed["address"] == "8TH AVE and JUDAH ST"
    assert closed["submitted_at"].isoformat() == "2010-04-14T14:37:38+00:00"
    assert closed["status"] == "closed" and closed["closed_at"] == closed["submitted_at"]
    attributes = json.loads(closed["attributes"])
    assert attributes["status_notes"] == "Duplicate request."
    assert attributes["service_code"] == "006" and attributes["address_id"] == "545483"
    assert still_open["status"] == "new" and still_open["closed_at"] is None
