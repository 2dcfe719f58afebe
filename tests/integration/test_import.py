"""Bulk import of the real LA and SF samples, and of the plain CSV format."""

from __future__ import annotations

import csv
from pathlib import Path

import asyncpg
import pytest

from civicpulse import imports
from civicpulse.config import Settings
from civicpulse.db.pool import create_pool
from tests.support import SHARED_DATA, TenantKeys

LA = SHARED_DATA / "la311_2020-01-01_to_03.csv"
SF = SHARED_DATA / "sf311_sample_2008-2016.csv"
CODES = {"road_defect": "road_defect", "ROAD": "road_defect", "other": "other"}


def count_csv(path: Path, *required: str) -> int:
    with path.open(newline="", encoding="utf-8") as fh:
        return sum(
            1 for row in csv.DictReader(fh) if all(row[c] not in ("", "NA") for c in required)
        )


async def run_import(
    db_url: str,
    tenant: TenantKeys,
    path: Path,
    fmt: str,
) -> imports.ImportResult:
    pool = await create_pool(Settings(), db_url, min_size=1, max_size=2)
    try:
        return await imports.import_file(
            pool, tenant.id, path, fmt, categories=CODES, timezone="America/Los_Angeles"
        )
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("path", "fmt", "id_col", "coords"),
    [
        (LA, "la311", "srnumber", ("latitude", "longitude")),
        (SF, "sf311", "CaseID", ("Lat", "Long")),
    ],
)
async def test_real_samples_import_once_with_row_errors_by_line(
    db_url: str,
    tenant_a: TenantKeys,
    path: Path,
    fmt: str,
    id_col: str,
    coords: tuple[str, str],
) -> None:
    expected = count_csv(path, id_col, *coords)
    first = await run_import(db_url, tenant_a, path, fmt)
    assert first.inserted == expected
    assert first.read == count_csv(path)
    assert len(first.errors) == first.read - expected
    for _line, field, _ in first.errors:
        assert field in coords
    again = await run_import(db_url, tenant_a, path, fmt)
    assert (again.inserted, again.skipped_existing) == (0, expected)

    conn = await asyncpg.connect(db_url)
    try:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM reports WHERE tenant_id = $1 AND state = 'imported'",
                tenant_a.id,
            )
            == expected
        )
        # Local times without offset are read in the city's zone.
        if fmt == "la311":
            first_time = await conn.fetchval(
                "SELECT submitted_at FROM reports WHERE source_id = '1-1523590121'"
            )
            assert first_time.isoformat() == "2020-01-01T08:05:00+00:00"
            with LA.open() as fh:
                lines = fh.read().splitlines()
            for line, _, _ in first.errors:  # the reported line is the record's own line
                assert lines[line - 1].split(",")[0].startswith('"1-')
    finally:
        await conn.close()


async def test_plain_csv_reports_each_bad_row(
    db_url: str, tenant_a: TenantKeys, tmp_path: Path
) -> None:
    path = tmp_path / "reports.csv"
    path.write_text(
        "source_id,text,lat,lon,submitted_at,category,address\n"
        "a1,Pothole by the bakery,34.1,-118.3,2024-05-01T10:00:00-07:00,ROAD,1 Main St\n"
        "a2,No coordinates,,-118.3,2024-05-01T10:00:00-07:00,,\n"
        "a3,Bad category,34.1,-118.3,2024-05-01T10:00:00,sparkles,\n"
        'a4,"Multi-line\ntext",34.1,-118.3,2024-05-01 10:00,,\n'
        "a5,Bad time,34.1,-118.3,yesterday,,\n"
        "a1,The same record repeated in the file,34.1,-118.3,2024-05-01T10:00:00-07:00,,\n"
    )
    result = await run_import(db_url, tenant_a, path, "csv")
    assert result.inserted == 2
    assert result.skipped_existing == 1
    assert [(line, field) for line, field, _ in result.errors] == [
        (3, "lat"),
        (4, "category"),
        (7, "submitted_at"),
    ]
