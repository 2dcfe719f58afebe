"""Fit the grouping model (civicpulse/data/grouping_model.json) on the tuning streams.

    .venv/bin/python -m bench.judgement.fit --threshold 0.7   # under a minute
    .venv/bin/python -m bench.judgement.fit --curve           # the shipped model's curve

Only the tuning split is used: the Los Angeles city stream, the hotel and the resort (each
with its places registered and not), worded by families a and b, drawn with the fitting
seeds; the threshold was chosen from `--curve` on another tuning seed. Family c, San
Francisco, the campus and the office are never read here (`run.py` scores them).

Training pairs come from replaying each stream in submission order with the *true*
grouping: every report, as the service classifies and places it, is paired with every open
problem it could be compared with at that moment (an issue of a category it may join, within
500 m and the category's look-back, as the database would hold it: centroid, last report,
count, the founding report's text, category mix, subtype and place), labelled 1 for its own
problem. Pairs the place rule already separates (different rooms) never reach the model.
The features are exactly `grouping.pair`'s; the model is an L2-regularised logistic
regression (Newton's method) with shared coefficients and a distance/time block per category;
kinds (and categories the model has not seen) get the mean block of their kind.

Each category's reach (`radius_m`) is the first distance at which even the best case (every
helpful feature at its best but the same place, any report count up to COUNT_CAP) falls under
the threshold; a report at the same room or space is found by its place key instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import msgspec
import numpy as np

from bench.judgement import metrics, replay
from bench.judgement.streams import (
    CityConfig,
    FacilityConfig,
    Item,
    Stream,
    Truth,
    city_stream,
    facility_stream,
)
from civicpulse.engine import geo, grouping
from civicpulse.engine.grouping import Candidate, Model, Report, Terms

FIT_SEEDS = (101, 102, 104, 105, 106)
THRESHOLD_SEED = 103
FAMILIES = ("a", "b")
FIT_REACH_M = 500.0  # pairs further apart than this are never close calls
STEP_M = 5.0


EARLIER_SET_SEED = 20240612  # bench/dedup_quality's own tuning seed (it scores 20240611)


def earlier_set(seed: int = EARLIER_SET_SEED, fraction: float = 0.5) -> Stream:
    """The earlier labelled set (bench/dedup_quality, another generator: dense hard negatives,
    same category and street 20-150 m apart) as a city stream, drawn with its tuning seed."""
    from bench.dedup_quality import dataset as ds_mod

    data = ds_mod.generate(ds_mod.Config(seed=seed, la_fraction=fraction, sf_fraction=fraction))
    items = [
        Item(
            r.id,
            r.text,
            r.lat,
            r.lon,
            r.t,
            None,
            "earlier",
            0,
            Truth(r.problem, r.category, r.category, "", "local"),
        )
        for r in sorted(data.reports, key=lambda r: (r.t, r.id))
    ]
    return Stream("earlier-set", "city", "city", items)


def tuning_streams(seed: int) -> list[Stream]:
    """The tuning split: LA, the hotel and the resort, registered and not, families a and b."""
    return [
        city_stream(CityConfig("la", FAMILIES, seed)),
        facility_stream(FacilityConfig("hotel", FAMILIES, seed)),
        facility_stream(FacilityConfig("hotel", FAMILIES, seed + 1000, registered=False)),
        facility_stream(FacilityConfig("resort", FAMILIES, seed)),
        facility_stream(FacilityConfig("resort", FAMILIES, seed + 1000, registered=False)),
    ]


class Pairs:
    def __init__(self) -> None:
        self.shared: list[tuple[float, ...]] = []
        self.own: list[tuple[str, tuple[float, ...]]] = []
        self.labels: list[float] = []


def training_pairs(stream: Stream, out: Pairs) -> None:
    """Add every comparable (report, true open problem) pair of the stream to `out`."""
    tenant = replay.Tenant.of(stream)
    open_: dict[str, Candidate] = {}
    for item in stream.items:
        r = replay.as_report(tenant, item)
        params = grouping.params_for(r.category, r.kind, {})
        categories = set(grouping.joinable(r))
        for problem, cand in open_.items():
            if cand.category not in categories or abs(r.t - cand.last_t) > params.lookback_s:
                continue
            d = geo.distance_m(r.lat, r.lon, cand.lat, cand.lon)
            if d > FIT_REACH_M:
                continue
            p = grouping.pair(r, cand, d)
            if p.relation.value < 0:
                continue
            out.shared.append(p.shared)
            out.own.append((r.category, p.own))
            out.labels.append(1.0 if problem == item.truth.problem else 0.0)
        open_[item.truth.problem] = _grow(open_.get(item.truth.problem), r)


def _grow(cand: Candidate | None, r: Report) -> Candidate:
    """The true problem's issue after this report, as the engine would hold it."""
    return grouping.found(r, r.id) if cand is None else grouping.absorb(cand, r)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 50) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method."""
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -50, 50)))
        grad = x.T @ (p - y) + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return w


def reach(shared_w: dict[str, float], terms: Terms, threshold: float, lookback_s: float) -> float:
    """The first distance (in STEP_M steps) at which the best case falls under the
    threshold: every helpful shared feature at its best, the best time gap within the
    look-back, any report count up to COUNT_CAP."""
    cut = math.log(threshold / (1 - threshold))
    # place_same is left out: a report finds the issues at its own place by place key, and
    # pins inside one building lie tens of metres apart, well within any reach.
    binary = [
        n
        for n in grouping.SHARED_FEATURES
        if n not in ("bias", "log_gap", "log_count", "place_same", "rooms_differ")
    ]
    base = shared_w["bias"] + sum(max(0.0, shared_w[n]) for n in binary)
    gap_w = shared_w["log_gap"] + terms.log_gap
    base += max(0.0, gap_w * math.log1p(lookback_s / 3600.0))
    base += max(0.0, terms.place_one_sided, terms.place_unknown)
    base += max(0.0, terms.subtype_match, terms.subtype_conflict)

    def best(d: float) -> float:
        d100 = d / 100.0
        return max(
            base
            + shared_w["log_count"] * math.log(n)
            + terms.distance * d100
            + terms.distance_sq * d100 * d100 * n / (n + 1.0)
            for n in range(1, grouping.COUNT_CAP + 1)
        )

    d = STEP_M
    while d < grouping.MAX_RADIUS_M and best(d) >= cut:
        d += STEP_M
    return d


def curve(streams: Iterable[Stream], thresholds: Iterable[float]) -> None:
    """Pairwise precision, recall and F1 of the engine at each threshold, per stream."""
    streams = list(streams)
    tenants = [replay.Tenant.of(s) for s in streams]
    reports = [
        [replay.as_report(t, i) for i in s.items] for s, t in zip(streams, tenants, strict=True)
    ]
    for th in thresholds:
        row = []
        for s, t, rs in zip(streams, tenants, reports, strict=True):
            sc = metrics.grouping_scores(
                s.items, replay.run_engine(s, t, threshold=th, reports=rs).issue_of
            )
            row.append(
                f"{s.name} P {sc['pair_precision']:.3f} R {sc['pair_recall']:.3f} "
                f"F1 {sc['pair_f1']:.3f}"
            )
        print(f"p >= {th:.2f}: " + " | ".join(row))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.judgement.fit",
        description="Fit the grouping model on the tuning streams (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--threshold", type=float, default=0.5, help="attach probability")
    ap.add_argument("--l2", type=float, default=1.0, help="regularisation strength")
    ap.add_argument("--out", type=Path, default=grouping.MODEL_FILE, help="model file")
    ap.add_argument(
        "--earlier-set",
        action="store_true",
        help="also fit on the earlier labelled set's tuning seed (bench/dedup_quality)",
    )
    ap.add_argument(
        "--curve",
        action="store_true",
        help="fit nothing: print the shipped model's threshold curve on the threshold seed",
    )
    args = ap.parse_args(argv)
    if args.curve:
        curve(tuning_streams(THRESHOLD_SEED), (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))
        return 0

    pairs = Pairs()
    n_reports = 0
    streams = [s for seed in FIT_SEEDS for s in tuning_streams(seed)]
    if args.earlier_set:
        streams.append(earlier_set())
    for stream in streams:
        training_pairs(stream, pairs)
        n_reports += len(stream.items)
    categories = sorted({c for c, _ in pairs.own})
    width = len(grouping.SHARED_FEATURES)
    k = len(grouping.OWN_FEATURES)
    x = np.zeros((len(pairs.labels), width + k * len(categories)))
    x[:, :width] = np.array(pairs.shared)
    col = {c: width + k * i for i, c in enumerate(categories)}
    for row, (category, values) in enumerate(pairs.own):
        x[row, col[category] : col[category] + k] = values
    y = np.array(pairs.labels)
    w = fit_logistic(x, y, args.l2)
    p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -50, 50)))
    log_loss = float(-np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12)))

    shared_w = {name: float(w[i]) for i, name in enumerate(grouping.SHARED_FEATURES)}
    blocks = {c: tuple(float(v) for v in w[col[c] : col[c] + k]) for c in categories}
    positives = x[y == 1]
    reference = {
        name: round(float(positives[:, i].mean()), 4)
        for i, name in enumerate(grouping.SHARED_FEATURES)
        if name != "bias"
    }
    own_pos = np.array([o for (c, o), lab in zip(pairs.own, pairs.labels, strict=True) if lab])
    for i, name in enumerate(grouping.OWN_FEATURES):
        reference[name if name != "log_gap" else "log_gap"] = round(float(own_pos[:, i].mean()), 4)

    kinds: dict[str, str] = {}
    for template in replay.TEMPLATES:
        kinds.update({c.code: c.kind for c in replay.taxonomy(template).values()})

    def terms(code: str, block: tuple[float, ...]) -> Terms:
        b = [round(v, 4) for v in block]
        t = Terms(b[0], b[1], b[2], 0.0, *b[3:])
        lookback = grouping.lookback_for(code, kinds.get(code, ""))
        return msgspec.structs.replace(t, radius_m=reach(shared_w, t, args.threshold, lookback))

    def mean(bs: list[tuple[float, ...]]) -> tuple[float, ...]:
        return tuple(sum(b[i] for b in bs) / len(bs) for i in range(k))

    by_kind: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    for c in categories:
        by_kind[kinds.get(c, "other")].append(blocks[c])
    model = Model(
        version=grouping.RULES_VERSION,
        threshold=args.threshold,
        shared={name: round(v, 4) for name, v in shared_w.items()},
        reference=reference,
        categories={c: terms(c, blocks[c]) for c in categories},
        kinds={k: terms("", mean(bs)) for k, bs in sorted(by_kind.items())},
        fallback=terms("", mean(list(blocks.values()))),
        trained=(
            f"python -m bench.judgement.fit --threshold {args.threshold} --l2 {args.l2} on "
            f"{dt.date.today().isoformat()}: {len(pairs.labels)} pairs "
            f"({int(y.sum())} same problem) from {n_reports} reports of the tuning streams "
            f"(seeds {', '.join(map(str, FIT_SEEDS))}; LA, the hotel and the resort, families "
            f"{' and '.join(FAMILIES)}); log loss {log_loss:.4f}"
        ),
    )
    args.out.write_bytes(msgspec.json.format(msgspec.json.encode(model), indent=2) + b"\n")
    print(model.trained)
    print("shared:", {k: round(v, 3) for k, v in shared_w.items()})
    for c in categories:
        t = model.categories[c]
        print(
            f"  {c:18} d {t.distance:7.3f} d2 {t.distance_sq:7.3f} gap {t.log_gap:7.3f}"
            f" one-sided {t.place_one_sided:6.2f} unknown {t.place_unknown:6.2f}"
            f" reach {t.radius_m:5.0f} m"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
