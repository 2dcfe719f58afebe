"""Fit the local classifier's temperature (civicpulse.engine.textmodel.TEMPERATURE).

    .venv/bin/python -m bench.judgement.calibrate

A calibrated confidence reads as the chance the category is right, so the classify stage's
review threshold means "more likely wrong than right", and grouping's category agreement
means what it says. Calibrating on texts the model learned from would make it overconfident:
the shipped vocabulary grew by reading families a and b. So the model here is trained with
the vocabulary as first written, before any family was read (`vocabulary_first_pass.json`),
and scored on the tuning streams (families a and b; LA, the hotel and the resort; the
calibration seed): wordings it has not learned, as family c and real users are to the shipped
model. The temperature minimising the negative log-likelihood of the true categories is found
by a grid search. Prints it and the reliability table (confidence bins against accuracy).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import msgspec

from bench.judgement import replay
from bench.judgement.streams import CityConfig, FacilityConfig, city_stream, facility_stream
from civicpulse.engine import textmodel

FIRST_PASS = Path(__file__).resolve().parent / "vocabulary_first_pass.json"

CALIBRATION_SEED = 107
FAMILIES = ("a", "b")


def scored(seed: int) -> list[tuple[list[float], int]]:
    """(raw class scores, index of the true class) of every tuning report."""
    streams = [
        city_stream(CityConfig("la", FAMILIES, seed)),
        facility_stream(FacilityConfig("hotel", FAMILIES, seed)),
        facility_stream(FacilityConfig("resort", FAMILIES, seed)),
    ]
    vocab = msgspec.json.decode(FIRST_PASS.read_bytes(), type=textmodel.Vocabulary)
    out = []
    for stream in streams:
        categories = replay.taxonomy(stream.taxonomy)
        blob, _ = textmodel.train([c.entry for c in categories.values()], [], vocab)
        model = textmodel.load(blob)
        for item in stream.items:
            # Probabilities at temperature 1 are softmax(scores): log-probabilities are the
            # scores up to a constant, which is all a temperature search needs.
            probs = textmodel.probabilities(model, item.text)
            logs = [math.log(max(p, 1e-300)) * model.temperature for p in probs]
            out.append((logs, model.classes.index(item.truth.category)))
    return out


def nll(data: list[tuple[list[float], int]], temperature: float) -> float:
    total = 0.0
    for scores, truth in data:
        top = max(scores)
        z = sum(math.exp((s - top) / temperature) for s in scores)
        total -= (scores[truth] - top) / temperature - math.log(z)
    return total / len(data)


def reliability(data: list[tuple[list[float], int]], temperature: float) -> list[str]:
    bins: dict[int, list[tuple[float, bool]]] = {}
    for scores, truth in data:
        top = max(scores)
        exps = [math.exp((s - top) / temperature) for s in scores]
        best = max(range(len(exps)), key=exps.__getitem__)
        conf = exps[best] / sum(exps)
        bins.setdefault(min(9, int(conf * 10)), []).append((conf, best == truth))
    lines = ["| confidence | reports | mean confidence | accuracy |", "|---|---:|---:|---:|"]
    for b in sorted(bins):
        xs = bins[b]
        mean = sum(c for c, _ in xs) / len(xs)
        acc = sum(1 for _, ok in xs if ok) / len(xs)
        lines.append(f"| {b / 10:.1f}-{(b + 1) / 10:.1f} | {len(xs)} | {mean:.3f} | {acc:.3f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.judgement.calibrate",
        description="Fit the local classifier's temperature (see the module docstring).",
    )
    ap.add_argument("--seed", type=int, default=CALIBRATION_SEED)
    args = ap.parse_args(argv)
    data = scored(args.seed)
    grid = [round(0.05 * k, 2) for k in range(2, 81)]
    best = min(grid, key=lambda t: nll(data, t))
    print(f"{len(data)} reports; NLL at T=1: {nll(data, 1.0):.4f}; best T={best}: "
          f"{nll(data, best):.4f}")  # fmt: skip
    print("\nBefore (T=1):")
    print("\n".join(reliability(data, 1.0)))
    print(f"\nAfter (T={best}):")
    print("\n".join(reliability(data, best)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
