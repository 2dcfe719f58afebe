"""Bulk import of 311 exports (Los Angeles, San Francisco, New York), Open311 GeoReport v2
dumps (requests.json or requests.xml) and a plain CSV format.

Fast path by design: the C csv reader splits rows, each format picks its columns by
position (found once from the header) and checks them, and each chunk is joined into
COPY's text format and COPYed into a temp table, where PostgreSQL parses the numbers and
times; one INSERT ... SELECT under the tenant's RLS setting moves the chunk into `reports`
and makes its issues (COPY cannot write an RLS table directly). Ids are made and attributes
built in SQL. Parsing overlaps with the database, and two chunks are moved at once on two
connections: the moves are the larger cost, and each uses one core. Bad rows are reported
with their line number and field. Source record ids make a re-import add nothing; a record
repeated in the file is imported once, from its first line. Imported records are
historical: they keep their own times and skip the live pipeline.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from civicpulse import workflow
from civicpulse.db import reports as reports_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.domain import limits
from civicpulse.engine import addresses, business_time, tenant_rules
from civicpulse.errors import CivicPulseError

FORMATS = ("la311", "sf311", "nyc311", "open311", "csv")
CHUNK_ROWS = 20_000
# A file of N records moves in chunks of N/PROGRESS_STEPS records (within 1,000 and
# CHUNK_ROWS): a progress bar counting committed records then moves in even steps.
PROGRESS_STEPS = 50
# Chunks moved at once, each on its own connection and transaction (at most the pool's size).
WRITERS = 2
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
NEW_YORK = ZoneInfo("America/New_York")
_BLANK = frozenset({"", "NA", "NULL"})

LA_CATEGORIES = {
    "Bulky Items": "bulky_items",
    "Metal/Household Appliances": "bulky_items",
    "Electronic Waste": "bulky_items",
    "Graffiti Removal": "graffiti",
    "Illegal Dumping Pickup": "litter_dumping",
    "Homeless Encampment": "litter_dumping",
    "Dead Animal Removal": "litter_dumping",
    "Single Streetlight Issue": "streetlight",
    "Multiple Streetlight Issue": "streetlight",
    "Report Water Waste": "water_sewer",
    "Other": "other",
}
SF_CATEGORIES = {
    "Street and Sidewalk Cleaning": "litter_dumping",
    "Litter Receptacles": "litter_dumping",
    "Graffiti Public Property": "graffiti",
    "Graffiti Private Property": "graffiti",
    "Illegal Postings": "graffiti",
    "Abandoned Vehicle": "abandoned_vehicle",
    "Sewer Issues": "water_sewer",
    "Catch Basin Maintenance": "water_sewer",
    "Streetlights": "streetlight",
    "Street Defects": "road_defect",
    "Sidewalk or Curb": "road_defect",
    "Blocked Street or SideWalk": "road_defect",
    "Tree Maintenance": "trees",
    "Sign Repair": "signs_signals",
    "Temporary Sign Request": "signs_signals",
    "Color Curb": "signs_signals",
    "Rec and Park Requests": "parks",
    "Residential Building Request": "building_fault",
    "SFHA Requests": "building_fault",
    "Damaged Property": "building_fault",
    "Noise Report": "noise",
}
LA_CHANNELS = {
    "Call": "phone",
    "Mobile App": "mobile",
    "Self Service": "web",
    "Email": "email",
    "Driver Self Report": "staff",
}
# NYC 311's complaint types onto the default taxonomy (the common ones; others: "other").
NYC_CATEGORIES = {
    "Street Condition": "road_defect",
    "Pothole": "road_defect",
    "Sidewalk Condition": "road_defect",
    "Street Light Condition": "streetlight",
    "Graffiti": "graffiti",
    "Dirty Conditions": "litter_dumping",
    "Sanitation Condition": "litter_dumping",
    "Illegal Dumping": "litter_dumping",
    "Litter Basket / Request": "litter_dumping",
    "Missed Collection (All Materials)": "litter_dumping",
    "Bulky Item Collection": "bulky_items",
    "Water System": "water_sewer",
    "Sewer": "water_sewer",
    "Water Leak": "water_sewer",
    "Noise": "noise",
    "Noise - Residential": "noise",
    "Noise - Street/Sidewalk": "noise",
    "Noise - Commercial": "noise",
    "Noise - Vehicle": "noise",
    "Noise - Helicopter": "noise",
    "Abandoned Vehicle": "abandoned_vehicle",
    "Derelict Vehicles": "abandoned_vehicle",
    "Damaged Tree": "trees",
    "Dead/Dying Tree": "trees",
    "Overgrown Tree/Branches": "trees",
    "Traffic Signal Condition": "signs_signals",
    "Street Sign - Damaged": "signs_signals",
    "Street Sign - Missing": "signs_signals",
    "HEAT/HOT WATER": "building_fault",
    "PLUMBING": "building_fault",
    "PAINT/PLASTER": "building_fault",
    "UNSANITARY CONDITION": "building_fault",
}
NYC_CHANNELS = {"PHONE": "phone", "ONLINE": "web", "MOBILE": "mobile"}
# NYC publishes one export under two namings: the portal's CSV ("Unique Key", times as
# 01/01/2020 12:00:00 AM) and the API's (unique_key, times as 2020-01-01T00:00:00.000).
NYC_NAMINGS = {
    "portal": {
        "id": "Unique Key",
        "created": "Created Date",
        "closed": "Closed Date",
        "type": "Complaint Type",
        "descriptor": "Descriptor",
        "address": "Incident Address",
        "latitude": "Latitude",
        "longitude": "Longitude",
        "channel": "Open Data Channel Type",
    },
    "api": {
        "id": "unique_key",
        "created": "created_date",
        "closed": "closed_date",
        "type": "complaint_type",
        "descriptor": "descriptor",
        "address": "incident_address",
        "latitude": "latitude",
        "longitude": "longitude",
        "channel": "open_data_channel_type",
    },
}
NYC_ATTRIBUTES = {
    "portal": ("Agency", "Borough", "Incident Zip", "Location Type", "Status", "Community Board"),
    "api": ("agency", "borough", "incident_zip", "location_type", "status", "community_board"),
}
SF_CHANNELS = {
    "Voice In": "phone",
    "Open311": "api",
    "Web Self Service": "web",
    "Twitter": "web",
    "e-mail In": "email",
    "Integrated Agency": "staff",
    "Other Department": "staff",
}
# Source columns kept as report attributes (the source's own names), then closed_at.
LA_ATTRIBUTES = ("requesttype", "requestsource", "status", "ncname", "cd", "zipcode", "owner")
SF_ATTRIBUTES = (
    "Category",
    "Request.Type",
    "Request.Details",
    "Status",
    "Status.Notes",
    "Responsible.Agency",
    "Neighborhood",
    "Source",
    "Supervisor.District",
)


class RowError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class FormatError(CivicPulseError):
    """The file does not have the columns its format needs."""

    code = "bad_format"


@dataclass(slots=True)
class ImportResult:
    read: int = 0
    inserted: int = 0
    skipped_existing: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    layout: str = ""  # what the header said about the file (e.g. where coordinates are)
    flagged: dict[str, int] = field(default_factory=dict)  # rows kept but flagged, per reason
    new_issues: int = 0  # issues made (one per imported record)
    # Of those, issues given an SLA policy and measured (measure_one), each in its chunk's
    # transaction: an import cut short leaves no issue unmeasured.
    measured: int = 0

    def rejections(self) -> list[tuple[str, int]]:
        """Rejected rows per reason ("field: problem", without the row's own values), most
        first."""
        counts: dict[str, int] = {}
        for _, name, message in self.errors:
            reason = f"{name}: {message.split(':', 1)[0]}"
            counts[reason] = counts.get(reason, 0) + 1
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


# A row parser turns the split fields of one record into
# (source_id, text, lat, lon, address, category, submitted_at, channel, attribute_values,
#  closed_at).
RowParser = Callable[[list[str]], tuple[Any, ...]]
# A row stager turns them, and the record's first line, into the staging table's row as
# text for PostgreSQL to parse: (line, source_id, text, lat, lon, address, address_key,
# category, submitted_at, channel, closed_at, *attribute_values), the columns of
# reports_repo.import_columns, with "" for a missing value.
RowStager = Callable[[list[str], int], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Layout:
    attribute_keys: tuple[str, ...]
    stage: RowStager
    description: str = ""

    def parse(self, row: list[str]) -> tuple[Any, ...]:
        """The record as typed values (see RowParser; times as aware datetimes with their
        offset); raises RowError."""
        s = self.stage(row, 0)
        return (
            s[1],
            s[2],
            float(s[3]) if s[3] else None,
            float(s[4]) if s[4] else None,
            s[5] or None,
            s[7] or None,
            dt.datetime.fromisoformat(s[8]),
            s[9],
            [value or None for value in s[11:]],
            dt.datetime.fromisoformat(s[10]) if s[10] else None,
        )


def _value(row: list[str], i: int) -> str:
    """The field stripped; "" when blank (empty, NA or NULL), which stages as NULL."""
    raw = row[i].strip() if i < len(row) else ""
    return "" if raw in _BLANK else raw


class NoPoint(RowError):
    """A record without coordinates (blank, or the exports' 0 for unknown): kept when it has
    an address (_located), rejected otherwise."""


def _coordinate(row: list[str], i: int, name: str, limit: float) -> str:
    """The coordinate's text for PostgreSQL to parse, once Python has checked it."""
    raw = _value(row, i)
    if not raw:
        raise NoPoint(name, "missing coordinate")
    try:
        value = float(raw)
    except ValueError:
        raise RowError(name, f"not a number: {raw!r}") from None
    if value == 0.0:  # the exports' "unknown"
        raise NoPoint(name, "missing coordinate (0)")
    if not -limit <= value <= limit:
        raise RowError(name, f"out of range: {raw}")
    # PostgreSQL reads the plain ASCII forms Python reads as the same double; Python also
    # takes digit separators and other scripts' digits, which go as Python's repr.
    return raw if raw.isascii() and "_" not in raw else repr(value)


def _located(coordinates: Callable[[], tuple[str, str]], address: str) -> tuple[str, str, str, str]:
    """(lat, lon, address, address key): a record without a point is kept when it has an
    address, and grouped and geocoded by it like a live report located by address."""
    try:
        lat, lon = coordinates()
    except NoPoint:
        if not address:
            raise
        lat = lon = ""
    return lat, lon, address, addresses.key(address) or ""


_HOUR_END = dt.timedelta(minutes=59, seconds=59, microseconds=999_999)


class _Clock:
    """Times as text with a UTC offset: a wall time without one is read in the zone as
    `datetime.replace(tzinfo=zone)` reads it (fold=0: the earlier of two ambiguous times).
    The source's text is reused when it has the usual form, and the zone is looked up once
    per hour of wall time: datetime calls are the larger part of parsing a row."""

    __slots__ = ("_offsets", "zone")

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._offsets: dict[str, str] = {}

    def text(self, raw: str, value: dt.datetime) -> str:
        """`value`, parsed from `raw` by datetime.fromisoformat, as text PostgreSQL reads."""
        if value.tzinfo is not None:
            if len(raw) == 25 and raw[19] in "+-":  # YYYY-MM-DDTHH:MM:SS+HH:MM
                return raw
            return str(value)
        if len(raw) == 19 and raw[10] == " " and raw[7] == "-":  # YYYY-MM-DD HH:MM:SS
            offset = self._offsets.get(raw[:13])
            if offset is None:
                hour = value.replace(minute=0, second=0, microsecond=0)
                first = hour.replace(tzinfo=self.zone)
                last = (hour + _HOUR_END).replace(tzinfo=self.zone)
                # "" when the offset changes within the hour: each value is looked up.
                same = first.utcoffset() == last.utcoffset()
                offset = self._offsets[raw[:13]] = str(first)[19:] if same else ""
            if offset:
                return raw + offset
        return str(value.replace(tzinfo=self.zone))


_US_TIME = "%m/%d/%Y %I:%M:%S %p"  # 04/30/2014 02:51:52 PM, as DataSF's exports write them


def _time(row: list[str], i: int, name: str, clock: _Clock) -> str:
    """The time's text with its UTC offset: ISO 8601, or US-style with AM/PM."""
    raw = _value(row, i)
    if not raw:
        raise RowError(name, "missing timestamp")
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        try:
            value = dt.datetime.strptime(raw, _US_TIME)
        except ValueError:
            raise RowError(
                name, f"not an ISO-8601 or MM/DD/YYYY hh:mm:ss AM time: {raw!r}"
            ) from None
        raw = value.isoformat(" ")
    if not limits.FIRST_YEAR <= value.year < limits.END_YEAR:  # as limits.check_instant
        try:
            limits.check_instant(value, name)
        except limits.Unstorable as exc:
            raise RowError(name, exc.message) from None
    return clock.text(raw, value)


def _optional_time(row: list[str], i: int | None, name: str, clock: _Clock) -> str:
    if i is None or not _value(row, i):
        return ""
    return _time(row, i, name, clock)


# The attribute that flags a record whose times cannot be right: kept, but its clock has no
# start (import_from_stage), so it counts in no time-to-resolve figure.
FLAG = "import_flag"
CLOSED_BEFORE_OPENED = "closed_before_opened"


def _flag(opened: str, closed: str) -> str:
    """CLOSED_BEFORE_OPENED when the record closes before it opens, else ""."""
    if closed and dt.datetime.fromisoformat(closed) < dt.datetime.fromisoformat(opened):
        return CLOSED_BEFORE_OPENED
    return ""


def _isoformat(text: str) -> str:
    """A time's text with the date and time joined by T, as datetime.isoformat() gives it."""
    return f"{text[:10]}T{text[11:]}" if text else ""


def _columns(header: list[str], fmt: str, required: Sequence[str]) -> dict[str, int]:
    index = {name.strip(): i for i, name in enumerate(header)}
    missing = [name for name in required if name not in index]
    if missing:
        raise FormatError(f"not a {fmt} file: missing column(s) {', '.join(missing)}", field="file")
    return index


def la311_layout(header: list[str], categories: dict[str, str], zone: ZoneInfo) -> Layout:
    col = _columns(
        header, "la311", ("srnumber", "createddate", "requesttype", "latitude", "longitude")
    )
    i_id, i_created, i_type = col["srnumber"], col["createddate"], col["requesttype"]
    i_lat, i_lon, i_addr = col["latitude"], col["longitude"], col.get("address")
    i_source, i_closed = col.get("requestsource"), col.get("closeddate")
    attrs = [col.get(name) for name in LA_ATTRIBUTES]
    clock = _Clock(LOS_ANGELES)

    def stage(row: list[str], line: int) -> tuple[str, ...]:
        source_id = _value(row, i_id)
        if not source_id:
            raise RowError("srnumber", "missing record id")
        kind = _value(row, i_type)
        if not kind:
            raise RowError("requesttype", "missing request type")
        if len(kind) > 4000:
            raise RowError("requesttype", "text must be 1-4000 characters")
        address = "" if i_addr is None else _value(row, i_addr)
        source = "" if i_source is None else _value(row, i_source)
        opened = _time(row, i_created, "createddate", clock)
        closed = _optional_time(row, i_closed, "closeddate", clock)
        return (
            str(line),
            source_id,
            kind,  # the address has its own column; in the text it would teach the
            # classifier that street names mean bulky items
            *_located(
                lambda: (
                    _coordinate(row, i_lat, "latitude", 90),
                    _coordinate(row, i_lon, "longitude", 180),
                ),
                address,
            ),
            LA_CATEGORIES.get(kind, "other"),
            opened,
            LA_CHANNELS.get(source, "import"),
            closed,
            *["" if i is None else _value(row, i) for i in attrs],
            _isoformat(closed),
            _flag(opened, closed),
        )

    return Layout((*LA_ATTRIBUTES, "closed_at", FLAG), stage)


def _point(row: list[str], i: int) -> tuple[str, str]:
    """Latitude and longitude from DataSF's Point column: "(37.774007256355, -122.3956)"."""
    raw = _value(row, i)
    if not raw:
        raise NoPoint("Point", "missing coordinate")
    lat, sep, lon = raw.strip("() ").partition(",")
    if not sep:
        raise RowError("Point", f"not a (latitude, longitude) pair: {raw!r}")
    return _coordinate([lat], 0, "Point", 90), _coordinate([lon], 0, "Point", 180)


# Where DataSF's exports put coordinates, in the order they are looked for: older samples
# have Lat/Long, the portal's export Latitude/Longitude, others only the Point column.
SF_COORDINATES: tuple[tuple[str, ...], ...] = (
    ("Lat", "Long"),
    ("Latitude", "Longitude"),
    ("Point",),
)


def sf311_layout(header: list[str], categories: dict[str, str], zone: ZoneInfo) -> Layout:
    names = {name.strip() for name in header}
    found = next((c for c in SF_COORDINATES if all(n in names for n in c)), None)
    if found is None:
        raise FormatError(
            "not an sf311 file: no coordinate columns (Lat/Long, Latitude/Longitude or Point)",
            field="file",
        )
    col = _columns(header, "sf311", ("CaseID", "Opened", "Category", *found))
    i_id, i_opened, i_cat = col["CaseID"], col["Opened"], col["Category"]
    i_addr = col.get("Address")
    if found == ("Point",):
        i_point = col["Point"]

        def coordinates(row: list[str]) -> tuple[str, str]:
            return _point(row, i_point)

    else:
        lat_name, lon_name = found[0], found[-1]
        i_lat, i_lon = col[lat_name], col[lon_name]

        def coordinates(row: list[str]) -> tuple[str, str]:
            return (
                _coordinate(row, i_lat, lat_name, 90),
                _coordinate(row, i_lon, lon_name, 180),
            )

    i_type, i_details = col.get("Request.Type"), col.get("Request.Details")
    i_source, i_closed = col.get("Source"), col.get("Closed")
    attrs = [col.get(name) for name in SF_ATTRIBUTES]
    clock = _Clock(LOS_ANGELES)

    def stage(row: list[str], line: int) -> tuple[str, ...]:
        source_id = _value(row, i_id)
        if not source_id:
            raise RowError("CaseID", "missing record id")
        category = _value(row, i_cat)
        request_type = "" if i_type is None else _value(row, i_type)
        details = "" if i_details is None else _value(row, i_details)
        text = ": ".join(p for p in (request_type or category, details) if p)
        if not text:
            raise RowError("Request.Type", "no text to describe the report")
        source = "" if i_source is None else _value(row, i_source)
        opened = _time(row, i_opened, "Opened", clock)
        closed = _optional_time(row, i_closed, "Closed", clock)
        return (
            str(line),
            source_id,
            text[:4000],
            *_located(lambda: coordinates(row), "" if i_addr is None else _value(row, i_addr)),
            SF_CATEGORIES.get(category, "other"),
            opened,
            SF_CHANNELS.get(source, "import"),
            closed,
            *["" if i is None else _value(row, i) for i in attrs],
            _isoformat(closed),
            _flag(opened, closed),
        )

    where = "/".join(found)
    return Layout(
        (*SF_ATTRIBUTES, "closed_at", FLAG),
        stage,
        f"sf311: coordinates from {where}; times ISO 8601 or MM/DD/YYYY hh:mm:ss AM",
    )


def nyc311_layout(header: list[str], categories: dict[str, str], zone: ZoneInfo) -> Layout:
    names = {name.strip() for name in header}
    naming = "api" if "unique_key" in names else "portal"
    n = NYC_NAMINGS[naming]
    col = _columns(
        header, "nyc311", (n["id"], n["created"], n["type"], n["latitude"], n["longitude"])
    )
    i_id, i_created, i_type = col[n["id"]], col[n["created"]], col[n["type"]]
    i_lat, i_lon = col[n["latitude"]], col[n["longitude"]]
    i_desc, i_addr = col.get(n["descriptor"]), col.get(n["address"])
    i_closed, i_channel = col.get(n["closed"]), col.get(n["channel"])
    keys = NYC_ATTRIBUTES[naming]
    attrs = [col.get(name) for name in keys]
    clock = _Clock(NEW_YORK)

    def stage(row: list[str], line: int) -> tuple[str, ...]:
        source_id = _value(row, i_id)
        if not source_id:
            raise RowError(n["id"], "missing record id")
        kind = _value(row, i_type)
        if not kind:
            raise RowError(n["type"], "missing complaint type")
        descriptor = "" if i_desc is None else _value(row, i_desc)
        text = ": ".join(p for p in (kind, descriptor) if p)[:4000]
        opened = _time(row, i_created, n["created"], clock)
        closed = _optional_time(row, i_closed, n["closed"], clock)
        channel = "" if i_channel is None else _value(row, i_channel)
        return (
            str(line),
            source_id,
            text,
            *_located(
                lambda: (
                    _coordinate(row, i_lat, n["latitude"], 90),
                    _coordinate(row, i_lon, n["longitude"], 180),
                ),
                "" if i_addr is None else _value(row, i_addr),
            ),
            NYC_CATEGORIES.get(kind, "other"),
            opened,
            NYC_CHANNELS.get(channel, "import"),
            closed,
            *["" if i is None else _value(row, i) for i in attrs],
            _isoformat(closed),
            _flag(opened, closed),
        )

    return Layout(
        (*keys, "closed_at", FLAG),
        stage,
        f"nyc311: the {naming}'s naming ({n['id']}, {n['created']}, ...); times in New York",
    )


# GeoReport v2 request fields, in the spec's order: an Open311 dump's records are read as
# rows of these (open311_records), so the format stages like the CSV ones.
OPEN311_FIELDS = (
    "service_request_id", "status", "status_notes", "service_name", "service_code",
    "description", "agency_responsible", "service_notice", "requested_datetime",
    "updated_datetime", "expected_datetime", "address", "address_id", "zipcode", "lat",
    "long", "media_url",
)  # fmt: skip
OPEN311_ATTRIBUTES = (
    "service_code", "service_name", "status", "status_notes", "agency_responsible",
    "address_id", "zipcode", "media_url", "expected_datetime",
)  # fmt: skip
OPEN311_CLOSED = frozenset({"closed", "fixed", "duplicate", "not_councils_responsibility",
                            "no_further_action", "internal_referral"})  # fmt: skip


def open311_layout(header: list[str], categories: dict[str, str], zone: ZoneInfo) -> Layout:
    """GeoReport v2 requests: the service code picks the category (the tenant's own codes,
    else "other"); a closed request closed at its updated_datetime (the spec has no close
    time); times must carry their offset (the spec's W3C format)."""
    col = {name: i for i, name in enumerate(header)}
    other = categories.get("other", "")
    clock = _Clock(zone)

    def stage(row: list[str], line: int) -> tuple[str, ...]:
        def v(name: str) -> str:
            return _value(row, col[name])

        source_id = v("service_request_id")
        if not source_id:
            raise RowError("service_request_id", "missing request id")
        code = v("service_code")
        text = v("description") or v("service_name") or code
        if not text:
            raise RowError("description", "no description, service_name or service_code")
        opened = _time(row, col["requested_datetime"], "requested_datetime", clock)
        status = v("status").lower()
        closed = ""
        if status in OPEN311_CLOSED:
            closed = _optional_time(row, col["updated_datetime"], "updated_datetime", clock)
        elif status not in ("", "open", "in_progress", "action_scheduled", "investigating",
                            "reopen", "for_triage"):  # fmt: skip
            raise RowError("status", f"not a GeoReport status: {status!r}")
        return (
            str(line),
            source_id,
            text[:4000],
            *_located(
                lambda: (
                    _coordinate(row, col["lat"], "lat", 90),
                    _coordinate(row, col["long"], "long", 180),
                ),
                v("address"),
            ),
            categories.get(code) or categories.get(v("service_name")) or other,
            opened,
            "import",
            closed,
            *[v(name) for name in OPEN311_ATTRIBUTES],
            _isoformat(closed),
            _flag(opened, closed),
        )

    return Layout(
        (*OPEN311_ATTRIBUTES, "closed_at", FLAG),
        stage,
        "open311: GeoReport v2 requests (record numbers for line numbers); a closed request "
        "closed at its updated_datetime",
    )


def open311_records(path: Path) -> list[list[str]]:
    """An Open311 dump's requests as rows of OPEN311_FIELDS: a JSON list (or an object
    holding one under "service_requests" or "requests"), or XML <service_requests> of
    <request> elements. Nested values (notes, attributes) are left out."""
    raw = path.read_bytes()
    if raw.lstrip()[:1] == b"<":
        try:
            items: list[dict[str, Any]] = [
                {child.tag: (child.text or "").strip() for child in request}
                for request in ET.fromstring(raw).iter("request")
            ]
        except ET.ParseError as exc:
            raise FormatError(f"not an Open311 XML dump: {exc}", field="file") from None
    else:
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise FormatError(f"not an Open311 JSON dump: {exc}", field="file") from None
        if isinstance(data, dict):
            data = data.get("service_requests", data.get("requests"))
        if not isinstance(data, list) or not all(isinstance(i, dict) for i in data):
            raise FormatError("an Open311 JSON dump is a list of requests", field="file")
        items = data
    return [
        [
            "" if (x := item.get(name)) is None or isinstance(x, dict | list) else str(x)
            for name in OPEN311_FIELDS
        ]
        for item in items
    ]


def csv_layout(header: list[str], categories: dict[str, str], zone: ZoneInfo) -> Layout:
    """The plain format: source_id,text,lat,lon,submitted_at[,category,address,closed_at]."""
    col = _columns(header, "csv", ("source_id", "text", "lat", "lon", "submitted_at"))
    i_id, i_text, i_lat, i_lon = col["source_id"], col["text"], col["lat"], col["lon"]
    i_time, i_cat, i_addr = col["submitted_at"], col.get("category"), col.get("address")
    i_closed = col.get("closed_at")
    clock = _Clock(zone)

    def stage(row: list[str], line: int) -> tuple[str, ...]:
        source_id = _value(row, i_id)
        if not source_id:
            raise RowError("source_id", "missing record id")
        text = _value(row, i_text)
        if not text or len(text) > 4000:
            raise RowError("text", "text must be 1-4000 characters")
        category = ""
        raw_category = "" if i_cat is None else _value(row, i_cat)
        if raw_category:
            category = categories.get(raw_category, "")
            if not category:
                raise RowError("category", f"unknown category {raw_category!r}")
        return (
            str(line),
            source_id,
            text,
            *_located(
                lambda: (
                    _coordinate(row, i_lat, "lat", 90),
                    _coordinate(row, i_lon, "lon", 180),
                ),
                "" if i_addr is None else _value(row, i_addr),
            ),
            category,
            opened := _time(row, i_time, "submitted_at", clock),
            "import",
            closed := _optional_time(row, i_closed, "closed_at", clock),
            _flag(opened, closed),
        )

    return Layout((FLAG,), stage)


LAYOUTS: dict[str, Callable[[list[str], dict[str, str], ZoneInfo], Layout]] = {
    "la311": la311_layout,
    "sf311": sf311_layout,
    "nyc311": nyc311_layout,
    "open311": open311_layout,
    "csv": csv_layout,
}


def count_records(path: Path, fmt: str) -> int:
    """How many records a file holds (a CSV record may span lines): a progress bar's total."""
    if fmt == "open311":
        return len(open311_records(path))
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return max(0, sum(1 for row in csv.reader(handle) if row) - 1)


def _rows(
    path: Path, fmt: str, handle: Any
) -> tuple[list[str] | None, Iterator[tuple[int, list[str]]]]:
    """The header and (number, fields) of each record: the first line of a CSV record, the
    position of an Open311 request (the header counting as 1, as in a CSV)."""
    if fmt == "open311":
        return list(OPEN311_FIELDS), ((n, r) for n, r in enumerate(open311_records(path), 2))
    reader = csv.reader(handle)
    header = next(reader, None)

    def numbered() -> Iterator[tuple[int, list[str]]]:
        line = reader.line_num
        for row in reader:
            start, line = line + 1, reader.line_num
            yield start, row

    return header, numbered()


async def import_file(
    pool: asyncpg.Pool,
    tenant_id: int,
    path: Path,
    fmt: str,
    *,
    categories: dict[str, str],
    timezone: str,
    progress: Callable[[int], None] | None = None,
    expected: int | None = None,
) -> ImportResult:
    """Import a file into a tenant; progress(n) is called as each chunk commits, with the
    records it took from the file (imported, repeated or rejected). `expected` (the file's
    records, count_records) sizes the chunks so the calls come in even steps."""
    if fmt not in LAYOUTS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    result = ImportResult()
    # Chunks parse while earlier ones are written: the queue holds at most one more.
    chunks: asyncio.Queue[_Chunk | None] = asyncio.Queue(maxsize=1)
    # Source ids of the chunks not yet committed: a repeat of one of them is dropped here,
    # so the first line wins and two writers never race for the same record. A repeat of
    # a committed chunk's record is skipped by the move (looked up, or refused by the
    # unique index and then looked up).
    in_flight: list[set[str]] = []
    chunk_rows = CHUNK_ROWS
    if expected is not None:
        chunk_rows = min(CHUNK_ROWS, max(1_000, expected // PROGRESS_STEPS))
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header, records = _rows(path, fmt, handle)
        if header is None:
            raise FormatError(f"{path} is empty", field="file")
        layout = LAYOUTS[fmt](header, categories, ZoneInfo(timezone))
        result.layout = layout.description or fmt
        keys = layout.attribute_keys
        names = (*reports_repo.IMPORT_COLUMNS, *keys, *reports_repo.IMPORT_SLA_COLUMNS)
        flag_at = len(reports_repo.IMPORT_COLUMNS) + keys.index(FLAG) if FLAG in keys else None
        flagged = result.flagged
        async with tenant_transaction(pool, tenant_id) as conn:
            known = await reports_repo.import_source_known(conn, tenant_id, fmt)
            cfg = await workflow.load_config(conn, tenant_id)
        writers = [
            asyncio.create_task(
                _write_chunks(
                    pool,
                    tenant_id,
                    fmt,
                    keys,
                    known,
                    chunks,
                    in_flight,
                    result,
                    progress,
                    cfg,
                    flag_at,
                )
            )
            for _ in range(max(1, min(WRITERS, pool.get_max_size())))
        ]
        try:
            stage = layout.stage
            errors = result.errors
            rows: list[tuple[str, ...]] = []
            ids: set[str] = set()
            repeats = 0
            taken = 0  # records of the file in this chunk, rejected ones too
            unmeasured: dict[int, tuple[str, ...]] = {}
            for start, row in records:
                if not row:
                    continue
                result.read += 1
                taken += 1
                try:
                    staged = stage(row, start)
                except RowError as exc:
                    errors.append((start, exc.field, exc.message))
                    continue
                source_id = staged[1]
                if source_id in ids or any(source_id in done for done in in_flight):
                    repeats += 1
                    continue
                if flag_at is not None and staged[flag_at]:
                    flagged[staged[flag_at]] = flagged.get(staged[flag_at], 0) + 1
                ids.add(source_id)
                if known:  # most may be known: measured in the writer, the new ones only
                    unmeasured[int(staged[0])] = staged
                    rows.append((*staged, "", "", "", ""))
                else:  # measured here, as its issue will be made: one write per issue
                    rows.append((*staged, *_measured(cfg, staged, flag_at)))
                if taken >= chunk_rows:
                    in_flight.append(ids)
                    chunk = _chunk(rows, ids, repeats, names, errors, taken)
                    chunk.unmeasured = unmeasured if known else None
                    await _put(chunks, chunk, writers)
                    rows, ids, repeats, taken, unmeasured = [], set(), 0, 0, {}
            if taken:
                in_flight.append(ids)
                chunk = _chunk(rows, ids, repeats, names, errors, taken)
                chunk.unmeasured = unmeasured if known else None
                await _put(chunks, chunk, writers)
            for _ in writers:
                await _put(chunks, None, writers)
            await asyncio.gather(*writers)
        finally:
            for writer in writers:
                if not writer.done():
                    writer.cancel()
            await asyncio.gather(*writers, return_exceptions=True)
    result.errors.sort()  # a chunk's unstorable rows are found after its later rows' errors
    return result


def measure_one(cfg: workflow.TenantConfig, row: Any) -> tuple[Any, ...] | None:
    """An imported issue measured as if it had arrived live: the policy in force (rules
    first, then priority and category), its resolution target, and the business time it
    took to close (closed) or the instant it is due (open); None when no policy applies.
    Response is unknown for history. A record that closed before it opened has no clock
    start (import_from_stage) and is not measured."""
    rule = tenant_rules.evaluate(
        cfg.ruleset,
        tenant_rules.Facts(
            row["category"], row["severity"], row["area"], (), row["representative_text"], 1
        ),
        row["opened_at"],
        cfg.timezone,
    )
    code = cfg.choose_policy(rule.sla_policy, row["priority"], row["category"])
    policy = cfg.policy(code)
    if code is None or policy is None:
        return None
    started, target = row["sla_started_at"], policy.resolution_s
    business = due = None
    if started is not None and row["resolved_at"] is not None:
        if row["status"] in ("resolved", "closed"):
            business = business_time.business_seconds(policy.calendar, started, row["resolved_at"])
    elif started is not None and target is not None and row["resolved_at"] is None:
        due = business_time.add_business_seconds(policy.calendar, started, target)
    return (row["id"], code, target, business, due)


def _measured(
    cfg: workflow.TenantConfig, staged: tuple[str, ...], flag_at: int | None
) -> tuple[str, str, str, str]:
    """The staged SLA columns of a staged record (reports_repo.IMPORT_SLA_COLUMNS): measured
    as import_from_stage makes its issue (priority civicpulse_priority(NULL, 1), no area, the
    clock started at opening unless the record closed before it opened)."""
    opened = dt.datetime.fromisoformat(staged[8])
    closed = dt.datetime.fromisoformat(staged[10]) if staged[10] else None
    flagged = flag_at is not None and bool(staged[flag_at])
    row = {
        "id": None,
        "category": staged[7] or None,
        "severity": None,
        "area": None,
        "priority": IMPORTED_PRIORITY,
        "representative_text": staged[2],
        "status": "new" if closed is None else "closed",
        "opened_at": opened,
        "sla_started_at": None if flagged else opened,
        "resolved_at": closed,
    }
    measured = measure_one(cfg, row)
    if measured is None:
        return ("", "", "", "")
    _, code, target, business, due = measured
    return (
        code,
        "" if target is None else repr(float(target)),
        "" if business is None else repr(business),
        "" if due is None else due.isoformat(),
    )


def _measure_lines(
    cfg: workflow.TenantConfig,
    flag_at: int | None,
    staged: dict[int, tuple[str, ...]],
    lines: list[int],
) -> list[tuple[Any, ...]]:
    """(line, policy, target s, business s, due at) of the staged records on `lines` that
    have a policy (a re-import's new records: import_reports' `measure`)."""
    out = []
    for line in lines:
        policy, target, business, due = _measured(cfg, staged[line], flag_at)
        if policy:
            out.append((
                line, policy, float(target) if target else None,
                float(business) if business else None,
                dt.datetime.fromisoformat(due) if due else None,
            ))  # fmt: skip
    return out


# civicpulse_priority(NULL, 1): an imported record's priority (one report, no severity).
IMPORTED_PRIORITY = 4


@dataclass(slots=True)
class _Chunk:
    data: bytes  # rows of the staging table's columns in COPY's text format, "" for NULL
    rows: int  # records in data
    repeats: int  # records dropped as repeats of an earlier line
    ids: set[str]  # their source ids (an entry of in_flight until committed)
    taken: int = 0  # records of the file it stands for, rejected ones too (progress)
    # Re-imports: the staged records by line, measured only once the database has said
    # which it does not hold yet (most of a rolling export's are known).
    unmeasured: dict[int, tuple[str, ...]] | None = None


# COPY's text format escapes; fields rarely need them, so a chunk is checked as a whole.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _chunk(
    rows: list[tuple[str, ...]],
    ids: set[str],
    repeats: int,
    names: Sequence[str],
    errors: list[tuple[int, str, str]],
    taken: int = 0,
) -> _Chunk:
    """A chunk's rows as COPY text; rows holding what PostgreSQL cannot store become errors.

    `names` names the staged fields (line first) for those errors.
    """
    text = "".join(["\t".join(row) + "\n" for row in rows])
    try:  # one scan of the chunk; a row at a time only when it finds something
        limits.check_text(text, "row")
    except limits.Unstorable:
        kept = []
        for staged in rows:
            for name, value in zip(names[1:], staged[1:], strict=True):
                try:
                    limits.check_text(value, name)
                except limits.Unstorable as exc:
                    errors.append((int(staged[0]), exc.field, exc.message))
                    ids.discard(staged[1])
                    break
            else:
                kept.append(staged)
        return _chunk(kept, ids, repeats, names, errors, taken)
    # Unless a field holds a tab, line break or backslash, the counts are exact.
    width = len(names)
    if (
        text.count("\t") != len(rows) * (width - 1)
        or text.count("\n") != len(rows)
        or "\\" in text
        or "\r" in text
    ):
        text = "".join(
            ["\t".join([value.translate(_ESCAPES) for value in row]) + "\n" for row in rows]
        )
    return _Chunk(text.encode(), len(rows), repeats, ids, taken)


async def _put(
    queue: asyncio.Queue[_Chunk | None],
    chunk: _Chunk | None,
    writers: list[asyncio.Task[None]],
) -> None:
    for writer in writers:
        if writer.done():
            writer.result()  # re-raise a writer's failure instead of waiting forever
    put = asyncio.ensure_future(queue.put(chunk))
    await asyncio.wait({put, *writers}, return_when=asyncio.FIRST_COMPLETED)
    if not put.done():
        put.cancel()
        for writer in writers:
            if writer.done():
                writer.result()


async def _write_chunks(
    pool: asyncpg.Pool,
    tenant_id: int,
    source: str,
    attribute_keys: Sequence[str],
    known: bool,
    chunks: asyncio.Queue[_Chunk | None],
    in_flight: list[set[str]],
    result: ImportResult,
    progress: Callable[[int], None] | None,
    cfg: workflow.TenantConfig,
    flag_at: int | None,
) -> None:
    while (chunk := await chunks.get()) is not None:
        inserted = 0
        if chunk.rows:
            waiting = chunk.unmeasured
            measure = None if waiting is None else partial(_measure_lines, cfg, flag_at, waiting)
            async with tenant_transaction(pool, tenant_id) as conn:
                made = await reports_repo.import_reports(
                    conn, tenant_id, source, attribute_keys, chunk.data, skip_known=known,
                    measure=measure,
                )  # fmt: skip
            inserted = len(made)
            result.new_issues += inserted
            result.measured += sum(1 for _, measured in made if measured)
        # By identity: two chunks' id sets may be equal (both empty).
        del in_flight[next(i for i, ids in enumerate(in_flight) if ids is chunk.ids)]
        result.inserted += inserted
        result.skipped_existing += chunk.rows + chunk.repeats - inserted
        if progress is not None:
            progress(chunk.taken)
