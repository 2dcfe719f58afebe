"""`civicpulse import` against psql `\\copy` of the same file into an equally indexed table.

Issue 15, item 5: the import must run at >= 50% of the rate of a `\\copy` of the same rows
into a plain table with the same columns, a primary key and three indexes, measured in the
same run. For each input file this benchmark, on a fresh database:

1. copies the file with psql `\\copy` into a plain table with the file's columns (typed:
   times as timestamptz read in Los Angeles time, coordinates as float8), a primary key on
   the record id and three secondary indexes (time; type or category and time; position);
2. imports the same file with `civicpulse import FILE --tenant bench --format FMT --quiet`
   (the CLI end to end: start-up, parsing, the moves under RLS, the issue rows, ANALYZE);
3. imports it again (idempotent: nothing is added) and checks the row counts.

The inputs are made from the real samples in /work/shared/data: `la311` is the LA311
export repeated with distinct record ids (`<srnumber>-<copy>`), positions jittered by up to
~50 m and times shifted by a week per copy, all 35 columns kept; `csv` is the plain import
format (seven columns) from bench.ingest.data (real LA places, types and times, generated
texts). Both timed parts are whole client processes, so each pays its own start-up.

`.venv/bin/python -m bench.ingest.import_vs_copy --rows 300000` (see --help). The database
`bench_import` is dropped and recreated at the start of every run; results go to
bench/results/import_vs_copy.md and .json unless --out says otherwise. `--checkout DIR`
runs the CLI of another checkout of the repository (e.g. a `git worktree` of an earlier
commit) with this venv, for a before/after pair measured the same way.
`--without-foreign-keys` is a what-if, not a supported configuration: it drops, in the
benchmark database only, the six foreign keys whose checks the import's inserts pay row by
row (reports to issues; issues to tenants, categories, teams, areas, SLA policies), to
measure how much of the gap they are.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.ingest import data
from bench.ingest.common import (
    PG_ADMIN_URL,
    RESULTS,
    ROOT,
    TMP,
    VENV_BIN,
    Watch,
    background_load,
    db_url,
    machine_context,
    postmaster_pid,
    print_context,
    psql,
    reset_database,
    shell,
)

TENANT = "bench"
# Environment for the CLI: PYTHONPATH names the checkout to run when --checkout is given.
CLI_ENV: dict[str, str] = {}
LA_SOURCE = data.LA311
WEEK = dt.timedelta(days=7)
LA_TIMES = ("createddate", "closeddate", "updateddate", "servicedate")
LA_FLOATS = ("_daystoclose", "latitude", "longitude")
CSV_TYPES = {
    "source_id": "text",
    "text": "text",
    "lat": "double precision",
    "lon": "double precision",
    "submitted_at": "timestamptz",
    "category": "text",
    "address": "text",
}
# The baseline's primary key and three indexes, per format: the record id (as reports'
# unique source-record key), time, kind and time, position.
# Checked by a trigger call per inserted row of the import (--without-foreign-keys).
IMPORT_FOREIGN_KEYS = (
    ("reports", "reports_tenant_id_issue_id_fkey"),
    ("issues", "issues_tenant_id_fkey"),
    ("issues", "issues_tenant_id_category_fkey"),
    ("issues", "issues_team_fk"),
    ("issues", "issues_area_fk"),
    ("issues", "issues_sla_policy_fk"),
)
BASELINE_KEYS = {
    "la311": ("srnumber", ["createddate", "requesttype, createddate", "latitude, longitude"]),
    "csv": ("source_id", ["submitted_at", "category, submitted_at", "lat, lon"]),
}


# -- inputs ----------------------------------------------------------------------------------


def _cached(path: Path, want: dict[str, Any]) -> bool:
    meta = path.with_suffix(".json")
    return path.exists() and meta.exists() and json.loads(meta.read_text()) == want


def la311_file(rows: int, seed: int = 311) -> Path:
    """The real LA311 export repeated to `rows` rows with distinct ids (cached)."""
    path = TMP / f"la311_{rows}.csv"
    want = {"rows": rows, "seed": seed, "source": str(LA_SOURCE), "generator": 1}
    if _cached(path, want):
        return path
    rng = random.Random(seed)
    with LA_SOURCE.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        records = list(reader)
    col = {name: i for i, name in enumerate(header)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    with tmp.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for n in range(rows):
            copy, row = divmod(n, len(records))
            rec = list(records[row])
            rec[col["srnumber"]] = f"{rec[col['srnumber']]}-{copy:03d}"
            for name in ("latitude", "longitude"):
                value = rec[col[name]]
                if value and float(value) != 0.0:
                    rec[col[name]] = f"{float(value) + rng.uniform(-0.0005, 0.0005):.8f}"
            for name in LA_TIMES:
                value = rec[col[name]]
                if value:
                    when = dt.datetime.fromisoformat(value) + copy * WEEK
                    rec[col[name]] = when.strftime("%Y-%m-%d %H:%M:%S")
            writer.writerow(rec)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(want))
    return path


def csv_file(rows: int, seed: int = 2020) -> Path:
    """The plain-format file (bench.ingest.data) of `rows` rows (cached)."""
    path = TMP / f"import_{rows}.csv"
    want = {"rows": rows, "seed": seed, "columns": list(data.CSV_COLUMNS), "generator": 1}
    if not _cached(path, want):
        data.write_import_csv(path, rows, seed)
        path.with_suffix(".json").write_text(json.dumps(want))
    return path


def baseline_ddl(fmt: str, path: Path, table: str) -> list[str]:
    """CREATE TABLE with the file's columns, its primary key and three indexes."""
    with path.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    columns = []
    for name in header:
        if fmt == "csv":
            kind = CSV_TYPES[name]
        elif name in LA_TIMES:
            kind = "timestamptz"
        elif name in LA_FLOATS:
            kind = "double precision"
        else:
            kind = "text"
        columns.append(f'"{name}" {kind}')
    key, indexes = BASELINE_KEYS[fmt]
    ddl = [
        f"DROP TABLE IF EXISTS {table}",
        f"CREATE TABLE {table} ({', '.join(columns)}, PRIMARY KEY ({key}))",
    ]
    ddl += [f"CREATE INDEX ON {table} ({cols})" for cols in indexes]
    return ddl


