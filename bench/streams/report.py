"""The run's summary and Markdown page, drawn from the results dict alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Issue 15's bar: intake p99 with the streams open within this many times the p99 without.
TARGET_RATIO = 2.0


def _ms(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{1000 * v:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _loaded(phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in phases if "post_p99_s" in p]


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """Ratios against the first 0-stream phase (the first phase if there is none)."""
    phases = _loaded(res["phases"])
    if not phases:
        return {}
    base = next((p for p in phases if p["streams"] == 0), phases[0])
    rows = []
    for i, p in enumerate(phases):
        fan = p["public"]
        cpu = p["cpu_cores_window"]
        ratio = _ratio(p["post_p99_s"], base["post_p99_s"])
        # A phase whose streams did not all connect says nothing about fan-out to them.
        complete = p["open"]["connected"] == p["streams"]
        rows.append(
            {
                "phase": res["phases"].index(p) + 1,
                "streams": p["streams"],
                "connected": p["open"]["connected"],
                "post_p50_s": p["post_p50_s"],
                "post_p99_s": p["post_p99_s"],
                "p50_ratio": _ratio(p["post_p50_s"], base["post_p50_s"]),
                "p99_ratio": ratio,
                "within_target": (
                    None if p is base or ratio is None or not complete else ratio <= TARGET_RATIO
                ),
                "all_connected": complete,
                "repeat_of_baseline": p["streams"] == 0 and i > phases.index(base),
                "frames_per_s_window": fan["frames_per_s_window"],
                "streams_complete": fan["streams_complete"],
                "streams_missing_events": fan["streams_missing_events"],
                "first_to_last_p99_s": fan["first_to_last_stream"]["p99_s"],
                "service_cores": cpu.get("service"),
                "server_cores": round(
                    sum(cpu.get(k, 0.0) for k in ("service", "workers", "postgres"))
                    - cpu.get("postgres_other_db", 0.0),
                    3,
                ),
                "clients_cores": cpu.get("clients"),
                "other_cores": cpu.get("other"),
                "service_rss_max_mib": p["service_rss_max_mib"],
            }
        )
    judged = [r for r in rows if r["within_target"] is not None and not r["repeat_of_baseline"]]
    unjudged = any(not r["all_connected"] for r in rows)
    return {
        "baseline_phase": res["phases"].index(base) + 1,
        "baseline_streams": base["streams"],
        "rows": rows,
        "target_ratio": TARGET_RATIO,
        "target_met": (
            all(r["within_target"] for r in judged) if judged and not unjudged else None
        ),
        "all_streams_got_every_event": all(
            p["public"]["streams_missing_events"] == 0
            and p["public"]["streams_connected"] == p["streams"]
            for p in phases
        ),
    }


def print_phase(r: dict[str, Any]) -> None:
    fan = r["public"]
    c = r["cpu_cores_window"]
    s = r["staff_stream"]
    print(
        f"  POST: sent {r['sent_per_s']:,}/s ({100 * r['achieved_ratio']:.1f}% of target), "
        f"statuses {r['status']}; p50 {_ms(r['post_p50_s'])} ms, p99 {_ms(r['post_p99_s'])} "
        f"ms, max {_ms(r['post_max_s'])} ms; generator lag p99 {_ms(r['lag_p99_s'])} ms",
        flush=True,
    )
    print(
        f"  staff stream POST->SSE p50 {_ms(s['sse_p50_s'])} ms, p99 {_ms(s['sse_p99_s'])} ms "
        f"over {s['frames_matched']:,} reports; {s['not_by_grace']} without a frame by the "
        f"grace's end; connects {s['connects']}",
        flush=True,
    )
    if fan["streams_connected"]:
        spread = fan["first_to_last_stream"]
        sample = fan["post_to_frame_sample"]
        print(
            f"  public: {fan['public_events']:,} events ({fan['public_events_in_db']:,} in the "
            f"database), {fan['frames_total']:,} frames, {fan['frames_per_s_window']:,.0f}/s "
            f"in the window; streams with every event {fan['streams_complete']:,} of "
            f"{fan['streams_connected']:,} (missed {fan['missed_total']:,}, duplicates "
            f"{fan['duplicates']}, out of order {fan['out_of_order']}, ended early "
            f"{fan['streams_ended_early']})",
            flush=True,
        )
        print(
            f"  fan-out: first->last stream p50 {_ms(spread['p50_s'])} ms, p99 "
            f"{_ms(spread['p99_s'])} ms, max {_ms(spread['max_s'])} ms; POST->frame "
            f"({sample['streams']} streams) p50 {_ms(sample['p50_s'])} ms, p99 "
            f"{_ms(sample['p99_s'])} ms; POST->last stream p99 "
            f"{_ms(fan['post_to_last_stream']['p99_s'])} ms",
            flush=True,
        )
    print(
        "  cores in the window: "
        + ", ".join(f"{k} {v:.2f}" for k, v in c.items())
        + f"; service RSS max {r['service_rss_max_mib']} MiB; pipeline share mean "
        f"{r['pipeline_share_mean']} (min {r['pipeline_share_min']})",
        flush=True,
    )
    print(flush=True)


def summary_lines(res: dict[str, Any]) -> list[str]:
    s = res.get("summary") or {}
    lines = ["== summary"]
    if not s:
        for p in res["phases"]:
            m = p.get("memory", {})
            lines.append(
                f"  {p['streams']:,} streams: {p['open']['connected']:,} connected"
                + (f" in {p['open']['wall_s']} s" if "wall_s" in p["open"] else "")
                + f", service RSS {m.get('before_open', {}).get('service_mib')} -> "
                f"{m.get('all_open', {}).get('service_mib')} MiB "
                f"({m.get('service_kib_per_stream')} KiB/stream), idle service "
                f"{p.get('idle_cores', {}).get('service', 0):.2f} cores, ended early "
                f"{p.get('streams_ended_early', 0)}"
            )
        return lines
    for row in s["rows"]:
        verdict = {True: "within 2x", False: "OVER 2x", None: "baseline"}[row["within_target"]]
        if not row["all_connected"]:
            verdict = "not judged: streams failed to connect"
        elif row["repeat_of_baseline"]:
            verdict = "baseline again (drift check)"
        lines.append(
            f"  {row['streams']:,} streams ({row['connected']:,} connected): POST p50 "
            f"{_ms(row['post_p50_s'])} ms, p99 {_ms(row['post_p99_s'])} ms = "
            f"{row['p99_ratio']}x ({verdict}); {row['frames_per_s_window'] or 0:,.0f} frames/s; "
            f"missing events in {row['streams_missing_events']} streams; service "
            f"{row['service_cores']} cores, clients {row['clients_cores']}, RSS max "
            f"{row['service_rss_max_mib']} MiB"
        )
    met = {True: "met", False: "NOT met", None: "not judged"}[s["target_met"]]
    lines.append(
        f"  issue 15 target (p99 within {s['target_ratio']:g}x of {s['baseline_streams']} "
        f"streams): {met}; every stream got every event: "
        f"{'yes' if s['all_streams_got_every_event'] else 'NO'}"
    )
    return lines


def write_markdown(path: Path, res: dict[str, Any]) -> None:
    ctx, cfg, phases = res["context"], res["config"], res["phases"]
    s = res.get("summary") or {}
    lines = [
        "# Fan-out benchmark: intake with open public streams",
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
        "One `civicpulse serve` process for the whole run, tenant `streams` with a public "
        "dashboard. For each phase, in order: the pipeline's backlog is drained"
        + (", the database analysed" if cfg["analyze_before_each_phase"] else "")
        + f", then that many public streams (`GET /v1/tenants/streams/stream`, no key) are "
        f"opened at {cfg['open_rate']:g}/s from {cfg['client_processes']} client process(es) "
        "(bare asyncio protocols that only scan each read for `id:` lines), and the phase "
        "waits for every `: connected`. The streams then sit idle for "
        f"{cfg['settle_s']:g} s (the idle cost), one staff stream is opened by the load "
        "generator, and reports are POSTed open-loop at "
        f"{cfg['rate']:g}/s for {cfg['seconds']:g} s over {cfg['connections']} keep-alive "
        "connections (report i due at i / rate; latency from the moment due). Reports come "
        f"from the LA311 sample (`{cfg['data']}`), stamped on arrival. After the window the "
        "phase waits for the staff stream to show every accepted report, the backlog to "
        "drain and every public stream to reach the last public event (at most "
        f"{cfg['grace_s']:g} s each), then closes the streams. A "
        f"{cfg['warmup_s']:g} s unmeasured warm-up with no streams comes first.",
        "",
        "Public frames carry the issue but not the report: each is tied to its POST through "
        "the staff stream, whose frames have the same event ids and name the report. "
        "'first->last stream' is, per event, the time between the first and the last public "
        "stream receiving it; 'POST->frame' is from the moment the report was due to each "
        f"frame, over {cfg['sample']} streams spread over the phase's streams. A stream "
        "misses events when its set of ids above the phase's first is smaller than the union "
        "of all streams' sets. Service environment: "
        + (", ".join(f"`{e}`" for e in cfg["env"]) or "defaults")
        + " (plus `CIVICPULSE_RATE_LIMIT_KEY_PER_SECOND=0` and "
        "`CIVICPULSE_RATE_LIMIT_PUBLIC_PER_SECOND=0` unless set). 'Pipeline share' is "
        "`civicpulse_pipeline_share` from /metrics once a second in the window: the service "
        "halves it while more than 1% of intake requests miss its latency target, so a low "
        "share means the streams slowed intake enough to hold classification back.",
        "",
    ]
    loaded = _loaded(phases)
    if s:
        met = {True: "**met**", False: "**not met**", None: "not judged"}[s["target_met"]]
        lines += [
            "## Intake latency",
            "",
            f"Issue 15's target, intake p99 within {s['target_ratio']:g}x of phase "
            f"{s['baseline_phase']} ({s['baseline_streams']} streams): {met}.",
            "",
            "| phase | public streams (connected) | sent/s (of target) | POST p50 ms | POST p99 "
            "ms | POST max ms | p50 ratio | p99 ratio | within 2x | statuses | generator "
            "lag p99 ms | staff stream POST->SSE p50 / p99 ms | pipeline share mean (min) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|---|",
        ]
        for row, p in zip(s["rows"], loaded, strict=True):
            within = {True: "yes", False: "**no**", None: "baseline"}[row["within_target"]]
            if not row["all_connected"]:
                within = "not judged (streams failed to connect)"
            elif row["repeat_of_baseline"]:
                within = "baseline again"
            st = p["staff_stream"]
            lines.append(
                f"| {row['phase']} | {p['streams']:,} ({p['open']['connected']:,}) | "
                f"{p['sent_per_s']:,} ({100 * p['achieved_ratio']:.1f}%) | "
                f"{_ms(p['post_p50_s'])} | {_ms(p['post_p99_s'])} | {_ms(p['post_max_s'])} | "
                f"{row['p50_ratio']}x | {row['p99_ratio']}x | {within} | "
                + ", ".join(f"{k}: {v:,}" for k, v in p["status"].items())
                + f" | {_ms(p['lag_p99_s'])} | {_ms(st['sse_p50_s'])} / {_ms(st['sse_p99_s'])} | "
                f"{p['pipeline_share_mean']} ({p['pipeline_share_min']}) |"
            )
        lines += [
            "",
            "## Fan-out",
            "",
            "| phase | streams | public events (in db) | frames | frames/s in window | "
            "streams with every event | missed (max per stream) | dup. / out of order | "
            "ended early | first->last stream p50 / p99 / max ms | POST->frame p50 / p99 ms "
            "(sample) | POST->last stream p50 / p99 ms | last frame after window s |",
            "|---:|---:|---|---:|---:|---|---|---|---:|---|---|---|---:|",
        ]
        for row, p in zip(s["rows"], loaded, strict=True):
            f = p["public"]
            if not f["streams_connected"]:
                continue
            sp, sa, la = (
                f["first_to_last_stream"],
                f["post_to_frame_sample"],
                f["post_to_last_stream"],
            )
            lines.append(
                f"| {row['phase']} | {f['streams_connected']:,} | {f['public_events']:,} "
                f"({f['public_events_in_db']:,}) | {f['frames_total']:,} | "
                f"{f['frames_per_s_window']:,.0f} | {f['streams_complete']:,} | "
                f"{f['missed_total']:,} ({f['missed_max_per_stream']:,}) | "
                f"{f['duplicates']} / {f['out_of_order']} | {f['streams_ended_early']} | "
                f"{_ms(sp['p50_s'])} / {_ms(sp['p99_s'])} / {_ms(sp['max_s'])} | "
                f"{_ms(sa['p50_s'])} / {_ms(sa['p99_s'])} | {_ms(la['p50_s'])} / "
                f"{_ms(la['p99_s'])} | {f['last_frame_after_window_s']} |"
            )
    lines += [
        "",
        "## Memory and CPU",
        "",
        "Resident memory of the service process (MiB) before the phase's streams were opened, "
        "with all of them open, and the most during the load window; the client processes' "
        "memory. CPU in cores (CPU seconds / wall seconds, from /proc/<pid>/stat): idle = "
        "the service with the streams open and no load; the rest over the load window. "
        "workers = the service's process pool, postgres = every postgres process less "
        "backends of other databases, clients = the stream-client processes, other = "
        "everything else on the machine (other users; the figures are disturbed above "
        "about 0.25).",
        "",
        "| phase | streams | open s | service RSS before / open / max MiB | KiB per stream "
        "| service fds | clients MiB | idle service cores | service | workers | postgres | "
        "loadgen | clients | other | machine |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, p in enumerate(phases):
        m = p.get("memory", {})
        c = p.get("cpu_cores_window", {})
        before = m.get("before_open", {})
        opened = m.get("all_open", {})

        def cores(key: str, c: dict[str, float] = c) -> str:
            return f"{c[key]:.2f}" if key in c else "-"

        postgres = (
            f"{c['postgres'] - c.get('postgres_other_db', 0.0):.2f}" if "postgres" in c else "-"
        )
        lines.append(
            f"| {i + 1} | {p['streams']:,} | {p['open'].get('wall_s', '-')} | "
            f"{before.get('service_mib')} / {opened.get('service_mib')} / "
            f"{p.get('service_rss_max_mib', '-')} | {m.get('service_kib_per_stream') or '-'} | "
            f"{opened.get('service_fds')} | {p.get('clients_rss_max_mib') or m.get('clients_mib')} "
            f"| {p.get('idle_cores', {}).get('service', 0):.2f} | {cores('service')} | "
            f"{cores('workers')} | {postgres} | {cores('loadgen')} | {cores('clients')} | "
            f"{cores('other')} | {cores('machine')} |"
        )
    notes = []
    for i, p in enumerate(phases):
        o = p["open"]
        if o.get("failed"):
            notes.append(
                f"Phase {i + 1}: {o['failed']} of {p['streams']:,} streams did not connect: "
                f"{o['reasons']}."
            )
        fan = p.get("public", {})
        if fan.get("ended_reasons"):
            notes.append(f"Phase {i + 1}: streams ended early: {fan['ended_reasons']}.")
        if fan.get("streams_connected") and fan["public_events"] != fan["public_events_in_db"]:
            notes.append(
                f"Phase {i + 1}: the streams saw {fan['public_events']:,} distinct public "
                f"events, the database holds {fan['public_events_in_db']:,} for the window."
            )
        caught = p.get("caught_up") or {}
        if caught and caught["caught_up"] < caught["alive"]:
            notes.append(
                f"Phase {i + 1}: {caught['alive'] - caught['caught_up']:,} streams still "
                f"lacked the last public event {caught['seconds_after_window']} s after the "
                "window."
            )
        if p.get("cpu_cores_window", {}).get("other", 0) > 0.25:
            notes.append(
                f"Phase {i + 1}: other processes used {p['cpu_cores_window']['other']:.2f} "
                "cores during the window: its figures are disturbed."
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
        '# setup (then PUT /v1/tenants/streams/dashboard {"public": true} with the admin key)',
        *res["setup_commands"],
        "# service",
        res["service_command"],
        "```",
        "",
    ]
    path.write_text("\n".join(lines))
