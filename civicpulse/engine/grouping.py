"""Duplicate grouping: which open issue, if any, a new report belongs to.

Pure and batch-oriented (what the process pool runs). Reports of one tenant arrive in
submission order and are decided in that order; a new issue opened by one report is a
candidate for the next, so a burst about one problem ends up in one issue, and the same
stream gives the same issues however the work was split into claims.

Candidates are the open issues a report may join: those of its category and of the next
categories the classifier found likely (a report the classifier was unsure about is not
locked out of the issue it belongs to), within the report's look-back: the nearest few in its
reach, and every one at the report's own place (room, unit, space or asset) however far.
Places decide first: two different buildings, rooms, units or assets are never one
problem (for a problem likely building-wide, such as a lift, the wifi or the heating plant,
only the building and the asset count). Every other pair is scored by a logistic model
(civicpulse/data/grouping_model.json, fitted by bench/judgement/fit.py on labelled streams)
on the distance to the issue's centroid (per category, sharper the more reports it averages),
the time since its last report, the category agreement, the subtype (a pothole is not a
cracked sidewalk), the text similarity with the founding report, house numbers, the place
and the report count. The report joins the most probable issue at or above the threshold, or
opens a new one; then the best issue it did not join is kept with the feature that kept it
out ("why not"). Every decision carries its scores and the rule that decided it.
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import msgspec

from civicpulse.engine import geo, places, textmodel
from civicpulse.engine.places import NOWHERE, Where
from civicpulse.engine.textmodel import STOPWORDS

RULES_VERSION = "group-v3"
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
    # Facilities: outages and alarms are over within a day or two; rooms' faults last.
    "lifts": 7 * DAY,
    "network": 2 * DAY,
    "fire_safety": 2 * DAY,
    "cleaning": 2 * DAY,
    "security": 1 * DAY,
}
KIND_LOOKBACK_S: dict[str, float] = {"hazard": 3 * DAY, "utilities": 21 * DAY}
FALLBACK_LOOKBACK_S = 21 * DAY
MAX_RADIUS_M = 1000.0
# The report count feature saturates here, so a model's reach (radius_m) is a true bound.
COUNT_CAP = 20
# At one room or asset, pins further apart than this count as this far.
SAME_PLACE_DISTANCE_M = 50.0
# Reports in different rooms may still be about one problem when it is at least this likely
# to be building-wide (a boiler, not a heater); the model then weighs it.
WIDE_MIN = 0.2
# A report also looks for issues of its next categories when the classifier gave them at
# least this probability (at most ALTERNATIVES categories in all).
ALTERNATIVE_MIN = 0.15
ALTERNATIVES = 3
# Candidates per report: the nearest open issues in reach (and every one at its own place).
# In a dense city this keeps the work per report flat however many open issues lie in reach;
# inside a building, where every issue is "near", the facility template sets more (a
# tenant's `grouping.nearest` setting).
NEAREST = 5
FACILITY_NEAREST = 25

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
    # Beyond this no report can score the threshold, unless both are at one room or asset
    # (found by place key whatever the distance; bench/judgement/fit.py).
    radius_m: float
    # A local problem where only one of the two says which room or space, or neither does:
    # nothing for a street problem, a warning for a TV in a hotel.
    place_one_sided: float = 0.0
    place_unknown: float = 0.0
    # Subtypes weigh differently per category: two subtypes of litter at one spot (a full bin,
    # a dead animal) are two problems; a leak and a drain may be one.
    subtype_match: float = 0.0
    subtype_conflict: float = 0.0


# The pair features every category shares, in the model file's order.
SHARED_FEATURES = (
    "bias",
    "same_category",  # the report's and the issue's categories are the same
    "agree",  # P(same category) from both sides' classifier probabilities
    "text",  # text similarity with the issue's founding report
    "house_match",  # both name a house number and they agree
    "house_conflict",  # both name house numbers and none agree
    "subtype_match",  # P(same subtype), when both sides have subtypes (pothole, pothole)
    "subtype_conflict",  # 1 - P(same subtype), when both have them (pothole, sidewalk)
    "place_same",  # the same room, unit, space or asset (or building, for building-wide)
    "building_wide",  # how likely the problem is building-wide (the likelier side)
    "rooms_differ",  # different rooms or units, allowed only as it may be building-wide
    "floor_conflict",  # a local problem: different floors named
    "space_conflict",  # a local problem: different shared spaces named
    "log_gap",  # log(1 + hours since the issue's last report)
    "log_count",  # log(min(report_count, COUNT_CAP))
)


class Model(msgspec.Struct, frozen=True):
    """Logistic pair model: P(report is about the candidate issue's problem)."""

    version: str
    threshold: float
    shared: dict[str, float]
    # Mean feature values of true pairs: "why not" names the feature that most separates a
    # pair from a typical duplicate.
    reference: dict[str, float]
    categories: dict[str, Terms]
    kinds: dict[str, Terms]  # for tenant categories the model has not seen
    fallback: Terms
    trained: str  # how the coefficients were fitted (command, data, seeds)


MODEL_FILE = Path(__file__).resolve().parent.parent / "data" / "grouping_model.json"
MODEL: Model = msgspec.json.decode(MODEL_FILE.read_bytes(), type=Model)
THRESHOLD = MODEL.threshold
_SHARED_WEIGHTS: tuple[float, ...] = tuple(MODEL.shared.get(n, 0.0) for n in SHARED_FEATURES)


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
    subtype: str | None = None
    scope: str = "local"
    place: Where = NOWHERE
    # The classifier's most likely categories and their probabilities, best first.
    alternatives: tuple[tuple[str, float], ...] = ()
    # The classifier's subtypes of the category and their probabilities, best first.
    subtypes: tuple[tuple[str, float], ...] = ()
    # How likely the problem is building-wide (its category's scope, or its subtypes'):
    # "freezing in 412" may be one room's heater or the whole building's boiler.
    wide: float = 0.0
    # The normalised address (engine.addresses); a report without coordinates (lat and lon
    # NaN) is grouped by it.
    address: str | None = None


class Candidate(NamedTuple):
    id: str
    lat: float
    lon: float
    category: str
    kind: str
    text: str
    last_t: float
    report_count: int
    subtype: str | None = None
    scope: str = "local"
    place: Where = NOWHERE
    alternatives: tuple[tuple[str, float], ...] = ()
    subtypes: tuple[tuple[str, float], ...] = ()
    wide: float = 0.0
    address: str | None = None  # its founding report's normalised address
    # How many of its reports have coordinates (its point is their mean); None: all of them.
    # An issue whose reports all came by address only has lat and lon NaN.
    located: int | None = None


def located(lat: float) -> bool:
    """Has a point (coordinates unknown are NaN in the engine, NULL in the database)."""
    return not math.isnan(lat)


class Scores(NamedTuple):
    distance_m: float
    gap_hours: float
    category: float  # P(same category) from both sides' classifier probabilities
    text: float
    house: int  # 1 house numbers agree, -1 they differ, 0 not both named
    subtype: float | None  # P(same subtype) from both sides' subtypes; None: not both known
    place: int  # 1 same place, -1 different places, 0 unknown
    total: float  # the model's probability that the report is about this issue


class WhyNot(NamedTuple):
    """The best issue a report did not join, and why."""

    issue: str
    scores: Scores
    reason: str


class Decision(NamedTuple):
    report_id: str
    issue: str  # an existing issue id, or "new:<n>" for the n-th new issue of the batch
    created: bool
    scores: Scores | None
    rule: str
    why_not: WhyNot | None = None
    after: Candidate | None = None  # the issue as it stands after this report


def terms_for(category: str, kind: str) -> Terms:
    return MODEL.categories.get(category) or MODEL.kinds.get(kind) or MODEL.fallback


def own_weights(t: Terms) -> tuple[float, ...]:
    return (
        t.distance,
        t.distance_sq,
        t.log_gap,
        t.place_one_sided,
        t.place_unknown,
        t.subtype_match,
        t.subtype_conflict,
    )


def lookback_for(category: str, kind: str) -> float:
    return CATEGORY_LOOKBACK_S.get(category) or KIND_LOOKBACK_S.get(kind) or FALLBACK_LOOKBACK_S


def params_for(
    category: str, kind: str, overrides: dict[str, tuple[float | None, float | None]]
) -> Params:
    """Where and how far back a report of this category looks for issues: the model's reach
    (or the tenant's radius, when smaller) and the category's look-back (or the tenant's)."""
    radius = terms_for(category, kind).radius_m
    custom_radius, custom_lookback = overrides.get(category, (None, None))
    radius = min(radius, custom_radius) if custom_radius else radius
    return Params(min(MAX_RADIUS_M, radius), custom_lookback or lookback_for(category, kind))


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


# Texts up to this long are cached: most reports are (a sentence or two), and an entry's size
# grows with its text (about 20 kB at 200 characters, 45 kB at 500), so the cache is bounded
# in bytes too, about 180 MB per worker at worst, however long the texts clients send.
CACHED_TEXT_CHARS = 500


def text_features(text: str) -> TextFeatures:
    """A text's word set, trigram set and house numbers, computed once per text while it is
    recent (a claim compares each candidate's founding text with several reports)."""
    if len(text) > CACHED_TEXT_CHARS:
        return _text_features(text)
    return _cached_text_features(text)


def _text_features(text: str) -> TextFeatures:
    return TextFeatures(tokens(text), trigrams(text), house_numbers(text))


_cached_text_features = functools.lru_cache(maxsize=4_096)(_text_features)


def text_similarity(a: str, b: str) -> float:
    """The larger of word Jaccard and character-trigram Dice: paraphrases share trigrams
    ("pothole"/"potholes", "5th"/"fifth ave") even when few whole words match."""
    fa, fb = text_features(a), text_features(b)
    ta, tb = fa.tokens, fb.tokens
    words = len(ta & tb) / len(ta | tb) if ta and tb else 0.0
    ga, gb = fa.trigrams, fb.trigrams
    grams = 2 * len(ga & gb) / (len(ga) + len(gb)) if ga and gb else 0.0
    return max(words, grams)


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


def mix(category: str, alternatives: Sequence[tuple[str, float]]) -> dict[str, float]:
    """A side's category probabilities: the classifier's alternatives, or certainty."""
    return dict(alternatives) if alternatives else {category: 1.0}


def agreement(report: Report, cand: Candidate) -> float:
    """P(both are of the same category), from each side's classifier probabilities."""
    a, b = mix(report.category, report.alternatives), mix(cand.category, cand.alternatives)
    return sum(p * b.get(c, 0.0) for c, p in a.items())


def subtype_agreement(report: Report, cand: Candidate) -> float | None:
    """P(same subtype) from both sides' subtype probabilities (their best subtypes alone when
    the mix is not known); None when one side has no subtype or the categories differ."""
    if report.category != cand.category:
        return None
    a, b = _subtype_mix(report.subtypes, report.subtype), _subtype_mix(cand.subtypes, cand.subtype)
    if not a or not b:
        return None
    other = dict(b)
    return min(1.0, sum(p * other.get(s, 0.0) for s, p in a))


def _subtype_mix(
    mix: tuple[tuple[str, float], ...], best: str | None
) -> tuple[tuple[str, float], ...]:
    if mix:
        return mix
    return ((best, 1.0),) if best else ()


def report_scope(category: str, category_scope: str, subtype: str | None) -> str:
    """A report's scope: its subtype's when the vocabulary gives it one ("no heat in the whole
    building" under a local category), else its category's."""
    return textmodel.subtype_scopes().get((category, subtype or ""), category_scope)


def profile(
    reports: Sequence[Report], issue_id: str, category: str | None = None
) -> Candidate | None:
    """An issue as its reports make it (after a staff merge or split moved reports between
    issues): founded by its first report of the issue's `category` (the first at all when
    none is), absorbing the rest in order; None without reports."""
    founder = next((r for r in reports if r.category == category), reports[0] if reports else None)
    if founder is None:
        return None
    out = found(founder, issue_id)
    for r in reports:
        if r is not founder:
            out = absorb(out, r)
    return out


def building_likelihood(
    category: str,
    category_scope: str,
    subtypes: Sequence[tuple[str, float]],
    subtype: str | None = None,
) -> float:
    """How likely a report (or issue) is about a building-wide problem: 1 for a building-wide
    category, else the probability of its category's building-wide subtypes."""
    if category_scope == "building":
        return 1.0
    scopes = textmodel.subtype_scopes()
    mix = subtypes or (((subtype, 1.0),) if subtype else ())
    return min(1.0, sum(p for s, p in mix if scopes.get((category, s)) == "building"))


def joinable(report: Report) -> list[str]:
    """The categories of issues this report may join: its own, and the next ones the
    classifier found likely (a gas smell it could not tell from a fire alarm)."""
    out = [report.category]
    out += [c for c, p in report.alternatives if p >= ALTERNATIVE_MIN and c not in out]
    return out[:ALTERNATIVES]


def registered_match(a: Where, b: Where) -> bool:
    """Both at the same registered room, unit, space or asset (a code, unique in the tenant;
    "apt 4B" said in text is not: every building has one)."""
    return any(x and x == y and not x.startswith("~") for x, y in
               ((a.asset, b.asset), (a.unit, b.unit), (a.space, b.space)))  # fmt: skip


def place_keys(where: Where) -> tuple[str, ...]:
    """Keys an issue at this place is found by (most specific first)."""
    return tuple(k for k in (where.asset, where.unit, where.space) if k)


def issue_place_key(where: Where, scope: str) -> str | None:
    """The key an issue is indexed by: its asset, room, unit or space, or for a
    building-wide problem its building."""
    if scope == "building":
        return where.asset or where.building
    return where.asset or where.unit or where.space


def report_place_keys(where: Where) -> tuple[str, ...]:
    """Keys a report looks issues up by: its own place and its building."""
    return tuple(k for k in (where.asset, where.unit, where.space, where.building) if k)


# The features weighed per category, in Terms' order.
OWN_FEATURES = (
    "distance",
    "distance_sq",
    "log_gap",
    "place_one_sided",
    "place_unknown",
    "subtype_match",
    "subtype_conflict",
)


class Pair(NamedTuple):
    shared: tuple[float, ...]
    own: tuple[float, ...]  # OWN_FEATURES
    relation: places.Relation
    scores: Scores


def pair(report: Report, cand: Candidate, d: float) -> Pair:
    """Features and scores of one (report, issue) pair."""
    wide = max(report.wide, cand.wide, 1.0 if "building" in (report.scope, cand.scope) else 0.0)
    scope = "building" if wide >= WIDE_MIN else "local"
    relation = places.compare(report.place, cand.place, scope)
    rooms_differ = (
        scope == "building" and places.compare(report.place, cand.place, "local").value < 0
    )
    if relation.value > 0 and registered_match(report.place, cand.place):
        # At the same registered room or asset the place is the location: a pin further off
        # is the phone's indoor position (tens of metres, or stale), not the problem's.
        d = min(d, SAME_PLACE_DISTANCE_M)
    gap_s = max(0.0, report.t - cand.last_t)
    text = text_similarity(report.text, cand.text)
    house = house_agreement(report.text, cand.text)
    subtype = subtype_agreement(report, cand)
    known = (bool(place_keys(report.place)), bool(place_keys(cand.place)))
    # An issue whose last report was split out keeps its place with no reports: it counts
    # as one, never as a centroid so certain that distance stops mattering.
    n = max(1, min(cand.report_count, COUNT_CAP))
    d100 = d / 100.0
    log_gap = math.log1p(gap_s / HOUR)
    agree = agreement(report, cand)
    shared = (
        1.0,
        1.0 if report.category == cand.category else 0.0,
        agree,
        text,
        1.0 if house > 0 else 0.0,
        1.0 if house < 0 else 0.0,
        0.0 if subtype is None else subtype,
        0.0 if subtype is None else 1.0 - subtype,
        1.0 if relation.value > 0 else 0.0,
        wide,
        1.0 if rooms_differ else 0.0,
        1.0 if relation.floor < 0 else 0.0,
        1.0 if relation.space < 0 else 0.0,
        log_gap,
        math.log(n),
    )
    own = (
        d100,
        d100 * d100 * n / (n + 1.0),
        log_gap,
        1.0 if scope == "local" and known[0] != known[1] else 0.0,
        1.0 if scope == "local" and not any(known) else 0.0,
        0.0 if subtype is None else subtype,
        0.0 if subtype is None else 1.0 - subtype,
    )
    t = terms_for(report.category, report.kind)
    z = sum(w * x for w, x in zip(_SHARED_WEIGHTS, shared, strict=True)) + sum(
        w * x for w, x in zip(own_weights(t), own, strict=True)
    )
    p = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))
    scores = Scores(
        round(d, 1),
        round(gap_s / HOUR, 2),
        round(agree, 3),
        round(text, 3),
        house,
        None if subtype is None else round(subtype, 3),
        relation.value,
        round(p, 4),
    )
    return Pair(shared, own, relation, scores)


