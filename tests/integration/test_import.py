"""Bulk import of the real LA and SF samples, and of the plain CSV format."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from civicpulse import imports
from civicpulse.config import Settings
from civicpulse.db.pool import create_pool
from tests.support import SHARED_DATA, TenantKeys, env_without_civicpulse

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


def count_located(path: Path, id_col: str, coords: tuple[str, str], address: str) -> int:
    """Records with an id and a place: a point, or else an address."""
    with path.open(newline="", encoding="utf-8") as fh:
        return sum(
            1
            for row in csv.DictReader(fh)
            if row[id_col] not in ("", "NA")
            and (
                all(row[c] not in ("", "NA", "0") for c in coords) or row[address] not in ("", "NA")
            )
        )


@pytest.mark.parametrize(
    ("path", "fmt", "id_col", "coords", "address"),
    [
        (LA, "la311", "srnumber", ("latitude", "longitude"), "address"),
        (SF, "sf311", "CaseID", ("Lat", "Long"), "Address"),
    ],
)
async def test_real_samples_import_once_with_row_errors_by_line(
    db_url: str,
    tenant_a: TenantKeys,
    path: Path,
    fmt: str,
    id_col: str,
    coords: tuple[str, str],
    address: str,
) -> None:
    # Every record that says where it is is kept: by its point, or by its address alone.
    expected = count_located(path, id_col, coords, address)
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


async def test_values_reach_the_database_as_read(
    db_url: str, tenant_a: TenantKeys, tmp_path: Path
) -> None:
    path = tmp_path / "tricky.csv"
    path.write_bytes(
        b"source_id,text,lat,lon,submitted_at,category,address,closed_at\r\n"
        b't1,"Tab\there, back\\slash, ""quotes"" and \xc3\xa9",3_4.1,-118.3,'
        b"2020-11-01 01:30:00,ROAD,1 Main St,2020-11-01T03:00:00-08:00\r\n"
        b't2,"Line one\r\nline two",34.2,-118.25,2020-03-08 02:30,,,\r\n'
        b"t3,Has a NUL \x00 in it,34.2,-118.25,2020-03-08 02:30,,,\r\n"
        b"t4,Far future,34.2,-118.25,2250-01-01 00:00,,,\r\n"
    )
    result = await run_import(db_url, tenant_a, path, "csv")
    assert (result.inserted, result.skipped_existing) == (2, 0)
    assert result.errors == [
        (5, "text", "contains NUL, which cannot be stored"),
        (6, "submitted_at", "must be between 1900-01-01 and 2200-01-01"),
    ]
    conn = await asyncpg.connect(db_url)
    try:
        rows = {
            r["source_id"]: r
            for r in await conn.fetch(
                "SELECT r.source_id, r.text, r.lat, r.address, r.category, r.submitted_at,"
                " i.closed_at FROM reports r JOIN issues i"
                " ON i.tenant_id = r.tenant_id AND i.id = r.issue_id WHERE r.tenant_id = $1",
                tenant_a.id,
            )
        }
    finally:
        await conn.close()
    assert rows["t1"]["text"] == 'Tab\there, back\\slash, "quotes" and \u00e9'
    assert (rows["t1"]["lat"], rows["t1"]["address"]) == (34.1, "1 Main St")
    assert rows["t1"]["category"] == "road_defect"
    # An ambiguous wall time is the earlier one (PDT), a skipped one reads as standard time.
    assert rows["t1"]["submitted_at"].isoformat() == "2020-11-01T08:30:00+00:00"
    assert rows["t1"]["closed_at"].isoformat() == "2020-11-01T11:00:00+00:00"
    assert rows["t2"]["text"] == "Line one\r\nline two"
    assert rows["t2"]["submitted_at"].isoformat() == "2020-03-08T10:30:00+00:00"
    assert rows["t2"]["address"] is None and rows["t2"]["closed_at"] is None


def _plain_csv(path: Path, records: list[tuple[str, str]]) -> None:
    path.write_text(
        "source_id,text,lat,lon,submitted_at\n"
        + "".join(f"{sid},{text},34.1,-118.3,2024-05-01T10:00:00-07:00\n" for sid, text in records)
    )


async def test_repeats_across_chunks_keep_the_first_line_and_reimport_adds_only_new(
    db_url: str, tenant_a: TenantKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imports, "CHUNK_ROWS", 2)  # many chunks, two moved at once
    records = [(f"r{i}", f"first {i}") for i in range(1, 9)]
    records += [("r1", "repeat 1"), ("r8", "repeat 8"), ("r9", "first 9"), ("r5", "repeat 5")]
    path = tmp_path / "repeats.csv"
    _plain_csv(path, records)
    first = await run_import(db_url, tenant_a, path, "csv")
    assert (first.read, first.inserted, first.skipped_existing) == (12, 9, 3)

    _plain_csv(path, [*records, ("r10", "first 10"), ("r2", "repeat 2"), ("r11", "first 11")])
    again = await run_import(db_url, tenant_a, path, "csv")
    assert (again.inserted, again.skipped_existing) == (2, 13)

    conn = await asyncpg.connect(db_url)
    try:
        texts = dict(
            await conn.fetch(
                "SELECT source_id, text FROM reports WHERE tenant_id = $1", tenant_a.id
            )
        )
        issues = await conn.fetchval(
            "SELECT count(*) FROM issues WHERE tenant_id = $1", tenant_a.id
        )
    finally:
        await conn.close()
    assert texts == {f"r{i}": f"first {i}" for i in range(1, 12)}
    assert issues == 11  # one per record, none left over from a refused move


async def test_concurrent_imports_of_one_file_add_each_record_once(
    db_url: str, tenant_a: TenantKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imports, "CHUNK_ROWS", 50)
    path = tmp_path / "same.csv"
    _plain_csv(path, [(f"c{i}", f"text {i}") for i in range(600)])
    results = await asyncio.gather(*(run_import(db_url, tenant_a, path, "csv") for _ in range(3)))
    assert sum(r.inserted for r in results) == 600
    assert all(r.inserted + r.skipped_existing == 600 and not r.errors for r in results)
    conn = await asyncpg.connect(db_url)
    try:
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM reports WHERE tenant_id = $1) AS reports,"
            " (SELECT count(*) FROM issues WHERE tenant_id = $1) AS issues",
            tenant_a.id,
        )
    finally:
        await conn.close()
    assert (counts["reports"], counts["issues"]) == (600, 600)


EXPORT = Path(__file__).resolve().parents[1] / "data" / "sf311_export_sample.csv"


async def test_the_sf311_export_layout_point_and_us_times(
    db_url: str, tenant_a: TenantKeys
) -> None:
    """DataSF's own export: coordinates only in Point, times as 04/30/2014 02:51:52 PM. The
    same records, read from the older Lat/Long sample, give the same places and times."""
    result = await run_import(db_url, tenant_a, EXPORT, "sf311")
    assert "Point" in result.layout
    with EXPORT.open(newline="") as fh:
        export = list(csv.DictReader(fh))
    with SF.open(newline="") as fh:
        sample = {row["CaseID"]: row for row in csv.DictReader(fh)}
    valid = [r for r in export if r["Point"] not in ("", "NA")]
    assert result.inserted == len(valid) and len(result.errors) == len(export) - len(valid)
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            """SELECT source_id, lat, lon, submitted_at AT TIME ZONE 'America/Los_Angeles' AS t
                 FROM reports WHERE tenant_id = $1""",
            tenant_a.id,
        )
    finally:
        await conn.close()
    assert len(rows) == len(valid)
    for row in rows:
        original = sample[row["source_id"]]
        assert (row["lat"], row["lon"]) == (float(original["Lat"]), float(original["Long"]))
        assert row["t"].isoformat(" ") == original["Opened"]


def test_the_import_command_says_what_it_found_and_fails_when_nothing_came_in(
    tmp_path: Path, db_url: str, tenant_a: TenantKeys
) -> None:
    def civicpulse(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**env_without_civicpulse(), "CIVICPULSE_DATABASE_URL": db_url}
        return subprocess.run(
            [sys.executable, "-m", "civicpulse", *args],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    # Two rows whose Point is broken, and the sample's good ones.
    lines = EXPORT.read_text().splitlines()
    broken = [lines[1].replace('"(37.797838468, -122.446243791)"', '"(nowhere)"'),
              lines[2].replace('"(37.780122585, -122.4722852)"', '""')]  # fmt: skip
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("\n".join([lines[0], *broken, *lines[3:]]) + "\n")
    ok = civicpulse("import", str(mixed), "--tenant", tenant_a.slug, "--format", "sf311", "--quiet")
    assert ok.returncode == 0, ok.stderr
    assert "layout: sf311: coordinates from Point" in ok.stderr
    # The row without a Point has an address: kept, located by it.
    assert "read 60 rows: 59 imported, 0 already present, 1 rejected" in ok.stdout
    assert "rejected 1: Point: not a (latitude, longitude) pair" in ok.stdout
    strict = civicpulse(
        "import", str(mixed), "--tenant", tenant_a.slug, "--format", "sf311", "--quiet",
        "--strict",
    )  # fmt: skip
    assert strict.returncode == 1
    # Nothing importable: a failure, not a quiet success.
    none = tmp_path / "none.csv"
    none.write_text("\n".join([lines[0], broken[0]]) + "\n")
    failed = civicpulse(
        "import", str(none), "--tenant", tenant_a.slug, "--format", "sf311", "--quiet"
    )
    assert failed.returncode == 1 and "nothing was imported" in failed.stderr


async def test_a_record_closed_before_it_opened_is_kept_flagged_and_not_timed(
    db_url: str, tenant_a: TenantKeys, tmp_path: Path
) -> None:
    path = tmp_path / "history.csv"
    path.write_text(
        "source_id,text,lat,lon,submitted_at,category,closed_at\n"
        "h1,Pothole,34.1,-118.3,2024-05-01T10:00:00-07:00,ROAD,2024-05-01T12:00:00-07:00\n"
        "h2,Pothole,34.1,-118.3,2024-05-01T10:00:00-07:00,ROAD,2024-05-01T16:00:00-07:00\n"
        "h3,Pothole,34.1,-118.3,2024-05-03T10:00:00-07:00,ROAD,2024-05-01T09:00:00-07:00\n"
        "h4,Pothole,34.1,-118.3,2024-05-01T10:00:00-07:00,ROAD,\n"
    )
    result = await run_import(db_url, tenant_a, path, "csv")
    assert result.inserted == 4 and not result.errors
    assert result.flagged == {"closed_before_opened": 1}
    conn = await asyncpg.connect(db_url)
    try:
        flags = dict(
            await conn.fetch(
                "SELECT source_id, attributes->>'import_flag' FROM reports WHERE tenant_id = $1",
                tenant_a.id,
            )
        )
        assert flags == {"h1": None, "h2": None, "h3": "closed_before_opened", "h4": None}
        # Closed, like the source says, but with no clock: the median time to close is
        # that of h1 (2 h) and h2 (6 h) alone, as computed independently here.
        median = await conn.fetchval(
            """SELECT percentile_cont(0.5) WITHIN GROUP (
                          ORDER BY extract(epoch FROM resolved_at - sla_started_at))
                 FROM issues WHERE tenant_id = $1 AND status = 'closed'""",
            tenant_a.id,
        )
        closed = await conn.fetchval(
            "SELECT count(*) FROM issues WHERE tenant_id = $1 AND status = 'closed'", tenant_a.id
        )
    finally:
        await conn.close()
    assert closed == 3
    assert median == (2 * 3600 + 6 * 3600) / 2


NYC_PORTAL = Path(__file__).resolve().parents[1] / "data" / "nyc311_portal_sample.csv"
NYC_API = Path(__file__).resolve().parents[1] / "data" / "nyc311_api_sample.csv"


async def test_nyc311_reads_both_namings_alike(
    db_url: str, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    portal = await run_import(db_url, tenant_a, NYC_PORTAL, "nyc311")
    api = await run_import(db_url, tenant_b, NYC_API, "nyc311")
    assert "Unique Key" in portal.layout and "unique_key" in api.layout
    for result in (portal, api):
        # The record without coordinates has an address: kept, located by it.
        assert (result.inserted, result.errors) == (8, [])
        assert result.flagged == {"closed_before_opened": 1}
    conn = await asyncpg.connect(db_url)
    try:

        async def rows(tenant: TenantKeys) -> dict[str, tuple[object, ...]]:
            return {
                r["source_id"]: tuple(r)[1:]
                for r in await conn.fetch(
                    """SELECT source_id, text, category, submitted_at, channel, lat, lon
                         FROM reports WHERE tenant_id = $1""",
                    tenant.id,
                )
            }

        a, b = await rows(tenant_a), await rows(tenant_b)
    finally:
        await conn.close()
    assert a == b  # the same records, whichever naming they came in
    text, category, submitted, channel, lat, lon = a["45280149"]
    assert (text, category, channel) == ("Street Condition: Pothole", "road_defect", "phone")
    assert submitted.isoformat() == "2020-01-01T05:02:10+00:00"  # 00:02:10 in New York
    assert (lat, lon) == (40.80012791, -73.96930221)
    assert a["45280151"][1] == "other"  # Illegal Parking: no category of the taxonomy
    assert a["45280154"][4:] == (None, None)  # by address only: 7801 SHORE ROAD


async def test_a_rolling_export_measures_only_its_new_records(
    db_url: str, tenant_a: TenantKeys, tmp_path: Path
) -> None:
    """Cities publish rolling exports: most of each day's file is known. The new records
    get their SLA figures like a first import's (measured in the writer, once the database
    has said which are new); the known ones are skipped."""
    lines = LA.read_text(encoding="utf-8").splitlines(keepends=True)
    head = tmp_path / "first.csv"
    head.write_text("".join(lines[:3001]), encoding="utf-8")
    first = await run_import(db_url, tenant_a, head, "la311")
    assert first.inserted == first.measured == 3000
    rolled = await run_import(db_url, tenant_a, LA, "la311")
    assert rolled.skipped_existing == 3000
    assert rolled.inserted == rolled.measured == count_csv(LA) - 3000
    conn = await asyncpg.connect(db_url)
    try:
        unmeasured = await conn.fetchval(
            "SELECT count(*) FROM issues WHERE tenant_id = $1 AND sla_policy IS NULL",
            tenant_a.id,
        )
        timed = await conn.fetchval(
            """SELECT count(*) FROM issues WHERE tenant_id = $1
                 AND (resolution_business_s IS NOT NULL OR resolution_due_at IS NOT NULL)""",
            tenant_a.id,
        )
    finally:
        await conn.close()
    assert unmeasured == 0
    assert timed > 9000  # all but those closed before they opened, or never timed