# -- timed parts -----------------------------------------------------------------------------

SUMMARY = re.compile(
    r"read (\d+) rows: (\d+) imported, (\d+) already present, (\d+) rejected in ([\d.]+)s"
)


def _load(url: str, watch: Watch) -> float:
    psql(url, "CHECKPOINT")
    return background_load(watch, 2.0)


def time_copy(url: str, fmt: str, path: Path, rows: int, watch: Watch) -> dict[str, Any]:
    table = f"copy_baseline_{fmt}"
    for stmt in baseline_ddl(fmt, path, table):
        psql(url, stmt)
    background = _load(url, watch)
    copy = f"\\copy {table} FROM '{path}' WITH (FORMAT csv, HEADER true)"
    cmd = ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", copy]
    env = {"PGTZ": "America/Los_Angeles"}  # the exports' local times, as the import reads them
    started = time.perf_counter()
    out = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"\\copy failed: {out.stderr[-2000:]}")
    landed = int(psql(url, f"SELECT count(*) FROM {table}"))
    # Untimed: otherwise the import's closing ANALYZE of stale tables would include this one.
    psql(url, f"ANALYZE {table}")
    return {
        "command": shell(cmd, env),
        "table": psql(
            url,
            f"SELECT pg_get_indexdef(indexrelid) FROM pg_index "
            f"WHERE indrelid = '{table}'::regclass ORDER BY indexrelid",
        ),
        "wall_s": round(elapsed, 3),
        "rows_per_s": round(rows / elapsed),
        "rows_landed": landed,
        "check": "OK" if landed == rows else "MISMATCH",
        "background_pct": background,
    }


def time_import(url: str, fmt: str, path: Path, rows: int, watch: Watch) -> dict[str, Any]:
    source = fmt
    before = int(psql(url, f"SELECT count(*) FROM reports WHERE source = '{source}'"))
    background = _load(url, watch)
    cmd = [str(VENV_BIN / "civicpulse"), "import", str(path), "--tenant", TENANT]
    cmd += ["--format", fmt, "--quiet"]
    env = {**CLI_ENV, "CIVICPULSE_DATABASE_URL": url}
    started = time.perf_counter()
    out = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, check=False, cwd=ROOT
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"civicpulse import failed: {out.stderr[-2000:]}")
    summary = out.stdout.strip().splitlines()[-1]
    m = SUMMARY.search(summary)
    if m is None:
        raise RuntimeError(f"unexpected import summary: {summary!r}")
    read, imported, present, rejected = (int(m.group(i)) for i in range(1, 5))
    landed = int(psql(url, f"SELECT count(*) FROM reports WHERE source = '{source}'")) - before
    return {
        "command": shell(cmd, env),
        "wall_s": round(elapsed, 3),
        "rows_per_s": round(rows / elapsed),
        "cli_summary": summary,
        "read": read,
        "imported": imported,
        "already_present": present,
        "rejected": rejected,
        "rows_landed": landed,
        "check": "OK" if landed == imported and read == rows else "MISMATCH",
        "background_pct": background,
    }


