"""`civicpulse seed`: skewed tenants, real records, reproducible, idempotent."""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from tests.support import SHARED_DATA, env_without_civicpulse

LA = SHARED_DATA / "la311_2020-01-01_to_03.csv"


async def seed(db_url: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "civicpulse.cli",
        "seed",
        "--sample",
        str(LA),
        "--quiet",
        *args,
        env={**env_without_civicpulse(), "CIVICPULSE_DATABASE_URL": db_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_seed_makes_skewed_real_reproducible_data(db_url: str) -> None:
    out = await seed(db_url, "--reports", "600", "--tenants", "3", "--prefix", "city")
    assert "600 reports and issues added" in out
    again = await seed(db_url, "--reports", "600", "--tenants", "3", "--prefix", "city")
    assert "0 reports and issues added, 600 already present" in again
    await seed(db_url, "--reports", "600", "--tenants", "3", "--prefix", "twin")

    conn = await asyncpg.connect(db_url)
    try:
        sizes = {
            r["slug"]: r["n"]
            for r in await conn.fetch(
                "SELECT t.slug, count(r.id) AS n FROM tenants t "
                "JOIN reports r ON r.tenant_id = t.id GROUP BY t.slug"
            )
        }
        # 1/(r+1) shares: 600 x 6/11, 3/11, 2/11.
        assert sizes["city-0000"] == 327 and sizes["city-0001"] == 164
        assert sizes["city-0002"] == 109
        unlinked = await conn.fetchval(
            "SELECT count(*) FROM reports WHERE issue_id IS NULL OR category IS NULL"
        )
        assert unlinked == 0
        real = await conn.fetchval(
            "SELECT count(DISTINCT text) FROM reports WHERE source_id LIKE 'city-%'"
        )
        assert real > 5  # real request types, not one template
        # The same seed draws the same records, whatever the tenants are called.
        drawn = {}
        for prefix in ("city", "twin"):
            rows = await conn.fetch(
                "SELECT text, category, lat FROM reports WHERE source_id LIKE $1 "
                "ORDER BY source_id",
                f"{prefix}-%",
            )
            drawn[prefix] = [(r["text"], r["category"], round(r["lat"], 2)) for r in rows]
        city, twin = drawn["city"], drawn["twin"]
        assert city == twin
        recent = await conn.fetchval(
            "SELECT count(*) FROM issues WHERE opened_at > now() - interval '366 days'"
        )
        assert recent == 1200
    finally:
        await conn.close()
