"""Bulk import of 311 exports (Los Angeles, San Francisco) and a plain CSV format.

Fast path by design: the C csv reader splits rows, each format picks its columns by
position (found once from the header) and checks them, and chunks are COPYed into a temp
table and moved into `reports` with one INSERT ... SELECT under the tenant's RLS setting
(COPY cannot write an RLS table directly). Ids are made in SQL, attributes are built in SQL
from a value list, and parsing of the next chunk overlaps with the database writing the
previous one. Bad rows are reported with their line number and field. Source record ids make
a re-import add nothing. Imported records are historical: they keep their own times and skip
the live pipeline.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from civicpulse.db import reports as reports_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.domain import limits
from civicpulse.errors import CivicPulseError

FORMATS = ("la311", "sf311", "csv")
CHUNK_ROWS = 20_000
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
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


# A row parser turns the split fields of one record into
# (source_id, text, lat, lon, address, category, submitted_at, channel, attribute_values,
#  closed_at).
RowParser = Callable[[list[str]], tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Layout:
    attribute_keys: tuple[str, ...]
    parse: RowParser


def _value(row: list[str], i: int) -> str | None:
    raw = row[i].strip() if i < len(row) else ""
    return None if raw in _BLANK else raw


def _coordinate(row: list[str], i: int, name: str, limit: float) -> float:
    raw = _value(row, i)
    if raw is None:
        raise RowError(name, "missing coordinate")
    try:
        value = float(raw)
    except ValueError:
        raise RowError(name, f"not a number: {raw!r}") from None
    if not -limit <= value <= limit or value == 0.0:  # 0.0 is the exports' "unknown"
        raise RowError(name, f"out of range: {raw}")
    return value


def _time(row: list[str], i: int, name: str, zone: ZoneInfo) -> dt.datetime:
    raw = _value(row, i)
    if raw is None:
        raise RowError(name, "missing timestamp")
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise RowError(name, f"not an ISO-8601 timestamp: {raw!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=zone)


def _optional_time(row: list[str], i: int | None, name: str, zone: ZoneInfo) -> dt.datetime | None:
    if i is None or _value(row, i) is None:
        return None
    return _time(row, i, name, zone)


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

    def parse(row: list[str]) -> tuple[Any, ...]:
        source_id = _value(row, i_id)
        if source_id is None:
            raise RowError("srnumber", "missing record id")
        kind = _value(row, i_type)
        if kind is None:
            raise RowError("requesttype", "missing request type")
        address = None if i_addr is None else _value(row, i_addr)
        source = None if i_source is None else _value(row, i_source)
        values = [None if i is None else _value(row, i) for i in attrs]
        closed = _optional_time(row, i_closed, "closeddate", LOS_ANGELES)
        values.append(None if closed is None else closed.isoformat())
        return (
            source_id,
            kind,  # the address has its own column; in the text it would teach the
            # classifier that street names mean bulky items
            _coordinate(row, i_lat, "latitude", 90),
            _coordinate(row, i_lon, "longitude", 180),
            address,
            LA_CATEGORIES.get(kind, "other"),
            _time(row, i_created, "createddate", LOS_ANGELES),
            LA_CHANNELS.get(source or "", "import"),
            values,
            closed,
        )

    return Layout((*LA_ATTRIBUTES, "closed_at"), parse)


def sf311_layout(header: list[str], categories: dict[str, str], zone: ZoneInfo) -> Layout:
    col = _columns(header, "sf311", ("CaseID", "Opened", "Category", "Lat", "Long"))
    i_id, i_opened, i_cat = col["CaseID"], col["Opened"], col["Category"]
    i_lat, i_lon, i_addr = col["Lat"], col["Long"], col.get("Address")
    i_type, i_details = col.get("Request.Type"), col.get("Request.Details")
    i_source, i_closed = col.get("Source"), col.get("Closed")
    attrs = [col.get(name) for name in SF_ATTRIBUTES]

    def parse(row: list[str]) -> tuple[Any, ...]:
        source_id = _value(row, i_id)
        if source_id is None:
            raise RowError("CaseID", "missing record id")
        category = _value(row, i_cat) or ""
        request_type = None if i_type is None else _value(row, i_type)
        details = None if i_details is None else _value(row, i_details)
        text = ": ".join(p for p in (request_type or category, details) if p)
        if not text:
            raise RowError("Request.Type", "no text to describe the report")
        source = None if i_source is None else _value(row, i_source)
        values = [None if i is None else _value(row, i) for i in attrs]
        closed = _optional_time(row, i_closed, "Closed", LOS_ANGELES)
        values.append(None if closed is None else closed.isoformat())
        return (
            source_id,
            text[:4000],
            _coordinate(row, i_lat, "Lat", 90),
            _coordinate(row, i_lon, "Long", 180),
            None if i_addr is None else _value(row, i_addr),
            SF_CATEGORIES.get(category, "other"),
            _time(row, i_opened, "Opened", LOS_ANGELES),
            SF_CHANNELS.get(source or "", "import"),
            values,
            closed,
        )

    return Layout((*SF_ATTRIBUTES, "closed_at"), parse)


def csv_layout(header: list[str], categories: dict[str, str], zone: ZoneInfo) -> Layout:
    """The plain format: source_id,text,lat,lon,submitted_at[,category,address,closed_at]."""
    col = _columns(header, "csv", ("source_id", "text", "lat", "lon", "submitted_at"))
    i_id, i_text, i_lat, i_lon = col["source_id"], col["text"], col["lat"], col["lon"]
    i_time, i_cat, i_addr = col["submitted_at"], col.get("category"), col.get("address")
    i_closed = col.get("closed_at")

    def parse(row: list[str]) -> tuple[Any, ...]:
        source_id = _value(row, i_id)
        if source_id is None:
            raise RowError("source_id", "missing record id")
        text = _value(row, i_text)
        if text is None or len(text) > 4000:
            raise RowError("text", "text must be 1-4000 characters")
        category = None
        raw_category = None if i_cat is None else _value(row, i_cat)
        if raw_category is not None:
            category = categories.get(raw_category)
            if category is None:
                raise RowError("category", f"unknown category {raw_category!r}")
        return (
            source_id,
            text,
            _coordinate(row, i_lat, "lat", 90),
            _coordinate(row, i_lon, "lon", 180),
            None if i_addr is None else _value(row, i_addr),
            category,
            _time(row, i_time, "submitted_at", zone),
            "import",
            [],
            _optional_time(row, i_closed, "closed_at", zone),
        )

    return Layout((), parse)


LAYOUTS: dict[str, Callable[[list[str], dict[str, str], ZoneInfo], Layout]] = {
    "la311": la311_layout,
    "sf311": sf311_layout,
    "csv": csv_layout,
}


async def import_file(
    pool: asyncpg.Pool,
    tenant_id: int,
    path: Path,
    fmt: str,
    *,
    categories: dict[str, str],
    timezone: str,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import a file into a tenant; progress(n) is called after each chunk with its rows."""
    if fmt not in LAYOUTS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    result = ImportResult()
    # One chunk parses while the previous one is written: the queue holds at most one.
    chunks: asyncio.Queue[list[tuple[Any, ...]] | None] = asyncio.Queue(maxsize=1)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise FormatError(f"{path} is empty", field="file")
        layout = LAYOUTS[fmt](header, categories, ZoneInfo(timezone))
        writer = asyncio.create_task(
            _write_chunks(pool, tenant_id, fmt, layout.attribute_keys, chunks, result, progress)
        )
        try:
            parse = layout.parse
            errors = result.errors
            chunk: list[tuple[Any, ...]] = []
            line = reader.line_num
            for row in reader:
                start, line = line + 1, reader.line_num
                if not row:
                    continue
                try:
                    parsed = parse(row)
                    limits.check(parsed, "row")  # NUL, out-of-range times: refused per row
                    chunk.append((start, *parsed))
                except RowError as exc:
                    errors.append((start, exc.field, exc.message))
                except limits.Unstorable as exc:
                    errors.append((start, exc.field, exc.message))
                result.read += 1
                if len(chunk) >= CHUNK_ROWS:
                    await _put(chunks, chunk, writer)
                    chunk = []
            if chunk:
                await _put(chunks, chunk, writer)
            await _put(chunks, None, writer)
            await writer
        finally:
            if not writer.done():
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
    return result


async def _put(
    queue: asyncio.Queue[list[tuple[Any, ...]] | None],
    chunk: list[tuple[Any, ...]] | None,
    writer: asyncio.Task[None],
) -> None:
    if writer.done():
        writer.result()  # re-raise the writer's failure instead of waiting forever
    put = asyncio.ensure_future(queue.put(chunk))
    await asyncio.wait({put, writer}, return_when=asyncio.FIRST_COMPLETED)
    if not put.done():
        put.cancel()
        writer.result()


async def _write_chunks(
    pool: asyncpg.Pool,
    tenant_id: int,
    source: str,
    attribute_keys: Sequence[str],
    chunks: asyncio.Queue[list[tuple[Any, ...]] | None],
    result: ImportResult,
    progress: Callable[[int], None] | None,
) -> None:
    while (chunk := await chunks.get()) is not None:
        async with tenant_transaction(pool, tenant_id) as conn:
            inserted = await reports_repo.import_reports(
                conn, tenant_id, source, attribute_keys, chunk
            )
        result.inserted += inserted
        result.skipped_existing += len(chunk) - inserted
        if progress is not None:
            progress(len(chunk))
