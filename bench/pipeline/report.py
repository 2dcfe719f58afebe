"""The run's summary, Markdown page and chart, all drawn from the results dict alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.ingest.common import percentile

SERVER = ("service", "workers", "postgres")
# A rate is "kept up with" when the backlog grew by less than this share of the rate (per
# second, least squares over the window's last half) and no frame was lost.
KEPT_UP_SHARE = 0.05


def _ms(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{1000 * v:,.{digits}f}"


def _rate(v: float | None) -> str:
    return "none" if v is None else f"{v:g}/s"


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def kept_up(r: dict[str, Any]) -> bool:
    slope = r["backlog_slope_per_s"]
    return slope is not None and slope < KEPT_UP_SHARE * r["rate"] and r["lost"] == 0


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """Ratios against the lowest rate, the CPU shares, and the highest rate kept up with."""
    rates = res["rates"]
    if not rates:
        return {}
    low = rates[0]
    rows = []
    for r in rates:
        server = {k: r["cpu_cores_window"].get(k, 0.0) for k in SERVER}
        server["postgres"] -= r["cpu_cores_window"].get("postgres_other_db", 0.0)
        total = sum(server.values())
        rows.append(
            {
                "rate": r["rate"],
                "achieved_ratio": r["achieved_ratio"],
                "sse_p50_vs_lowest_rate": _ratio(r["sse_p50_s"], low["sse_p50_s"]),
                "sse_p99_vs_lowest_rate": _ratio(r["sse_p99_s"], low["sse_p99_s"]),
                "sse_p99_over_p50": _ratio(r["sse_p99_s"], r["sse_p50_s"]),
                "post_p99_over_p50": _ratio(r["post_p99_s"], r["post_p50_s"]),
                "server_cores_window": round(total, 2),
                "server_cpu_share_pct": {
                    k: round(100 * v / total, 1) if total else None for k, v in server.items()
                },
                "server_cpu_ms_per_report": r["server_cpu_ms_per_report"],
                "cpu_ms_per_report_vs_lowest_rate": _ratio(
                    r["server_cpu_ms_per_report"], low["server_cpu_ms_per_report"]
                ),
                "kept_up": kept_up(r),
            }
        )
    held = [r["rate"] for r in rates if kept_up(r)]
    p50s = [r["sse_p50_s"] for r in rates if r["sse_p50_s"] is not None]
    return {
        "rows": rows,
        "highest_rate_kept_up": max(held) if held else None,
        "median_of_sse_p50_s": round(percentile(p50s, 0.5), 4) if p50s else None,
        "lost_total": sum(r["lost"] for r in rates),
        "grouped_without_frame_total": sum(r["grouped_without_frame"] for r in rates),
        "duplicate_frames_total": sum(r["duplicate_frames"] for r in rates),
        "repeated_or_out_of_order_ids_total": sum(
            r["repeated_ids"] + r["out_of_order_ids"] for r in rates
        ),
    }


def summary_lines(res: dict[str, Any]) -> list[str]:
    s = res.get("summary") or {}
    if not s:
        return []
    lines = ["== summary"]
    for row, r in zip(s["rows"], res["rates"], strict=True):
        shares = ", ".join(
            f"{k} {v}%" for k, v in row["server_cpu_share_pct"].items() if v is not None
        )
        lines.append(
            f"  {r['rate']:g}/s: achieved {100 * row['achieved_ratio']:.1f}%; POST->SSE p50 "
            f"{_ms(r['sse_p50_s'])} ms ({row['sse_p50_vs_lowest_rate']}x the lowest rate's), "
            f"p99/p50 {row['sse_p99_over_p50']}; backlog slope {r['backlog_slope_per_s']}/s; "
            f"server {row['server_cores_window']} cores ({shares}), "
            f"{row['server_cpu_ms_per_report']} ms CPU/report; "
            + ("kept up" if row["kept_up"] else "fell behind")
        )
    lines.append(
        f"  highest rate kept up with: {_rate(s['highest_rate_kept_up'])}; lost {s['lost_total']} "
        f"(grouped without a frame {s['grouped_without_frame_total']}), duplicate frames "
        f"{s['duplicate_frames_total']}, repeated/out-of-order ids "
        f"{s['repeated_or_out_of_order_ids_total']}"
    )
    return lines


def write_markdown(path: Path, res: dict[str, Any]) -> None:
    ctx, cfg, rates = res["context"], res["config"], res["rates"]
    lines = [
        "# Paced end-to-end pipeline benchmark",
        "",
        f"Run {ctx['date_utc']} by `{res['invocation']}` ({res['wall_s']} s in all).",
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
    lines += [
        "",
        "## Method",
        "",
        f"One `civicpulse serve` process ({res['service_starts']} start(s)), tenant `pipeline`, "
        f"{cfg['seconds']:g} s per rate after a {cfg['warmup_s']:g} s unmeasured warm-up. "
        "Reports are built from the LA311 sample (`"
        f"{cfg['data']}`: real coordinates, addresses and request types; text from per-type "
        "templates; no submitted_at, so each is stamped on arrival) and POSTed open-loop: "
        "report i is due at i / rate whatever the server does, over a pool of "
        f"{cfg['connections']} keep-alive connections (aiohttp). POST latency and POST->SSE "
        "latency run from the moment a report was due, so waiting for a free connection "
        "counts. The staff stream (`GET /v1/tenants/pipeline/stream`, staff key) is opened "
        "before each rate; a report's POST->SSE time is the arrival of the first "
        "`issue_created`/`report_attached` frame naming it. Lost: accepted reports without a "
        f"frame {cfg['grace_s']:g} s after the window (and the last POST answer). Before "
        "each rate the backlog is drained (at most "
        f"{cfg['drain_timeout_s']:g} s)"
        + (
            " and the database is analysed."
            if cfg["analyze_before_each_rate"]
            else "; the benchmark never analyses (--no-analyze): statistics are only what "
            "the service's own maintenance gives."
        )
        + " Service environment: "
        + (", ".join(f"`{e}`" for e in cfg["env"]) or "defaults")
        + " (plus `CIVICPULSE_RATE_LIMIT_KEY_PER_SECOND=0` unless set).",
        "",
        "## Results",
        "",
        "| rate/s | sent/s (of target) | accepted/s | POST p50 / p99 ms | POST->SSE p50 / p95 / "
        "p99 / max ms | lost (later / never) | dup. frames | repeated / out-of-order ids | "
        "backlog slope /s | backlog at end / max | drained after s | catch-up /s |",
        "|---:|---:|---:|---|---|---|---:|---|---:|---|---:|---:|",
    ]
    for r in rates:
        lines.append(
            f"| {r['rate']:g} | {r['sent_per_s']:,} ({100 * r['achieved_ratio']:.1f}%) | "
            f"{r['accepted_per_s']:,} | {_ms(r['post_p50_s'])} / {_ms(r['post_p99_s'])} | "
            f"{_ms(r['sse_p50_s'])} / {_ms(r['sse_p95_s'])} / {_ms(r['sse_p99_s'])} / "
            f"{_ms(r['sse_max_s'])} | {r['lost']} ({r['lost_arrived_later']} / "
            f"{r['never_arrived']}) | {r['duplicate_frames']} | {r['repeated_ids']} / "
            f"{r['out_of_order_ids']} | {r['backlog_slope_per_s']} | "
            f"{r['backlog_at_window_end']} / {r['backlog_max']} | {r['drain_s_after_window']} | "
            f"{r['catch_up_per_s'] or '-'} |"
        )
    lines += [
        "",
        "CPU, in cores used (CPU seconds / wall seconds) over each rate's window, from "
        "/proc/<pid>/stat: service = the server process, workers = its process pool, "
        "postgres = every `postgres` process (in brackets: the part spent by backends of "
        "other databases, other users of a shared server), loadgen = this benchmark, other = "
        "the rest of the machine. CPU per report: service + workers + postgres less other "
        "databases' backends, from the window's start until the backlog drained, per "
        "accepted report; the shares below leave other databases out too.",
        "",
        "| rate/s | service | workers | postgres | loadgen | other | machine | server CPU "
        "ms/report | statuses | stream connects |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rates:
        c = r["cpu_cores_window"]
        lines.append(
            f"| {r['rate']:g} | {c.get('service', 0):.2f} | {c.get('workers', 0):.2f} | "
            f"{c.get('postgres', 0):.2f} ({c.get('postgres_other_db', 0):.2f}) | "
            f"{c.get('loadgen', 0):.2f} | "
            f"{c.get('other', 0):.2f} | {c.get('machine', 0):.2f} | "
            f"{r['server_cpu_ms_per_report']} | "
            + ", ".join(f"{k}: {v:,}" for k, v in r["status"].items())
            + f" | {r['stream']['connects']} |"
        )
    s = res.get("summary") or {}
    if s:
        lines += [
            "",
            "## Ratios",
            "",
            "| rate/s | achieved | POST->SSE p50 vs lowest rate | p99 vs lowest rate | "
            "p99 / p50 | server CPU shares (service / workers / postgres) | CPU/report vs "
            "lowest rate | kept up |",
            "|---:|---:|---:|---:|---:|---|---:|---|",
        ]
        for row in s["rows"]:
            sh = row["server_cpu_share_pct"]
            lines.append(
                f"| {row['rate']:g} | {100 * row['achieved_ratio']:.1f}% | "
                f"{row['sse_p50_vs_lowest_rate']}x | {row['sse_p99_vs_lowest_rate']}x | "
                f"{row['sse_p99_over_p50']} | {sh['service']}% / {sh['workers']}% / "
                f"{sh['postgres']}% | {row['cpu_ms_per_report_vs_lowest_rate']}x | "
                f"{'yes' if row['kept_up'] else 'no'} |"
            )
        lines += [
            "",
            f"Highest rate kept up with (backlog slope under {100 * KEPT_UP_SHARE:g}% of the "
            f"rate, nothing lost): **{_rate(s['highest_rate_kept_up'])}**. Median of the rates' "
            f"POST->SSE p50: {_ms(s['median_of_sse_p50_s'])} ms. Lost in all: "
            f"{s['lost_total']} (grouped without any frame: "
            f"{s['grouped_without_frame_total']}); duplicate frames "
            f"{s['duplicate_frames_total']}; repeated or out-of-order ids "
            f"{s['repeated_or_out_of_order_ids_total']}.",
        ]
    notes = []
    for r in rates:
        if r["never_arrived"]:
            notes.append(
                f"{r['rate']:g}/s: {r['never_arrived']} reports never had a frame; their "
                f"states after the drain: {r['never_arrived_states']}."
            )
        if r["stream"]["disconnects"]:
            notes.append(
                f"{r['rate']:g}/s: the stream ended {len(r['stream']['disconnects'])} time(s) "
                f"and was resumed with Last-Event-ID ({r['stream']['disconnects'][:3]})."
            )
        if r["readyz_warnings"]:
            notes.append(f"{r['rate']:g}/s: /readyz warned: {'; '.join(r['readyz_warnings'])}")
        c = r["cpu_cores_window"]
        others = c.get("other", 0) + c.get("postgres_other_db", 0)
        if others > 0.25:
            notes.append(
                f"{r['rate']:g}/s: other processes (and other databases' backends) used "
                f"{others:.2f} cores during the window: the figures are disturbed."
            )
        if r["service_counters"]:
            notes.append(
                f"{r['rate']:g}/s service counters (delta): "
                + ", ".join(f"`{k}` {v:g}" for k, v in r["service_counters"].items())
            )
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    lines += [
        "",
        "## Command lines",
        "",
        "```sh",
        "# benchmark driver",
        res["invocation"],
        "# setup",
        *res["setup_commands"],
        "# service",
        res["service_command"],
        "```",
        "",
    ]
    path.write_text("\n".join(lines))


def write_chart(path: Path, res: dict[str, Any]) -> bool:
    """POST->SSE percentiles per rate, per-second POST->SSE p99, backlog over time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rates = res["rates"]
    if not rates:
        return False
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(16, 4.6))
    names = [f"{r['rate']:g}/s" for r in rates]
    xs = range(len(rates))
    for key, style in (("sse_p50_s", "o-"), ("sse_p95_s", "s-"), ("sse_p99_s", "^-")):
        a1.plot(xs, [1000 * (r[key] or 0) for r in rates], style, label=f"POST->SSE {key[4:7]}")
    for key, style in (("post_p50_s", "o--"), ("post_p99_s", "^--")):
        a1.plot(xs, [1000 * (r[key] or 0) for r in rates], style, label=f"POST {key[5:8]}")
    a1.set_xticks(list(xs), names)
    a1.set_yscale("log")
    a1.set_ylabel("ms (from the moment due)")
    a1.set_title("Latency by rate", fontsize=10)
    a1.legend(fontsize=7)
    for r in rates:
        ps = [row for row in r["per_second"] if row[2] is not None]
        line = a2.plot([p[0] for p in ps], [1000 * p[2] for p in ps], label=f"{r['rate']:g}/s p99")
        a2.plot(
            [p[0] for p in ps],
            [1000 * p[1] for p in ps],
            ":",
            color=line[0].get_color(),
            label=f"{r['rate']:g}/s p50",
        )
    a2.set_yscale("log")
    a2.set_xlabel("second of the run the report was due")
    a2.set_ylabel("POST->SSE ms")
    a2.set_title("POST->SSE by second", fontsize=10)
    a2.legend(fontsize=7)
    for r in rates:
        series = r["backlog_series"]
        a3.plot([t for t, _ in series], [n for _, n in series], label=f"{r['rate']:g}/s")
    a3.axvline(rates[0]["seconds"], color="grey", linestyle=":", linewidth=1)
    top = max((n for r in rates for _, n in r["backlog_series"]), default=0)
    a3.set_ylim(0, max(1, top) * 1.05)
    a3.set_xlabel("seconds from the window's start (dotted: its end)")
    a3.set_ylabel("reports not yet grouped")
    a3.set_title("Backlog", fontsize=10)
    a3.legend(fontsize=7)
    ctx = res["context"]
    fig.suptitle(
        f"CivicPulse paced end-to-end, {ctx['nproc']} cores, {ctx['date_utc']}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
