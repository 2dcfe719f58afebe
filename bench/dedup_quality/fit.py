"""Fit the grouping model (civicpulse/data/grouping_model.json) on a labelled set.

    .venv/bin/python -m bench.dedup_quality.fit            # about a minute
    .venv/bin/python -m bench.dedup_quality.fit --help

The labelled set is drawn with the tuning seed (20240612); `bench.dedup_quality.run` scores
the engine on another seed (20240611), so the reported figures are out of sample.

Training pairs come from replaying the set in time order with the *true* grouping: every
report is paired with every issue it could be compared with at that moment (the open issues
of a joinable category within reach and look-back, each as the database would hold it:
centroid of its reports so far, last report time, report count, founding text), labelled 1
for its own problem's issue and 0 for the others. The features are exactly
`civicpulse.engine.grouping.features`; the model is an L2-regularised logistic regression
(Newton's method) with shared coefficients and a distance/time block per category. Kinds the
set has no category of, and tenant categories the model has not seen, use the mean block of
their kind (or of all categories).

Each category's reach (`radius_m`) is the distance at which even the best case (same
category, identical text, same house number, no time gap, COUNT_CAP reports) falls under
the threshold: the group stage fetches candidates within it and nothing further could join.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from collections import defaultdict
from pathlib import Path

import msgspec
import numpy as np

from bench.dedup_quality import dataset as ds_mod
from civicpulse.engine import geo, grouping
from civicpulse.engine.grouping import Candidate, Model, Report, Terms

TUNING_SEED = 20240612
FIT_REACH_M = 500.0  # pairs further apart than this are never close calls
STEP_M = 5.0


def training_pairs(
    data: ds_mod.Dataset,
) -> tuple[list[tuple[float, ...]], list[tuple[str, tuple[float, float, float]]], list[float]]:
    """Shared features, (category, category features) and labels of every comparable pair."""
    kinds = ds_mod.kinds()
    hazards = {c for c, k in kinds.items() if k == "hazard"}
    members: dict[str, list[Report]] = {}
    grid: dict[tuple[str, int], set[str]] = defaultdict(set)
    cell_of: dict[str, tuple[str, int]] = {}
    shared: list[tuple[float, ...]] = []
    own: list[tuple[str, tuple[float, float, float]]] = []
    labels: list[float] = []
    labelled = sorted(data.reports, key=lambda r: (r.t, r.id))
    for lr in labelled:
        r = Report(lr.id, lr.lat, lr.lon, lr.category, lr.kind, lr.text, lr.t, 2)
        params = grouping.params_for(r.category, r.kind, {})
        joinable = hazards | {r.category} if r.kind == "hazard" else {r.category}
        seen: set[str] = set()
        for cell in geo.cells_within(r.lat, r.lon, FIT_REACH_M):
            for category in joinable:
                for problem in grid.get((category, cell), ()):
                    if problem in seen:
                        continue
                    seen.add(problem)
                    ms = members[problem]
                    cand = _candidate(problem, ms)
                    if abs(r.t - cand.last_t) > params.lookback_s:
                        continue
                    d = geo.distance_m(r.lat, r.lon, cand.lat, cand.lon)
                    if d > FIT_REACH_M:
                        continue
                    text = grouping.text_similarity(r.text, cand.text)
                    house = grouping.house_agreement(r.text, cand.text)
                    gap = max(0.0, r.t - cand.last_t)
                    s, o = grouping.features(r, cand, d, gap, text, house)
                    shared.append(s)
                    own.append((r.category, o))
                    labels.append(1.0 if problem == lr.problem else 0.0)
        ms = members.setdefault(lr.problem, [])
        ms.append(r)
        c = _candidate(lr.problem, ms)
        key = (c.category, geo.cell_of(c.lat, c.lon))
        old = cell_of.get(lr.problem)
        if old != key:
            if old is not None:
                grid[old].discard(lr.problem)
            grid[key].add(lr.problem)
            cell_of[lr.problem] = key
    return shared, own, labels


def _candidate(problem: str, ms: list[Report]) -> Candidate:
    first = ms[0]
    return Candidate(
        problem,
        sum(m.lat for m in ms) / len(ms),
        sum(m.lon for m in ms) / len(ms),
        first.category,
        first.kind,
        first.text,
        max(m.t for m in ms),
        len(ms),
    )


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 40) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method (the bias is penalised too,
    lightly: l2 is small next to tens of thousands of rows)."""
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return w


