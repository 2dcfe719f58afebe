"""Realistic inputs for the ingest benchmark, drawn from the LA311 sample.

Locations, addresses, request types, channels and times come from
/work/shared/data/la311_2020-01-01_to_03.csv (10,000 real MyLA311 records); the resident-
written text is generated from per-type templates (the export has none). Deterministic for
a given seed.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

LA311 = Path("/work/shared/data/la311_2020-01-01_to_03.csv")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")

# LA request type -> CivicPulse category (as civicpulse.imports maps the LA export).
CATEGORY = {
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
CHANNEL = {
    "Call": "phone",
    "Mobile App": "mobile",
    "Self Service": "web",
    "Email": "email",
    "Driver Self Report": "staff",
}

TEMPLATES = {
    "bulky_items": [
        "Old couch and a mattress left on the curb at {addr}, blocking part of the sidewalk.",
        "Please pick up a broken dresser and two chairs outside {addr}.",
        "Fridge and washing machine dumped next to the driveway at {addr}.",
        "Pile of furniture by the alley behind {addr} since last week.",
    ],
    "graffiti": [
        "Fresh graffiti tags on the wall at {addr}, about ten feet wide.",
        "Spray paint on the bus shelter and utility box near {addr}.",
        "Gang tags painted over the storefront at {addr} overnight.",
    ],
    "litter_dumping": [
        "Someone dumped trash bags and construction debris at {addr}.",
        "Illegal dumping in the alley near {addr}: tires, boxes and paint cans.",
        "Garbage piling up on the sidewalk at {addr}, attracting rats.",
    ],
    "streetlight": [
        "Streetlight out in front of {addr}, the block is very dark at night.",
        "Two street lamps flickering on and off near {addr}.",
    ],
    "water_sewer": [
        "Sprinklers running onto the street at {addr} every morning, water wasted.",
        "Water leaking from the meter box at {addr}.",
    ],
    "other": [
        "Problem reported at {addr}, please send someone to take a look.",
        "Something needs attention at {addr}; details given to the operator.",
    ],
}
NAMES = [
    "Maria Lopez",
    "James Kim",
    "Ana Garcia",
    "David Nguyen",
    "Sarah Johnson",
    "Luis Hernandez",
    "Emily Chen",
    "Robert Brown",
    None,
]


@dataclass(frozen=True, slots=True)
class Record:
    srnumber: str
    requesttype: str
    category: str
    channel: str
    created: dt.datetime
    lat: float
    lon: float
    address: str


def load_la311(path: Path = LA311) -> list[Record]:
    """The sample's geocoded records."""
    out: list[Record] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            try:
                lat, lon = float(row["latitude"]), float(row["longitude"])
            except ValueError:
                continue
            address = (row.get("address") or "").strip()
            if lat == 0.0 or lon == 0.0 or not address:
                continue
            kind = row["requesttype"].strip()
            out.append(
                Record(
                    srnumber=row["srnumber"].strip(),
                    requesttype=kind,
                    category=CATEGORY.get(kind, "other"),
                    channel=CHANNEL.get(row["requestsource"].strip(), "web"),
                    created=dt.datetime.fromisoformat(row["createddate"]).replace(
                        tzinfo=LOS_ANGELES
                    ),
                    lat=lat,
                    lon=lon,
                    address=address,
                )
            )
    return out


def _text(rng: random.Random, rec: Record) -> str:
    return rng.choice(TEMPLATES[rec.category]).format(addr=rec.address)


def report_body(rng: random.Random, rec: Record) -> dict[str, object]:
    """A JSON body for POST /v1/tenants/{slug}/reports (about 400 bytes)."""
    name = rng.choice(NAMES)
    reporter: dict[str, str] = {}
    if name:
        reporter["name"] = name
        reporter["email"] = name.lower().replace(" ", ".") + "@example.org"
    body: dict[str, object] = {
        "text": _text(rng, rec),
        "lat": round(rec.lat + rng.uniform(-0.0005, 0.0005), 6),
        "lon": round(rec.lon + rng.uniform(-0.0005, 0.0005), 6),
        "address": rec.address,
        "channel": rng.choice(["mobile", "web", "api"]),
        "submitted_at": rec.created.isoformat(),
        "attributes": {"la_request_type": rec.requesttype, "la_sr": rec.srnumber},
    }
    if reporter:
        body["reporter"] = reporter
    return body


def write_bodies(path: Path, count: int = 2000, seed: int = 311) -> dict[str, float]:
    """Write `count` request bodies, one JSON document per line; returns size stats."""
    rng = random.Random(seed)
    records = load_la311()
    sizes = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(count):
            line = json.dumps(report_body(rng, rng.choice(records)), separators=(",", ":"))
            sizes.append(len(line.encode()))
            fh.write(line + "\n")
    return {
        "count": count,
        "mean_bytes": sum(sizes) / count,
        "min_bytes": min(sizes),
        "max_bytes": max(sizes),
    }


CSV_COLUMNS = ("source_id", "text", "lat", "lon", "submitted_at", "category", "address")


def write_import_csv(path: Path, rows: int, seed: int = 2020) -> None:
    """The plain `civicpulse import --format csv` file: CSV_COLUMNS, `rows` data rows.

    Each row copies a random LA311 record's place, type and time (shifted by up to 90 days,
    kept in Los Angeles time with its UTC offset) with a generated text.
    """
    rng = random.Random(seed)
    records = load_la311()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for n in range(rows):
            rec = records[rng.randrange(len(records))]
            shift = dt.timedelta(minutes=rng.randrange(90 * 24 * 60))
            when = (rec.created.astimezone(dt.UTC) + shift).astimezone(LOS_ANGELES)
            writer.writerow(
                (
                    f"bench-{n:08d}",
                    _text(rng, rec),
                    f"{rec.lat + rng.uniform(-0.0005, 0.0005):.6f}",
                    f"{rec.lon + rng.uniform(-0.0005, 0.0005):.6f}",
                    when.isoformat(),
                    rec.category,
                    rec.address,
                )
            )
    tmp.replace(path)
