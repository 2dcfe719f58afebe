"""The grouping candidate lookup against PostgreSQL: what open_issue_candidates hands the
engine for a batch (the nearest few in each report's own reach and look-back)."""

from __future__ import annotations

import math
import time

import asyncpg

from civicpulse.db import issues as issues_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.engine import geo, grouping
from civicpulse.engine.grouping import Report
from civicpulse.engine.places import Where
from civicpulse.ids import uuid7
from tests.support import TenantKeys

HOUR = 3600.0
LAT, LON = 34.05, -118.25


def north(metres: float) -> tuple[float, float]:
    return LAT + metres / geo.METRES_PER_DEGREE, LON


def east(metres: float) -> tuple[float, float]:
    return LAT, LON + metres / (geo.METRES_PER_DEGREE * math.cos(math.radians(LAT)))


async def open_issues(
    conn: asyncpg.Connection, tenant: int, rows: list[tuple[str, tuple[float, float], float]]
) -> list[str]:
    """Open issues (category, place, last reported at) as grouping would have opened them."""
    reports = [
        (str(uuid7()), Report("x", lat, lon, category, "", "Loud music all night", t, 2))
        for category, (lat, lon), t in rows
    ]
    await issues_repo.insert_issues(
        conn, tenant, [(i, r, grouping.found(r, i)) for i, r in reports]
    )
    return [issue for issue, _ in reports]


async def test_each_report_looks_back_its_own_way_and_sees_its_nearest_in_reach(
    app_pool: asyncpg.Pool, tenant_a: TenantKeys
) -> None:
    now = time.time()
    noise_lookback = grouping.params_for("noise", "nuisance", {}).lookback_s
    async with tenant_transaction(app_pool, tenant_a.id) as conn:
        # Five noise issues closer than the fresh one, but too old for a noise report.
        stale = await open_issues(
            conn,
            tenant_a.id,
            [("noise", north(10 + 5 * k), now - noise_lookback - HOUR) for k in range(5)],
        )
        (fresh,) = await open_issues(conn, tenant_a.id, [("noise", east(40), now - HOUR)])
        # More nearby road defects than a report may take: only the nearest come back.
        roads = await open_issues(
            conn, tenant_a.id, [("road_defect", east(-15 * (k + 1)), now - HOUR) for k in range(8)]
        )
        noise = Report("n", LAT, LON, "noise", "nuisance", "Loud music", now, 2)
        # A road defect in the same batch has a 30-day look-back: the batch's earliest.
        road = Report("r", LAT, LON, "road_defect", "infrastructure", "Pothole", now, 2)
        search = grouping.search_for([noise, road], {})
        found = {
            c.id
            for c in await issues_repo.open_issue_candidates(
                conn, tenant_a.id, search, grouping.NEAREST
            )
        }
    assert fresh in found
    assert not found & set(stale)
    assert found & set(roads) == set(roads[: grouping.NEAREST])


async def test_a_report_finds_the_issue_at_its_own_place_however_many_are_nearer(
    app_pool: asyncpg.Pool, tenant_a: TenantKeys
) -> None:
    """Inside a building every issue is near: the one at the report's room comes back by its
    place key even when the nearest few are all elsewhere."""
    now = time.time()
    room = Where(building="hotel", unit="hotel-412", code="hotel-412", label="Room 412")
    async with tenant_transaction(app_pool, tenant_a.id) as conn:
        others = await open_issues(
            conn, tenant_a.id, [("building_fault", east(k), now - HOUR) for k in range(8)]
        )
        (at_412,) = [str(uuid7())]
        founder = Report(
            "y", *north(30), "building_fault", "", "AC broken in 412", now - HOUR, 2, place=room
        )
        await issues_repo.insert_issues(
            conn, tenant_a.id, [(at_412, founder, grouping.found(founder, at_412))]
        )
        report = Report(
            "r", LAT, LON, "building_fault", "facilities", "Room 412 too hot", now, 2, place=room
        )
        search = grouping.search_for([report], {})
        found = {
            c.id: c
            for c in await issues_repo.open_issue_candidates(
                conn, tenant_a.id, search, grouping.NEAREST
            )
        }
    assert at_412 in found and found[at_412].place == room
    assert len(set(found) & set(others)) == grouping.NEAREST