def reach(shared_w: dict[str, float], terms: Terms, threshold: float) -> float:
    """The first distance (in STEP_M steps) at which the best case, over every report count
    up to COUNT_CAP, falls under the threshold (see the module docstring)."""
    cut = math.log(threshold / (1 - threshold))
    base = shared_w["bias"] + max(0.0, shared_w["text"]) + max(0.0, shared_w["house_match"])

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.dedup_quality.fit",
        description="Fit the grouping model on a labelled set (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--seed", type=int, default=TUNING_SEED, help="labelled set's seed")
    ap.add_argument("--threshold", type=float, default=0.5, help="attach probability")
    ap.add_argument("--l2", type=float, default=1.0, help="regularisation strength")
    ap.add_argument("--out", type=Path, default=grouping.MODEL_FILE, help="model file")
    args = ap.parse_args(argv)

    data = ds_mod.generate(ds_mod.Config(seed=args.seed))
    shared, own, labels = training_pairs(data)
    categories = sorted({c for c, _ in own})
    width = len(grouping.SHARED_FEATURES)
    x = np.zeros((len(labels), width + 3 * len(categories)))
    x[:, :width] = np.array(shared)
    col = {c: width + 3 * i for i, c in enumerate(categories)}
    for row, (category, values) in enumerate(own):
        x[row, col[category] : col[category] + 3] = values
    y = np.array(labels)
    w = fit_logistic(x, y, args.l2)
    p = 1.0 / (1.0 + np.exp(-(x @ w)))
    log_loss = float(-np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12)))

    shared_w = {name: float(w[i]) for i, name in enumerate(grouping.SHARED_FEATURES)}
    blocks = {c: tuple(float(v) for v in w[col[c] : col[c] + 3]) for c in categories}

    def terms(block: tuple[float, ...]) -> Terms:
        t = Terms(round(block[0], 4), round(block[1], 4), round(block[2], 4), 0.0)
        return Terms(t.distance, t.distance_sq, t.log_gap, reach(shared_w, t, args.threshold))

    def mean(bs: list[tuple[float, ...]]) -> tuple[float, ...]:
        return tuple(sum(b[i] for b in bs) / len(bs) for i in range(3))

    kinds = ds_mod.kinds()
    by_kind: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    for c in categories:
        by_kind[kinds[c]].append(blocks[c])
    model = Model(
        version=grouping.RULES_VERSION,
        threshold=args.threshold,
        **{name: round(v, 4) for name, v in shared_w.items()},
        categories={c: terms(blocks[c]) for c in categories},
        kinds={k: terms(mean(bs)) for k, bs in sorted(by_kind.items())},
        fallback=terms(mean(list(blocks.values()))),
        trained=(
            f"python -m bench.dedup_quality.fit --seed {args.seed} --threshold "
            f"{args.threshold} --l2 {args.l2} on {dt.date.today().isoformat()}: "
            f"{len(labels)} pairs ({int(y.sum())} same problem) from {len(data.reports)} "
            f"labelled reports; log loss {log_loss:.4f}"
        ),
    )
    args.out.write_bytes(msgspec.json.format(msgspec.json.encode(model), indent=2) + b"\n")
    print(model.trained)
    print("shared:", {k: round(v, 3) for k, v in shared_w.items()})
    for c in categories:
        t = model.categories[c]
        print(
            f"  {c:18} d {t.distance:7.3f} d2 {t.distance_sq:7.3f} gap {t.log_gap:7.3f}"
            f" reach {t.radius_m:5.0f} m"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