def run_format(url: str, fmt: str, rows: int, repeat: int, watch: Watch) -> dict[str, Any]:
    print(f"== {fmt}: {rows:,} rows", flush=True)
    path = la311_file(rows) if fmt == "la311" else csv_file(rows)
    size_mb = round(path.stat().st_size / 1e6, 1)
    print(f"  file {path.relative_to(ROOT)} ({size_mb} MB)", flush=True)
    runs = []
    for i in range(repeat):
        copy = time_copy(url, fmt, path, rows, watch)
        print(
            f"  [{i + 1}] psql \\copy:        {copy['wall_s']:6.2f}s = "
            f"{copy['rows_per_s']:>9,} rows/s  landed {copy['rows_landed']:,} "
            f"[{copy['check']}]  background {copy['background_pct']:.0f}%",
            flush=True,
        )
        if i:  # a later round imports into an emptied tenant, like the first
            _empty_tenant(url)
        imp = time_import(url, fmt, path, rows, watch)
        print(
            f"  [{i + 1}] civicpulse import: {imp['wall_s']:6.2f}s = "
            f"{imp['rows_per_s']:>9,} rows/s  imported {imp['imported']:,}, "
            f"rejected {imp['rejected']:,} [{imp['check']}]  background "
            f"{imp['background_pct']:.0f}%",
            flush=True,
        )
        ratio = imp["rows_per_s"] / copy["rows_per_s"]
        print(f"  [{i + 1}] ratio import / \\copy: {ratio:.3f}", flush=True)
        runs.append({"copy": copy, "import": imp, "ratio": round(ratio, 4)})
    again = time_import(url, fmt, path, rows, watch)
    idempotent = (
        again["imported"] == 0 and again["already_present"] == runs[-1]["import"]["imported"]
    )
    print(
        f"  re-import:            {again['wall_s']:6.2f}s = {again['rows_per_s']:>9,} rows/s  "
        f"imported {again['imported']:,}, already present {again['already_present']:,} "
        f"[{'OK' if idempotent else 'MISMATCH'}]\n",
        flush=True,
    )
    return {
        "format": fmt,
        "rows": rows,
        "file": str(path.relative_to(ROOT)),
        "file_mb": size_mb,
        "runs": runs,
        "ratio_median": round(statistics.median(r["ratio"] for r in runs), 4),
        "reimport": again | {"idempotent": idempotent},
    }


def _empty_tenant(url: str) -> None:
    """Delete the tenant's imported reports and issues (owner connection, no RLS)."""
    psql(
        url,
        "BEGIN; DELETE FROM reports WHERE state = 'imported'; "
        "DELETE FROM issues i WHERE NOT EXISTS (SELECT 1 FROM reports r "
        "WHERE r.tenant_id = i.tenant_id AND r.issue_id = i.id); "
        "DELETE FROM rollup_dirty; COMMIT",
    )
    psql(url, "VACUUM ANALYZE reports, issues")


# -- setup and report ------------------------------------------------------------------------


def setup(admin_url: str, db: str, *, without_foreign_keys: bool = False) -> list[str]:
    reset_database(admin_url, db)
    url = db_url(db, admin_url)
    env = {**os.environ, **CLI_ENV, "CIVICPULSE_DATABASE_URL": url}
    cli = str(VENV_BIN / "civicpulse")
    cmds = [[cli, "migrate"], [cli, "tenant", "create", TENANT, "--name", "Bench"]]
    for cmd in cmds:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{shell(cmd)} failed: {done.stderr}")
    shown = [
        f"psql {admin_url}/postgres -c 'DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)' "
        f"-c 'CREATE DATABASE \"{db}\"'"
    ]
    return shown + [shell(c, {**CLI_ENV, "CIVICPULSE_DATABASE_URL": url}) for c in cmds]


