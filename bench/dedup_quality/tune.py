"""Search engine parameters (radius and look-back per category, weights, threshold) on a
labelled set drawn with a *different* seed from the one run.py reports on.

    .venv/bin/python -m bench.dedup_quality.tune             # about 5 minutes on 2 cores
    .venv/bin/python -m bench.dedup_quality.tune --help

Categories never merge across each other except the two hazard-kind ones (flooding and
hazard, relation 0.5), so each category (flooding+hazard together) is tuned on its own
reports: for every weight set and threshold, each category takes the radius and look-back
that maximise its pairwise F1 ("max-F1"), or its pairwise recall subject to pairwise
precision >= --min-precision ("precision-first"). The results (one line per setting and the
chosen per-category parameters) go to bench/results/dedup_quality_tuning.json; run.py carries
the chosen values as its labelled "proposed" variants.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.dedup_quality import dataset as ds_mod
from bench.dedup_quality.context import RESULTS, machine_context, print_context
from bench.dedup_quality.run import Variant, patched, run_engine, scores
from civicpulse.engine import grouping
from civicpulse.engine.grouping import Report

DAY = 86_400.0
RADII = (30, 40, 50, 60, 75, 90, 110, 130, 160, 200, 250, 300, 400)
LOOKBACK_FACTORS = (1.0, 2.0, 3.0)
WEIGHT_SETS = {
    "current": {"distance": 0.40, "time": 0.15, "category": 0.25, "text": 0.20},
    "text-heavy": {"distance": 0.40, "time": 0.05, "category": 0.25, "text": 0.30},
    "distance-heavy": {"distance": 0.50, "time": 0.10, "category": 0.25, "text": 0.15},
}
SETTINGS = (
    ("current", 0.60),
    ("current", 0.55),
    ("text-heavy", 0.60),
    ("text-heavy", 0.65),
    ("distance-heavy", 0.60),
)


def groups(labelled: list[ds_mod.LabelledReport]) -> dict[str, list[ds_mod.LabelledReport]]:
    out: dict[str, list[ds_mod.LabelledReport]] = {}
    for r in labelled:
        key = "flooding+hazard" if r.category in ("flooding", "hazard") else r.category
        out.setdefault(key, []).append(r)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.dedup_quality.tune", description=__doc__.split("\n\n")[2]
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=ds_mod.Config.seed + 1,
        help="labelled-set seed for tuning (run.py reports on Config.seed)",
    )
    ap.add_argument("--min-precision", type=float, default=0.95)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument(
        "--settings",
        type=int,
        default=len(SETTINGS),
        help="how many of the weight/threshold settings to try (in order)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "dedup_quality_tuning.json")
    args = ap.parse_args(argv)
    ctx = machine_context()
    print_context(ctx)
    data = ds_mod.generate(ds_mod.Config(seed=args.seed))
    by_group = groups(data.reports)
    reps = {
        g: [Report(r.id, r.lat, r.lon, r.category, r.kind, r.text, r.t, 2) for r in rs]
        for g, rs in by_group.items()
    }
    t0 = time.perf_counter()
    grid: dict[str, dict[str, list[dict[str, object]]]] = {}
    for wname, thr in SETTINGS[: args.settings]:
        weights = WEIGHT_SETS[wname]
        if True:
            key = f"{wname}@{thr}"
            grid[key] = {}
            for g, rs in by_group.items():
                cats = sorted({r.category for r in rs})
                rows = []
                for radius in RADII:
                    for f in LOOKBACK_FACTORS:
                        cd = {
                            c: (float(radius), min(30 * DAY, grouping.CATEGORY_DEFAULTS[c][1] * f))
                            for c in cats
                        }
                        if f > 1 and all(
                            grouping.CATEGORY_DEFAULTS[c][1] >= 30 * DAY for c in cats
                        ):
                            continue
                        with patched(
                            Variant("t", category_defaults=cd, weights=weights, threshold=thr)
                        ) as t:
                            pred = run_engine(reps[g], args.batch, t)
                        s = scores(rs, pred)
                        rows.append(
                            {
                                "radius_m": radius,
                                "lookback_factor": f,
                                "lookback_days": round(cd[cats[0]][1] / DAY, 2),
                                **{
                                    k: s[k]
                                    for k in (
                                        "pair_precision",
                                        "pair_recall",
                                        "pair_f1",
                                        "bcubed_f1",
                                        "true_pairs",
                                    )
                                },
                            }
                        )
                grid[key][g] = rows
            print(f"  {key}: done ({time.perf_counter() - t0:.0f} s)", flush=True)

    def pick(rows: list[dict], mode: str) -> dict:
        if mode == "max-F1":
            return max(rows, key=lambda r: (r["pair_f1"], r["bcubed_f1"]))
        ok = [r for r in rows if r["pair_precision"] >= args.min_precision]
        if not ok:
            return max(rows, key=lambda r: (r["pair_precision"], r["pair_recall"]))
        return max(ok, key=lambda r: (r["pair_recall"], r["pair_f1"]))

    summary = {}
    for key, per_group in grid.items():
        for mode in ("max-F1", "precision-first"):
            chosen = {g: pick(rows, mode) for g, rows in per_group.items()}
            # Combined figures from the chosen per-group predictions (groups never interact).
            tp = pp = tt = 0.0
            for c in chosen.values():
                tt += c["true_pairs"]
                tp += c["pair_recall"] * c["true_pairs"]
                pp += (
                    c["pair_recall"] * c["true_pairs"] / c["pair_precision"]
                    if c["pair_precision"]
                    else 0.0
                )
            p, r = (tp / pp if pp else 1.0), (tp / tt if tt else 1.0)
            summary[f"{key}|{mode}"] = {
                "pair_precision": round(p, 4),
                "pair_recall": round(r, 4),
                "pair_f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
                "chosen": chosen,
            }
    best = sorted(summary.items(), key=lambda kv: -kv[1]["pair_f1"])
    print("\n== combined pairwise figures per setting (tuning seed), best first")
    for k, v in best:
        print(
            f"  {k:<40} P {v['pair_precision']:.3f} R {v['pair_recall']:.3f} F1 {v['pair_f1']:.3f}"
        )
    for k, v in best[:2] + [
        kv for kv in best if kv[0].startswith("current@0.6|") and kv not in best[:2]
    ]:
        print(f"\n== {k}")
        for g, c in v["chosen"].items():
            print(
                f"  {g:<18} r {c['radius_m']:>4} m, look-back {c['lookback_days']:>5} d: "
                f"P {c['pair_precision']:.3f} R {c['pair_recall']:.3f} F1 {c['pair_f1']:.3f}"
            )
    keep = {k: v for k, v in grid.items() if k == "current@0.6"}
    note = "grid rows kept for the current@0.6 setting only"
    args.out.write_text(
        json.dumps(
            {"machine": ctx, "seed": args.seed, "summary": summary, "grid": keep, "note": note},
            indent=1,
        )
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
