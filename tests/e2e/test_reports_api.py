"""The report API over real HTTP: validation, auth, idempotency, tenant isolation."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from civicpulse.config import Settings
from tests.support import TenantKeys, running_server

REPORT = {"text": "Pothole on Main St near the school", "lat": 34.05, "lon": -118.25}


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "field"} <= set(body["error"]), body
    return dict(body["error"])


async def count_rows(db_url: str, tenant_id: int | None = None) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        if tenant_id is None:
            return int(await conn.fetchval("SELECT count(*) FROM reports"))
        return int(
            await conn.fetchval("SELECT count(*) FROM reports WHERE tenant_id = $1", tenant_id)
        )
    finally:
        await conn.close()


async def test_accepted_report_is_committed_and_readable(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        r = await client.post(
            f"/v1/tenants/{tenant_a.slug}/reports",
            json={
                **REPORT,
                "address": "1 Main St",
                "category": "ROAD",
                "channel": "mobile",
                "reporter": {"name": "Ana", "email": "ana@example.org"},
                "attributes": {"lane": "north"},
                "media_urls": ["https://img.example/1.jpg"],
                "submitted_at": "2026-11-27T08:00:00-08:00",
            },
            headers=tenant_a.headers(),
        )
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "received"
        assert body["links"]["self"] == f"/v1/tenants/{tenant_a.slug}/reports/{body['id']}"
        # Acknowledged means committed: the row is visible to another connection right now.
        assert await count_rows(db_url, tenant_a.id) == 1

        got = await client.get(body["links"]["self"], headers=tenant_a.headers())
        assert got.status_code == 200
        report = got.json()
        assert report["id"] == body["id"]
        assert report["requested_category"] == "road_defect"  # service code resolved
        assert report["attributes"] == {"lane": "north"}
        assert report["media_urls"] == ["https://img.example/1.jpg"]
        assert report["submitted_at"].startswith("2026-11-27T16:00:00")
        assert "reporter" not in report  # contact details are not echoed back


async def test_pipeline_classifies_within_a_second(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    async with running_server(settings) as client:
        r = await client.post(
            f"/v1/tenants/{tenant_a.slug}/reports",
            json={**REPORT, "text": "Smell of gas outside number 12, very strong"},
            headers=tenant_a.headers(),
        )
        url = r.json()["links"]["self"]
        report: dict[str, Any] = {}
        for _ in range(50):
            report = (await client.get(url, headers=tenant_a.headers())).json()
            if report["status"] in ("classified", "grouped"):
                break
            await asyncio.sleep(0.02)
        assert report["status"] in ("classified", "grouped")
        assert report["category"] == "hazard"
        assert report["severity"] == 5
        assert report["classification"]["decided_by"] == "local"


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"{not json", 400, "malformed_json", None),
        (b"[]", 422, "invalid", None),
        (b'{"lat": 1, "lon": 2}', 422, "invalid", "text"),
        (b'{"text": "x", "lat": "north", "lon": 2}', 422, "invalid", "lat"),
        (b'{"text": "x", "lat": 91, "lon": 2}', 422, "invalid", "lat"),
        (b'{"text": "x", "lat": 1, "lon": -181}', 422, "invalid", "lon"),
        (b'{"text": "x", "lat": 1, "lon": 2, "colour": "red"}', 422, "invalid", "colour"),
        (b'{"text": "", "lat": 1, "lon": 2}', 422, "invalid", "text"),
        (b'{"text": "x", "lat": 1, "lon": 2, "category": "nope"}', 422, "invalid", "category"),
        (
            b'{"text": "x", "lat": 1, "lon": 2, "submitted_at": "2026-01-01T00:00:00"}',
            422,
            "invalid",
            "submitted_at",
        ),
        (
            b'{"text": "x", "lat": 1, "lon": 2, "reporter": {"email": "nope"}}',
            422,
            "invalid",
            "reporter.email",
        ),
        (
            b'{"text": "x", "lat": 1, "lon": 2, "media_urls": ["file:///etc/passwd"]}',
            422,
            "invalid",
            "media_urls[0]",
        ),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    settings: Settings,
    db_url: str,
    tenant_a: TenantKeys,
    body: bytes,
    status: int,
    code: str,
    field: str | None,
) -> None:
    async with running_server(settings) as client:
        r = await client.post(
            f"/v1/tenants/{tenant_a.slug}/reports",
            content=body,
            headers={**tenant_a.headers(), "Content-Type": "application/json"},
        )
        assert r.status_code == status, r.text
        err = error_of(r)
        assert err["code"] == code
        assert err["field"] == field
    assert await count_rows(db_url) == 0


async def test_text_limit_size_limit_and_content_type(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    url = f"/v1/tenants/{tenant_a.slug}/reports"
    async with running_server(settings) as client:
        r = await client.post(url, json={**REPORT, "text": "a" * 4001}, headers=tenant_a.headers())
        assert r.status_code == 422 and error_of(r)["field"] == "text"
        r = await client.post(url, json={**REPORT, "text": "é" * 4000}, headers=tenant_a.headers())
        assert r.status_code == 202  # the limit counts characters, not bytes
        r = await client.post(
            url, json={**REPORT, "attributes": {"x": "a" * 70_000}}, headers=tenant_a.headers()
        )
        assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"
        r = await client.post(
            url,
            content=b"text=x",
            headers={**tenant_a.headers(), "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 415 and error_of(r)["field"] == "content-type"
    assert await count_rows(db_url) == 1


async def test_auth_outcomes(
    settings: Settings, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    url = f"/v1/tenants/{tenant_a.slug}/reports"
    async with running_server(settings) as client:
        r = await client.post(url, json=REPORT)
        assert r.status_code == 401 and error_of(r)["field"] == "authorization"
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await client.post(url, json=REPORT, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        # A valid key of another tenant: 404, exactly as for a tenant that does not exist.
        r = await client.post(url, json=REPORT, headers=tenant_b.headers())
        assert r.status_code == 404
        r = await client.post("/v1/tenants/nobody/reports", json=REPORT, headers=tenant_b.headers())
        assert r.status_code == 404
        # Scope: listing reports is staff work.
        r = await client.get(url, headers=tenant_a.headers("submit"))
        assert r.status_code == 403 and error_of(r)["code"] == "forbidden"
        r = await client.get(url, headers=tenant_a.headers("staff"))
        assert r.status_code == 200


async def test_tenants_never_see_each_others_reports(
    settings: Settings, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    async with running_server(settings) as client:
        a = (
            await client.post(
                f"/v1/tenants/{tenant_a.slug}/reports", json=REPORT, headers=tenant_a.headers()
            )
        ).json()
        b = (
            await client.post(
                f"/v1/tenants/{tenant_b.slug}/reports",
                json={**REPORT, "text": "bravo only"},
                headers=tenant_b.headers(),
            )
        ).json()
        # B's report id through A's own URL and key: not found, same as a random id.
        r = await client.get(
            f"/v1/tenants/{tenant_a.slug}/reports/{b['id']}", headers=tenant_a.headers()
        )
        assert r.status_code == 404
        r = await client.get(
            f"/v1/tenants/{tenant_a.slug}/reports/{uuid.uuid4()}", headers=tenant_a.headers()
        )
        assert r.status_code == 404
        r = await client.get(
            f"/v1/tenants/{tenant_b.slug}/reports/{b['id']}", headers=tenant_a.headers()
        )
        assert r.status_code == 404
        listed = (
            await client.get(
                f"/v1/tenants/{tenant_a.slug}/reports", headers=tenant_a.headers("staff")
            )
        ).json()
        assert [item["id"] for item in listed["items"]] == [a["id"]]


async def test_idempotency_key_replays_and_conflicts(
    settings: Settings, db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    url = f"/v1/tenants/{tenant_a.slug}/reports"
    headers = {**tenant_a.headers(), "Idempotency-Key": "retry-1"}
    async with running_server(settings) as client:
        first = await client.post(url, json=REPORT, headers=headers)
        again = await client.post(url, json=REPORT, headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        other = await client.post(url, json={**REPORT, "text": "different"}, headers=headers)
        assert other.status_code == 409 and error_of(other)["field"] == "idempotency-key"
        # Concurrent retries with one key still make one row.
        burst = await asyncio.gather(
            *[
                client.post(
                    url, json=REPORT, headers={**tenant_a.headers(), "Idempotency-Key": "burst"}
                )
                for _ in range(20)
            ]
        )
        assert {r.status_code for r in burst} == {202}
        assert len({r.json()["id"] for r in burst}) == 1
        # Keys are per tenant: B may use the same key freely.
        b = await client.post(
            f"/v1/tenants/{tenant_b.slug}/reports",
            json=REPORT,
            headers={**tenant_b.headers(), "Idempotency-Key": "retry-1"},
        )
        assert b.status_code == 202 and b.json()["id"] != first.json()["id"]
    assert await count_rows(db_url, tenant_a.id) == 2


async def test_batch_accepts_good_items_and_rejects_bad_ones(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    url = f"/v1/tenants/{tenant_a.slug}/reports/batch"
    items = [
        REPORT,
        {"text": "x", "lat": 100, "lon": 0},
        {**REPORT, "text": "graffiti"},
        {"text": "y", "lat": 1, "lon": 1, "bogus": True},
    ]
    headers = {**tenant_a.headers(), "Idempotency-Key": "batch-1"}
    async with running_server(settings) as client:
        r = await client.post(url, json=items, headers=headers)
        assert r.status_code == 207
        body = r.json()
        assert (body["accepted"], body["rejected"]) == (2, 2)
        statuses = [(x["index"], x["status"]) for x in body["results"]]
        assert statuses == [(0, "accepted"), (1, "rejected"), (2, "accepted"), (3, "rejected")]
        assert body["results"][1]["error"]["field"] == "[1].lat"
        assert body["results"][3]["error"]["field"] == "[3].bogus"
        # The same batch again replays item by item: no new rows.
        again = (await client.post(url, json=items, headers=headers)).json()
        assert [x.get("id") for x in again["results"]] == [x.get("id") for x in body["results"]]

        too_many = await client.post(url, json=[REPORT] * 1001, headers=tenant_a.headers())
        assert too_many.status_code == 422 and error_of(too_many)["field"] == "body"
        full = await client.post(url, json=[REPORT] * 1000, headers=tenant_a.headers())
        assert full.status_code == 202 and full.json()["accepted"] == 1000
    assert await count_rows(db_url, tenant_a.id) == 1002


async def test_list_reports_pages_with_a_cursor(settings: Settings, tenant_a: TenantKeys) -> None:
    async with running_server(settings.replace(pipeline_enabled=False)) as client:
        ids = []
        for i in range(5):
            r = await client.post(
                f"/v1/tenants/{tenant_a.slug}/reports",
                json={**REPORT, "text": f"report {i}"},
                headers=tenant_a.headers(),
            )
            ids.append(r.json()["id"])
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "2", "status": "received", **({"cursor": cursor} if cursor else {})}
            page = (
                await client.get(
                    f"/v1/tenants/{tenant_a.slug}/reports",
                    params=params,
                    headers=tenant_a.headers("staff"),
                )
            ).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))
        bad = await client.get(
            f"/v1/tenants/{tenant_a.slug}/reports",
            params={"limit": "0"},
            headers=tenant_a.headers("staff"),
        )
        assert bad.status_code == 422 and error_of(bad)["field"] == "limit"


async def test_ops_endpoints(settings: Settings, tenant_a: TenantKeys) -> None:
    async with running_server(settings) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        await client.post(
            f"/v1/tenants/{tenant_a.slug}/reports", json=REPORT, headers=tenant_a.headers()
        )
        text = (await client.get("/metrics")).text
        assert (
            'civicpulse_http_requests_total{method="POST",'
            'route="/v1/tenants/{slug}/reports",status="202"} 1.0'
        ) in text
        assert "civicpulse_reports_written_total 1.0" in text
        assert 'civicpulse_queue_depth{queue="intake"}' in text
        assert (await client.get("/nowhere")).status_code == 404
