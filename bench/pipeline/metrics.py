"""Figures from the raw records of one rate: pure functions of plain data, no I/O."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.ingest.common import percentile
from bench.pipeline.load import Post
from bench.pipeline.sse import StreamLog


def pct(values: Sequence[float], p: float) -> float | None:
    return round(percentile(list(values), p), 4) if values else None


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x (None for fewer than two distinct x)."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


@dataclass(frozen=True)
class Matched:
    """Each accepted report's first grouping frame, and what was odd about the frames."""

    first_arrival: dict[str, float]  # report id -> time.monotonic() of its first frame
    duplicate_reports: int  # reports named by more than one grouping frame
    duplicate_frames: int  # the extra frames
    foreign_frames: int  # grouping frames for reports this rate did not post
    repeated_ids: int  # `id:` values seen before on this stream
    out_of_order_ids: int  # `id:` values lower than one already seen (and not repeats)


def match(posts: Sequence[Post], log: StreamLog) -> Matched:
    ours = {p.report_id for p in posts if p.report_id is not None}
    first: dict[str, float] = {}
    seen = Counter[str]()
    foreign = 0
    for at, _, report_id in log.report_frames:
        if report_id not in ours:
            foreign += 1
            continue
        seen[report_id] += 1
        first.setdefault(report_id, at)
    repeated = out_of_order = 0
    ids_seen: set[int] = set()
    highest = -1
    for event_id in log.ids:
        if event_id in ids_seen:
            repeated += 1
        elif event_id < highest:
            out_of_order += 1
        ids_seen.add(event_id)
        highest = max(highest, event_id)
    return Matched(
        first_arrival=first,
        duplicate_reports=sum(1 for n in seen.values() if n > 1),
        duplicate_frames=sum(n - 1 for n in seen.values() if n > 1),
        foreign_frames=foreign,
        repeated_ids=repeated,
        out_of_order_ids=out_of_order,
    )


def post_figures(posts: Sequence[Post], seconds: float) -> dict[str, Any]:
    """Achieved rate, status counts, POST latency (from the moment each was due) and the
    generator's own lag (from due to actually calling the client)."""
    answered = [p for p in posts if p.status]
    status = Counter(str(p.status) if p.status else f"error:{p.error}" for p in posts)
    latency = [p.done - p.due for p in answered]
    lag = [p.started - p.due for p in posts if not math.isnan(p.started)]
    accepted = sum(1 for p in posts if p.status == 202)
    span = max((p.started for p in posts), default=0.0) - min((p.due for p in posts), default=0)
    return {
        "scheduled": len(posts),
        "accepted": accepted,
        "status": dict(sorted(status.items())),
        # Sent per second over the schedule's own length (the last send is due at
        # (n - 1) / rate, so n sends over `seconds`), and accepted per second likewise.
        "sent_per_s": round(len(posts) / max(seconds, span), 2),
        "accepted_per_s": round(accepted / max(seconds, span), 2),
        "post_p50_s": pct(latency, 0.5),
        "post_p99_s": pct(latency, 0.99),
        "post_max_s": round(max(latency), 4) if latency else None,
        "lag_p50_s": pct(lag, 0.5),
        "lag_p99_s": pct(lag, 0.99),
        "lag_max_s": round(max(lag), 4) if lag else None,
    }


def stream_figures(
    posts: Sequence[Post], matched: Matched, grace_end: float
) -> tuple[dict[str, Any], list[str]]:
    """POST->SSE latency (from the moment each report was due) over every report whose frame
    came at all, and the reports without a frame by grace_end (returned, to be looked up)."""
    latency = []
    late = 0
    missing: list[str] = []
    for p in posts:
        if p.report_id is None:
            continue
        at = matched.first_arrival.get(p.report_id)
        if at is None or at > grace_end:
            missing.append(p.report_id)
        if at is not None:
            latency.append(at - p.due)
            late += at > grace_end
    figures: dict[str, Any] = {
        "frames_matched": len(latency),
        "sse_p50_s": pct(latency, 0.5),
        "sse_p95_s": pct(latency, 0.95),
        "sse_p99_s": pct(latency, 0.99),
        "sse_max_s": round(max(latency), 4) if latency else None,
        "not_by_grace": len(missing),
        "arrived_after_grace": late,
    }
    return figures, missing


def per_second(
    posts: Sequence[Post], matched: Matched, start: float
) -> list[tuple[int, float | None, float | None, int]]:
    """(second of the run, POST->SSE p50, p99, reports due) by the second each was due."""
    buckets: dict[int, list[float]] = {}
    due: Counter[int] = Counter()
    for p in posts:
        second = int(p.due - start)
        due[second] += 1
        at = matched.first_arrival.get(p.report_id) if p.report_id else None
        if at is not None:
            buckets.setdefault(second, []).append(at - p.due)
    return [
        (s, pct(buckets.get(s, []), 0.5), pct(buckets.get(s, []), 0.99), n)
        for s, n in sorted(due.items())
    ]