_REASONS = {
    "same_category": "filed under another category",
    "agree": "another category",
    "text": "different wording",
    "house_match": "no house number in common",
    "house_conflict": "different house numbers",
    "subtype_match": "no subtype in common",
    "subtype_conflict": "a different problem (subtype)",
    "place_same": "not the same place",
    "building_wide": "not a building-wide problem",
    "rooms_differ": "reported from different rooms",
    "place_one_sided": "only one says which room",
    "place_unknown": "neither says which room",
    "floor_conflict": "different floors",
    "space_conflict": "different spaces",
    "log_gap": "too long since its last report",
    "log_count": "few reports",
}


def deciding_feature(report: Report, p: Pair) -> str:
    """What most separates a pair from a typical duplicate (the model's reference pair)."""
    if p.relation.value < 0 and p.relation.reason:
        return p.relation.reason
    t = terms_for(report.category, report.kind)
    gaps: dict[str, float] = {}
    for name, w, x in zip(SHARED_FEATURES, _SHARED_WEIGHTS, p.shared, strict=True):
        if name != "bias":
            gaps[name] = w * (x - MODEL.reference.get(name, 0.0))
    own = {
        name: w * (x - MODEL.reference.get(name, 0.0))
        for name, w, x in zip(OWN_FEATURES, own_weights(t), p.own, strict=True)
    }
    gaps["distance"] = own.pop("distance") + own.pop("distance_sq")
    for name, gap in own.items():
        gaps[name] = gaps.get(name, 0.0) + gap
    name = min(gaps, key=lambda k: gaps[k])
    if name == "distance":
        return f"{p.scores.distance_m:.0f} m from the issue"
    if name == "log_gap":
        return f"{p.scores.gap_hours:.0f} h since its last report"
    if name == "text":
        return f"different wording (similarity {p.scores.text:.2f})"
    return _REASONS.get(name, name)


