"""The real 311 records as CivicPulse imports them, and the street names in their addresses.

Records are read with the importer's own row parsers (`civicpulse.imports.LAYOUTS`), so each
record has exactly the text and category an import would store (LA: "<requesttype> at
<address>", SF: "<Request.Type>: <Request.Details>"). Rows the importer rejects (bad
coordinates, missing ids) are skipped, as an import would skip them.
"""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

from civicpulse.engine import textmodel
from civicpulse.imports import LAYOUTS, RowError

ROOT = Path(__file__).resolve().parents[2]
DATA = Path("/work/shared/data")
if not DATA.is_dir():  # CI layout: shared/ beside the checkout
    DATA = ROOT.parent / "shared" / "data"
FILES = {
    "sf": ("sf311", DATA / "sf311_sample_2008-2016.csv"),
    "la": ("la311", DATA / "la311_2020-01-01_to_03.csv"),
}
CITY_NAMES = {"sf": "San Francisco", "la": "Los Angeles"}


class Record(NamedTuple):
    city: str
    text: str
    category: str
    address: str | None
    source_type: str  # LA requesttype / SF Category, as in the file
    neighborhood: str | None


@dataclass
class Loaded:
    records: list[Record]
    rejected: int


def load_city(city: str) -> Loaded:
    fmt, path = FILES[city]
    records: list[Record] = []
    rejected = 0
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        layout = LAYOUTS[fmt](header, {}, ZoneInfo("America/Los_Angeles"))
        keys = layout.attribute_keys
        for row in reader:
            if not row:
                continue
            try:
                parsed = layout.parse(row)
            except RowError:
                rejected += 1
                continue
            attrs = dict(zip(keys, parsed[8], strict=False))
            source_type = attrs.get("requesttype") or attrs.get("Category") or ""
            hood = attrs.get("ncname") or attrs.get("Neighborhood")
            records.append(Record(city, parsed[1], parsed[5], parsed[4], str(source_type), hood))
    return Loaded(records, rejected)


def split(records: list[Record], train_share: float, seed: int) -> tuple[list, list]:
    """A seeded shuffle, then the first train_share of it for training."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    cut = round(len(shuffled) * train_share)
    return shuffled[:cut], shuffled[cut:]


# -- taxonomy ----------------------------------------------------------------------------------


def taxonomy() -> list[dict]:
    return json.loads(resources.files("civicpulse.data").joinpath("taxonomy.json").read_text())


def taxonomy_entries() -> list[textmodel.TaxonomyEntry]:
    return [
        textmodel.TaxonomyEntry(
            t["code"], t["name"], t["description"], tuple(t["keywords"]), t["kind"]
        )
        for t in taxonomy()
    ]


# -- streets and places from the real addresses --------------------------------------------------

_SUFFIXES = {
    "ST", "AVE", "BLVD", "RD", "DR", "PL", "WAY", "LN", "CT", "TER", "ROAD", "AV", "CIR", "PKWY",
    "HWY", "ALY", "PARK", "PLZ", "SQ", "WALK", "STREET", "AVENUE", "ROW", "TR", "LOOP",
}  # fmt: skip
_DIRECTIONS = {"N", "S", "E", "W"}


def _street(raw: str) -> str | None:
    """'W VANOWEN ST' -> 'Vanowen St'; None when it does not look like a street name."""
    words = raw.replace(",", " ").split()
    if words and words[0] in _DIRECTIONS and len(words) > 2:
        words = words[1:]
    if len(words) < 2 or words[-1].upper() not in _SUFFIXES:
        return None
    if not all(re.fullmatch(r"[A-Za-z0-9'.-]+", w) for w in words):
        return None
    return " ".join(w.capitalize() for w in words)


@dataclass
class Places:
    """Per city: (house number, street) pairs, cross-street pairs and neighbourhoods."""

    numbered: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    crossings: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    hoods: dict[str, list[str]] = field(default_factory=dict)


def places(records: list[Record]) -> Places:
    out = Places()
    for city in CITY_NAMES:
        numbered: set[tuple[str, str]] = set()
        crossings: set[tuple[str, str]] = set()
        hoods: set[str] = set()
        for r in records:
            if r.city != city:
                continue
            if r.neighborhood:
                hood = re.sub(r"\s+NC$", "", r.neighborhood.strip())
                if hood and not hood.isdigit():
                    hoods.add(hood.title() if hood.isupper() else hood)
            if not r.address:
                continue
            first = r.address.split(",")[0].strip()
            m = re.match(r"Intersection of (.+) and (.+)$", r.address, re.IGNORECASE)
            if m is None:
                m = re.match(r"(.+?) AT (.+?)(?:,|$)", r.address)
            if m is not None:
                a, b = _street(m.group(1).split(",")[0]), _street(m.group(2).split(",")[0])
                if a and b and a != b:
                    crossings.add((a, b))
                continue
            m = re.match(r"(\d+)\s+(.+)$", first)
            if m is not None and (s := _street(m.group(2))):
                numbered.add((m.group(1), s))
        out.numbered[city] = sorted(numbered)
        out.crossings[city] = sorted(crossings)
        out.hoods[city] = sorted(hoods)
    return out


def text_without_address(r: Record) -> str:
    """The import text with LA's ' at <address>' tail left out (SF texts have no address)."""
    tail = f" at {r.address}" if r.address else ""
    return r.text[: -len(tail)] if tail and r.text.endswith(tail) else r.text


def text_with_address(r: Record) -> str:
    """LA text in the importer's earlier form, `<requesttype> at <address>` (a diagnostic of
    what address words in training texts do); other records unchanged."""
    if r.city == "la" and r.address and not r.text.endswith(f" at {r.address}"):
        return f"{r.text} at {r.address}"
    return r.text
