"""Work that cannot finish is isolated, retried with backoff and set aside, never stuck.

A report the classifier or the grouper keeps failing on (here: a constraint the database
enforces only on that report) ends up 'failed' with its reason after the configured number
of attempts, while every other report of the same claims is processed; an SLA policy the
calendar cannot compute flags its issues and stops nobody.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg
import httpx
import pytest

from civicpulse.config import Settings
from civicpulse.db import reports as reports_repo
from tests.support import TenantKeys, running_server

FAST_RETRY = {
    "pipeline_max_attempts": 3,
    "pipeline_retry_backoff": 0.05,
    "pipeline_retry_backoff_max": 0.2,
}


def reports_near(n: int, pill: str) -> list[dict[str, Any]]:
    """n reports 1 km apart (each its own issue), the pill in the middle."""
    texts = [f"Pothole number {i} on Main St" for i in range(n)]
    texts[n // 2] = pill
    return [{"text": t, "lat": 34.0 + 0.01 * i, "lon": -118.25} for i, t in enumerate(texts)]


async def settled(
    client: httpx.AsyncClient, tenant: TenantKeys, ids: list[str], timeout: float = 30.0
) -> list[dict[str, Any]]:
    """The reports once none is still waiting to be processed."""
    reports: list[dict[str, Any]] = []
    for _ in range(int(timeout / 0.1)):
        reports = [
            (
                await client.get(f"/v1/tenants/{tenant.slug}/reports/{i}", headers=tenant.headers())
            ).json()
            for i in ids
        ]
        if all(r["status"] in ("grouped", "failed") for r in reports):
            return reports
        await asyncio.sleep(0.1)
    raise AssertionError(f"not settled in {timeout}s: {[r['status'] for r in reports]}")


async def submit_all(
    client: httpx.AsyncClient, tenant: TenantKeys, bodies: list[dict[str, Any]]
) -> list[str]:
    r = await client.post(
        f"/v1/tenants/{tenant.slug}/reports/batch", json=bodies, headers=tenant.headers()
    )
    assert r.status_code == 202, r.text
    return [item["id"] for item in r.json()["results"]]


async def check_set_aside(
    client: httpx.AsyncClient,
    db_url: str,
    tenant: TenantKeys,
    stage: str,
    constraint: str,
    pill: str,
) -> None:
    owner = await asyncpg.connect(db_url)
    try:
        await owner.execute(f"ALTER TABLE reports ADD CONSTRAINT pill CHECK ({constraint})")
        bodies = reports_near(9, pill)
        ids = await submit_all(client, tenant, bodies)
        reports = await settled(client, tenant, ids)
        states = [r["status"] for r in reports]
        assert states == ["grouped"] * 4 + ["failed"] + ["grouped"] * 4, states
        failed = reports[4]
        assert failed["text"] == pill
        assert re.search(r"failed in 3 attempts|did not finish in 3 attempts", failed["failure"])
        assert stage in failed["failure"] and "pill" in failed["failure"], failed["failure"]
        # Staff find it, and the metrics count it.
        listed = await client.get(
            f"/v1/tenants/{tenant.slug}/reports?status=failed", headers=tenant.headers("staff")
        )
        assert [r["id"] for r in listed.json()["items"]] == [failed["id"]]
        processed = await client.get(
            f"/v1/tenants/{tenant.slug}/reports?status=grouped", headers=tenant.headers("staff")
        )
        assert processed.status_code == 200
        assert len(processed.json()["items"]) == 8
        metrics = (await client.get("/metrics")).text
        assert f'civicpulse_reports_failed_total{{stage="{stage}"}} 1.0' in metrics
        # Once the cause is fixed, `reports retry` brings it back and it is processed.
        await owner.execute("ALTER TABLE reports DROP CONSTRAINT pill")
        assert await reports_repo.retry_failed_reports(owner, tenant.id) == 1
        (again,) = await settled(client, tenant, [failed["id"]])
        assert again["status"] == "grouped" and again["failure"] is None
    finally:
        await owner.close()


@pytest.mark.parametrize(
    ("stage", "constraint", "pill"),
    [
        ("classify", "classification IS NULL OR text <> 'classify pill'", "classify pill"),
        ("group", "issue_id IS NULL OR text <> 'group pill'", "group pill"),
    ],
)
async def test_a_report_a_stage_always_fails_on_is_set_aside_alone(
    settings: Settings, db_url: str, tenant_a: TenantKeys, stage: str, constraint: str, pill: str
) -> None:
    async with running_server(settings.replace(**FAST_RETRY)) as client:
        await check_set_aside(client, db_url, tenant_a, stage, constraint, pill)


async def test_a_policy_the_calendar_cannot_compute_flags_issues_and_stops_nobody(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    # Stored behind the API's back (as an old version, or an edited calendar, might leave
    # it): one open hour a week cannot give 500,000 minutes within the arithmetic's reach.
    owner = await asyncpg.connect(db_url)
    await owner.execute(
        """INSERT INTO calendars (tenant_id, code, timezone, hours, holidays)
           VALUES ($1, 'thin', 'UTC', '{"0": [[540, 600]]}', '{}')""",
        tenant_a.id,
    )
    await owner.execute(
        """INSERT INTO sla_policies (tenant_id, code, name, calendar, response_minutes,
                                     resolution_minutes, warn_ratio, pause_statuses,
                                     priorities, categories)
           VALUES ($1, 'huge', 'Huge', 'thin', 60, 500000, 0.75, '{waiting}',
                   '{1,2,3,4,5}', '{}')""",
        tenant_a.id,
    )
    async with running_server(settings) as client:
        ids = await submit_all(client, tenant_a, reports_near(3, "Pothole on Oak St"))
        reports = await settled(client, tenant_a, ids)
        assert [r["status"] for r in reports] == ["grouped"] * 3
        issues = [r["issue_id"] for r in reports]
        for issue_id in issues:
            r = await client.get(
                f"/v1/tenants/{tenant_a.slug}/issues/{issue_id}", headers=tenant_a.headers("staff")
            )
            assert r.status_code == 200
    flagged = await owner.fetch(
        "SELECT issue_id::text, note FROM issue_events WHERE kind = 'sla_unavailable'"
    )
    due = await owner.fetch("SELECT resolution_due_at FROM issues")
    await owner.close()
    assert {r["issue_id"] for r in flagged} == set(issues)
    assert all("business time" in r["note"] for r in flagged)
    assert [r["resolution_due_at"] for r in due] == [None] * 3
