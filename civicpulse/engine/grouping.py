"""Duplicate grouping: which open issue, if any, a new report belongs to.

Pure and batch-oriented (what the process pool runs). Candidates are open issues near the
report (the caller fetched them by geo cell). Each is scored by a logistic model
(civicpulse/data/grouping_model.json, fitted by bench/dedup_quality/fit.py on a labelled set
built from real 311 records) on the distance to the issue's centroid (per category, and
sharper the more reports the centroid averages), the time since its last report, the text
similarity with its founding report, whether the two name the same house number, the
category relation and the report count. The report joins the most probable issue at or
above the threshold probability, or opens a new one. Reports of one batch are decided in
time order, and a new issue opened by one report is a candidate for the next, so a burst
about one problem ends up in one issue. Every decision carries its scores and the rule that
decided it.
"""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import msgspec

from civicpulse.engine import geo
from civicpulse.engine.textmodel import STOPWORDS

RULES_VERSION = "group-v2"
HOUR = 3600.0
DAY = 24 * HOUR

# How long an issue stays joinable after its last report, per category code, then per kind:
# short for transient problems (noise, hazards, floods, items awaiting pickup), a month for
# fixtures that stay broken until fixed.
CATEGORY_LOOKBACK_S: dict[str, float] = {
    "bulky_items": 6 * DAY,
    "abandoned_vehicle": 30 * DAY,
    "building_fault": 30 * DAY,
    "graffiti": 30 * DAY,
    "litter_dumping": 9 * DAY,
    "road_defect": 30 * DAY,
    "streetlight": 30 * DAY,
    "signs_signals": 30 * DAY,
    "trees": 30 * DAY,
    "water_sewer": 21 * DAY,
    "flooding": 6 * DAY,
    "noise": 3 * DAY,
    "parks": 30 * DAY,
    "hazard": 3 * DAY,
    "other": 21 * DAY,
}
KIND_LOOKBACK_S: dict[str, float] = {"hazard": 3 * DAY, "utilities": 21 * DAY}
FALLBACK_LOOKBACK_S = 21 * DAY
MAX_RADIUS_M = 1000.0
# The report count feature saturates here, so a model's reach (radius_m) is a true bound.
COUNT_CAP = 20

_WORD = re.compile(r"[a-z0-9]+")
# A house number: digits (and an optional unit letter) before a street's name, "1234 W Main",
# "836 42nd Ave"; not a quantity ("for 10 days", "12 inches of water").
_HOUSE = re.compile(r"\b(\d{2,5})[a-z]?\s+(?:[nsew]\.?\s+)?([a-z0-9][a-z0-9'-]*)")
# fmt: off
_NOT_A_STREET = frozenset({
    "am", "pm", "and", "or", "to", "of", "more", "plus", "times", "people", "persons", "cars",
    "vehicles", "trucks", "bags", "boxes", "items", "minute", "minutes", "min", "mins", "hour",
    "hours", "hr", "hrs", "day", "days", "week", "weeks", "month", "months", "year", "years",
    "inch", "inches", "in", "foot", "feet", "ft", "yard", "yards", "meter", "meters", "metre",
    "metres", "m", "cm", "mm", "km", "mile", "miles", "mph", "lb", "lbs", "pound", "pounds",
    "gallon", "gallons", "percent", "degrees",
})
# fmt: on


class Terms(msgspec.Struct, frozen=True):
    """A category's distance and time terms, and the reach they imply."""

    distance: float  # per 100 m from the issue's centroid
    distance_sq: float  # per (100 m)^2, times n/(n+1): a centroid of n pins is surer
    log_gap: float  # per log(1 + hours since the issue's last report)
    radius_m: float  # beyond this no report can score the threshold (see bench fit.py)


class Model(msgspec.Struct, frozen=True):
    """Logistic pair model: P(report is about the candidate issue's problem)."""

    version: str
    threshold: float
    bias: float
    cross_category: float  # a hazard filed under another hazard category
    text: float  # text_similarity with the issue's founding report
    house_match: float  # both name a house number and they agree
    house_conflict: float  # both name house numbers and none agree
    log_gap: float
    log_count: float  # log(min(report_count, COUNT_CAP))
    categories: dict[str, Terms]
    kinds: dict[str, Terms]  # for tenant categories the model has not seen
    fallback: Terms
    trained: str  # how the coefficients were fitted (command, data, seed)


MODEL_FILE = Path(__file__).resolve().parent.parent / "data" / "grouping_model.json"
MODEL: Model = msgspec.json.decode(MODEL_FILE.read_bytes(), type=Model)
THRESHOLD = MODEL.threshold


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
    category: float  # 1 same category, 0.5 another hazard category
    text: float
    house: int  # 1 house numbers agree, -1 they differ, 0 not both named
    total: float  # the model's probability that the report is about this issue


