"""Normalised addresses against the records' own coordinates, on the real LA and SF samples.

    .venv/bin/python -m bench.addresses.run

A report located by address only is grouped by its normalised address
(civicpulse.engine.addresses.key). Nobody labelled which real records are the same place,
but each real record carries both an address and a point, so the point judges the key:

- **agreement**: two records with the same key should be at one place. For every pair of
  records that share a key, the distance between their points (median, and the share within
  50, 100 and 250 m). Many pairs far apart would mean the key joins different places.
- **recall**: two records of one category whose points are within 15 m (about one house
  front) should share a key. The share that do is how many same-place reports the address
  path would bring together without a point.
- **coverage**: the share of records whose address gives a key at all, and the same among
  the records that have no point (the ones the address path exists for).

Each figure beside the simplest rule, the same in the same run: two records are at one
place when their address strings are equal once upper-cased and stripped of spaces at the
ends. Nothing here was fitted: the normaliser's rules were written before this ran.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.dedup_quality.context import RESULTS, machine_context, print_context
from civicpulse import imports
from civicpulse.engine import addresses, geo

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
NEAR_M = 15.0


@dataclass(frozen=True)
class Record:
    category: str
    lat: float | None
    lon: float | None
    address: str


def _float(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return None if value == 0.0 else value


def read(city: str) -> list[Record]:
    if city == "la":
        path, kind, lat, lon, addr = (
            SHARED / "la311_2020-01-01_to_03.csv", "requesttype", "latitude", "longitude",
            "address",
        )  # fmt: skip
        mapping = imports.LA_CATEGORIES
    else:
        path, kind, lat, lon, addr = (
            SHARED / "sf311_sample_2008-2016.csv", "Category", "Lat", "Long", "Address",
        )  # fmt: skip
        mapping = imports.SF_CATEGORIES
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return [
            Record(
                mapping.get(row[kind], "other"),
                _float(row[lat]),
                _float(row[lon]),
                "" if row[addr] in ("", "NA") else row[addr],
            )
            for row in csv.DictReader(fh)
        ]


def raw_key(address: str) -> str | None:
    """The simplest rule: the address string itself, upper-cased and stripped."""
    return address.strip().upper() or None


def _share(values: Iterable[bool]) -> float | None:
    flags = list(values)
    return round(sum(flags) / len(flags), 4) if flags else None


def agreement(records: list[Record], key: Callable[[str], str | None]) -> dict[str, Any]:
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        k = key(r.address)
        if k is not None and r.lat is not None and r.lon is not None:
            groups[k].append(r)
    distances = []
    for members in groups.values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                assert a.lat is not None and a.lon is not None
                assert b.lat is not None and b.lon is not None
                distances.append(geo.distance_m(a.lat, a.lon, b.lat, b.lon))
    distances.sort()
    return {
        "keys_shared": sum(1 for m in groups.values() if len(m) > 1),
        "pairs": len(distances),
        "median_m": round(statistics.median(distances), 1) if distances else None,
        "p90_m": round(distances[int(0.9 * (len(distances) - 1))], 1) if distances else None,
        "within_50m": _share(d <= 50 for d in distances),
        "within_100m": _share(d <= 100 for d in distances),
        "beyond_250m": _share(d > 250 for d in distances),
    }


def recall(records: list[Record], key: Callable[[str], str | None]) -> dict[str, Any]:
    located = [r for r in records if r.lat is not None and r.lon is not None and r.address]
    cells: dict[int, list[int]] = defaultdict(list)
    for n, r in enumerate(located):
        assert r.lat is not None and r.lon is not None
        cells[geo.cell_of(r.lat, r.lon)].append(n)
    same = []
    for n, r in enumerate(located):
        assert r.lat is not None and r.lon is not None
        for cell in geo.cells_within(r.lat, r.lon, NEAR_M):
            for m in cells.get(cell, ()):
                if m <= n:
                    continue
                o = located[m]
                assert o.lat is not None and o.lon is not None
                if o.category != r.category:
                    continue
                if geo.distance_m(r.lat, r.lon, o.lat, o.lon) <= NEAR_M:
                    a, b = key(r.address), key(o.address)
                    same.append(a is not None and a == b)
    return {"near_pairs": len(same), "share_same_key": _share(same)}


def coverage(records: list[Record], key: Callable[[str], str | None]) -> dict[str, Any]:
    unlocated = [r for r in records if r.lat is None and r.address]
    return {
        "records": len(records),
        "with_key": _share(key(r.address) is not None for r in records),
        "unlocated_with_address": len(unlocated),
        "unlocated_with_key": _share(key(r.address) is not None for r in unlocated),
    }


RULES: dict[str, Callable[[str], str | None]] = {
    "normalised (engine)": addresses.key,
    "raw string (baseline)": raw_key,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "addresses"), help="results path stem")
    args = parser.parse_args(argv)
    ctx = machine_context()
    print_context(ctx)
    results: dict[str, Any] = {"context": ctx, "cities": {}}
    lines = [
        "# Normalised addresses against the records' own points (real LA and SF samples)",
        "",
        "Command: `.venv/bin/python -m bench.addresses.run`. What each figure means: the "
        "module docstring of `bench/addresses/run.py`.",
        "",
        "| city | rule | with a key | unlocated with a key | pairs sharing a key | "
        "median m | p90 m | within 50 m | within 100 m | beyond 250 m | "
        f"same-category pairs within {NEAR_M:.0f} m | share with the same key |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for city in ("la", "sf"):
        records = read(city)
        results["cities"][city] = {}
        for name, rule in RULES.items():
            figures = {
                **coverage(records, rule),
                **agreement(records, rule),
                **recall(records, rule),
            }
            results["cities"][city][name] = figures
            print(f"{city} {name}: {figures}")
            lines.append(
                f"| {city.upper()} | {name} | {figures['with_key']} | "
                f"{figures['unlocated_with_key']} ({figures['unlocated_with_address']}) | "
                f"{figures['pairs']:,} | {figures['median_m']} | {figures['p90_m']} | "
                f"{figures['within_50m']} | {figures['within_100m']} | "
                f"{figures['beyond_250m']} | {figures['near_pairs']:,} | "
                f"{figures['share_same_key']} |"
            )
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in ctx.items()]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    Path(args.out + ".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {args.out}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