def group_batch(
    reports: list[Report],
    candidates: list[Candidate],
    overrides: dict[str, tuple[float | None, float | None]],
    not_duplicate: set[tuple[str, str]],
    threshold: float = THRESHOLD,
    nearest: int = NEAREST,
) -> list[Decision]:
    """Decide every report of one tenant's batch, in the order given (submission order)."""
    # Candidates by (category, cell), so a report reads only the cells in its reach. An issue
    # whose centroid moves to another cell is listed there too (its live place decides).
    by_cell: dict[tuple[str, int], list[str]] = defaultdict(list)
    # And by place key: a report finds the issue at its own room however far its pin is.
    by_key: dict[str, list[str]] = defaultdict(list)
    live: dict[str, Candidate] = {}

    # And by normalised address: a report without coordinates finds the issues at its
    # address, and one with coordinates those at its address that have none.
    by_address: dict[str, list[str]] = defaultdict(list)

    def add(c: Candidate) -> None:
        live[c.id] = c
        if located(c.lat):
            by_cell[(c.category, geo.cell_of(c.lat, c.lon))].append(c.id)
        key = issue_place_key(c.place, c.scope)
        if key:
            by_key[key].append(c.id)
        if c.address:
            by_address[c.address].append(c.id)

    for c in candidates:
        add(c)
    decisions: list[Decision] = []
    opened = 0
    for report in reports:
        params = params_for(report.category, report.kind, overrides)
        categories = joinable(report)
        in_reach: list[tuple[float, str]] = []
        seen: set[str] = set()
        here = located(report.lat)
        for cell in geo.cells_within(report.lat, report.lon, params.radius_m) if here else ():
            for category in categories:
                for cid in by_cell.get((category, cell), ()):
                    if cid in seen:
                        continue
                    seen.add(cid)
                    cand = live[cid]
                    if abs(report.t - cand.last_t) > params.lookback_s:
                        continue
                    d = geo.distance_m(report.lat, report.lon, cand.lat, cand.lon)
                    if d <= params.radius_m:
                        in_reach.append((d, cid))
        in_reach.sort()
        considered = in_reach[:nearest]
        chosen = {cid for _, cid in considered}
        for key in report_place_keys(report.place):
            for cid in by_key.get(key, ()):
                cand = live[cid]
                if (
                    cid not in chosen
                    and cand.category in categories
                    and issue_place_key(cand.place, cand.scope) == key
                    and abs(report.t - cand.last_t) <= params.lookback_s
                ):
                    d = geo.distance_m(report.lat, report.lon, cand.lat, cand.lon)
                    if key.startswith("~") and not d <= params.radius_m:
                        continue  # a place said in text is only this one nearby
                    chosen.add(cid)
                    considered.append((d, cid))
        for cid in by_address.get(report.address or "", ()):
            cand = live[cid]
            if (
                cid not in chosen
                and (not here or not located(cand.lat))
                and cand.category in categories
                and cand.address == report.address
                and abs(report.t - cand.last_t) <= params.lookback_s
            ):
                chosen.add(cid)
                considered.append((0.0, cid))  # the same address: as near as can be said
        best: tuple[Pair, Candidate] | None = None
        runner_up: tuple[Pair, Candidate] | None = None
        for d, cid in considered:
            cand = live[cid]
            if (report.id, cand.id) in not_duplicate:
                continue
            p = pair(report, cand, d)
            eligible = p.relation.value >= 0 and p.scores.total >= threshold
            if eligible and (best is None or p.scores.total > best[0].scores.total):
                best = (p, cand)
            elif not eligible and (runner_up is None or p.scores.total > runner_up[0].scores.total):
                runner_up = (p, cand)
        if best is not None:
            p, cand = best
            updated = absorb(cand, report)
            if located(updated.lat) and (
                not located(cand.lat)
                or geo.cell_of(updated.lat, updated.lon) != geo.cell_of(cand.lat, cand.lon)
            ):
                by_cell[(cand.category, geo.cell_of(updated.lat, updated.lon))].append(cand.id)
            moved_to = issue_place_key(updated.place, updated.scope)
            if moved_to and moved_to != issue_place_key(cand.place, cand.scope):
                by_key[moved_to].append(cand.id)
            live[cand.id] = updated
            decisions.append(
                Decision(
                    report.id,
                    cand.id,
                    False,
                    p.scores,
                    f"{RULES_VERSION}: p {p.scores.total:.2f} >= {threshold}",
                    None,
                    updated,
                )
            )
            continue
        issue = f"new:{opened}"
        opened += 1
        fresh = found(report, issue)
        add(fresh)
        why = None
        if runner_up is not None:
            p, cand = runner_up
            why = WhyNot(cand.id, p.scores, deciding_feature(report, p))
        decisions.append(
            Decision(
                report.id,
                issue,
                True,
                None,
                f"{RULES_VERSION}: no open issue at p >= {threshold}",
                why,
                fresh,
            )
        )
    return decisions