class Decision(NamedTuple):
    report_id: str
    issue: str  # an existing issue id, or "new:<n>" for the n-th new issue of the batch
    created: bool
    scores: Scores | None
    rule: str


def terms_for(category: str, kind: str) -> Terms:
    return MODEL.categories.get(category) or MODEL.kinds.get(kind) or MODEL.fallback


def params_for(
    category: str, kind: str, overrides: dict[str, tuple[float | None, float | None]]
) -> Params:
    """Where and how far back a report of this category looks for issues: the model's reach
    (or the tenant's radius, when smaller) and the category's look-back (or the tenant's)."""
    radius = terms_for(category, kind).radius_m
    lookback = CATEGORY_LOOKBACK_S.get(category) or KIND_LOOKBACK_S.get(kind) or FALLBACK_LOOKBACK_S
    custom_radius, custom_lookback = overrides.get(category, (None, None))
    radius = min(radius, custom_radius) if custom_radius else radius
    return Params(min(MAX_RADIUS_M, radius), custom_lookback or lookback)


def tokens(text: str) -> frozenset[str]:
    return frozenset(
        w.rstrip("s") if len(w) > 3 else w
        for w in _WORD.findall(text.lower())
        if w not in STOPWORDS
    )


def trigrams(text: str) -> frozenset[str]:
    s = " ".join(_WORD.findall(text.lower()))
    return frozenset(s[i : i + 3] for i in range(len(s) - 2))


class TextFeatures(NamedTuple):
    tokens: frozenset[str]
    trigrams: frozenset[str]
    houses: frozenset[int]


@functools.lru_cache(maxsize=4_096)
def text_features(text: str) -> TextFeatures:
    """A text's word set, trigram set and house numbers, computed once per text while it is
    recent (a claim compares each candidate's founding text with several reports; an entry
    takes about 20 kB, so the cache stays under about 100 MB per worker)."""
    return TextFeatures(tokens(text), trigrams(text), house_numbers(text))


def text_similarity(a: str, b: str) -> float:
    """The larger of word Jaccard and character-trigram Dice: paraphrases share trigrams
    ("pothole"/"potholes", "5th"/"fifth ave") even when few whole words match."""
    fa, fb = text_features(a), text_features(b)
    ta, tb = fa.tokens, fb.tokens
    words = len(ta & tb) / len(ta | tb) if ta and tb else 0.0
    ga, gb = fa.trigrams, fb.trigrams
    grams = 2 * len(ga & gb) / (len(ga) + len(gb)) if ga and gb else 0.0
    return max(words, grams)


def category_relation(a_cat: str, a_kind: str, b_cat: str, b_kind: str) -> float:
    if a_cat == b_cat:
        return 1.0
    # Across categories only hazards merge (a gas smell reported as "other" by one caller).
    return 0.5 if a_kind == b_kind == "hazard" else 0.0


def house_numbers(text: str) -> frozenset[int]:
    return frozenset(
        int(number)
        for number, word in _HOUSE.findall(text.lower())
        if word not in _NOT_A_STREET and not word.isdigit()
    )


def house_agreement(a: str, b: str) -> int:
    ha, hb = text_features(a).houses, text_features(b).houses
    if not ha or not hb:
        return 0
    return 1 if ha & hb else -1


def features(
    report: Report, cand: Candidate, d: float, gap_s: float, text: float, house: int
) -> tuple[tuple[float, ...], tuple[float, float, float]]:
    """The pair's features: the shared ones (in Model's field order, bias first) and the
    ones weighed by the report's category (distance, shrunk squared distance, log gap).
    bench/dedup_quality/fit.py fits the model on exactly these."""
    # An issue whose last report was split out keeps its place with no reports: it counts
    # as one, never as a centroid so certain that distance stops mattering.
    n = max(1, min(cand.report_count, COUNT_CAP))
    d100 = d / 100.0
    log_gap = math.log1p(gap_s / HOUR)
    shared = (
        1.0,
        1.0 if report.category != cand.category else 0.0,
        text,
        1.0 if house > 0 else 0.0,
        1.0 if house < 0 else 0.0,
        log_gap,
        math.log(n),
    )
    return shared, (d100, d100 * d100 * n / (n + 1.0), log_gap)


SHARED_FEATURES = (
    "bias",
    "cross_category",
    "text",
    "house_match",
    "house_conflict",
    "log_gap",
    "log_count",
)
_SHARED_WEIGHTS: tuple[float, ...] = tuple(float(getattr(MODEL, n)) for n in SHARED_FEATURES)


