"""Bulk import of 311 exports (Los Angeles, San Francisco) and a plain CSV format.

Rows are parsed and validated in Python (each bad row reported with its line number and
field), then written in chunks: COPY into a temp table, INSERT ... SELECT under the
tenant's RLS setting (COPY cannot write an RLS table directly). Source record ids make a
re-import add nothing. Imported records are historical: they keep their own times and
skip the live pipeline.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import asyncpg

from civicpulse.db import reports as reports_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.ids import uuid7

FORMATS = ("la311", "sf311", "csv")
CHUNK_ROWS = 5_000
LOS_ANGELES = ZoneInfo("America/Los_Angeles")

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


class RowError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(slots=True)
class ImportResult:
    read: int = 0
    inserted: int = 0
    skipped_existing: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)


def _blank(value: str | None) -> bool:
    return value is None or value.strip() in {"", "NA", "NULL"}


def _coord(row: dict[str, str], name: str, low: float, high: float) -> float:
    raw = row.get(name)
    if _blank(raw):
        raise RowError(name, "missing coordinate")
    try:
        value = float(raw)  # type: ignore[arg-type]
    except ValueError:
        raise RowError(name, f"not a number: {raw!r}") from None
    if not low <= value <= high or value == 0.0:
        raise RowError(name, f"out of range: {value}")
    return value


def _local_time(row: dict[str, str], name: str, zone: ZoneInfo) -> dt.datetime:
    raw = row.get(name)
    if _blank(raw):
        raise RowError(name, "missing timestamp")
    try:
        value = dt.datetime.fromisoformat(raw.strip())  # type: ignore[union-attr]
    except ValueError:
        raise RowError(name, f"not a timestamp: {raw!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=zone)


def _optional_time(row: dict[str, str], name: str, zone: ZoneInfo) -> str | None:
    return None if _blank(row.get(name)) else _local_time(row, name, zone).isoformat()


def _clean(row: dict[str, str], *names: str) -> dict[str, str]:
    return {n: row[n].strip() for n in names if not _blank(row.get(n))}


def parse_la311(row: dict[str, str]) -> dict[str, Any]:
    kind = (row.get("requesttype") or "").strip()
    if not kind:
        raise RowError("requesttype", "missing request type")
    source_id = (row.get("srnumber") or "").strip()
    if not source_id:
        raise RowError("srnumber", "missing record id")
    address = None if _blank(row.get("address")) else row["address"].strip()
    attrs: dict[str, Any] = _clean(
        row,
        "requesttype",
        "requestsource",
        "status",
        "ncname",
        "cd",
        "zipcode",
        "owner",
        "actiontaken",
    )
    attrs["closed_at"] = _optional_time(row, "closeddate", LOS_ANGELES)
    return {
        "source_id": source_id,
        "text": f"{kind} at {address}" if address else kind,
        "lat": _coord(row, "latitude", -90, 90),
        "lon": _coord(row, "longitude", -180, 180),
        "address": address,
        "category": LA_CATEGORIES.get(kind, "other"),
        "submitted_at": _local_time(row, "createddate", LOS_ANGELES),
        "channel": LA_CHANNELS.get((row.get("requestsource") or "").strip(), "import"),
        "attributes": attrs,
    }


def parse_sf311(row: dict[str, str]) -> dict[str, Any]:
    source_id = (row.get("CaseID") or "").strip()
    if not source_id:
        raise RowError("CaseID", "missing record id")
    category = (row.get("Category") or "").strip()
    request_type = "" if _blank(row.get("Request.Type")) else row["Request.Type"].strip()
    details = "" if _blank(row.get("Request.Details")) else row["Request.Details"].strip()
    text = ": ".join(p for p in (request_type or category, details) if p) or category
    if not text:
        raise RowError("Request.Type", "no text to describe the report")
    address = None if _blank(row.get("Address")) else row["Address"].strip()
    attrs: dict[str, Any] = _clean(
        row,
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
    attrs["closed_at"] = _optional_time(row, "Closed", LOS_ANGELES)
    return {
        "source_id": source_id,
        "text": text[:4000],
        "lat": _coord(row, "Lat", -90, 90),
        "lon": _coord(row, "Long", -180, 180),
        "address": address,
        "category": SF_CATEGORIES.get(category, "other"),
        "submitted_at": _local_time(row, "Opened", LOS_ANGELES),
        "channel": SF_CHANNELS.get((row.get("Source") or "").strip(), "import"),
        "attributes": attrs,
    }


def make_csv_parser(
    categories: dict[str, str], zone: ZoneInfo
) -> Callable[[dict[str, str]], dict[str, Any]]:
    """The plain format: source_id,text,lat,lon,submitted_at[,category,address,channel]."""

    def parse(row: dict[str, str]) -> dict[str, Any]:
        source_id = (row.get("source_id") or "").strip()
        if not source_id:
            raise RowError("source_id", "missing record id")
        text = (row.get("text") or "").strip()
        if not text or len(text) > 4000:
            raise RowError("text", "text must be 1-4000 characters")
        category = None
        if not _blank(row.get("category")):
            category = categories.get(row["category"].strip())
            if category is None:
                raise RowError("category", f"unknown category {row['category']!r}")
        return {
            "source_id": source_id,
            "text": text,
            "lat": _coord(row, "lat", -90, 90),
            "lon": _coord(row, "lon", -180, 180),
            "address": None if _blank(row.get("address")) else row["address"].strip(),
            "category": category,
            "submitted_at": _local_time(row, "submitted_at", zone),
            "channel": "import",
            "attributes": {},
        }

    return parse


def iter_rows(
    handle: TextIO,
    parse: Callable[[dict[str, str]], dict[str, Any]],
    source: str,
    result: ImportResult,
) -> Iterator[tuple[Any, ...]]:
    """Parsed records in IMPORT_COLUMNS order; bad rows go to result.errors."""
    reader = csv.DictReader(handle)
    now = dt.datetime.now(dt.UTC)
    line = reader.line_num
    for row in reader:
        result.read += 1
        start_line = line + 1
        line = reader.line_num
        try:
            rec = parse(row)
        except RowError as exc:
            result.errors.append((start_line, exc.field, exc.message))
            continue
        yield (
            start_line,
            uuid7(),
            rec["text"],
            rec["lat"],
            rec["lon"],
            rec["address"],
            rec["category"],
            rec["submitted_at"],
            rec["channel"],
            json.dumps(rec["attributes"]),
            source,
            rec["source_id"],
            now,
        )


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
    """Import a file into a tenant; progress(n) is called after each chunk with its size."""
    parsers: dict[str, Callable[[dict[str, str]], dict[str, Any]]] = {
        "la311": parse_la311,
        "sf311": parse_sf311,
        "csv": make_csv_parser(categories, ZoneInfo(timezone)),
    }
    if fmt not in parsers:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    result = ImportResult()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        chunk: list[tuple[Any, ...]] = []
        for record in iter_rows(handle, parsers[fmt], fmt, result):
            chunk.append(record)
            if len(chunk) >= CHUNK_ROWS:
                await _write(pool, tenant_id, chunk, result, progress)
                chunk = []
        if chunk:
            await _write(pool, tenant_id, chunk, result, progress)
    return result


async def _write(
    pool: asyncpg.Pool,
    tenant_id: int,
    chunk: list[tuple[Any, ...]],
    result: ImportResult,
    progress: Callable[[int], None] | None,
) -> None:
    async with tenant_transaction(pool, tenant_id) as conn:
        inserted = await reports_repo.import_reports(conn, tenant_id, chunk)
    result.inserted += inserted
    result.skipped_existing += len(chunk) - inserted
    if progress is not None:
        progress(len(chunk))