def found(report: Report, issue_id: str) -> Candidate:
    """A new issue as its founding report makes it (a building-wide one at the building, not
    at its first reporter's room)."""
    where = places.building_wide(report.place) if report.scope == "building" else report.place
    return Candidate(
        issue_id, report.lat, report.lon, report.category, report.kind, report.text, report.t,
        1, report.subtype, report.scope, where, report.alternatives, report.subtypes,
        report.wide, report.address, 1 if located(report.lat) else 0,
    )  # fmt: skip


def _centroid(cand: Candidate, report: Report) -> tuple[float, float, int | None]:
    """The issue's point after a report joins: the running mean of the reports that have
    one (add_to_issue_aggregates folds them in the same way)."""
    if not located(report.lat):
        return cand.lat, cand.lon, cand.located
    if cand.located is None:  # every report so far has a point
        n = cand.report_count + 1
        return cand.lat + (report.lat - cand.lat) / n, cand.lon + (report.lon - cand.lon) / n, None
    if not located(cand.lat) or cand.located == 0:
        return report.lat, report.lon, cand.located + 1
    n = cand.located + 1
    return cand.lat + (report.lat - cand.lat) / n, cand.lon + (report.lon - cand.lon) / n, n


def absorb(cand: Candidate, report: Report) -> Candidate:
    """The issue after a report joins it: centroid, last report and count as the database
    folds them in (add_to_issue_aggregates), its place completed by what the report says, and
    its category and subtype probabilities averaged over its reports, so a founding report the
    classifier misread ("freezing in 412": a heater?) is outvoted as reports come in ("no heat
    anywhere": the boiler)."""
    n = cand.report_count + 1
    where = places.merge(cand.place, report.place)
    if cand.scope == "building":
        where = places.building_wide(where)
    same = report.category == cand.category
    lat, lon, points = _centroid(cand, report)
    return cand._replace(
        lat=lat,
        lon=lon,
        located=points,
        last_t=max(cand.last_t, report.t),
        report_count=n,
        place=where,
        alternatives=_average(
            mix(cand.category, cand.alternatives), mix(report.category, report.alternatives), n
        ),
        subtypes=_average(cand.subtypes, report.subtypes, n) if same else cand.subtypes,
        wide=cand.wide + (report.wide - cand.wide) / n if same else cand.wide,
    )


