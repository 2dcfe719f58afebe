"""Ingest benchmark: CivicPulse POST /v1/tenants/{slug}/reports vs a FastAPI + ORM baseline.

Steps (each run starts from a fresh database):
  1. print the machine context;
  2. drop/create the database, migrate, create tenant `bench` and a submit key;
  3. for each target in turn (never both at once): start the server as a subprocess, wait
     until it is ready, drive it with wrk over loopback (warm-up run, then the measured run),
     stop it, and check that the rows in the database equal the 202s received;
  4. optionally (--bulk) time `civicpulse import` of a 1M-row CSV against a psql \\copy;
  5. write bench/results/ingest.{md,json} (and ingest.png with matplotlib).

The load generator is wrk with bench/ingest/report_load.lua: each wrk run sends for its
window, then stops sending and lets every request in flight finish, so no answered-or-not
ambiguity is left at the end and the rows check is exact.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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
    cpu_sample,
    cpu_usage,
    db_url,
    git_state,
    machine_context,
    postmaster_pid,
    print_context,
    psql,
    reset_database,
    shell,
    wait_until_quiet,
)

LUA = ROOT / "bench" / "ingest" / "report_load.lua"
TENANT = "bench"
TARGETS = ("civicpulse", "baseline")


# -- servers ---------------------------------------------------------------------------------


def server_command(target: str, port: int, url: str) -> tuple[list[str], dict[str, str]]:
    if target == "civicpulse":
        return (
            [
                str(VENV_BIN / "civicpulse"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-demo",
            ],
            # The load comes from one key: the per-key rate limit would be what is measured.
            {"CIVICPULSE_DATABASE_URL": url, "CIVICPULSE_RATE_LIMIT_KEY_PER_SECOND": "0"},
        )
    orm_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    return (
        [
            str(VENV_BIN / "python"),
            "-m",
            "uvicorn",
            "bench.baselines.orm_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        {"BASELINE_DATABASE_URL": orm_url},
    )


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_server(
    cmd: list[str],
    env: dict[str, str],
    log: Path,
    ready_url: str,
) -> subprocess.Popen[bytes]:
    port = int(ready_url.split(":")[2].split("/")[0])
    if port_in_use(port):
        raise RuntimeError(f"port {port} is already in use: stop what listens there first")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    for _ in range(240):  # up to 60 s
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode}; see {log}:\n"
                + log.read_text(errors="replace")[-3000:]
            )
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    stop_server(proc)
    raise RuntimeError(f"server not ready after 60 s; see {log}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful: the service flushes and drains), then SIGKILL its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # Children of the server (the process pool) that outlived it: same group, end them.
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return
    time.sleep(1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def scrape_metrics(port: int) -> dict[str, float]:
    """Writer figures from CivicPulse's /metrics (sums and counts of two histograms)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        values[name] = float(value)
    out: dict[str, float] = {}
    batches = values.get("civicpulse_writer_batch_rows_count", 0.0)
    if batches:
        out["writer_flushes"] = batches
        out["writer_mean_batch_rows"] = round(
            values.get("civicpulse_writer_batch_rows_sum", 0.0) / batches, 1
        )
        out["writer_mean_flush_ms"] = round(
            1000
            * values.get("civicpulse_writer_flush_seconds_sum", 0.0)
            / max(1.0, values.get("civicpulse_writer_flush_seconds_count", 0.0)),
            2,
        )
    for name, value in values.items():
        if name.startswith("civicpulse_stage_items_total{"):
            stage = name.split('stage="', 1)[1].split('"', 1)[0] if 'stage="' in name else "?"
            out[f"pipeline_{stage}_items"] = value
    return out


# -- load --------------------------------------------------------------------------------


def wrk_command(
    args: argparse.Namespace,
    port: int,
    key: str,
    bodies: Path,
    seconds: int,
) -> list[str]:
    return [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds + args.drain}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}",
        "--",
        str(bodies),
        f"/v1/tenants/{TENANT}/reports",
        key,
        str(seconds),
    ]


