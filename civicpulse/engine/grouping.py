"""Duplicate grouping: which open issue, if any, a new report belongs to.

Pure and batch-oriented (what the process pool runs). Candidates are open issues near the
report (the caller fetched them by geo cell); each is scored on distance, time gap, category
relation and text similarity, and the report joins the best issue scoring at least the
threshold, or opens a new one. Reports of one batch are decided in time order, and a new
issue opened by one report is a candidate for the next, so a burst about one problem ends up
in one issue. Every decision carries its scores and the rule that decided it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import NamedTuple

from civicpulse.engine import geo
from civicpulse.engine.textmodel import STOPWORDS

RULES_VERSION = "group-v1"
HOUR = 3600.0
DAY = 24 * HOUR

# (radius in metres, look-back in seconds) per category code, then per kind. Tight for
# item pickups (one caller reports many different items along a street), wide for floods.
CATEGORY_DEFAULTS: dict[str, tuple[float, float]] = {
    "bulky_items": (25, 2 * DAY),
    "abandoned_vehicle": (30, 30 * DAY),
    "building_fault": (30, 30 * DAY),
    "graffiti": (40, 14 * DAY),
    "litter_dumping": (50, 3 * DAY),
    "road_defect": (60, 30 * DAY),
    "streetlight": (50, 30 * DAY),
    "signs_signals": (50, 30 * DAY),
    "trees": (60, 14 * DAY),
    "water_sewer": (150, 7 * DAY),
    "flooding": (400, 2 * DAY),
    "noise": (150, 1 * DAY),
    "parks": (150, 14 * DAY),
    "hazard": (200, 1 * DAY),
    "other": (50, 7 * DAY),
}
KIND_DEFAULTS: dict[str, tuple[float, float]] = {
    "hazard": (200, 1 * DAY),
    "utilities": (150, 7 * DAY),
    "infrastructure": (60, 30 * DAY),
}
FALLBACK = (50.0, 7 * DAY)
MAX_RADIUS_M = 1000.0
WEIGHTS = {"distance": 0.40, "time": 0.15, "category": 0.25, "text": 0.20}
THRESHOLD = 0.60

_WORD = re.compile(r"[a-z0-9]+")


class Params(NamedTuple):
    radius_m: float
    lookback_s: float


class Report(NamedTuple):
    id: str
    lat: float
    lon: float
    category: str
    kind: str
    text: str
    t: float  # submitted_at, Unix seconds
    severity: int


class Candidate(NamedTuple):
    id: str
    lat: float
    lon: float
    category: str
    kind: str
    text: str
    last_t: float
    report_count: int


class Scores(NamedTuple):
    distance_m: float
    gap_hours: float
    category: float
    text: float
    total: float


class Decision(NamedTuple):
    report_id: str
    issue: str  # an existing issue id, or "new:<n>" for the n-th new issue of the batch
    created: bool
    scores: Scores | None
    rule: str


def params_for(
    category: str, kind: str, overrides: dict[str, tuple[float | None, float | None]]
) -> Params:
    radius, lookback = CATEGORY_DEFAULTS.get(category) or KIND_DEFAULTS.get(kind) or FALLBACK
    custom_radius, custom_lookback = overrides.get(category, (None, None))
    return Params(min(MAX_RADIUS_M, custom_radius or radius), custom_lookback or lookback)


def tokens(text: str) -> frozenset[str]:
    return frozenset(
        w.rstrip("s") if len(w) > 3 else w
        for w in _WORD.findall(text.lower())
        if w not in STOPWORDS
    )


def trigrams(text: str) -> frozenset[str]:
    s = " ".join(_WORD.findall(text.lower()))
    return frozenset(s[i : i + 3] for i in range(len(s) - 2))


def text_similarity(a: str, b: str) -> float:
    """The larger of word Jaccard and character-trigram Dice: paraphrases share trigrams
    ("pothole"/"potholes", "5th"/"fifth ave") even when few whole words match."""
    ta, tb = tokens(a), tokens(b)
    words = len(ta & tb) / len(ta | tb) if ta and tb else 0.0
    ga, gb = trigrams(a), trigrams(b)
    grams = 2 * len(ga & gb) / (len(ga) + len(gb)) if ga and gb else 0.0
    return max(words, grams)


def category_relation(a_cat: str, a_kind: str, b_cat: str, b_kind: str) -> float:
    if a_cat == b_cat:
        return 1.0
    # Across categories only hazards merge (a gas smell reported as "other" by one caller).
    return 0.5 if a_kind == b_kind == "hazard" else 0.0


def score(report: Report, cand: Candidate, params: Params) -> Scores | None:
    """Scores of one pair, or None when the pair is out of reach."""
    relation = category_relation(report.category, report.kind, cand.category, cand.kind)
    if relation == 0.0:
        return None
    d = geo.distance_m(report.lat, report.lon, cand.lat, cand.lon)
    if d > params.radius_m:
        return None
    gap = abs(report.t - cand.last_t)
    if gap > params.lookback_s:
        return None
    text = text_similarity(report.text, cand.text)
    total = (
        WEIGHTS["distance"] * (1 - d / params.radius_m)
        + WEIGHTS["time"] * (1 - gap / params.lookback_s)
        + WEIGHTS["category"] * relation
        + WEIGHTS["text"] * text
    )
    return Scores(round(d, 1), round(gap / HOUR, 2), relation, round(text, 3), round(total, 4))


def group_batch(
    reports: list[Report],
    candidates: list[Candidate],
    overrides: dict[str, tuple[float | None, float | None]],
    not_duplicate: set[tuple[str, str]],
    threshold: float = THRESHOLD,
) -> list[Decision]:
    """Decide every report of one tenant's batch, in time order."""
    by_cell: dict[int, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_cell[geo.cell_of(c.lat, c.lon)].append(c)
    live: dict[str, Candidate] = {c.id: c for c in candidates}
    decisions: list[Decision] = []
    opened = 0
    for report in sorted(reports, key=lambda r: r.t):
        params = params_for(report.category, report.kind, overrides)
        best: tuple[Scores, Candidate] | None = None
        seen: set[str] = set()
        for cell in geo.cells_within(report.lat, report.lon, params.radius_m):
            for stale in by_cell.get(cell, ()):
                if stale.id in seen:
                    continue
                seen.add(stale.id)
                cand = live[stale.id]
                if (report.id, cand.id) in not_duplicate:
                    continue
                s = score(report, cand, params)
                if (
                    s is not None
                    and s.total >= threshold
                    and (best is None or s.total > best[0].total)
                ):
                    best = (s, cand)
        if best is not None:
            s, cand = best
            decisions.append(
                Decision(
                    report.id,
                    cand.id,
                    False,
                    s,
                    f"{RULES_VERSION}: score {s.total:.2f} >= {threshold}",
                )
            )
            n = cand.report_count + 1
            live[cand.id] = cand._replace(
                lat=cand.lat + (report.lat - cand.lat) / n,
                lon=cand.lon + (report.lon - cand.lon) / n,
                last_t=max(cand.last_t, report.t),
                report_count=n,
            )
            continue
        issue = f"new:{opened}"
        opened += 1
        fresh = Candidate(
            issue, report.lat, report.lon, report.category, report.kind, report.text, report.t, 1
        )
        live[issue] = fresh
        by_cell[geo.cell_of(fresh.lat, fresh.lon)].append(fresh)
        decisions.append(
            Decision(
                report.id,
                issue,
                True,
                None,
                f"{RULES_VERSION}: no open issue scored >= {threshold}",
            )
        )
    return decisions


def priority(severity: int, report_count: int) -> int:
    """1 (low) to 5 (urgent): severity, raised by how many people reported it."""
    boost = 0 if report_count < 3 else 1 if report_count < 10 else 2
    return max(1, min(5, severity + boost))


def search_radius(
    category: str, kind: str, overrides: dict[str, tuple[float | None, float | None]]
) -> float:
    return params_for(category, kind, overrides).radius_m
