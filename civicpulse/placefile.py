"""Place files for `civicpulse places import`: CSV or JSON, read and checked row by row.

Every row is checked the way the API checks a place (civicpulse.api.places), and each error
names its line and field, so a file is fixed in one pass and imported all or nothing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import msgspec

from civicpulse.domain.places import Place, PlaceWithCode, to_place
from civicpulse.errors import CivicPulseError

COLUMNS = ("code", "kind", "name")


def _from_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise CivicPulseError(f"missing columns: {', '.join(missing)}", field="file")
        rows: list[tuple[int, dict[str, Any]]] = []
        for row in reader:
            item: dict[str, Any] = {c: row[c] for c in COLUMNS}
            aliases = (row.get("aliases") or "").strip()
            if aliases:
                item["aliases"] = [a.strip() for a in aliases.split("|") if a.strip()]
            if (row.get("parent") or "").strip():
                item["parent"] = row["parent"].strip()
            for coord in ("lat", "lon"):
                raw = (row.get(coord) or "").strip()
                if raw:
                    try:
                        item[coord] = float(raw)
                    except ValueError:
                        item[coord] = raw  # reported by the checks below
            rows.append((reader.line_num, item))
    return rows


def _from_json(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CivicPulseError(f"not JSON: {exc}", field="file") from exc
    if not isinstance(data, list):
        raise CivicPulseError("a JSON place file is an array of places", field="file")
    return [(n + 1, item if isinstance(item, dict) else {}) for n, item in enumerate(data)]


def read_places(path: Path) -> tuple[list[Place], list[tuple[int, str, str]]]:
    """The places of a file, and (line, field, message) for every row that is wrong."""
    rows = _from_json(path) if path.suffix.lower() == ".json" else _from_csv(path)
    found: list[Place] = []
    errors: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    for line, item in rows:
        try:
            parsed = msgspec.convert(item, PlaceWithCode)
            place = to_place(parsed.code, parsed)
        except msgspec.ValidationError as exc:
            errors.append((line, _field(str(exc)), str(exc)))
            continue
        except CivicPulseError as exc:
            errors.append((line, exc.field or "row", exc.message))
            continue
        if place.code in seen:
            errors.append((line, "code", f"{place.code!r} is also on line {seen[place.code]}"))
            continue
        seen[place.code] = line
        found.append(place)
    return found, errors


def _field(message: str) -> str:
    """msgspec names the field as "at `$.name`"."""
    marker = "at `$."
    if marker in message:
        return message.split(marker, 1)[1].split("`", 1)[0].split("[", 1)[0]
    return "row"
