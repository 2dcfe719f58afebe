"""SLA metrics on the real LA and SF samples: the API's per-category median and p90 time to
close equal what a few lines of independent code compute straight from the CSV files."""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections import defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from civicpulse import imports
from civicpulse.config import Settings
from civicpulse.db.pool import create_pool
from tests.support import SHARED_DATA, TenantKeys, running_server

PACIFIC = ZoneInfo("America/Los_Angeles")


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (what percentile_cont computes)."""
    xs = sorted(values)
    k = (len(xs) - 1) * p
    lo = math.floor(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# The default SLA policy an imported issue gets (priority 4: "standard" in
# civicpulse/data/sla_defaults.json): 2,700 business minutes, Monday-Friday 08:00-17:00.
STANDARD_TARGET_S = 2700 * 60


def business_seconds(t0: dt.datetime, t1: dt.datetime) -> float:
    """Seconds of Monday-Friday 08:00-17:00 Pacific time between two instants, counted day
    by day (independently of civicpulse.engine.business_time)."""
    total = 0.0
    day = t0.astimezone(PACIFIC).date()
    while day <= t1.astimezone(PACIFIC).date():
        if day.weekday() < 5:
            opens = dt.datetime.combine(day, dt.time(8), tzinfo=PACIFIC)
            closes = dt.datetime.combine(day, dt.time(17), tzinfo=PACIFIC)
            total += max(0.0, (min(closes, t1) - max(opens, t0)).total_seconds())
        day += dt.timedelta(days=1)
    return total


def close_times_from_csv(
    path: Path,
    opened: str,
    closed: str,
    category_of: dict[str, str],
    column: str,
    rejected_lines: set[int],
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, list[float]]]:
    """Seconds from open to close per category, for every record with a close time that is
    not before its open time; per category, the records closed before they opened; and the
    business seconds of the first, on the default policy's calendar."""
    out: dict[str, list[float]] = defaultdict(list)
    before: dict[str, int] = defaultdict(int)
    business: dict[str, list[float]] = defaultdict(list)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        line = reader.line_num
        for row in reader:
            start, line = line + 1, reader.line_num
            if start in rejected_lines or row[closed] in ("", "NA"):
                continue
            t0 = dt.datetime.fromisoformat(row[opened]).replace(tzinfo=PACIFIC)
            t1 = dt.datetime.fromisoformat(row[closed]).replace(tzinfo=PACIFIC)
            seconds = (t1.astimezone(dt.UTC) - t0.astimezone(dt.UTC)).total_seconds()
            if seconds < 0:  # kept by the import, closed, but not timed
                before[category_of.get(row[column], "other")] += 1
                continue
            out[category_of.get(row[column], "other")].append(seconds)
            business[category_of.get(row[column], "other")].append(business_seconds(t0, t1))
    return out, before, business


@pytest.mark.parametrize(
    ("name", "fmt", "opened", "closed", "column", "categories"),
    [
        (
            "la311_2020-01-01_to_03.csv",
            "la311",
            "createddate",
            "closeddate",
            "requesttype",
            imports.LA_CATEGORIES,
        ),
        (
            "sf311_sample_2008-2016.csv",
            "sf311",
            "Opened",
            "Closed",
            "Category",
            imports.SF_CATEGORIES,
        ),
    ],
)
async def test_time_to_close_matches_an_independent_computation(
    settings: Settings,
    db_url: str,
    tenant_a: TenantKeys,
    name: str,
    fmt: str,
    opened: str,
    closed: str,
    column: str,
    categories: dict[str, str],
) -> None:
    path = SHARED_DATA / name
    pool = await create_pool(settings, db_url, min_size=1, max_size=2)
    try:
        result = await imports.import_file(
            pool, tenant_a.id, path, fmt, categories={}, timezone="America/Los_Angeles"
        )
    finally:
        await pool.close()
    assert result.inserted > 1000
    assert result.measured == result.inserted  # every imported issue got the policy in force
    rejected = {line for line, _, _ in result.errors}
    expected, before, business = close_times_from_csv(
        path, opened, closed, categories, column, rejected
    )
    assert result.flagged.get("closed_before_opened", 0) == sum(before.values())

    async with running_server(settings) as client:
        r = await client.get(
            f"/v1/tenants/{tenant_a.slug}/metrics/sla",
            params={"group_by": "category"},
            headers=tenant_a.headers("staff"),
        )
        assert r.status_code == 200, r.text
        groups = {g["key"]: g for g in r.json()["groups"]}
        # A period filter narrows to issues opened in it.
        r2 = await client.get(
            f"/v1/tenants/{tenant_a.slug}/metrics/sla",
            params={"from": "1990-01-01", "to": "1990-02-01"},
            headers=tenant_a.headers("staff"),
        )
        assert r2.json()["groups"] == []

    assert set(expected) <= set(groups)
    for category, seconds in expected.items():
        wall = groups[category]["time_to_resolve_s"]["wall"]
        assert groups[category]["resolved"] == len(seconds) + before[category], category
        assert wall["p50"] == pytest.approx(percentile(seconds, 0.5), abs=1e-3), category
        assert wall["p90"] == pytest.approx(percentile(seconds, 0.9), abs=1e-3), category
        # History counts in the SLA figures, as if it had arrived live: the policy in force,
        # business time from the real open and close times, met against its target.
        measured = business[category]
        resolution = groups[category]["resolution"]
        assert resolution["measured"] == len(measured), category
        assert resolution["met"] == sum(1 for b in measured if b <= STANDARD_TARGET_S), category
        in_business = groups[category]["time_to_resolve_s"]["business"]
        assert in_business["p50"] == pytest.approx(percentile(measured, 0.5), abs=1e-3), category
        assert in_business["p90"] == pytest.approx(percentile(measured, 0.9), abs=1e-3), category
    total_open = sum(g["backlog"] for g in groups.values())
    total = sum(g["opened"] for g in groups.values())
    assert total == result.inserted
    closed_count = sum(len(s) for s in expected.values()) + sum(before.values())
    assert total_open == total - closed_count