def _average(
    old: Sequence[tuple[str, float]] | dict[str, float],
    new: Sequence[tuple[str, float]] | dict[str, float],
    n: int,
) -> tuple[tuple[str, float], ...]:
    """The running mean of probability mixes: n-1 parts the old one, one part the new."""
    if not new:
        return tuple(old.items()) if isinstance(old, dict) else tuple(old)
    a = dict(old)
    b = dict(new)
    if not a:
        return tuple(b.items())
    merged = {
        code: ((n - 1) * a.get(code, 0.0) + b.get(code, 0.0)) / n for code in a.keys() | b.keys()
    }
    ranked = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple((code, round(p, 4)) for code, p in ranked if p >= 0.01)[:5]


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


class PlaceProbe(NamedTuple):
    """One (report, place key) lookup: every open issue at the report's own place, in its
    joinable categories and look-back, whatever the nearest few are. A registered place is
    found however far the report's pin (a phone's position indoors is only good to tens of
    metres, or stale); a place said in text ("~4b") only within the report's reach, since
    every building has an apartment 4B."""

    key: str
    categories: tuple[str, ...]
    box: geo.Box
    since: float


class AddressProbe(NamedTuple):
    """One (report, normalised address) lookup: the open issues at the address, in the
    report's joinable categories and look-back; for a report with coordinates only those
    without (the rest it finds by distance)."""

    key: str
    categories: tuple[str, ...]
    since: float
    unlocated_only: bool


