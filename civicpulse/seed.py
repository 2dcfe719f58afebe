"""Realistic multi-tenant data for benchmarks and demos: `civicpulse seed`.

Tenant sizes fall off like cities' (tenant r gets a share proportional to 1/(r+1): a few
large, many small). Each generated record is a real record of a 311 sample (its category,
its text, its location jittered by up to ~50 m, its time of day and its time to close)
moved to a day within the last `days`. Records are written as the plain CSV import format
and loaded with the importer (COPY into a stage, one RLS-checked insert; each record an
issue of its own), so seeded data take the same path as real imports. The same seed gives
the same records, and seeding again adds nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from civicpulse import imports

LOS_ANGELES = ZoneInfo("America/Los_Angeles")
JITTER_DEG = 0.0005  # ~50 m


@dataclass(frozen=True, slots=True)
class SampleRecord:
    text: str
    lat: float
    lon: float
    category: str
    minute_of_day: int
    close_after: dt.timedelta | None


def load_sample(path: Path, fmt: str = "la311") -> list[SampleRecord]:
    """The usable records of a 311 export (rows the importer would reject are skipped)."""
    out: list[SampleRecord] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        layout = imports.LAYOUTS[fmt](next(reader), {}, LOS_ANGELES)
        for row in reader:
            try:
                _, text, lat, lon, _, category, submitted, _, _, closed = layout.parse(row)
            except imports.RowError:
                continue
            if lat is None or lon is None:  # located by address only: no point to jitter
                continue
            local = submitted.astimezone(LOS_ANGELES)
            out.append(
                SampleRecord(
                    text=text,
                    lat=lat,
                    lon=lon,
                    category=category or "other",
                    minute_of_day=local.hour * 60 + local.minute,
                    close_after=None if closed is None else max(closed - submitted, dt.timedelta()),
                )
            )
    if not out:
        raise ValueError(f"{path} has no usable records")
    return out


def tenant_sizes(tenants: int, reports: int) -> list[int]:
    """Zipf-like shares: tenant r gets reports x (1/(r+1)) / H(tenants), at least 1."""
    weights = [1.0 / (r + 1) for r in range(tenants)]
    total = sum(weights)
    sizes = [max(1, round(reports * w / total)) for w in weights]
    sizes[0] += reports - sum(sizes)
    return sizes


def records(
    sample: list[SampleRecord],
    rng: random.Random,
    tenant: str,
    n: int,
    days: int,
    now: dt.datetime,
) -> Iterator[list[str]]:
    """n CSV rows (the plain import format, with closed_at) for one tenant."""
    today = now.astimezone(LOS_ANGELES).date()
    for i in range(n):
        r = sample[rng.randrange(len(sample))]
        day = today - dt.timedelta(days=rng.randrange(days))
        local = dt.datetime.combine(
            day, dt.time(r.minute_of_day // 60, r.minute_of_day % 60), tzinfo=LOS_ANGELES
        )
        closed = None if r.close_after is None else local + r.close_after
        if closed is not None and closed > now:
            closed = None  # not closed yet
        yield [
            f"{tenant}-{i:08d}",
            r.text,
            f"{r.lat + rng.uniform(-JITTER_DEG, JITTER_DEG):.6f}",
            f"{r.lon + rng.uniform(-JITTER_DEG, JITTER_DEG):.6f}",
            local.isoformat(),
            r.category,
            "",
            "" if closed is None else closed.isoformat(),
        ]


def write_csv(path: Path, rows: Iterator[list[str]]) -> int:
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["source_id", "text", "lat", "lon", "submitted_at", "category", "address", "closed_at"]
        )
        for row in rows:
            writer.writerow(row)
            n += 1
    return n
