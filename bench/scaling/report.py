"""The run's medians and its Markdown page, drawn from the results dict alone."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.scaling.cpu import GROUPS

ROLES = (*GROUPS, "other", "machine")
DISTURBED = 0.25  # cores of "other" in a window above which its figures are noted
SATURATED = 0.9  # share of the machine's cores above which a window was CPU-bound


def _median(values: Sequence[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return round(statistics.median(xs), 6) if xs else None


def _get(d: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _medians(items: list[dict[str, Any]], paths: Sequence[str]) -> dict[str, float | None]:
    return {p: _median([_get(i, p) for i in items]) for p in paths}


def _cpu(items: list[dict[str, Any]]) -> dict[str, float | None]:
    return {r: _median([i["cpu"].get(r) for i in items]) for r in ROLES}


INTAKE = ("acked_per_s", "requests_per_s", "p50_s", "p90_s", "p99_s", "max_s", "non_2xx")
DELIVERY = (
    "delivery.p50_s",
    "delivery.p95_s",
    "delivery.p99_s",
    "delivery.max_s",
    "delivery.to_last_stream_p50_s",
    "delivery.to_last_stream_max_s",
    "intake.acked_per_s",
    "intake.p50_s",
    "intake.p99_s",
    "comment_post.p50_s",
    "comment_post.p99_s",
    "open.connected",
)


def per_process(cpu: dict[str, float]) -> list[float]:
    """Each service process's cores (`app:<pid>` in a window's CPU), in pid order."""
    return [v for k, v in cpu.items() if k.startswith("app:")]


def _intake(items: list[dict[str, Any]]) -> dict[str, Any]:
    acked = [i["acked_per_s"] for i in items]
    return {
        "per_process_cores": [per_process(i["cpu"]) for i in items],
        **_medians(items, INTAKE),
        "acked_per_s_min": min(acked),
        "acked_per_s_max": max(acked),
        "non_2xx_total": sum(i["non_2xx"] for i in items),
        "cpu": _cpu(items),
        "repeats": len(items),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def summary(results: dict[str, Any], cells: Sequence[tuple[int, bool]]) -> dict[str, Any]:
    """Per cell (processes, direct), the median over repeats of every figure; ratios to N=1
    through HAProxy."""
    out: list[dict[str, Any]] = []
    for processes, direct in cells:
        runs = [r for r in results["runs"] if r["processes"] == processes and r["direct"] == direct]
        if not runs:
            continue
        row: dict[str, Any] = {"processes": processes, "direct": direct}
        for phase in ("single", "batch"):
            items = [r[phase] for r in runs if phase in r]
            if items:
                row[phase] = _intake(items)
        counts = sorted({p["streams"] for r in runs for p in r.get("streams", [])})
        row["streams"] = []
        for n in counts:
            items = [p for r in runs for p in r.get("streams", []) if p["streams"] == n]
            row["streams"].append(
                {
                    "streams": n,
                    **_medians(items, DELIVERY),
                    "missed_total": sum(_get(i, "delivery.missed") or 0 for i in items),
                    "deliveries_total": sum(_get(i, "delivery.deliveries") or 0 for i in items),
                    "ended_early_total": sum(_get(i, "delivery.ended_early") or 0 for i in items),
                    "intake_non_2xx_total": sum(i["intake"]["non_2xx"] for i in items),
                    "streams_per_process": [i.get("streams_per_process") for i in items],
                    "cpu": _cpu(items),
                    "repeats": len(items),
                }
            )
        out.append(row)
    base = next((c for c in out if c["processes"] == 1 and not c["direct"]), None)
    alone = next((c for c in out if c["direct"]), None)
    for c in out:
        for phase in ("single", "batch"):
            if phase in c and base is not None and phase in base:
                c[phase]["ratio_to_n1"] = _ratio(
                    c[phase]["acked_per_s"], base[phase]["acked_per_s"]
                )
    overhead: dict[str, Any] = {}
    if base is not None and alone is not None:
        for phase in ("single", "batch"):
            if phase in base and phase in alone:
                overhead[phase] = {
                    "acked_ratio_haproxy_to_direct": _ratio(
                        base[phase]["acked_per_s"], alone[phase]["acked_per_s"]
                    ),
                    "p99_ratio_haproxy_to_direct": _ratio(
                        base[phase]["p99_s"], alone[phase]["p99_s"]
                    ),
                    "haproxy_cores": base[phase]["cpu"]["haproxy"],
                }
    return {"cells": out, "haproxy_overhead_at_n1": overhead, "notes": notes(results)}


def notes(results: dict[str, Any]) -> list[str]:
    """Windows disturbed by other processes, failed requests, missed frames."""
    out = []
    for r in results["runs"]:
        where = f"repeat {r['repeat']}, N={r['processes']}{' direct' if r['direct'] else ''}"
        windows = [(p, r[p]) for p in ("single", "batch") if p in r]
        windows += [(f"{s['streams']} streams", s) for s in r.get("streams", [])]
        for name, w in windows:
            other = w["cpu"].get("other", 0.0)
            if other > DISTURBED:
                out.append(f"{where}, {name}: other processes used {other:.2f} cores.")
            fig = w.get("intake", w)
            if fig["non_2xx"]:
                out.append(
                    f"{where}, {name}: {fig['non_2xx']} non-2xx answers {fig['status']} "
                    f"{fig['errors'] or ''}".rstrip()
                )
            d = w.get("delivery")
            if d and (d["missed"] or d["ended_early"]):
                out.append(
                    f"{where}, {name}: {d['missed']} deliveries missed, "
                    f"{d['ended_early']} streams ended by the server"
                )
            opened = w.get("open")
            if opened and opened["failed"]:
                out.append(f"{where}, {name}: {opened['failed']} streams failed to open")
    return out


# -- text ------------------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{1000 * v:,.1f}"


def _n(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _c(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _cores_cells(cpu: dict[str, float | None]) -> str:
    return " | ".join(_c(cpu.get(r)) for r in ROLES)


# How the streams each process held were counted ('per process').
PER_PROCESS = {
    "gauge": "'per process' is each process's `civicpulse_streams_open` gauge once every "
    "stream had the last comment.",
    # Runs before the gauge was used.
    "open_files": "'per process' is how many files each process gained while the streams "
    "opened. It undercounts when the previous phase's streams, closed by their clients, were "
    "still open in the service (HAProxy keeps the server side of an aborted response until "
    "the service next writes to it, at worst the 15 s keep-alive), and the 'wake-up cycle' "
    "column with it; every stream did connect (the 'streams' column).",
}
CPU_HEAD = " | ".join(ROLES)
CPU_RULE = "|".join("---:" for _ in ROLES)


def _label(c: dict[str, Any]) -> str:
    return "1, no HAProxy" if c["direct"] else str(c["processes"])


def summary_lines(results: dict[str, Any]) -> list[str]:
    s = results["summary"]
    lines = ["== summary (medians over repeats)"]
    for c in s["cells"]:
        for phase in ("single", "batch"):
            if phase in c:
                f = c[phase]
                lines.append(
                    f"  N={_label(c):<14} {phase:<6} {_n(f['acked_per_s']):>7}/s "
                    f"({_x(f.get('ratio_to_n1'))} of N=1)  p50 {_ms(f['p50_s'])}  "
                    f"p99 {_ms(f['p99_s'])} ms  non-2xx {f['non_2xx_total']}  "
                    f"machine {_c(f['cpu']['machine'])} cores"
                )
        for st in c["streams"]:
            lines.append(
                f"  N={_label(c):<14} {st['streams']:>5,} streams: delivery p50 "
                f"{_ms(st['delivery.p50_s'])} p95 {_ms(st['delivery.p95_s'])} p99 "
                f"{_ms(st['delivery.p99_s'])} ms; intake p99 {_ms(st['intake.p99_s'])} ms"
            )
    for line in s["notes"]:
        lines.append(f"  note: {line}")
    return lines


def _method(results: dict[str, Any]) -> str:
    cfg = results["config"]
    env = ", ".join(f"`{k}={v}`" for k, v in cfg["service_env"].items())
    return (
        f"Each cell is one N: a fresh database `scaling_bench_<N>`, `ops/cluster.py "
        f"--processes N` on it (N `civicpulse serve` processes behind Debian's HAProxy with "
        f"`ops/haproxy/haproxy.cfg`, `balance leastconn`), a tenant with a key of each "
        f"scope (`civicpulse.db.tenants`), torn down and dropped at the end. The cells run "
        f"in turn, {cfg['repeat']} time(s) round (so drift and other users' load fall on "
        f"every N alike), and the tables show medians over the repeats. Service "
        f"environment: {env}. One pool worker per process: the default is one per CPU in "
        f"every process, which at N=4 would be 8 classifier workers on 2 cores; one keeps "
        f"the pipeline's share per process the same at every N (as tests/e2e/"
        f"test_cluster.py does). Before each cell the benchmark waits (up to "
        f"{cfg['max_wait']:g} s) for the machine to use less than {cfg['quiet_threshold']} "
        f"cores.\n\n"
        f"In each cell, first one report is posted and waited for until grouped (the issue "
        f"the comments go to; it also warms the pipeline). Then, HAProxy cells only, for "
        f"each stream count S: S staff streams (`GET /v1/tenants/scaling/stream`, staff key) "
        f"are opened through HAProxy at {cfg['open_rate']:g}/s from {cfg['readers']} reader "
        f"processes (bare asyncio protocols that note each comment frame's id and arrival); "
        f"{PER_PROCESS[cfg.get('per_process_source', 'open_files')]} "
        f"After {cfg['settle']:g} s idle, reports are posted paced at "
        f"{cfg['stream_rate']:g}/s over {cfg['stream_connections']} connections (latency "
        f"from the moment each was due) while the driver makes {cfg['comments']} comments "
        f"on the issue through HAProxy, one every {1 / cfg['comment_rate']:g} s "
        f"(`POST .../issues/{{id}}/comments` with the version read; a 412 re-reads it and "
        f"retries). Delivery is, per comment and per stream, from the start of the "
        f"comment's request to the arrival of its frame (matched by the event id the "
        f"database gave the comment); p50/p95/p99 are over every delivery, 'to last "
        f"stream' is per comment the delay to the last stream to get it. A stream that "
        f"never got a comment counts as missed.\n\n"
        f"Then single-report intake: a load process of its own (bare HTTP/1.1 keep-alive "
        f"connections, pre-built LA311-derived bodies of about 400 bytes, a unique "
        f"`Idempotency-Key` each) keeps {cfg['connections']} connections busy through "
        f"HAProxy (the 'no HAProxy' cell: straight to the one process) for "
        f"{cfg['warmup']:g} s unmeasured then {cfg['seconds']:g} s measured; answers in the "
        f"window count; latency is send to answer. Batch intake is the same with "
        f"{cfg['batch_size']} reports per `POST .../reports/batch` over "
        f"{cfg['batch_connections']} connections ({cfg['batch_warmup']:g} s + "
        f"{cfg['batch_seconds']:g} s); acked/s counts reports. The pipeline stays on "
        f"(classification and grouping run on the same cores, as deployed), so the batch "
        f"window also carries the backlog the single-report window left.\n\n"
        f"CPU in cores (CPU seconds / wall seconds over the measured window, from "
        f"/proc/<pid>/stat): service = the N processes, workers = their process pools, "
        f"haproxy, postgres = every postgres process except backends of other databases, "
        f"loadgen = the intake load process, readers = the stream reader processes, driver "
        f"= this benchmark (it makes the comments), other = everything else on the machine "
        f"(another user's tests: figures with other above {DISTURBED} are noted), machine = "
        f"the whole machine (2.00 = both cores busy)."
    )


def write_markdown(path: Path, results: dict[str, Any]) -> None:
    s = results["summary"]
    cells = s["cells"]
    cfg = results["config"]
    lines = [
        "# Scaling: intake and live-stream delivery at 1, 2 and 4 processes behind HAProxy",
        "",
        f"Run {results['context']['date_utc']} by `{results['invocation']}` "
        f"({results['wall_s']:.0f} s in all).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    for key, value in results["context"].items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        lines.append(f"| {key} | {value} |")
    lines += ["", "## Method", "", _method(results), ""]

    def intake_table(phase: str, title: str) -> None:
        rows = [c for c in cells if phase in c]
        if not rows:
            return
        lines.extend(
            [
                f"## {title}",
                "",
                "| processes | acked reports/s (min-max) | vs N=1 | p50 ms | p90 ms | p99 ms "
                f"| non-2xx (all repeats) | {CPU_HEAD} | service cores per process (last "
                "repeat) |",
                f"|---|---:|---:|---:|---:|---:|---:|{CPU_RULE}|---|",
            ]
        )
        for c in rows:
            f = c[phase]
            lines.append(
                f"| {_label(c)} | {_n(f['acked_per_s'])} ({_n(f['acked_per_s_min'])}-"
                f"{_n(f['acked_per_s_max'])}) | {_x(f.get('ratio_to_n1'))} | "
                f"{_ms(f['p50_s'])} | {_ms(f['p90_s'])} | {_ms(f['p99_s'])} | "
                f"{f['non_2xx_total']} | {_cores_cells(f['cpu'])} | "
                f"{' / '.join(f'{v:.2f}' for v in f['per_process_cores'][-1])} |"
            )
        over = s["haproxy_overhead_at_n1"].get(phase)
        if over:
            lines.extend(
                [
                    "",
                    f"HAProxy at N=1: {_x(over['acked_ratio_haproxy_to_direct'])} the acked/s "
                    f"of the same process without it, p99 {_x(over['p99_ratio_haproxy_to_direct'])}"
                    f"; HAProxy itself used {_c(over['haproxy_cores'])} cores.",
                ]
            )
        lines.append("")

    intake_table("single", "Intake: one report per POST")
    intake_table("batch", f"Intake: {cfg['batch_size']} reports per batch POST")

    stream_rows = [(c, st) for c in cells for st in c["streams"]]
    wakeups = cfg["stream_max_wakeups"]
    if stream_rows:
        lines += [
            "## Live-stream delivery",
            "",
            "Delivery: from a comment's request start to its frame on each stream; the "
            "percentiles are over every delivery of a repeat, and the table shows their "
            "median over repeats. Intake is the paced load's latency from the moment due. "
            f"A process wakes at most {wakeups:,.0f} streams a second "
            "(`CIVICPULSE_STREAM_MAX_WAKEUPS`, civicpulse/live.py), each with everything new "
            "in one write, so with s streams on a process a frame can wait up to s / "
            f"{wakeups:,.0f} s for its stream's turn: the 'wake-up cycle' column, from the "
            "streams each process held.",
            "",
            "| processes | streams (connected) | per process (last repeat) | wake-up cycle ms "
            "| delivery p50 / p95 / p99 ms | max ms | to last stream p50 / max ms | "
            "deliveries / missed | comment POST p50 / p99 ms | intake acked/s | intake p50 / "
            "p99 ms |",
            "|---|---:|---|---:|---|---:|---|---|---|---:|---|",
        ]
        for c, st in stream_rows:
            spread = next((x for x in reversed(st["streams_per_process"]) if x), None)
            cycle = max(spread) / wakeups if spread else None
            lines.append(
                f"| {_label(c)} | {st['streams']:,} ({_n(st['open.connected'])}) | "
                f"{' / '.join(map(str, spread)) if spread else '-'} | {_ms(cycle)} | "
                f"{_ms(st['delivery.p50_s'])} / {_ms(st['delivery.p95_s'])} / "
                f"{_ms(st['delivery.p99_s'])} | {_ms(st['delivery.max_s'])} | "
                f"{_ms(st['delivery.to_last_stream_p50_s'])} / "
                f"{_ms(st['delivery.to_last_stream_max_s'])} | {st['deliveries_total']:,} / "
                f"{st['missed_total']} | {_ms(st['comment_post.p50_s'])} / "
                f"{_ms(st['comment_post.p99_s'])} | {_n(st['intake.acked_per_s'])} | "
                f"{_ms(st['intake.p50_s'])} / {_ms(st['intake.p99_s'])} |"
            )
        lines += [
            "",
            "CPU in cores over the streams' windows:",
            "",
            f"| processes | streams | {CPU_HEAD} |",
            f"|---|---:|{CPU_RULE}|",
        ]
        for c, st in stream_rows:
            lines.append(f"| {_label(c)} | {st['streams']:,} | {_cores_cells(st['cpu'])} |")
        lines.append("")
    lines += ["## Where the cores go", "", *_reading(cells), ""]
    lines += ["## Notes", ""]
    lines += [f"- {n}" for n in s["notes"]] or ["- none: no window disturbed, nothing failed."]
    commands = {r["cluster_command"] for r in results["runs"] if "cluster_command" in r}
    lines += [
        "",
        "## Command lines",
        "",
        "```sh",
        "# benchmark driver",
        results["invocation"],
        "# each cell's cluster (ports picked free; --run-dir a scratch directory)",
        *sorted({_generic(c) for c in commands}),
        "```",
        "",
    ]
    path.write_text("\n".join(lines))


def _generic(command: str) -> str:
    """A cluster command without its run-specific ports and directory."""
    words = command.split()
    out: list[str] = []
    skip = False
    for w in words:
        if skip:
            skip = False
            continue
        if w in ("--port", "--first-port", "--run-dir", "--haproxy"):
            skip = True
            continue
        out.append(w)
    return " ".join(out)


def _reading(cells: list[dict[str, Any]]) -> list[str]:
    """Facts for the reader: per intake window, how busy the machine was and who used it."""
    out = []

    def share(cpu: dict[str, float | None], k: str) -> float:
        return cpu.get(k) or 0.0

    ncpu = os.cpu_count() or 1
    for c in cells:
        f = c.get("single")
        if not f:
            continue
        cpu = f["cpu"]
        machine = share(cpu, "machine")
        ranked = sorted(
            ((k, share(cpu, k)) for k in GROUPS if share(cpu, k) > 0.01), key=lambda kv: -kv[1]
        )
        parts = ", ".join(f"{k} {v:.2f}" for k, v in ranked)
        bound = "CPU-bound" if machine >= SATURATED * ncpu else "not CPU-bound"
        out.append(
            f"- N={_label(c)}, single-report intake: the machine used {machine:.2f} of {ncpu} "
            f"cores "
            f"({bound}): {parts}; other {share(cpu, 'other'):.2f}."
        )
    return out


def plot(path: Path, results: dict[str, Any]) -> bool:
    """Acked reports/s and delivery percentiles by N; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cells = [c for c in results["summary"]["cells"] if not c["direct"]]
    alone = next((c for c in results["summary"]["cells"] if c["direct"]), None)
    if not cells:
        return False
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))
    ns = [c["processes"] for c in cells]
    for phase, style in (("single", "o-"), ("batch", "s-")):
        ys = [c[phase]["acked_per_s"] if phase in c else None for c in cells]
        if any(y is not None for y in ys):
            line = a1.plot(ns, ys, style, label=f"{phase}, through HAProxy")
            if alone is not None and phase in alone:
                a1.axhline(
                    alone[phase]["acked_per_s"],
                    linestyle=":",
                    color=line[0].get_color(),
                    label=f"{phase}, N=1 without HAProxy",
                )
    a1.set_xticks(ns)
    a1.set_yscale("log")
    a1.set_xlabel("service processes")
    a1.set_ylabel("acknowledged reports/s (median)")
    a1.set_title("Intake", fontsize=10)
    a1.legend(fontsize=7)
    counts = sorted({st["streams"] for c in cells for st in c["streams"] if st["streams"]})
    for i, n in enumerate(counts):
        for key, style in (("p50", "o-"), ("p99", "^--")):
            pts = [
                (c["processes"], 1000 * st[f"delivery.{key}_s"])
                for c in cells
                for st in c["streams"]
                if st["streams"] == n and st[f"delivery.{key}_s"] is not None
            ]
            a2.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                style,
                color=f"C{i}",
                label=f"{n:,} streams {key}",
            )
    a2.set_xticks(ns)
    a2.set_xlabel("service processes")
    a2.set_ylabel("comment -> frame on each stream, ms (median)")
    a2.set_title("Live-stream delivery", fontsize=10)
    a2.legend(fontsize=7)
    fig.suptitle(f"{results['context']['nproc']} cores, one PostgreSQL", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(out: Path, results: dict[str, Any]) -> list[Path]:
    """<out>.json, <out>.md and, with matplotlib, <out>.png; returns the paths written."""
    js, md, png = out.with_suffix(".json"), out.with_suffix(".md"), out.with_suffix(".png")
    js.write_text(json.dumps(results, indent=1, default=str))
    write_markdown(md, results)
    return [js, md, png] if plot(png, results) else [js, md]