def parse_wrk(stdout: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            return json.loads(line.removeprefix("WRK_RESULT "))
    raise RuntimeError(f"no WRK_RESULT line in wrk output:\n{stdout[-2000:]}")


def run_wrk(
    cmd: list[str],
    measure_s: float | None,
    watch: Watch,
) -> tuple[dict[str, Any], dict[str, float] | None]:
    """Run wrk; with measure_s, also sample CPU use over the first measure_s seconds."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    cpu = None
    if measure_s:
        watch = Watch(watch.server_pgid, proc.pid, watch.postmaster, watch.db)
        a = cpu_sample(time.monotonic(), watch)
        time.sleep(measure_s)
        b = cpu_sample(time.monotonic(), watch)
        cpu = cpu_usage(a, b)
    stdout, stderr = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {stderr}\n{stdout}")
    result = parse_wrk(stdout)
    # wrk asks delay() before every request, the first on each connection included, so the
    # requests sent are the delay() calls that returned 0 (see the Lua script).
    result["unanswered"] = result["delays"] - result["completed"]
    return result, cpu


def count_rows(url: str, target: str) -> int:
    table = "reports" if target == "civicpulse" else "baseline_reports"
    exists = psql(url, f"SELECT to_regclass('{table}') IS NOT NULL")
    return int(psql(url, f"SELECT count(*) FROM {table}")) if exists == "t" else 0


def pipeline_backlog(url: str) -> int:
    """Reports not yet through classification and grouping."""
    return int(psql(url, "SELECT count(*) FROM reports WHERE state IN ('received', 'classified')"))


def wait_for_pipeline(url: str, max_wait: float) -> dict[str, float]:
    """Wait until the pipeline has processed everything; how many were left and how long
    it took (the backlog a burst leaves behind, and how fast it is caught up)."""
    started = time.monotonic()
    left = pipeline_backlog(url)
    remaining = left
    while remaining and time.monotonic() - started < max_wait:
        time.sleep(0.5)
        remaining = pipeline_backlog(url)
    seconds = time.monotonic() - started
    return {
        "backlog": left,
        "seconds": round(seconds, 1),
        "unfinished": remaining,
        "reports_per_s": round(left / seconds, 1) if seconds > 0 and left else 0.0,
    }


def bench_target(
    args: argparse.Namespace,
    target: str,
    url: str,
    key: str,
    bodies: Path,
) -> dict[str, Any]:
    port = args.port if target == "civicpulse" else args.baseline_port
    cmd, env = server_command(target, port, url)
    if target == "civicpulse":
        env.update(dict(kv.split("=", 1) for kv in args.civicpulse_env))
    ready = f"http://127.0.0.1:{port}/" + ("readyz" if target == "civicpulse" else "healthz")
    print(f"== {target}: {shell(cmd, env)}", flush=True)
    rows_before = count_rows(url, target)
    psql(url, "CHECKPOINT")
    watch = Watch(None, None, postmaster_pid(url), args.db)
    background = wait_until_quiet(watch, args.quiet_threshold, args.max_wait)
    proc = start_server(cmd, env, TMP / f"{target}.log", ready)
    watch = Watch(proc.pid, None, watch.postmaster, args.db)
    try:
        warm_cmd = wrk_command(args, port, key, bodies, args.warmup)
        meas_cmd = wrk_command(args, port, key, bodies, args.duration)
        warm, _ = run_wrk(warm_cmd, None, watch)
        print(
            f"  warm-up {args.warmup}s: {warm['s202']} x 202, {warm['s503']} x 503, "
            f"{warm['sother']} other",
            flush=True,
        )
        if target == "civicpulse" and not args.no_pipeline_wait:
            # Measure a steady burst, not the warm-up's backlog being caught up.
            caught = wait_for_pipeline(url, args.max_wait)
            print(
                f"  pipeline caught up with the warm-up's {caught['backlog']} reports in "
                f"{caught['seconds']}s",
                flush=True,
            )
        attempts: list[dict[str, Any]] = []
        for attempt in range(1 + args.retries):
            if attempt:
                # Let the server finish its own background work (the pipeline's backlog) and
                # the other processes calm down before measuring again.
                background = wait_until_quiet(
                    watch, args.quiet_threshold, args.max_wait, everything=True
                )
            meas, cpu = run_wrk(meas_cmd, args.duration, watch)
            assert cpu is not None
            attempts.append({"wrk": meas, "cpu": cpu, "background_before_pct": background})
            if cpu["other_pct"] <= args.quiet_threshold:
                break
            print(
                f"  attempt {attempt + 1}: {meas['win202'] / meas['window_s']:,.0f} req/s but "
                f"other processes used {cpu['other_pct']}% of a core meanwhile; "
                + ("measuring again" if attempt < args.retries else "no retries left"),
                flush=True,
            )
        catch_up: dict[str, float] = {}
        if target == "civicpulse" and not args.no_pipeline_wait:
            catch_up = wait_for_pipeline(url, args.max_wait)
            print(
                f"  after the load: {catch_up['backlog']} reports waited for the pipeline; "
                f"done in {catch_up['seconds']}s ({catch_up['reports_per_s']} reports/s), "
                f"{catch_up['unfinished']} unfinished",
                flush=True,
            )
        server_metrics = scrape_metrics(port) if target == "civicpulse" else {}
    finally:
        stop_server(proc)
    best = min(attempts, key=lambda a: a["cpu"]["other_pct"])
    meas, cpu, background = best["wrk"], best["cpu"], best["background_before_pct"]
    rows_landed = count_rows(url, target) - rows_before
    accepted_202 = warm["s202"] + sum(a["wrk"]["s202"] for a in attempts)
    window = meas["window_s"]
    res = {
        "server_command": shell(cmd, env),
        "wrk_warmup_command": shell(warm_cmd).replace(key, "$KEY"),
        "wrk_command": shell(meas_cmd).replace(key, "$KEY"),
        "accepted_rps": round(meas["win202"] / window, 1),
        "answers_rps": round(meas["win_answers"] / window, 1),
        "p50_ms": round(meas["lat_p50_us"] / 1000, 2),
        "p90_ms": round(meas["lat_p90_us"] / 1000, 2),
        "p99_ms": round(meas["lat_p99_us"] / 1000, 2),
        "p99_9_ms": round(meas["lat_p99.9_us"] / 1000, 2),
        "max_ms": round(meas["lat_max_us"] / 1000, 2),
        "mean_ms": round(meas["lat_mean_us"] / 1000, 2),
        "status_202": meas["s202"],
        "status_503": meas["s503"],
        "status_other": meas["sother"],
        "socket_errors": {k: meas[f"err_{k}"] for k in ("connect", "read", "write", "timeout")},
        "unanswered_at_exit": warm["unanswered"] + sum(a["wrk"]["unanswered"] for a in attempts),
        "warmup_202": warm["s202"],
        "warmup_503": warm["s503"],
        "warmup_other": warm["sother"],
        "measured_runs": len(attempts),
        "chosen_run": attempts.index(best) + 1,
        "all_runs": [
            {
                "accepted_rps": round(a["wrk"]["win202"] / a["wrk"]["window_s"], 1),
                "p50_ms": round(a["wrk"]["lat_p50_us"] / 1000, 2),
                "p99_ms": round(a["wrk"]["lat_p99_us"] / 1000, 2),
                "status_202": a["wrk"]["s202"],
                "cpu": a["cpu"],
            }
            for a in attempts
        ],
        "rows_landed": rows_landed,
        "rows_expected": accepted_202,  # warm-up plus every measured run
        "rows_check": "OK" if rows_landed == accepted_202 else "MISMATCH",
        "cpu": cpu,
        "background_before_pct": background,
        "server_metrics": server_metrics,
        "pipeline_after_load": catch_up,
        "wrk_raw": meas,
    }
    print(
        f"  measured {args.duration}s: {res['accepted_rps']:,} accepted req/s, "
        f"p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms; 202 {meas['s202']}, "
        f"503 {meas['s503']}, other {meas['sother']}",
        flush=True,
    )
    print(
        f"  rows landed {rows_landed} vs 202s (warm-up + measured) {accepted_202}: "
        f"{res['rows_check']}",
        flush=True,
    )
    if cpu:
        print("  cpu (% of one core): " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
    if server_metrics:
        print("  server: " + ", ".join(f"{k} {v:g}" for k, v in server_metrics.items()))
    print(flush=True)
    return res


# -- setup -------------------------------------------------------------------------------


def setup_database(args: argparse.Namespace, url: str) -> tuple[str, list[str]]:
    """Fresh database, schema, tenant and a submit key; returns the key and the commands."""
    reset_database(args.pg_url, args.db)
    env = {**os.environ, "CIVICPULSE_DATABASE_URL": url}
    cli = str(VENV_BIN / "civicpulse")
    cmds = [
        [cli, "migrate"],
        [cli, "tenant", "create", TENANT, "--name", "Bench"],
        [cli, "key", "create", "--tenant", TENANT, "--scope", "submit"],
    ]
    out = ""
    for cmd in cmds:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{shell(cmd)} failed: {done.stderr}")
        out = done.stdout
    key = out.strip().splitlines()[0]
    shown = [
        f'psql {args.pg_url}/postgres -c \'DROP DATABASE IF EXISTS "{args.db}" WITH '
        f"(FORCE)' -c 'CREATE DATABASE \"{args.db}\"'"
    ]
    shown += [shell(c, {"CIVICPULSE_DATABASE_URL": url}) for c in cmds]
    return key, shown


# -- report ------------------------------------------------------------------------------


def write_markdown(path: Path, res: dict[str, Any]) -> None:
    ctx, http, bulk = res["context"], res.get("http"), res.get("bulk")
    lines = [
        "# Ingest benchmark",
        "",
        f"Run {ctx['date_utc']} by `{res['invocation']}`.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    for k, v in ctx.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a} {b}" for a, b in v.items())
        lines.append(f"| {k} | {v} |")
    lines.append("")
    if http:
        cfg = http["config"]
        lines += [
            "## HTTP intake: one report per POST",
            "",
            f"{cfg['connections']} connections, wrk with {cfg['threads']} thread(s), "
            f"{cfg['warmup_s']} s warm-up run then a {cfg['duration_s']} s measured run, "
            f"loopback; bodies: {cfg['bodies']['count']} distinct LA311-derived reports, "
            f"mean {cfg['bodies']['mean_bytes']:.0f} bytes. Load generator, server and "
            "PostgreSQL share the machine's cores.",
            "",
            "| target | accepted req/s | p50 ms | p90 ms | p99 ms | max ms | 202 | 503 "
            "| other | rows landed / 202s (incl. warm-up) | check | CPU % server / "
            "postgres / wrk / background |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
        ]
        for name, t in http["targets"].items():
            cpu = t["cpu"] or {}
            lines.append(
                f"| {name} | {t['accepted_rps']:,.0f} | {t['p50_ms']} | {t['p90_ms']} | "
                f"{t['p99_ms']} | {t['max_ms']} | {t['status_202']:,} | {t['status_503']:,} | "
                f"{t['status_other']:,} | {t['rows_landed']:,} / {t['rows_expected']:,} | "
                f"{t['rows_check']} | {cpu.get('server_pct', '-')} / "
                f"{cpu.get('postgres_pct', '-')} / {cpu.get('wrk_pct', '-')} / "
                f"{cpu.get('other_pct', '-')} |"
            )
        lines.append("")
        for name, t in http["targets"].items():
            if t["measured_runs"] > 1:
                runs = "; ".join(
                    f"{r['accepted_rps']:,.0f} req/s with {r['cpu']['other_pct']}% background"
                    for r in t["all_runs"]
                )
                lines += [
                    "",
                    f"{name} was measured {t['measured_runs']} times because other processes "
                    f"disturbed a run ({runs}); the table shows run {t['chosen_run']}.",
                ]
        if "ratio_accepted_rps" in http:
            lines += [
                f"**Ratio CivicPulse / baseline (accepted req/s): "
                f"{http['ratio_accepted_rps']:.2f}x**; p99 ratio "
                f"{http['ratio_p99']:.2f}x.",
                "",
            ]
        caught = http["targets"].get("civicpulse", {}).get("pipeline_after_load")
        if caught:
            lines += [
                f"Pipeline: during the burst classification and grouping take the share of the "
                f"process that intake's latency leaves them (civicpulse/pipeline/pressure.py); "
                f"when the load stopped {caught['backlog']:,} reports were waiting "
                f"and were classified and grouped in {caught['seconds']} s "
                f"({caught['reports_per_s']:,} reports/s; unfinished: {caught['unfinished']}).",
                "",
            ]
        cp = http["targets"].get("civicpulse", {}).get("server_metrics")
        if cp:
            lines += [
                "CivicPulse writer over the whole run (from /metrics): "
                + ", ".join(f"{k} {v:g}" for k, v in cp.items())
                + ".",
                "",
            ]
        lines += [
            "CPU % is of one core (the machine has "
            f"{ctx['nproc']}), sampled from /proc over the measured window; server "
            "includes its child processes, postgres is the cluster's background "
            "processes plus backends of the benchmark database, background is "
            "everything else that ran (other users of the machine).",
            "",
        ]
    if bulk:
        c, b = bulk["civicpulse"], bulk["copy_baseline"]
        lines += [
            "## Bulk import",
            "",
            f"{bulk['rows']:,} rows, {bulk['file_mb']} MB CSV (`{bulk['file']}`, "
            "columns source_id,text,lat,lon,submitted_at,category,address; places, types "
            "and times from the LA311 sample).",
            "",
            "| path | wall s | rows/s | rows landed | check |",
            "|---|---:|---:|---:|---|",
            f"| `civicpulse import --format csv` | {c['wall_s']} | {c['rows_per_s']:,} | "
            f"{c['rows_landed']:,} | {c['check']} |",
            f"| psql `\\copy` into an unindexed 7-column table | {b['wall_s']} | "
            f"{b['rows_per_s']:,} | {b['rows_landed']:,} | {b['check']} |",
            "",
            f"**Ratio civicpulse import / \\copy: {bulk['ratio']:.3f}** "
            f"(CLI's own summary: `{c['cli_summary']}`).",
            "",
        ]
    lines += [
        "## Command lines",
        "",
        "```sh",
        "# benchmark driver",
        res["invocation"],
        "# setup",
        *res.get("setup_commands", []),
    ]
    if http:
        for name, t in http["targets"].items():
            lines += [
                f"# {name}: server, warm-up load, measured load",
                t["server_command"],
                t["wrk_warmup_command"],
                t["wrk_command"],
            ]
    if bulk:
        lines += [
            "# bulk import, then the \\copy baseline",
            bulk["civicpulse"]["command"],
            bulk["copy_baseline"]["command"],
        ]
    lines += ["```", "", "`$KEY` is the submit key printed by `civicpulse key create`.", ""]
    if res.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in res["notes"]], ""]
    path.write_text("\n".join(lines))


def write_chart(path: Path, res: dict[str, Any]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = []
    if res.get("http"):
        t = res["http"]["targets"]
        panels.append(
            (
                "HTTP intake: accepted req/s",
                list(t),
                [v["accepted_rps"] for v in t.values()],
                [f"p50 {v['p50_ms']} ms\np99 {v['p99_ms']} ms" for v in t.values()],
            )
        )
    if res.get("bulk"):
        b = res["bulk"]
        panels.append(
            (
                f"Bulk import of {b['rows']:,} rows: rows/s",
                ["civicpulse import", "psql \\copy"],
                [b["civicpulse"]["rows_per_s"], b["copy_baseline"]["rows_per_s"]],
                [f"{b['civicpulse']['wall_s']} s", f"{b['copy_baseline']['wall_s']} s"],
            )
        )
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (title, names, values, notes) in zip(axes[0], panels, strict=True):
        bars = ax.bar(names, values, color=["#2b6cb0", "#a0aec0"][: len(names)])
        for bar, note in zip(bars, notes, strict=True):
            ax.annotate(
                f"{bar.get_height():,.0f}\n{note}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, max(values) * 1.3)
    fig.suptitle(
        f"CivicPulse ingest, {res['context']['nproc']} cores, {res['context']['date_utc']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ingest.run",
        description="Ingest benchmark: CivicPulse vs a FastAPI + SQLAlchemy ORM baseline "
        "(and, with --bulk, `civicpulse import` vs psql \\copy). Drops and "
        "recreates the database given by --db. Writes bench/results/ingest.md, "
        ".json and .png.",
    )
    p.add_argument("--connections", "-c", type=int, default=64, help="open connections (64)")
    p.add_argument("--duration", "-d", type=int, default=20, help="measured seconds (20)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up seconds, not measured (3)")
    p.add_argument(
        "--drain",
        type=int,
        default=3,
        help="seconds wrk keeps running after sending stops so that requests in "
        "flight are answered (3)",
    )
    p.add_argument("--threads", "-t", type=int, default=1, help="wrk threads (1)")
    p.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="comma-separated subset of civicpulse,baseline (both)",
    )
    p.add_argument("--db", default="bench_ingest", help="database to recreate (bench_ingest)")
    p.add_argument(
        "--pg-url",
        default=PG_ADMIN_URL,
        help=f"PostgreSQL server, superuser, no database ({PG_ADMIN_URL})",
    )
    p.add_argument("--port", type=int, default=8391, help="CivicPulse port (8391)")
    p.add_argument("--baseline-port", type=int, default=8392, help="baseline port (8392)")
    p.add_argument(
        "--civicpulse-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the CivicPulse server, e.g. "
        "CIVICPULSE_PIPELINE_ENABLED=false (repeatable)",
    )
    p.add_argument(
        "--quiet-threshold",
        type=float,
        default=25.0,
        help="before each part, wait until other processes use less than this "
        "percent of one core (25)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=3,
        help="measure again (up to this many times) when other processes used more than "
        "--quiet-threshold during the measured run; the least disturbed run is reported (3)",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        default=600.0,
        help="longest wait for a quiet machine, seconds (600)",
    )
    p.add_argument(
        "--bulk", action="store_true", help="also run the bulk-import part after the HTTP part"
    )
    p.add_argument("--bulk-only", action="store_true", help="run only the bulk-import part")
    p.add_argument("--bulk-rows", type=int, default=1_000_000, help="CSV rows (1,000,000)")
    p.add_argument(
        "--out",
        default=str(RESULTS / "ingest"),
        help="results path without extension (bench/results/ingest)",
    )
    p.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    p.add_argument(
        "--no-pipeline-wait",
        action="store_true",
        help="measure right after the warm-up, while the pipeline still works through the "
        "warm-up's reports, and do not time the catch-up after the load",
    )
    args = p.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if any(t not in TARGETS for t in targets) or not targets:
        p.error(f"--targets: choose from {', '.join(TARGETS)}")
    args.target_list = targets
    if args.connections < args.threads:
        p.error("--connections must be at least --threads")
    for kv in args.civicpulse_env:
        if "=" not in kv:
            p.error(f"--civicpulse-env {kv!r}: expected NAME=VALUE")
    return args


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the server subprocess is stopped.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    invocation = ".venv/bin/python -m bench.ingest.run " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    ctx = machine_context(args.pg_url)
    print_context(ctx)
    url = db_url(args.db, args.pg_url)
    TMP.mkdir(parents=True, exist_ok=True)

    print(f"== setup: fresh database {args.db}", flush=True)
    key, setup_cmds = setup_database(args, url)
    results: dict[str, Any] = {
        "context": ctx,
        "invocation": invocation.strip(),
        "setup_commands": setup_cmds,
        "notes": [],
    }

    if not args.bulk_only:
        bodies = TMP / "bodies.ndjson"
        body_stats = data.write_bodies(bodies)
        http: dict[str, Any] = {
            "config": {
                "connections": args.connections,
                "threads": args.threads,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "drain_s": args.drain,
                "bodies": body_stats,
                "civicpulse_env": args.civicpulse_env,
            },
            "targets": {},
        }
        for target in args.target_list:
            http["targets"][target] = bench_target(args, target, url, key, bodies)
        t = http["targets"]
        if "civicpulse" in t and "baseline" in t and t["baseline"]["accepted_rps"]:
            http["ratio_accepted_rps"] = round(
                t["civicpulse"]["accepted_rps"] / t["baseline"]["accepted_rps"], 3
            )
            http["ratio_p99"] = round(t["civicpulse"]["p99_ms"] / t["baseline"]["p99_ms"], 3)
            print(
                f"== ratio CivicPulse/baseline: accepted req/s "
                f"{http['ratio_accepted_rps']:.2f}x, p99 {http['ratio_p99']:.2f}x\n",
                flush=True,
            )
        for name, tr in t.items():
            if tr["unanswered_at_exit"]:
                results["notes"].append(
                    f"{name}: {tr['unanswered_at_exit']} requests were "
                    "still unanswered when wrk exited; raise --drain."
                )
        results["http"] = http

    if args.bulk or args.bulk_only:
        from bench.ingest.bulk_import import run_bulk

        watch = Watch(None, None, postmaster_pid(url), args.db)
        results["bulk"] = run_bulk(
            url,
            args.bulk_rows,
            TENANT,
            quiet=lambda: wait_until_quiet(watch, args.quiet_threshold, args.max_wait),
        )

    end_state = git_state()
    if end_state["service_files_sha1"] != ctx["git"]["service_files_sha1"]:
        results["notes"].append(
            f"The service's code changed while this ran (start: {ctx['git']}; end: "
            f"{end_state}); the figures may mix two versions."
        )
        print("WARNING: " + results["notes"][-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(out.with_suffix(".md"), results)
    written = [out.with_suffix(".json"), out.with_suffix(".md")]
    if not args.no_chart and write_chart(out.with_suffix(".png"), results):
        written.append(out.with_suffix(".png"))
    print(
        "wrote "
        + ", ".join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in written)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
