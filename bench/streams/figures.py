"""A phase's fan-out figures from the client processes' reports: pure functions, no I/O.

Public frames carry the issue, not the report, so a public frame is tied to its POST through
the staff stream the load generator follows: both views number an event alike (the tenant's
sequence), and the staff frame names the report. Event id -> report -> the moment its POST
was due gives, for every public frame, the delay from POST to that stream.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.pipeline.load import Post
from bench.pipeline.sse import StreamLog
from bench.streams.clients import STREAM_FIELDS


def pct(values: np.ndarray | Sequence[float], q: float) -> float | None:
    """Percentile by linear interpolation (as PostgreSQL's percentile_cont); None if empty."""
    arr = np.asarray(values, dtype=np.float64)
    return None if arr.size == 0 else round(float(np.percentile(arr, 100 * q)), 4)


def spread(values: np.ndarray) -> dict[str, float | None]:
    return {
        "p50_s": pct(values, 0.5),
        "p99_s": pct(values, 0.99),
        "max_s": round(float(values.max()), 4) if values.size else None,
    }


def due_by_event(posts: Sequence[Post], log: StreamLog) -> dict[int, float]:
    """Event id -> when the POST of the report it names was due (grouping events only)."""
    due = {p.report_id: p.due for p in posts if p.report_id is not None}
    out: dict[int, float] = {}
    for _, event_id, report_id in log.report_frames:
        if event_id is not None and report_id in due:
            out[event_id] = due[report_id]
    return out


def fan_out(
    reports: Sequence[dict[str, Any]],
    due: dict[int, float],
    *,
    t0: float,
    seconds: float,
    expected_public: int,
) -> dict[str, Any]:
    """Merge the processes' reports into the phase's stream figures."""
    unions = [np.frombuffer(r["union"], dtype=np.uint32) for r in reports]
    union = np.unique(np.concatenate(unions)) if unions else np.empty(0, np.uint32)
    first = np.full(len(union), np.inf)
    last = np.full(len(union), -np.inf)
    got = np.zeros(len(union), dtype=np.int64)
    for r, u in zip(reports, unions, strict=True):
        pos = np.searchsorted(union, u)
        first[pos] = np.minimum(first[pos], np.frombuffer(r["first"], dtype=np.float64))
        last[pos] = np.maximum(last[pos], np.frombuffer(r["last"], dtype=np.float64))
        got[pos] += np.frombuffer(r["got"], dtype=np.int64)
    rows = [dict(zip(STREAM_FIELDS, s, strict=True)) for r in reports for s in r["streams"]]
    connected = [s for s in rows if s["connected"]]
    n = len(connected)
    frames = np.array([s["frames"] for s in connected], dtype=np.int64)
    missing = np.array([len(union) - s["unique"] for s in connected], dtype=np.int64)
    hist = np.sum([r["hist"] for r in reports], axis=0) if reports else np.zeros(2, np.int64)
    per_second = hist[1:-1].tolist()
    in_window = sum(s["in_window"] for s in connected)
    total = int(frames.sum())
    arrived = last[np.isfinite(last)]
    span = float(arrived.max() - t0) if arrived.size else 0.0

    # POST -> frame: to the first stream that got the event, to the last (the whole fan-out
    # done), and to every stream of the sample.
    due_union = np.array([due.get(int(i), math.nan) for i in union], dtype=np.float64)
    known = np.isfinite(due_union) & np.isfinite(first)
    everyone = known & (got == n) if n else known
    sampled = []
    for r in reports:
        for _, ids_raw, times_raw in r["samples"]:
            ids = np.frombuffer(ids_raw, dtype=np.uint32)
            times = np.frombuffer(times_raw, dtype=np.float64)
            d = due_union[np.searchsorted(union, ids)]
            ok = np.isfinite(d)
            sampled.append(times[ok] - d[ok])
    sample_delays = np.concatenate(sampled) if sampled else np.empty(0)

    ended = Counter(s["ended"] for s in connected if s["ended"])
    return {
        "streams_connected": n,
        "public_events": len(union),
        "public_events_in_db": expected_public,
        "events_every_stream_got": int(np.count_nonzero(got == n)) if n else 0,
        "streams_complete": int(np.count_nonzero(missing == 0)),
        "streams_missing_events": int(np.count_nonzero(missing > 0)),
        "missed_total": int(missing.sum()),
        "missed_max_per_stream": int(missing.max()) if missing.size else 0,
        "duplicates": sum(s["duplicates"] for s in connected),
        "out_of_order": sum(s["out_of_order"] for s in connected),
        "streams_ended_early": sum(ended.values()),
        "ended_reasons": dict(ended.most_common(5)),
        "frames_total": total,
        "frames_before_window": sum(r["frames_before_window"] for r in reports),
        "frames_per_stream": {
            "min": int(frames.min()) if frames.size else 0,
            "p50": pct(frames, 0.5),
            "max": int(frames.max()) if frames.size else 0,
        },
        "delivered_share": round(total / (n * len(union)), 5) if n and len(union) else None,
        "frames_in_window": in_window,
        "frames_per_s_window": round(in_window / seconds, 1),
        "frames_per_s_overall": round(total / span, 1) if span > 0 else None,
        "last_frame_after_window_s": round(span - seconds, 2) if arrived.size else None,
        "bytes_total": sum(s["bytes"] for s in connected),
        "first_to_last_stream": spread((last - first)[(got >= 2) & np.isfinite(first)]),
        "post_to_first_stream": spread(first[known] - due_union[known]),
        "post_to_last_stream": spread(last[everyone] - due_union[everyone]),
        "post_to_frame_sample": {
            "streams": sum(len(r["samples"]) for r in reports),
            "frames": int(sample_delays.size),
            **spread(sample_delays),
        },
        "events_with_known_post": int(np.count_nonzero(known)),
        "frames_per_second_series": per_second,
    }


def post_seconds(posts: Sequence[Post], start: float) -> list[tuple[int, float | None, int]]:
    """(second of the window, POST p99 of the reports due in it, reports due)."""
    buckets: dict[int, list[float]] = {}
    for p in posts:
        if p.status and not math.isnan(p.done):
            buckets.setdefault(int(p.due - start), []).append(p.done - p.due)
    return [(s, pct(v, 0.99), len(v)) for s, v in sorted(buckets.items())]
