"""The poison corpus: inputs that once broke the service, sent through the real app.

Each must get a 4xx naming its field (never a 500, never a 503 for anyone else), and none
may stop other requests or other tenants' work.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import httpx
import pytest

from civicpulse.config import Settings
from tests.support import TenantKeys, running_server

REPORT = {"text": "Streetlight out on Elm St", "lat": 34.05, "lon": -118.25}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


# (name, body, the field the 4xx must name)
POISON_REPORTS: list[tuple[str, dict[str, Any], str]] = [
    ("nul in text", {**REPORT, "text": "a\u0000b"}, "text"),
    ("nul in address", {**REPORT, "address": "1 Main\u0000St"}, "address"),
    ("nul in reporter", {**REPORT, "reporter": {"name": "Ann\u0000"}}, "reporter.name"),
    ("nul in attribute value", {**REPORT, "attributes": {"k": "v\u0000"}}, "attributes.k"),
    ("nul in attribute key", {**REPORT, "attributes": {"k\u0000": 1}}, "attributes.k?"),
    (
        "nul in nested attribute",
        {**REPORT, "attributes": {"a": [{"b": "\u0000"}]}},
        "attributes.a[0].b",
    ),
    ("nul in media url", {**REPORT, "media_urls": ["https://x.test/\u0000"]}, "media_urls[0]"),
    ("year 1 east of UTC", {**REPORT, "submitted_at": "0001-01-01T00:00:00+14:00"}, "submitted_at"),
    ("year 1", {**REPORT, "submitted_at": "0001-01-01T00:00:00Z"}, "submitted_at"),
    (
        "year 9999 west of UTC",
        {**REPORT, "submitted_at": "9999-12-31T23:59:59-14:00"},
        "submitted_at",
    ),
    ("year 2200", {**REPORT, "submitted_at": "2200-01-01T00:00:00Z"}, "submitted_at"),
    ("year 1899", {**REPORT, "submitted_at": "1899-12-31T23:59:59Z"}, "submitted_at"),
    ("deep attributes", {**REPORT, "attributes": nested(40)}, "attributes"),
    ("huge integer", {**REPORT, "attributes": {"n": 2**70}}, "attributes.n"),
]


def report_url(t: TenantKeys, path: str = "reports") -> str:
    return f"/v1/tenants/{t.slug}/{path}"


def assert_refused(r: httpx.Response, field: str | None = None) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    error = r.json()["error"]
    assert error["code"] and error["message"]
    if field is not None:
        assert error["field"] is not None and error["field"].startswith(field), error


async def test_poison_reports_are_refused_naming_the_field(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    async with running_server(settings.replace(pipeline_enabled=False)) as client:
        for name, body, field in POISON_REPORTS:
            r = await client.post(report_url(tenant_a), json=body, headers=tenant_a.headers())
            assert r.status_code == 422, (name, r.status_code, r.text)
            assert_refused(r, field)
        # 2,000 levels: refused before anything recurses that deep.
        deep = b'{"text": "x", "lat": 1, "lon": 1, "attributes": ' + b'{"a":' * 2000
        deep += b"1" + b"}" * 2001
        r = await client.post(
            report_url(tenant_a),
            content=deep,
            headers={**tenant_a.headers(), "Content-Type": "application/json"},
        )
        assert_refused(r, "body")
        # In a batch, each poison item is refused alone and the good items are stored.
        batch = [REPORT, *(body for _, body, _ in POISON_REPORTS), REPORT]
        r = await client.post(
            report_url(tenant_a, "reports/batch"), json=batch, headers=tenant_a.headers()
        )
        assert r.status_code == 207, r.text
        result = r.json()
        assert result["accepted"] == 2 and result["rejected"] == len(POISON_REPORTS)
        for item, (_, _, field) in zip(result["results"][1:-1], POISON_REPORTS, strict=True):
            assert item["status"] == "rejected"
            assert item["error"]["field"].startswith(f"[{item['index']}].{field}"), item


async def test_poison_requests_never_cost_another_request_a_503(
    settings: Settings, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    async with running_server(settings.replace(pipeline_enabled=False)) as client:

        async def good(i: int) -> int:
            t = tenant_a if i % 2 else tenant_b
            body = {**REPORT, "text": f"good {i}"}
            r = await client.post(report_url(t), json=body, headers=t.headers())
            return r.status_code

        async def bad(i: int) -> int:
            _, body, _ = POISON_REPORTS[i % len(POISON_REPORTS)]
            r = await client.post(report_url(tenant_a), json=body, headers=tenant_a.headers())
            return r.status_code

        codes = await asyncio.gather(*(good(i) for i in range(300)), *(bad(i) for i in range(30)))
    assert codes[:300] == [202] * 300
    assert set(codes[300:]) == {422}


async def test_poison_query_strings_paths_and_headers_get_4xx(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    staff = tenant_a.headers("staff")
    cursor = base64.urlsafe_b64encode(f"0001-01-01T00:00:00+14:00|{uuid.uuid4()}".encode())
    probes: list[tuple[str, dict[str, Any], str | None]] = [
        ("/v1/tenants/%00/reports", staff, "path"),
        ("/v1/tenants/alpha%00/issues", staff, "path"),
        (report_url(tenant_a, "issues?q=%00"), staff, "q"),
        (report_url(tenant_a, "issues?limit=%C2%B2"), staff, "limit"),
        (report_url(tenant_a, "issues?limit=" + "9" * 5000), staff, "limit"),
        (report_url(tenant_a, f"issues?cursor={cursor.decode()}"), staff, "cursor"),
        (report_url(tenant_a, "reports?limit=-1"), staff, "limit"),
        (report_url(tenant_a, "reports?limit=" + "1" * 4400), staff, "limit"),
        (report_url(tenant_a, "reports?status=nope"), staff, "status"),
        (report_url(tenant_a, "dashboard/data?days=%C2%B2"), staff, "days"),
        (report_url(tenant_a, "analytics/backlog?to=0001-01-01"), staff, "to"),
        (report_url(tenant_a, "analytics/backlog?to=9999-12-31T23:59:59-14:00"), staff, "to"),
        (report_url(tenant_a, "analytics/trends?from=0001-01-01T00:00:00%2B14:00"), staff, "from"),
        (report_url(tenant_a, "metrics/sla?to=9999-12-31T23:59:59-14:00"), staff, "to"),
        (report_url(tenant_a, "exports/issues.csv?to=0001-01-01"), staff, "to"),
        (report_url(tenant_a, "analytics/rankings?min_sample=" + "7" * 5000), staff, "min_sample"),
        (report_url(tenant_a, "stream"), {**staff, "Last-Event-ID": "²".encode()}, "last-event-id"),
        (report_url(tenant_a, "stream"), {**staff, "Last-Event-ID": "9" * 5000}, "last-event-id"),
    ]
    async with running_server(settings.replace(pipeline_enabled=False)) as client:
        for path, headers, field in probes:
            r = await client.get(path, headers=headers)
            assert_refused(r, field)
        # A range of centuries costs what the tenant's history costs: no 100 MB body.
        started = time.perf_counter()
        r = await client.get(
            report_url(tenant_a, "analytics/backlog?from=1900-01-01&to=2199-12-30"), headers=staff
        )
        assert r.status_code == 200 and len(r.content) < 10_000, len(r.content)
        assert time.perf_counter() - started < 5


async def test_policies_and_calendars_the_engine_cannot_compute_are_refused(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    admin = tenant_a.headers("admin")
    weekday_mornings = {
        "timezone": "America/Los_Angeles",
        "hours": {"mon": [["09:00", "10:00"]]},
    }
    async with running_server(settings.replace(pipeline_enabled=False)) as client:
        r = await client.put(
            report_url(tenant_a, "calendars/thin"), json=weekday_mornings, headers=admin
        )
        assert r.status_code == 200, r.text
        policy = {"name": "P", "calendar": "thin", "response_minutes": 60}
        for change, field in (
            ({"response_minutes": 500_000}, "response_minutes"),  # past a year of minutes
            ({"resolution_minutes": 20_000}, "resolution_minutes"),  # 333 Monday hours > 3 years
            ({"warn_ratio": 1e-320}, "warn_ratio"),
            ({"warn_ratio": 1.0}, "warn_ratio"),
            ({"calendar": "none"}, "calendar"),
        ):
            r = await client.put(
                report_url(tenant_a, "sla-policies/p"), json={**policy, **change}, headers=admin
            )
            assert r.status_code == 422, (change, r.text)
            assert r.json()["error"]["field"] == field
        long = {**policy, "resolution_minutes": 9_000}  # 150 Monday hours: about 3 years
        r = await client.put(report_url(tenant_a, "sla-policies/p"), json=long, headers=admin)
        assert r.status_code == 200, r.text
        # Fewer opening hours would make that policy impossible: the calendar is refused.
        fewer = {**weekday_mornings, "hours": {"mon": [["09:00", "09:30"]]}}
        r = await client.put(report_url(tenant_a, "calendars/thin"), json=fewer, headers=admin)
        assert r.status_code == 422 and "policy p" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "issues/{issue}"),
        ("POST", "issues/{issue}/transition"),
        ("POST", "issues/{issue}/assign"),
        ("POST", "issues/{issue}/comments"),
        ("PUT", "sla-policies/p"),
        ("PUT", "dashboard"),
    ],
)
async def test_the_key_is_checked_before_the_body(
    settings: Settings, tenant_a: TenantKeys, tenant_b: TenantKeys, method: str, path: str
) -> None:
    target = report_url(tenant_a, path.format(issue=uuid.uuid4()))
    malformed = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    async with running_server(settings.replace(pipeline_enabled=False)) as client:
        for headers, status in (
            ({}, 401),
            ({"Authorization": "Bearer nope"}, 401),
            (tenant_a.headers("submit"), 403),
            (tenant_b.headers("admin"), 404),
        ):
            r = await client.request(
                method,
                target,
                content=malformed["content"],
                headers={**malformed["headers"], **headers},
            )
            assert r.status_code == status, (headers, r.text)


async def test_rate_limits_answer_429_with_retry_after_per_key_and_per_address(
    settings: Settings, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    settings = settings.replace(
        pipeline_enabled=False,
        rate_limit_key_per_second=1000.0,
        rate_limit_key_burst=1000.0,
        rate_limit_public_per_second=0.5,
        rate_limit_public_burst=3.0,
    )
    async with running_server(settings) as client:
        r = await client.put(
            report_url(tenant_a, "rate-limits"),
            json={"key_per_second": 0.5, "key_burst": 5},
            headers=tenant_a.headers("admin"),
        )
        assert r.status_code == 200, r.text
        assert r.json() == {
            "key_per_second": 0.5,
            "key_burst": 5.0,
            "public_per_second": 0.5,
            "public_burst": 3.0,
        }
        codes = []
        for i in range(8):
            r = await client.post(
                report_url(tenant_a), json={**REPORT, "text": f"r{i}"}, headers=tenant_a.headers()
            )
            codes.append(r.status_code)
        # The admin key spent one token; the submit key has its own bucket of 5.
        assert codes == [202] * 5 + [429] * 3, codes
        assert r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["retry-after"]) <= 2
        # Another tenant, with the service's limits, is not touched.
        r = await client.post(report_url(tenant_b), json=REPORT, headers=tenant_b.headers())
        assert r.status_code == 202
        # The public dashboard without a key: per client address.
        public = [
            (await client.get(f"/v1/tenants/{tenant_b.slug}/dashboard/data")).status_code
            for _ in range(5)
        ]
        assert public[:3] == [200, 200, 200] and public[3:] == [429, 429], public
