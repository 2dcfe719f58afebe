"""Bulk-import part of the ingest benchmark: `civicpulse import` vs a raw psql \\copy.

Generates (once, cached) a CSV of N rows in the plain import format into bench/results/tmp/,
times `civicpulse import FILE --tenant bench --format csv --quiet` into a database that has
the CivicPulse schema and a tenant `bench`, then times psql's `\\copy` of the same file into a
plain unindexed table with the same seven columns, and checks both row counts.

Standalone: `.venv/bin/python -m bench.ingest.bulk_import --help` (bench/ingest/run.py --bulk
calls the same code after the HTTP part).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.ingest import data
from bench.ingest.common import PG_ADMIN_URL, TMP, VENV_BIN, db_url, psql, shell

BASELINE_TABLE = "bulk_copy_baseline"


def ensure_csv(rows: int, seed: int = 2020) -> Path:
    """The import file for `rows` rows, generated unless an identical one is cached."""
    path = TMP / f"import_{rows}.csv"
    meta = path.with_suffix(".json")
    want = {"rows": rows, "seed": seed, "columns": list(data.CSV_COLUMNS), "generator": 1}
    if path.exists() and meta.exists() and json.loads(meta.read_text()) == want:
        print(f"  reusing {path.relative_to(TMP.parents[2])}", flush=True)
        return path
    started = time.perf_counter()
    data.write_import_csv(path, rows, seed)
    meta.write_text(json.dumps(want))
    print(
        f"  generated {path.relative_to(TMP.parents[2])} "
        f"({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f}s",
        flush=True,
    )
    return path


def run_bulk(
    url: str, rows: int, tenant: str = "bench", quiet: Callable[[], float] | None = None
) -> dict[str, object]:
    """Time both imports of the same file into database `url`; returns the figures.

    quiet(), when given, is called before each timed part (it waits for a quiet machine and
    returns the background load it saw, in percent of one core).
    """
    print(f"== bulk import: {rows:,} rows", flush=True)
    path = ensure_csv(rows)
    size_mb = round(path.stat().st_size / 1e6, 1)

    # 1. civicpulse import (parse + validate in Python, COPY to a temp table, INSERT ... SELECT
    #    under RLS into the indexed reports table).
    before = int(psql(url, "SELECT count(*) FROM reports WHERE source = 'csv'"))
    psql(url, "CHECKPOINT")
    background = quiet() if quiet else None
    env = {"CIVICPULSE_DATABASE_URL": url}
    cmd = [
        str(VENV_BIN / "civicpulse"),
        "import",
        str(path),
        "--tenant",
        tenant,
        "--format",
        "csv",
        "--quiet",
    ]
    started = time.perf_counter()
    out = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    cp_elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"civicpulse import failed: {out.stderr[-2000:]}")
    summary = out.stdout.strip().splitlines()[-1]
    m = re.search(
        r"read (\d+) rows: (\d+) imported, (\d+) already present, (\d+) rejected "
        r"in ([\d.]+)s",
        summary,
    )
    cp_landed = int(psql(url, "SELECT count(*) FROM reports WHERE source = 'csv'")) - before
    civicpulse = {
        "command": shell(cmd, {"CIVICPULSE_DATABASE_URL": url}),
        "wall_s": round(cp_elapsed, 2),
        "rows_per_s": round(rows / cp_elapsed),
        "cli_summary": summary,
        "cli_reported_s": float(m.group(5)) if m else None,
        "imported": int(m.group(2)) if m else None,
        "rejected": int(m.group(4)) if m else None,
        "rows_landed": cp_landed,
        "check": "OK" if cp_landed == rows else "MISMATCH",
        "background_before_pct": background,
    }
    print(
        f"  civicpulse import: {rows:,} rows in {cp_elapsed:.2f}s = "
        f"{civicpulse['rows_per_s']:,} rows/s; landed {cp_landed:,} [{civicpulse['check']}]",
        flush=True,
    )

    # 2. baseline: psql \copy into a plain table with the same columns, no index, no checks.
    psql(url, f"DROP TABLE IF EXISTS {BASELINE_TABLE}")
    psql(
        url,
        f"CREATE TABLE {BASELINE_TABLE} (source_id text, text text, lat double precision, "
        "lon double precision, submitted_at timestamptz, category text, address text)",
    )
    psql(url, "CHECKPOINT")
    background = quiet() if quiet else None
    copy = f"\\copy {BASELINE_TABLE} FROM '{path}' WITH (FORMAT csv, HEADER true)"
    cmd2 = ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", copy]
    started = time.perf_counter()
    out = subprocess.run(cmd2, capture_output=True, text=True, check=False)
    copy_elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"\\copy failed: {out.stderr[-2000:]}")
    copy_landed = int(psql(url, f"SELECT count(*) FROM {BASELINE_TABLE}"))
    baseline = {
        "command": shell(cmd2),
        "wall_s": round(copy_elapsed, 2),
        "rows_per_s": round(rows / copy_elapsed),
        "rows_landed": copy_landed,
        "check": "OK" if copy_landed == rows else "MISMATCH",
        "background_before_pct": background,
    }
    print(
        f"  psql \\copy:        {rows:,} rows in {copy_elapsed:.2f}s = "
        f"{baseline['rows_per_s']:,} rows/s; landed {copy_landed:,} [{baseline['check']}]",
        flush=True,
    )
    ratio = civicpulse["rows_per_s"] / baseline["rows_per_s"]  # type: ignore[operator]
    print(f"  ratio civicpulse/\\copy: {ratio:.3f}\n", flush=True)
    return {
        "rows": rows,
        "file": str(path.relative_to(TMP.parents[2])),
        "file_mb": size_mb,
        "civicpulse": civicpulse,
        "copy_baseline": baseline,
        "ratio": round(ratio, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time `civicpulse import --format csv` against a psql \\copy of the same "
        "file. Needs a database with the CivicPulse schema and the tenant; see "
        "bench/ingest/run.py --bulk-only for a run that sets one up."
    )
    parser.add_argument("--db", default="bench_ingest", help="database name (bench_ingest)")
    parser.add_argument("--pg-url", default=PG_ADMIN_URL, help=f"server URL ({PG_ADMIN_URL})")
    parser.add_argument("--rows", type=int, default=1_000_000, help="CSV rows (1,000,000)")
    parser.add_argument("--tenant", default="bench", help="tenant slug (bench)")
    args = parser.parse_args(argv)
    result = run_bulk(db_url(args.db, args.pg_url), args.rows, args.tenant)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