def logit(
    report: Report, cand: Candidate, d: float, gap_s: float, text: float, house: int
) -> float:
    """The model's log-odds for one pair."""
    shared, own = features(report, cand, d, gap_s, text, house)
    t = terms_for(report.category, report.kind)
    return (
        sum(w * x for w, x in zip(_SHARED_WEIGHTS, shared, strict=True))
        + t.distance * own[0]
        + t.distance_sq * own[1]
        + t.log_gap * own[2]
    )


def score(report: Report, cand: Candidate, params: Params) -> Scores | None:
    """Scores of one pair, or None when the pair is out of reach."""
    relation = category_relation(report.category, report.kind, cand.category, cand.kind)
    if relation == 0.0:
        return None
    d = geo.distance_m(report.lat, report.lon, cand.lat, cand.lon)
    if d > params.radius_m:
        return None
    gap = max(0.0, report.t - cand.last_t)
    if abs(report.t - cand.last_t) > params.lookback_s:
        return None
    text = text_similarity(report.text, cand.text)
    house = house_agreement(report.text, cand.text)
    z = logit(report, cand, d, gap, text, house)
    p = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))
    return Scores(round(d, 1), round(gap / HOUR, 2), relation, round(text, 3), house, round(p, 4))


def group_batch(
    reports: list[Report],
    candidates: list[Candidate],
    overrides: dict[str, tuple[float | None, float | None]],
    not_duplicate: set[tuple[str, str]],
    threshold: float = THRESHOLD,
) -> list[Decision]:
    """Decide every report of one tenant's batch, in time order."""
    # Candidates by (cell, category): a report reads only the categories it may join.
    by_cell: dict[tuple[int, str], list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_cell[(geo.cell_of(c.lat, c.lon), c.category)].append(c)
    hazards = {c.category for c in candidates if c.kind == "hazard"}
    hazards.update(r.category for r in reports if r.kind == "hazard")
    live: dict[str, Candidate] = {c.id: c for c in candidates}
    decisions: list[Decision] = []
    opened = 0
    for report in sorted(reports, key=lambda r: r.t):
        params = params_for(report.category, report.kind, overrides)
        joinable = hazards if report.kind == "hazard" else (report.category,)
        best: tuple[Scores, Candidate] | None = None
        seen: set[str] = set()
        for cell in geo.cells_within(report.lat, report.lon, params.radius_m):
            for stale in (c for category in joinable for c in by_cell.get((cell, category), ())):
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
                    f"{RULES_VERSION}: p {s.total:.2f} >= {threshold}",
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
        by_cell[(geo.cell_of(fresh.lat, fresh.lon), fresh.category)].append(fresh)
        decisions.append(
            Decision(
                report.id,
                issue,
                True,
                None,
                f"{RULES_VERSION}: no open issue at p >= {threshold}",
            )
        )
    return decisions


def priority(severity: int, report_count: int) -> int:
    """1 (low) to 5 (urgent): severity, raised by how many people reported it."""
    boost = 0 if report_count < 3 else 1 if report_count < 10 else 2
    return max(1, min(5, severity + boost))


# Candidates per report: the nearest open issues in reach. On the labelled set 4 already give
# the same decisions as no limit (bench/dedup_quality); in a dense city it keeps the work per
# report flat however many open issues lie within reach.
NEAREST = 5


class Probe(NamedTuple):
    """One (report, category, cell) lookup: the report's place, the box of its reach and its
    look-back (an issue last reported before `since` cannot take one of its places)."""

    report: int  # index of the report in the batch
    category: str
    cell: int
    lat: float
    lon: float
    box: geo.Box
    since: float  # Unix seconds


class Search(NamedTuple):
    """Where a batch looks for candidates: one probe per (report, joinable category, cell),
    and the coarse regions to lock."""

    probes: list[Probe]
    regions: set[int]


def search_for(
    reports: list[Report],
    overrides: dict[str, tuple[float | None, float | None]],
    hazard_categories: Iterable[str],
) -> Search:
    """A probe for every cell within each report's reach and every category it may join (its
    own; every hazard category for a hazard, since hazards merge across categories)."""
    hazards = sorted(set(hazard_categories))
    probes: list[Probe] = []
    regions: set[int] = set()
    for n, r in enumerate(reports):
        params = params_for(r.category, r.kind, overrides)
        joinable = sorted({*hazards, r.category}) if r.kind == "hazard" else [r.category]
        box = geo.bbox(r.lat, r.lon, params.radius_m)
        for cell in geo.cells_within(r.lat, r.lon, params.radius_m):
            probes.extend(
                Probe(n, category, cell, r.lat, r.lon, box, r.t - params.lookback_s)
                for category in joinable
            )
        regions.update(geo.region_keys(r.lat, r.lon, params.radius_m))
    return Search(probes, regions)


def search_radius(
    category: str, kind: str, overrides: dict[str, tuple[float | None, float | None]]
) -> float:
    return params_for(category, kind, overrides).radius_m
