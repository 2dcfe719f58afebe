"""The importer's row staging: times as text, the COPY text payload, the typed parse."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from civicpulse import imports
from civicpulse.db.reports import IMPORT_COLUMNS

ZONES = ("America/Los_Angeles", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata")


def _wall_times() -> list[str]:
    """Every 10 minutes of each DST change day of 2020 (and a plain day), as exports write."""
    days = [dt.datetime(2020, m, d) for m, d in ((3, 8), (3, 29), (4, 5), (10, 4), (10, 25))]
    days += [dt.datetime(2020, 11, 1), dt.datetime(2020, 7, 1)]
    return [
        (day + dt.timedelta(minutes=10 * i)).strftime("%Y-%m-%d %H:%M:%S")
        for day in days
        for i in range(144)
    ]


@pytest.mark.parametrize("zone_name", ZONES)
def test_clock_reads_wall_times_as_datetime_replace_does(zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    clock = imports._Clock(zone)
    for raw in _wall_times() + _wall_times():  # the second pass reads the hour cache
        value = dt.datetime.fromisoformat(raw)
        expected = value.replace(tzinfo=zone)
        text = clock.text(raw, value)
        assert text == str(expected), raw
        # The same instant (== between zones is never true in a gap or fold: PEP 495).
        assert dt.datetime.fromisoformat(text).timestamp() == expected.timestamp()


@pytest.mark.parametrize(
    "raw",
    [
        "2020-11-01T01:30:00",  # T: not the usual form, formatted from the datetime
        "2020-11-01 01:30",
        "2020-11-01 01:30:00.250000",
        "20201101T013000",
        "2020-11-01T01:30:00-07:00",  # the usual aware form: kept as written
        "2020-11-01 01:30:00+05:30",
        "2020-11-01T01:30:00.5Z",
    ],
)
def test_clock_text_is_the_same_instant_for_other_forms(raw: str) -> None:
    zone = ZoneInfo("America/Los_Angeles")
    value = dt.datetime.fromisoformat(raw)
    expected = value if value.tzinfo is not None else value.replace(tzinfo=zone)
    text = imports._Clock(zone).text(raw, value)
    assert dt.datetime.fromisoformat(text).timestamp() == expected.timestamp()
    assert dt.datetime.fromisoformat(text).utcoffset() == expected.utcoffset()


def _unescape(field: str) -> str:
    out, chars = [], iter(field)
    for c in chars:
        if c == "\\":
            c = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[next(chars)]
        out.append(c)
    return "".join(out)


def test_chunk_is_copy_text_and_escapes_only_when_needed() -> None:
    names = IMPORT_COLUMNS
    plain = ("2", "a1", "Pothole", "34.1", "-118.3", "", "road", "2020-01-01 00:00:00-08:00")
    plain += ("import", "")
    chunk = imports._chunk([plain], {"a1"}, 0, names, [])
    assert chunk.data == ("\t".join(plain) + "\n").encode()

    odd = ("3", "a2", "tab\there, new\nline\r\n and back\\slash", *plain[3:])
    chunk = imports._chunk([plain, odd], {"a1", "a2"}, 1, names, [])
    lines = chunk.data.decode().split("\n")
    assert lines[-1] == "" and len(lines) == 3
    assert [[_unescape(f) for f in line.split("\t")] for line in lines[:2]] == [
        list(plain),
        list(odd),
    ]
    assert (chunk.rows, chunk.repeats) == (2, 1)


def test_chunk_refuses_rows_postgresql_cannot_store() -> None:
    names = (*IMPORT_COLUMNS, "status")
    good = ("2", "a1", "ok", "34.1", "-118.3", "", "", "", "2020-01-01 00:00:00-08:00", "import")
    bad = ("5", "a2", "ok", "34.1", "-118.3", "1 Main\x00St", "", "", *good[8:])
    errors: list[tuple[int, str, str]] = []
    ids = {"a1", "a2"}
    chunk = imports._chunk([(*good, "", "x"), (*bad, "", "y")], ids, 0, names, errors)
    assert chunk.rows == 1 and ids == {"a1"}
    assert errors == [(5, "address", "contains NUL, which cannot be stored")]
    assert b"a2" not in chunk.data


def test_a_record_closing_before_it_opens_is_flagged() -> None:
    layout = imports.LAYOUTS["csv"](
        ["source_id", "text", "lat", "lon", "submitted_at", "closed_at"],
        {},
        ZoneInfo("America/Los_Angeles"),
    )
    base = ["x", "Pothole", "34.1", "-118.3", "2024-05-03T10:00:00-07:00"]
    assert layout.stage([*base, "2024-05-01T09:00:00-07:00"], 2)[-1] == "closed_before_opened"
    assert layout.stage([*base, "2024-05-03T10:00:00-07:00"], 2)[-1] == ""  # at once: fine
    assert layout.stage([*base, ""], 2)[-1] == ""
    # Compared as instants, not as text: 09:30 in New York is before 07:00 in Los Angeles.
    east = layout.stage([*base[:4], "2024-05-03T07:00:00-07:00", "2024-05-03T09:30:00-04:00"], 2)
    assert east[-1] == "closed_before_opened"


def test_parse_gives_typed_values_from_the_staged_row() -> None:
    header = ["srnumber", "createddate", "closeddate", "requesttype", "requestsource"]
    header += ["status", "latitude", "longitude", "address"]
    layout = imports.LAYOUTS["la311"](header, {}, ZoneInfo("America/Los_Angeles"))
    row = ["1-1", "2020-11-01 01:30:00", "", "Graffiti Removal", "Call", "NA", "34.1", "-118.3"]
    row += [" 1 Main St "]
    parsed = layout.parse(row)
    assert parsed[:6] == ("1-1", "Graffiti Removal", 34.1, -118.3, "1 Main St", "graffiti")
    assert parsed[6] == dt.datetime(2020, 11, 1, 8, 30, tzinfo=dt.UTC)  # fold=0: PDT
    assert parsed[7] == "phone" and parsed[9] is None
    assert dict(zip(layout.attribute_keys, parsed[8], strict=True)) == {
        "requesttype": "Graffiti Removal",
        "requestsource": "Call",
        "status": None,
        "ncname": None,
        "cd": None,
        "zipcode": None,
        "owner": None,
        "closed_at": None,
        "import_flag": None,
    }
    staged = layout.stage(row, 7)
    assert staged[0] == "7" and len(staged) == len(IMPORT_COLUMNS) + len(layout.attribute_keys)


def test_a_record_without_a_point_is_kept_by_its_address() -> None:
    layout = imports.LAYOUTS["csv"](
        ["source_id", "text", "lat", "lon", "submitted_at", "address"],
        {},
        ZoneInfo("America/Los_Angeles"),
    )
    when = "2024-05-03T10:00:00-07:00"
    staged = layout.stage(["x", "Pothole", "", "", when, "5718 San Ramon Drive 90042"], 2)
    assert staged[3:7] == ("", "", "5718 San Ramon Drive 90042", "5718 san ramon dr")
    # The exports' 0 means unknown too.
    assert layout.stage(["y", "Pothole", "0", "0", when, "1 Main St"], 3)[3:7] == (
        "", "", "1 Main St", "1 main st",
    )  # fmt: skip
    # Without an address it names no place at all: rejected.
    with pytest.raises(imports.RowError, match="missing coordinate"):
        layout.stage(["z", "Pothole", "", "", when, ""], 4)
    # A point that is there but wrong is still an error, address or not.
    with pytest.raises(imports.RowError, match="out of range"):
        layout.stage(["w", "Pothole", "134.1", "-118.3", when, "1 Main St"], 5)
