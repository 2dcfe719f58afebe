"""Imports as a city would run them (the `import` command on real exports), checked against an
independent computation with pandas: every record that says where it is kept, and each
category's median time to close, as the SLA metrics report it, equal to the median pandas
computes from the file itself (records closed before they opened left out)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from civicpulse import imports
from civicpulse.config import Settings
from tests.support import TenantKeys, env_without_civicpulse, running_server

DATA = Path(__file__).resolve().parents[1] / "data"


def civicpulse(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**env_without_civicpulse(), "CIVICPULSE_DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "civicpulse", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def sf_export() -> pd.DataFrame:
    """DataSF's export: US times in San Francisco, the point in one column."""
    df = pd.read_csv(DATA / "sf311_export_sample.csv", dtype=str, keep_default_na=False)
    fmt = "%m/%d/%Y %I:%M:%S %p"
    return pd.DataFrame(
        {
            "id": df["CaseID"],
            "category": df["Category"].map(imports.SF_CATEGORIES).fillna("other"),
            "opened": pd.to_datetime(df["Opened"], format=fmt).dt.tz_localize(imports.LOS_ANGELES),
            "closed": pd.to_datetime(df["Closed"].replace("NA", ""), format=fmt).dt.tz_localize(
                imports.LOS_ANGELES
            ),
            "located": df["Point"].str.startswith("(") | (df["Address"] != ""),
        }
    )


def nyc(name: str, naming: str) -> pd.DataFrame:
    """NYC's export in either naming: times in New York."""
    n = imports.NYC_NAMINGS[naming]
    df = pd.read_csv(DATA / name, dtype=str, keep_default_na=False)
    fmt = "%m/%d/%Y %I:%M:%S %p" if naming == "portal" else "%Y-%m-%dT%H:%M:%S.%f"
    zone = imports.NEW_YORK

    def when(column: str) -> pd.Series:
        return pd.to_datetime(df[column], format=fmt).dt.tz_localize(zone)

    return pd.DataFrame(
        {
            "id": df[n["id"]],
            "category": df[n["type"]].map(imports.NYC_CATEGORIES).fillna("other"),
            "opened": when(n["created"]),
            "closed": when(n["closed"]),
            "located": (df[n["latitude"]] != "") | (df[n["address"]] != ""),
        }
    )


def open311(name: str) -> pd.DataFrame:
    """A GeoReport dump: a closed request closed at its updated_datetime."""
    if name.endswith(".json"):
        df = pd.read_json(DATA / name, dtype=False)
    else:
        df = pd.read_xml(DATA / name, xpath="./request", dtype=str, parser="etree")
    closed = df["status"] == "closed"
    return pd.DataFrame(
        {
            "id": df["service_request_id"].astype(str),
            "category": df["service_code"],
            "opened": pd.to_datetime(df["requested_datetime"], utc=True),
            "closed": pd.to_datetime(df["updated_datetime"], utc=True).where(closed),
            "located": df["lat"].notna() | df["address"].notna(),
        }
    )


CASES: dict[str, tuple[str, str, Any]] = {
    "sf311 export": ("sf311_export_sample.csv", "sf311", sf_export),
    "nyc311 portal": ("nyc311_portal_sample.csv", "nyc311", lambda: nyc(
        "nyc311_portal_sample.csv", "portal")),
    "nyc311 api": ("nyc311_api_sample.csv", "nyc311", lambda: nyc("nyc311_api_sample.csv", "api")),
    "open311 json": ("open311_requests_sample.json", "open311", lambda: open311(
        "open311_requests_sample.json")),
    "open311 xml": ("open311_requests_sample.xml", "open311", lambda: open311(
        "open311_requests_sample.xml")),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
async def test_an_import_keeps_every_located_record_and_its_times_to_close(
    settings: Settings, db_url: str, tenant_a: TenantKeys, case: str
) -> None:
    name, fmt, frame = CASES[case]
    expected = frame()
    done = civicpulse(db_url, "import", str(DATA / name), "--tenant", tenant_a.slug,
                      "--format", fmt)  # fmt: skip
    assert done.returncode == 0, done.stderr
    kept = int(expected["located"].sum())
    assert f"{kept} imported" in done.stdout, done.stdout
    # The progress bar counts the file's records and ends at all of them.
    final = [m for m in re.findall(r"(\d+)/(\d+) \[", done.stderr)][-1]
    assert final == (str(len(expected)), str(len(expected))), done.stderr[-400:]

    timed = expected[expected["closed"].notna() & expected["located"]]
    seconds = (timed["closed"] - timed["opened"]).dt.total_seconds()
    before = int((seconds < 0).sum())
    if before:
        assert f"kept but flagged {before}: closed_before_opened" in done.stdout
    medians = seconds[seconds >= 0].groupby(timed["category"][seconds >= 0]).median()

    async with running_server(settings) as client:
        r = await client.get(
            f"/v1/tenants/{tenant_a.slug}/metrics/sla",
            params={"group_by": "category"},
            headers=tenant_a.headers("staff"),
        )
        assert r.status_code == 200, r.text
    groups = {g["key"]: g for g in r.json()["groups"]}
    assert sum(g["opened"] for g in groups.values()) == kept
    assert not medians.empty
    for category, median in medians.items():
        wall = groups[category]["time_to_resolve_s"]["wall"]
        assert wall["p50"] == pytest.approx(median, abs=1e-3), (case, category)
