"""Analytics and live dashboards: rollups that agree with a rebuild, frozen daily snapshots,
trends and shrunk rankings, public versus staff views, server-sent events across two
processes with resume, and streamed CSV exports."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from civicpulse import imports
from civicpulse.config import Settings
from civicpulse.db import analytics
from civicpulse.db.pool import create_pool
from tests.e2e.test_grouping import grouped, submit
from tests.support import (
    SHARED_DATA,
    TenantKeys,
    env_without_civicpulse,
    metric,
    running_server,
)

SF = SHARED_DATA / "sf311_sample_2008-2016.csv"


def url(t: TenantKeys, path: str) -> str:
    return f"/v1/tenants/{t.slug}/{path}"


async def import_sf(settings: Settings, db_url: str, t: TenantKeys) -> imports.ImportResult:
    pool = await create_pool(settings, db_url, min_size=1, max_size=2)
    try:
        return await imports.import_file(
            pool, t.id, SF, "sf311", categories={}, timezone="America/Los_Angeles"
        )
    finally:
        await pool.close()


async def settled(db_url: str, timeout: float = 30.0) -> None:
    """Wait until the aggregator has taken every dirty hour."""
    conn = await asyncpg.connect(db_url)
    try:
        for _ in range(int(timeout / 0.1)):
            if await conn.fetchval("SELECT count(*) FROM rollup_dirty") == 0:
                await asyncio.sleep(0.3)  # the taking transaction commits its rows
                if await conn.fetchval("SELECT count(*) FROM rollup_dirty") == 0:
                    return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise AssertionError("rollups did not settle")


async def test_rollups_follow_every_change_and_agree_with_a_rebuild(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    result = await import_sf(settings, db_url, tenant_a)
    staff = tenant_a.headers("staff")
    async with running_server(settings.replace(aggregate_tick_seconds=0.2)) as client:
        ids = [
            await submit(
                client,
                tenant_a,
                f"Broken streetlight number {i}",
                37.70 + i * 0.01,
                -122.45,
                category="streetlight",
            )
            for i in range(3)
        ]
        reports = await grouped(client, tenant_a, ids)
        issue = (
            await client.get(url(tenant_a, f"issues/{reports[0]['issue_id']}"), headers=staff)
        ).json()
        for to in ("in_progress", "resolved"):
            issue = (
                await client.post(
                    url(tenant_a, f"issues/{issue['id']}/transition"),
                    json={"to": to, "version": issue["version"]},
                    headers=staff,
                )
            ).json()
        await settled(db_url)

    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('civicpulse.tenant_id', $1, true)", str(tenant_a.id)
            )
            incremental = await analytics.rollup_rows(conn, tenant_a.id)
            await analytics.rebuild_rollups(conn, tenant_a.id)
            rebuilt = await analytics.rollup_rows(conn, tenant_a.id)
        issues_total = await conn.fetchval(
            "SELECT count(*) FROM issues WHERE tenant_id = $1 AND status <> 'duplicate'",
            tenant_a.id,
        )
        closed_total = await conn.fetchval(
            "SELECT count(*) FROM issues WHERE tenant_id = $1 AND resolved_at IS NOT NULL",
            tenant_a.id,
        )
        snapshots = await conn.fetchval(
            "SELECT count(*) FROM daily_snapshots WHERE tenant_id = $1", tenant_a.id
        )
    finally:
        await conn.close()
    assert incremental == rebuilt
    # The operator's command does the same, and says what it did.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "civicpulse.cli",
        "rollups",
        "rebuild",
        "--tenant",
        tenant_a.slug,
        env={**env_without_civicpulse(), "CIVICPULSE_DATABASE_URL": db_url},
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await proc.communicate()
    assert proc.returncode == 0
    assert f"{len(rebuilt)} rows" in stdout.decode()
    hourly = [r for r in incremental if type(r[0]) is dt.datetime]
    daily = [r for r in incremental if type(r[0]) is dt.date]
    assert hourly and daily
    for level in (hourly, daily):
        assert sum(r[4] for r in level) == issues_total == result.inserted + 3
        assert sum(r[6] for r in level) == closed_total
    assert snapshots > 1000  # every closed day of the 2008-2016 sample


async def test_daily_snapshots_never_change(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    await import_sf(settings, db_url, tenant_a)
    async with running_server(settings.replace(aggregate_tick_seconds=0.2)):
        await settled(db_url)
        for _ in range(50):
            conn = await asyncpg.connect(db_url)
            try:
                n = await conn.fetchval("SELECT count(*) FROM daily_snapshots")
            finally:
                await conn.close()
            if n:
                break
            await asyncio.sleep(0.2)
    conn = await asyncpg.connect(db_url)
    try:
        last = await conn.fetchrow(
            "SELECT day, category, area, backlog_end FROM daily_snapshots "
            "WHERE tenant_id = $1 ORDER BY day DESC LIMIT 1",
            tenant_a.id,
        )
        assert last is not None
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE civicpulse_app")
            await conn.execute(
                "SELECT set_config('civicpulse.tenant_id', $1, true)", str(tenant_a.id)
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    "UPDATE daily_snapshots SET opened = 0 WHERE tenant_id = $1", tenant_a.id
                )
        # The backlog at the last snapshot equals the issues still open from before its end.
        open_then = await conn.fetchval(
            """SELECT count(*) FROM issues
                WHERE tenant_id = $1 AND category IS NOT DISTINCT FROM NULLIF($2, '')
                  AND (opened_at AT TIME ZONE 'America/Los_Angeles')::date <= $3
                  AND (resolved_at IS NULL
                       OR (resolved_at AT TIME ZONE 'America/Los_Angeles')::date > $3)""",
            tenant_a.id,
            last["category"],
            last["day"],
        )
        assert last["backlog_end"] == open_then
    finally:
        await conn.close()


async def test_trends_rankings_and_exports(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    await import_sf(settings, db_url, tenant_a)
    staff = tenant_a.headers("staff")
    # Rankings need areas and SLA outcomes: area "big" has 20 issues resolved in ~10 h,
    # area "tiny" 2 resolved in 1 h.
    conn = await asyncpg.connect(db_url)
    try:
        for code in ("big", "tiny"):
            await conn.execute(
                "INSERT INTO areas (tenant_id, code, name, geometry, min_lat, min_lon, max_lat, "
                "max_lon) VALUES ($1, $2, $2, '{}', 0, 0, 0, 0)",
                tenant_a.id,
                code,
            )
        await conn.execute(
            """INSERT INTO issues (tenant_id, id, status, category, area, opened_at,
                                   sla_started_at, resolved_at, resolution_business_s,
                                   resolution_target_s)
               SELECT $1, gen_random_uuid(), 'resolved', 'other', a,
                      now() - interval '2 days', now() - interval '2 days',
                      now() - interval '2 days' + h * interval '1 hour', h * 3600, 10 * 3600
                 FROM (SELECT 'big' AS a, 9 + g % 3 AS h FROM generate_series(1, 20) g
                       UNION ALL SELECT 'tiny', 1 FROM generate_series(1, 2)) AS x""",
            tenant_a.id,
        )
        opened_2012 = await conn.fetchval(
            "SELECT count(*) FROM issues WHERE tenant_id = $1 "
            "AND opened_at >= '2012-01-01T00:00:00-08:00' "
            "AND opened_at < '2013-01-01T00:00:00-08:00'",
            tenant_a.id,
        )
        total = await conn.fetchval("SELECT count(*) FROM issues WHERE tenant_id = $1", tenant_a.id)
    finally:
        await conn.close()

    async with running_server(settings.replace(aggregate_tick_seconds=0.2)) as client:
        await settled(db_url)
        r = await client.get(
            url(tenant_a, "analytics/trends"),
            params={
                "interval": "month",
                "by": "none",
                # Months are the tenant's (Los Angeles) months.
                "from": "2012-01-01T00:00:00-08:00",
                "to": "2013-01-01T00:00:00-08:00",
            },
            headers=staff,
        )
        assert r.status_code == 200, r.text
        assert sum(i["opened"] for i in r.json()["items"]) == opened_2012
        assert len(r.json()["items"]) == 12
        r = await client.get(
            url(tenant_a, "analytics/rankings"), params={"by": "area"}, headers=staff
        )
        body = r.json()
        assert [g["key"] for g in body["ranked"]] == ["big"]
        assert [g["key"] for g in body["too_few"]] == ["tiny"]
        r = await client.get(
            url(tenant_a, "analytics/rankings"),
            params={"by": "area", "min_sample": "1"},
            headers=staff,
        )
        ranked = {g["key"]: g for g in r.json()["ranked"]}
        tenant_median = r.json()["tenant"]["median_resolve_s"]
        tiny = ranked["tiny"]
        assert tiny["median_resolve_s"] == 3600
        # Two issues weigh 2 against the prior's 10: pulled most of the way to the mean.
        assert tiny["shrunk_median_resolve_s"] == pytest.approx(
            (2 * 3600 + 10 * tenant_median) / 12
        )
        assert ranked["big"]["within_sla_pct"] == pytest.approx(100 * 13 / 20, abs=0.01)
        for params, field in (
            ({"interval": "year"}, "interval"),
            ({"from": "nope"}, "from"),
            ({"by": "colour"}, "by"),
        ):
            r = await client.get(url(tenant_a, "analytics/trends"), params=params, headers=staff)
            assert r.status_code == 422 and r.json()["error"]["field"] == field
        assert (
            await client.get(url(tenant_a, "analytics/trends"), headers=tenant_a.headers())
        ).status_code == 403

        # "All time": the backlog series starts at the tenant's first day, not a century ago.
        everything = (
            await client.get(
                url(tenant_a, "dashboard/data"), params={"days": "36500"}, headers=staff
            )
        ).json()
        assert everything["backlog"][0]["day"] >= "2008-01-01"
        assert everything["totals"]["opened"] == total

        # The export's default period is all time, as the SLA metrics': both cover the same
        # issues, imported history (2008-2016 here) included.
        lines = 0
        async with client.stream("GET", url(tenant_a, "exports/issues.csv"), headers=staff) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/csv")
            text = "".join([chunk async for chunk in resp.aiter_text()])
        rows = list(csv.DictReader(io.StringIO(text)))
        lines = len(rows)
        assert lines == total
        metrics = (await client.get(url(tenant_a, "metrics/sla"), headers=staff)).json()
        assert sum(g["opened"] for g in metrics["groups"]) == total
        assert {"id", "status", "opened_at", "resolution_business_s"} <= set(rows[0])
        # No prior at all: an area none of whose issues had an SLA has no shrunk share, and
        # that is no division by zero (a 500 the fuzz benchmark found).
        conn = await asyncpg.connect(db_url)
        await conn.execute(
            """INSERT INTO issues (tenant_id, id, status, category, area, opened_at,
                                   sla_started_at, resolved_at)
               VALUES ($1, gen_random_uuid(), 'resolved', 'other', 'tiny',
                       now() - interval '1 day', now() - interval '1 day', now())""",
            tenant_a.id,
        )
        await conn.execute("UPDATE issues SET area = NULL WHERE resolution_target_s IS NULL")
        await conn.close()
        r = await client.get(
            url(tenant_a, "analytics/rankings"),
            params={"by": "area", "min_sample": "1", "prior": "0"},
            headers=staff,
        )
        assert r.status_code == 200, r.text
        unmeasured = [g for g in r.json()["ranked"] if g["key"] is None]
        assert unmeasured, r.json()
        assert unmeasured[0]["shrunk_within_sla_pct"] is None


async def test_public_and_private_views(
    settings: Settings, db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            """INSERT INTO issues (tenant_id, id, status, category, visibility, opened_at, title)
               SELECT $1, gen_random_uuid(), 'new', 'graffiti',
                      CASE WHEN g <= 3 THEN 'private' ELSE 'public' END, now(),
                      'Call Jane Doe at 555-0100'
                 FROM generate_series(1, 10) g""",
            tenant_a.id,
        )
    finally:
        await conn.close()
    async with running_server(settings.replace(aggregate_tick_seconds=0.2)) as client:
        await settled(db_url)
        public = (await client.get(url(tenant_a, "dashboard/data"))).json()
        private = (
            await client.get(url(tenant_a, "dashboard/data"), headers=tenant_a.headers("staff"))
        ).json()
        assert public["view"] == "public" and private["view"] == "staff"
        assert public["totals"]["opened"] == 7 and private["totals"]["opened"] == 10
        assert "Jane" not in json.dumps(public), json.dumps(public)
        assert "555-0100" not in json.dumps(public)
        assert "title" in private["recent"][0]
        # Rankings and hotspots are kept per tenant and view, not recomputed per viewer.
        conn = await asyncpg.connect(db_url)
        try:
            stored = {
                r["name"]
                for r in await conn.fetch(
                    "SELECT name FROM dashboard_widgets WHERE tenant_id = $1", tenant_a.id
                )
            }
        finally:
            await conn.close()
        # ... and one per view: staff and public never share one (civicpulse.visibility).
        assert {n for n in stored if n.endswith(":staff")} == {
            "rankings:area:30:staff",
            "hotspots:30:staff",
        }
        public_names = stored - {"rankings:area:30:staff", "hotspots:30:staff"}
        # (the public's newest issues and the map's open issues too: anyone can ask)
        assert {n.split(":public-")[0] for n in public_names} == {
            "rankings:area:30",
            "hotspots:30",
            "recent:30",
            "points",
        }
        page = await client.get(f"/t/{tenant_a.slug}/dashboard")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert (await client.get("/t/nobody/dashboard")).status_code == 404
        # A resident app's submit key sees what the public sees.
        as_submit = await client.get(url(tenant_a, "dashboard/data"), headers=tenant_a.headers())
        assert as_submit.status_code == 200 and as_submit.json()["view"] == "public"
        assert (
            await client.get(url(tenant_a, "dashboard/data"), headers=tenant_b.headers("staff"))
        ).status_code == 404
        r = await client.put(
            url(tenant_a, "dashboard"), json={"public": False}, headers=tenant_a.headers("admin")
        )
        assert r.status_code == 200 and r.json()["public"] is False
        assert (await client.get(url(tenant_a, "dashboard/data"))).status_code == 404
        assert (await client.get(url(tenant_a, "stream"))).status_code == 404
        r = await client.put(
            url(tenant_a, "dashboard"),
            json={"widgets": ["weather"]},
            headers=tenant_a.headers("admin"),
        )
        assert r.status_code == 422 and r.json()["error"]["field"] == "widgets[0]"


class Events:
    """A server-sent-events reader over a live response."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        frame: dict[str, Any] = {}
        async with asyncio.timeout(timeout):
            async for line in self.lines:
                if not line:
                    if "data" in frame:
                        return frame
                    frame = {}
                    continue
                name, _, value = line.partition(": ")
                if name in ("id", "event"):
                    frame[name] = value
                elif name == "data":
                    frame["data"] = json.loads(value)
        raise AssertionError("stream ended")

    async def until(self, kind: str, timeout: float = 15.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next(timeout)
                if frame.get("event") == kind:
                    return frame


@pytest.fixture
async def two_servers(
    settings: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    fast = settings.replace(aggregate_tick_seconds=0.2)
    async with running_server(fast) as a, running_server(fast) as b:
        yield a, b


async def test_streams_fan_out_across_processes_and_resume(
    two_servers: tuple[httpx.AsyncClient, httpx.AsyncClient], tenant_a: TenantKeys
) -> None:
    watcher, writer = two_servers
    staff = tenant_a.headers("staff")
    async with (
        watcher.stream("GET", url(tenant_a, "stream"), headers=staff) as private_resp,
        watcher.stream("GET", url(tenant_a, "stream")) as public_resp,
    ):
        assert private_resp.headers["content-type"].startswith("text/event-stream")
        private, public = Events(private_resp), Events(public_resp)
        report = await submit(
            writer, tenant_a, "Fallen tree blocking the road", 34.1, -118.3, category="trees"
        )
        created = await private.until("issue_created")
        seen_public = await public.until("issue_created")
        assert created["data"]["issue"]["category"] == "trees"
        assert "title" in created["data"]["issue"] and "title" not in seen_public["data"]["issue"]
        assert "data" not in seen_public["data"]  # no event details in public
        (r,) = await grouped(writer, tenant_a, [report])
        issue = (await writer.get(url(tenant_a, f"issues/{r['issue_id']}"), headers=staff)).json()
        # Staff-only events do not reach the public stream.
        await writer.post(
            url(tenant_a, f"issues/{issue['id']}/comments"),
            json={"note": "crew called", "version": issue["version"]},
            headers=staff,
        )
        comment = await private.until("comment")
        moved = await writer.post(
            url(tenant_a, f"issues/{issue['id']}/transition"),
            json={"to": "in_progress", "version": issue["version"]},
            headers=staff,
        )
        assert moved.status_code == 200
        status = await public.until("status_changed")
        assert status["data"]["to_status"] == "in_progress"
        assert int(status["id"]) > int(comment["id"])

    # Resume after the comment: exactly what came later, in order, without keep-alives.
    async with watcher.stream(
        "GET", url(tenant_a, "stream"), headers={**staff, "Last-Event-ID": comment["id"]}
    ) as resp:
        resumed = await Events(resp).next()
    assert resumed["event"] == "status_changed" and int(resumed["id"]) > int(comment["id"])


async def test_rollups_announce_themselves_on_the_stream(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    fast = settings.replace(aggregate_tick_seconds=0.2)
    async with (
        running_server(fast) as client,
        client.stream("GET", url(tenant_a, "stream"), headers=tenant_a.headers("staff")) as resp,
    ):
        events = Events(resp)
        await submit(client, tenant_a, "Overflowing bin at the park", 34.2, -118.2)
        frame = await events.until("rollup", timeout=20)
    assert frame["data"] == {"kind": "rollup"}


async def test_a_stream_whose_client_leaves_ends_at_once(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    """Not at its next keep-alive (15 s): a gone client must not hold its socket and its
    place among the subscribers (nor, behind HAProxy's leastconn, in the count)."""

    def open_streams(metrics: str) -> float:
        return metric(metrics, "civicpulse_streams_open")

    async with running_server(settings) as client:
        async with httpx.AsyncClient(base_url=client.base_url, timeout=10) as watcher:
            streams = [
                watcher.stream("GET", url(tenant_a, "stream"), headers=tenant_a.headers("staff"))
                for _ in range(3)
            ]
            lines = []
            for s in streams:
                lines.append((await s.__aenter__()).aiter_lines())
                assert (await anext(lines[-1])).startswith("retry:")
            assert open_streams((await client.get("/metrics")).text) == 3
            for s in streams:
                await s.__aexit__(None, None, None)
        # The watcher's connections are closed now: every stream ends within moments.
        for _ in range(40):
            if open_streams((await client.get("/metrics")).text) == 0:
                break
            await asyncio.sleep(0.05)
        assert open_streams((await client.get("/metrics")).text) == 0


async def test_a_hotspot_is_named_by_its_most_severe_issue_and_shows_its_mix(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    # One water main break (severity 5) and two graffiti issues (severity 1) in one cell:
    # the hotspot is a water hotspot, not the most common or alphabetically first category.
    conn = await asyncpg.connect(db_url)
    await conn.execute(
        """INSERT INTO issues (tenant_id, id, status, category, severity, lat, lon, cell,
                               opened_at, report_count)
           SELECT $1, gen_random_uuid(), 'new', c, s, 34.05, -118.25,
                  civicpulse_cell(34.05, -118.25), now() - interval '1 day', 1
             FROM (VALUES ('water_sewer', 5), ('graffiti', 1), ('graffiti', 1)) AS v (c, s)""",
        tenant_a.id,
    )
    await conn.close()
    async with running_server(settings.replace(pipeline_enabled=False)) as client:
        r = await client.get(url(tenant_a, "analytics/hotspots"), headers=tenant_a.headers("staff"))
    assert r.status_code == 200, r.text
    (hot,) = r.json()["items"]
    assert hot["category"] == "water_sewer"
    assert hot["categories"] == {"graffiti": 2, "water_sewer": 1}
    assert hot["issues"] == 3