class Search(NamedTuple):
    """Where a batch looks for candidates: one probe per (report, joinable category, cell),
    one per (report, place key), one per report's address, and the coarse regions to lock."""

    probes: list[Probe]
    regions: set[int]
    place_probes: list[PlaceProbe]
    address_probes: tuple[AddressProbe, ...] = ()


def address_region(address: str) -> int:
    """The lock key of an address: negative, so it never equals a geo region's. Every report
    with an address takes it, located or not, so two processes never open two issues at one
    address either."""
    return -1 - (zlib.crc32(address.encode()) & 0x7FFFFFFF)


def search_for(
    reports: list[Report], overrides: dict[str, tuple[float | None, float | None]]
) -> Search:
    """A probe for every cell within each report's reach and every category it may join, and
    one for each of its place keys."""
    probes: list[Probe] = []
    place_probes: list[PlaceProbe] = []
    address_probes: list[AddressProbe] = []
    regions: set[int] = set()
    for n, r in enumerate(reports):
        params = params_for(r.category, r.kind, overrides)
        categories = sorted(set(joinable(r)))
        since = r.t - params.lookback_s
        here = located(r.lat)
        if here:
            box = geo.bbox(r.lat, r.lon, params.radius_m)
            for cell in geo.cells_within(r.lat, r.lon, params.radius_m):
                probes.extend(
                    Probe(n, category, cell, r.lat, r.lon, box, since) for category in categories
                )
            regions.update(geo.region_keys(r.lat, r.lon, params.radius_m))
        else:
            box = (math.nan, math.nan, math.nan, math.nan)
        place_probes.extend(
            PlaceProbe(key, tuple(categories), box, since)
            for key in report_place_keys(r.place)
            if here or not key.startswith("~")  # a place said in text needs a pin to be near
        )
        if r.address:
            address_probes.append(AddressProbe(r.address, tuple(categories), since, here))
            regions.add(address_region(r.address))
    return Search(probes, regions, place_probes, tuple(address_probes))


def search_radius(
    category: str, kind: str, overrides: dict[str, tuple[float | None, float | None]]
) -> float:
    return params_for(category, kind, overrides).radius_m
