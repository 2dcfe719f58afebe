"""The writer and the pipeline frame against a real database: back-pressure, failure,
resume after restart, leases, and two processes sharing one database."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from civicpulse.config import Settings
from civicpulse.db import classifier as classifier_repo
from civicpulse.db import reports as reports_repo
from civicpulse.db.pool import create_pool, tenant_transaction
from tests.support import TenantKeys, env_without_civicpulse, running_server

REPORT = {"text": "Broken streetlight on Elm St", "lat": 37.77, "lon": -122.42}


async def fetchval(db_url: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def wait_until(db_url: str, sql: str, expected: Any, timeout: float = 10.0) -> Any:
    value = None
    for _ in range(int(timeout / 0.05)):
        value = await fetchval(db_url, sql)
        if value == expected:
            return value
        await asyncio.sleep(0.05)
    return value


async def test_full_queue_answers_503_with_retry_after_and_loses_nothing(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    # One writer, so at most one flush is in flight beside the full queue.
    settings = settings.replace(
        ingest_queue_size=2, ingest_retry_after=3, pipeline_enabled=False, ingest_writers=1
    )
    url = f"/v1/tenants/{tenant_a.slug}/reports"
    blocker = await asyncpg.connect(db_url)
    async with running_server(settings) as client:
        # Hold the table so the writer's first flush blocks; the queue behind it fills up.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE reports IN EXCLUSIVE MODE")
        pending = [
            asyncio.create_task(
                client.post(url, json={**REPORT, "text": f"r{i}"}, headers=tenant_a.headers())
            )
            for i in range(12)
        ]
        await asyncio.sleep(1.0)
        done = [t for t in pending if t.done()]
        refused = [t.result() for t in done]
        assert refused, "nothing was refused while the writer was blocked"
        for r in refused:
            assert r.status_code == 503
            assert r.headers["retry-after"] == "3"
            assert r.json()["error"]["code"] == "overloaded"
        await tx.rollback()
        responses = await asyncio.gather(*pending)
    await blocker.close()
    accepted = [r for r in responses if r.status_code == 202]
    assert len(accepted) + len(refused) == 12
    # At most one flush in flight (itself at most a queue's worth) plus a full queue.
    assert 1 <= len(accepted) <= 2 * 2 + 1
    stored = await fetchval(db_url, "SELECT count(*) FROM reports")
    assert stored == len(accepted)


async def test_a_request_the_database_refuses_fails_alone_and_its_batch_commits(
    settings: Settings, db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    # A value only the database refuses (no edge check knows this constraint), sent in the
    # same flush as good requests of two tenants: only its own request fails.
    owner = await asyncpg.connect(db_url)
    await owner.execute("ALTER TABLE reports ADD CONSTRAINT no_boom CHECK (text <> 'boom')")
    settings = settings.replace(pipeline_enabled=False, ingest_writers=1)
    blocker = await asyncpg.connect(db_url)
    async with running_server(settings) as client:
        # Hold the table so every request below waits in the queue for the same flush.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE reports IN EXCLUSIVE MODE")
        first = asyncio.create_task(
            client.post(
                f"/v1/tenants/{tenant_a.slug}/reports", json=REPORT, headers=tenant_a.headers()
            )
        )
        await asyncio.sleep(0.3)  # the first flush is now blocked; the rest queue behind it
        pending = [
            client.post(
                f"/v1/tenants/{tenant.slug}/reports/batch",
                json=[{**REPORT, "text": text}, REPORT],
                headers=tenant.headers(),
            )
            for tenant, text in (
                (tenant_a, "fine 1"),
                (tenant_b, "boom"),
                (tenant_b, "fine 2"),
                (tenant_a, "fine 3"),
            )
        ]
        tasks = [asyncio.create_task(p) for p in pending]
        await asyncio.sleep(0.3)
        await tx.rollback()
        assert (await first).status_code == 202
        responses = await asyncio.gather(*tasks)
    await blocker.close()
    codes = [r.status_code for r in responses]
    assert codes == [202, 422, 202, 202], [r.text for r in responses]
    assert responses[1].json()["error"]["field"] == "body"
    stored = await owner.fetch("SELECT text FROM reports ORDER BY text")
    await owner.close()
    assert sorted(r["text"] for r in stored) == sorted(
        [REPORT["text"]] * 4 + ["fine 1", "fine 2", "fine 3"]
    )


async def test_a_full_backlog_answers_503_until_the_pipeline_catches_up(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    """A load the pipeline cannot keep up with slows its clients down instead of growing a
    backlog without end: past the bound intake refuses, with Retry-After, and says why."""
    url = f"/v1/tenants/{tenant_a.slug}/reports"
    bounded = settings.replace(
        pipeline_enabled=False, backlog_limit=5, backlog_alert=3, backlog_check_seconds=0.1
    )
    async with running_server(bounded) as client:
        for i in range(5):
            r = await client.post(url, json={**REPORT, "text": f"r{i}"}, headers=tenant_a.headers())
            assert r.status_code == 202, r.text
        await asyncio.sleep(0.5)  # counted
        refused = await client.post(url, json=REPORT, headers=tenant_a.headers())
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert "backlog" in refused.json()["error"]["message"]
        ready = (await client.get("/readyz")).json()
        assert any("backlog 5 is at its limit" in w for w in ready["warnings"]), ready
        metrics = (await client.get("/metrics")).text
        assert "civicpulse_pipeline_backlog 5.0" in metrics
    # With the pipeline running, the backlog drains and intake accepts again.
    async with running_server(bounded.replace(pipeline_enabled=True)) as client:
        drained = await wait_until(
            db_url, "SELECT count(*) FROM reports WHERE state <> 'grouped'", 0, timeout=20
        )
        assert drained == 0
        await asyncio.sleep(0.5)
        r = await client.post(url, json=REPORT, headers=tenant_a.headers())
        assert r.status_code == 202, r.text
    assert await fetchval(db_url, "SELECT count(*) FROM reports") == 6


async def test_a_database_outage_fails_the_whole_flush_with_503(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    owner = await asyncpg.connect(db_url)
    async with running_server(settings.replace(pipeline_enabled=False)) as client:
        # The app role loses its right to insert: not the fault of any row, so nothing is
        # split or retried, and the client is told to come back.
        await owner.execute("REVOKE INSERT ON reports FROM civicpulse_app")
        try:
            r = await client.post(
                f"/v1/tenants/{tenant_a.slug}/reports/batch",
                json=[REPORT, REPORT],
                headers=tenant_a.headers(),
            )
        finally:
            await owner.execute("GRANT INSERT ON reports TO civicpulse_app")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "storage_unavailable"
        ok = await client.post(
            f"/v1/tenants/{tenant_a.slug}/reports/batch", json=[REPORT], headers=tenant_a.headers()
        )
        assert ok.status_code == 202
    assert await owner.fetchval("SELECT count(*) FROM reports") == 1
    await owner.close()


async def test_reports_left_unprocessed_are_resumed_after_restart(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    url = f"/v1/tenants/{tenant_a.slug}/reports"
    async with running_server(settings.replace(pipeline_enabled=False)) as client:
        for i in range(30):
            r = await client.post(
                url, json={**REPORT, "text": f"streetlight out {i}"}, headers=tenant_a.headers()
            )
            assert r.status_code == 202
    assert await fetchval(db_url, "SELECT count(*) FROM reports WHERE state = 'received'") == 30
    async with running_server(settings):
        done = await wait_until(db_url, "SELECT count(*) FROM reports WHERE state = 'grouped'", 30)
    assert done == 30
    assert (
        await fetchval(db_url, "SELECT count(*) FROM reports WHERE category = 'streetlight'") == 30
    )


async def test_an_expired_lease_is_claimed_again(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    async with running_server(settings.replace(pipeline_enabled=False)) as client:
        await client.post(
            f"/v1/tenants/{tenant_a.slug}/reports", json=REPORT, headers=tenant_a.headers()
        )
    # A worker that claims and then dies without finishing.
    pool = await create_pool(settings, db_url, min_size=1, max_size=1)
    async with pool.acquire() as conn:
        claimed = await reports_repo.claim_reports(
            conn, "received", "dead-worker", timedelta(seconds=1), 10, 5
        )
        assert len(claimed) == 1
        # While the lease holds, nobody else gets it.
        assert (
            await reports_repo.claim_reports(conn, "received", "other", timedelta(seconds=1), 10, 5)
            == []
        )
    await pool.close()
    lease_ran_out = await fetchval(db_url, "SELECT lease_until FROM reports")
    async with running_server(settings):
        state = await wait_until(db_url, "SELECT state FROM reports", "grouped")
    assert state == "grouped"
    # Classified by the live service, after the dead worker's lease ran out.
    assert await fetchval(db_url, "SELECT processed_at FROM reports") >= lease_ran_out


async def test_concurrent_claims_never_share_a_report(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    async with running_server(settings.replace(pipeline_enabled=False)) as client:
        r = await client.post(
            f"/v1/tenants/{tenant_a.slug}/reports/batch",
            json=[{**REPORT, "text": f"n{i}"} for i in range(500)],
            headers=tenant_a.headers(),
        )
        assert r.json()["accepted"] == 500
    pool = await create_pool(settings, db_url, min_size=4, max_size=4)

    async def claimer(name: str) -> list[Any]:
        got: list[Any] = []
        while True:
            async with pool.acquire() as conn:
                batch = await reports_repo.claim_reports(
                    conn, "received", name, timedelta(minutes=5), 37, 5
                )
            if not batch:
                return got
            got += batch

    results = await asyncio.gather(*[claimer(f"w{i}") for i in range(4)])
    await pool.close()
    everyone = [item for got in results for item in got]
    assert len(everyone) == 500
    assert len(set(everyone)) == 500


async def test_two_service_processes_on_one_database_process_each_report_once(
    settings: Settings, db_url: str, tenant_a: TenantKeys
) -> None:
    url = f"/v1/tenants/{tenant_a.slug}/reports/batch"
    async with running_server(settings) as one, running_server(settings) as two:

        async def send(client: httpx.AsyncClient, start: int) -> int:
            r = await client.post(
                url,
                json=[{**REPORT, "text": f"light {start + i}"} for i in range(100)],
                headers=tenant_a.headers(),
            )
            return int(r.json()["accepted"])

        sent = await asyncio.gather(*[send(c, i * 100) for i, c in enumerate([one, two] * 3)])
        assert sum(sent) == 600
        done = await wait_until(
            db_url, "SELECT count(*) FROM reports WHERE state = 'grouped'", 600, 30
        )
    assert done == 600
    # Each report was grouped exactly once: one grouping event per report, no more.
    assert (
        await fetchval(
            db_url,
            "SELECT count(*) FROM issue_events WHERE kind IN ('issue_created', 'report_attached')",
        )
        == 600
    )
    assert await fetchval(db_url, "SELECT count(DISTINCT report_id) FROM issue_events") == 600


async def test_grouping_claims_follow_submission_order_one_claim_per_tenant(
    settings: Settings, db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    """civicpulse_claim_grouping: a tenant's classified reports up to its first one still
    being classified, one live claim per tenant, the wait, and a report that keeps failing set
    aside rather than holding its tenant back for good."""
    async with running_server(settings.replace(pipeline_enabled=False)) as client:
        for tenant in (tenant_a, tenant_b):
            r = await client.post(
                f"/v1/tenants/{tenant.slug}/reports/batch",
                json=[{**REPORT, "text": f"n{i}"} for i in range(6)],
                headers=tenant.headers(),
            )
            assert r.json()["accepted"] == 6
    owner = await asyncpg.connect(db_url)
    # tenant a: reports 0-1 and 3-5 classified, report 2 still being classified.
    await owner.execute(
        """UPDATE reports SET state = 'classified', classification = '{"decided_by": "local"}'
            WHERE tenant_id = $1 AND text <> 'n2' OR tenant_id = $2""",
        tenant_a.id,
        tenant_b.id,
    )
    pool = await create_pool(settings, db_url, min_size=1, max_size=1)
    minute = timedelta(minutes=1)
    try:
        async with pool.acquire() as conn:
            first = await reports_repo.claim_grouping(conn, "w1", minute, 100, minute, 5)
            texts = await owner.fetch(
                "SELECT tenant_id, text FROM reports WHERE lease_owner = 'w1' ORDER BY id"
            )
            by_tenant = {
                t: [r["text"] for r in texts if r["tenant_id"] == t]
                for t in (tenant_a.id, tenant_b.id)
            }
            assert len(first) == 8
            # Only what came before the unclassified report, in order; all of tenant b.
            assert by_tenant[tenant_a.id] == ["n0", "n1"]
            assert by_tenant[tenant_b.id] == [f"n{i}" for i in range(6)]
            # While those leases hold, neither tenant gets a second claim.
            assert await reports_repo.claim_grouping(conn, "w2", minute, 100, minute, 5) == []
            # The leases run out; report 2 has waited longer than the wait: the rest of
            # tenant a comes, and report 2 no longer holds it back.
            await owner.execute("UPDATE reports SET lease_until = now() - interval '1 s'")
            await owner.execute(
                "UPDATE reports SET received_at = received_at - interval '2 minutes' "
                "WHERE tenant_id = $1",
                tenant_a.id,
            )
            await owner.execute(
                "UPDATE reports SET state = 'grouped', lease_owner = NULL WHERE tenant_id = $1",
                tenant_b.id,
            )
            await owner.execute(
                "UPDATE reports SET state = 'grouped', lease_owner = NULL "
                "WHERE tenant_id = $1 AND text IN ('n0', 'n1')",
                tenant_a.id,
            )
            rest = await reports_repo.claim_grouping(conn, "w3", minute, 100, minute, 5)
            assert len(rest) == 3  # n3, n4, n5
            # A report whose grouping failed too often is set aside, not claimed again.
            await owner.execute(
                "UPDATE reports SET lease_until = now() - interval '1 s', attempts = 5 "
                "WHERE tenant_id = $1 AND text = 'n3'",
                tenant_a.id,
            )
            await owner.execute(
                "UPDATE reports SET lease_until = now() - interval '1 s' "
                "WHERE tenant_id = $1 AND text IN ('n4', 'n5')",
                tenant_a.id,
            )
            again = await reports_repo.claim_grouping(conn, "w4", minute, 100, minute, 5)
            assert len(again) == 2
            failed = await owner.fetchrow(
                "SELECT state, grouping->>'rule' AS rule FROM reports "
                "WHERE tenant_id = $1 AND text = 'n3'",
                tenant_a.id,
            )
            assert failed["state"] == "failed" and "5 attempts" in failed["rule"]
            # That claim failed too: it is retried whole once, then its first report alone,
            # so only a report that itself keeps failing reaches the limit.
            expire = (
                "UPDATE reports SET lease_until = now() - interval '1 s' WHERE lease_owner = $1"
            )
            await owner.execute(expire, "w4")
            alone = await reports_repo.claim_grouping(conn, "w6", minute, 100, minute, 5)
            n4 = await owner.fetchval(
                "SELECT id FROM reports WHERE tenant_id = $1 AND text = 'n4'", tenant_a.id
            )
            assert alone == [(tenant_a.id, n4)]
            await owner.execute(expire, "w6")
            # An operator puts the failed report back (`civicpulse reports retry`): it is
            # claimed first, with the others, its attempts forgotten.
            for tenant, queued in ((tenant_b, 0), (tenant_a, 1)):
                proc = await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).parent / "civicpulse"), "reports", "retry",
                    "--tenant", tenant.slug,
                    env=env_without_civicpulse() | {"CIVICPULSE_DATABASE_URL": db_url},
                    stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
                out, _ = await proc.communicate()
                assert proc.returncode == 0 and out.decode().startswith(f"{queued} failed"), out
            back = await reports_repo.claim_grouping(conn, "w7", minute, 100, minute, 5)
            assert len(back) == 3
            assert (
                await owner.fetchval(
                    "SELECT attempts FROM reports WHERE tenant_id = $1 AND text = 'n3'", tenant_a.id
                )
                == 1
            )
    finally:
        await pool.close()
        await owner.close()


async def test_only_the_newest_classifier_models_are_kept(
    app_pool: asyncpg.Pool, db_url: str, tenant_a: TenantKeys
) -> None:
    for n in range(6):
        async with tenant_transaction(app_pool, tenant_a.id) as conn:
            version = await classifier_repo.insert_model(
                conn,
                tenant_a.id,
                labels=n,
                features=1,
                digest=f"d{n}",
                taxonomy_digest="t",
                model=b"x" * 1000,
            )
        assert version == n + 1
    kept = await fetchval(
        db_url,
        "SELECT array_agg(version ORDER BY version) FROM classifier_models WHERE tenant_id = $1",
        tenant_a.id,
    )
    assert kept == [4, 5, 6]