def write_markdown(path: Path, res: dict[str, Any]) -> None:
    ctx = res["context"]
    lines = [
        "# Bulk import against `\\copy` into an equally indexed table (issue 15, item 5)",
        "",
        f"Run {ctx['date_utc']} by `{res['invocation']}`; CLI from `{res['checkout']}`.",
        "",
        *(
            [
                "**What-if run: the import's row-checked foreign keys were dropped in the "
                "benchmark database** (not a supported configuration).",
                "",
            ]
            if res["without_foreign_keys"]
            else []
        ),
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    for k, v in ctx.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a} {b}" for a, b in v.items())
        lines.append(f"| {k} | {v} |")
    lines += [
        "",
        "## Results",
        "",
        "Each round: psql `\\copy` of the file into a plain table with the file's columns, a "
        "primary key and three indexes, then `civicpulse import` of the same file into an "
        "empty tenant (both timed as whole client processes, after a CHECKPOINT). "
        "Background: CPU of other processes in the 2 s before, in % of one core.",
        "",
        "| format | rows | MB | round | `\\copy` s | `\\copy` rows/s | import s | "
        "import rows/s | ratio | imported / rejected | background % (copy / import) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for f in res["formats"]:
        for i, r in enumerate(f["runs"], start=1):
            c, m = r["copy"], r["import"]
            lines.append(
                f"| {f['format']} | {f['rows']:,} | {f['file_mb']} | {i} | {c['wall_s']:.2f} | "
                f"{c['rows_per_s']:,} | {m['wall_s']:.2f} | {m['rows_per_s']:,} | "
                f"**{r['ratio']:.3f}** | {m['imported']:,} / {m['rejected']:,} | "
                f"{c['background_pct']:.0f} / {m['background_pct']:.0f} |"
            )
    medians = ", ".join(f"{f['format']} **{f['ratio_median']:.3f}**" for f in res["formats"])
    lines += ["", f"Median ratio import / `\\copy`: {medians}."]
    lines += ["", "Re-import of the same file (adds nothing):", ""]
    for f in res["formats"]:
        a = f["reimport"]
        lines.append(
            f"- {f['format']}: {a['wall_s']:.2f} s ({a['rows_per_s']:,} rows/s), "
            f"{a['imported']:,} imported, {a['already_present']:,} already present "
            f"[{'OK' if a['idempotent'] else 'MISMATCH'}]"
        )
    lines += ["", "Baseline tables (indexes as created):", ""]
    for f in res["formats"]:
        lines.append(f"- {f['format']}:")
        for idx in f["runs"][0]["copy"]["table"].splitlines():
            lines.append(f"  - `{idx}`")
    lines += ["", "## Command lines", "", "```sh", "# setup"]
    lines += res["setup_commands"]
    for f in res["formats"]:
        lines += [
            f"# {f['format']}: baseline, import, re-import",
            f["runs"][0]["copy"]["command"],
            f["runs"][0]["import"]["command"],
        ]
    lines += ["```", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=300_000, help="rows per file (300,000)")
    p.add_argument("--formats", default="la311,csv", help="comma-separated: la311, csv (la311,csv)")
    p.add_argument("--repeat", type=int, default=1, help="rounds per format (1)")
    p.add_argument("--db", default="bench_import", help="database, recreated (bench_import)")
    p.add_argument("--pg-url", default=PG_ADMIN_URL, help=f"server URL ({PG_ADMIN_URL})")
    p.add_argument(
        "--out", default=str(RESULTS / "import_vs_copy"), help="results path without suffix"
    )
    p.add_argument(
        "--checkout",
        help="run the civicpulse CLI of this checkout (PYTHONPATH) instead of this one's",
    )
    p.add_argument(
        "--without-foreign-keys",
        action="store_true",
        help="what-if: drop the import's row-checked foreign keys in the benchmark database",
    )
    args = p.parse_args(argv)
    if args.checkout:
        CLI_ENV["PYTHONPATH"] = str(Path(args.checkout).resolve())
    invocation = ".venv/bin/python -m bench.ingest.import_vs_copy " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    ctx = machine_context(args.pg_url)
    print_context(ctx)
    TMP.mkdir(parents=True, exist_ok=True)
    print(f"== setup: fresh database {args.db}", flush=True)
    setup_cmds = setup(args.pg_url, args.db, without_foreign_keys=args.without_foreign_keys)
    url = db_url(args.db, args.pg_url)
    watch = Watch(None, None, postmaster_pid(url), args.db)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    res: dict[str, Any] = {
        "context": ctx,
        "checkout": CLI_ENV.get("PYTHONPATH", str(ROOT)),
        "without_foreign_keys": args.without_foreign_keys,
        "invocation": invocation.strip(),
        "setup_commands": setup_cmds,
        "formats": [run_format(url, f, args.rows, args.repeat, watch) for f in formats],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    write_markdown(out.with_suffix(".md"), res)
    for f in res["formats"]:
        print(f"== {f['format']}: median ratio import / \\copy {f['ratio_median']:.3f}")
    print(f"results: {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
