"""Pairwise and B-cubed precision, recall and F1 of a grouping against the truth."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from bench.judgement.streams import Item


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def grouping_scores(items: Sequence[Item], issue_of: dict[str, str]) -> dict[str, float]:
    """A pair is predicted when both reports end in one issue, true when both are about one
    problem. B-cubed averages, per report, |its issue ∩ its problem| / |its issue| (precision)
    and / |its problem| (recall), so singletons count as much as big clusters."""
    truth = Counter(i.truth.problem for i in items)
    pred = Counter(issue_of[i.id] for i in items)
    both = Counter((i.truth.problem, issue_of[i.id]) for i in items)
    tp = sum(_pairs(n) for n in both.values())
    pp = sum(_pairs(n) for n in pred.values())
    tt = sum(_pairs(n) for n in truth.values())
    p = tp / pp if pp else 1.0
    r = tp / tt if tt else 1.0
    n = max(1, len(items))
    bp = sum(both[(i.truth.problem, issue_of[i.id])] / pred[issue_of[i.id]] for i in items) / n
    br = sum(both[(i.truth.problem, issue_of[i.id])] / truth[i.truth.problem] for i in items) / n
    return {
        "reports": len(items),
        "problems": len(truth),
        "issues": len(pred),
        "true_pairs": tt,
        "predicted_pairs": pp,
        "pair_precision": round(p, 4),
        "pair_recall": round(r, 4),
        "pair_f1": round(_f1(p, r), 4),
        "bcubed_precision": round(bp, 4),
        "bcubed_recall": round(br, 4),
        "bcubed_f1": round(_f1(bp, br), 4),
    }


def classification_scores(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the categories present in the truth."""
    hits: Counter[str] = Counter()
    t_count = Counter(truth)
    p_count = Counter(predicted)
    for t, p in zip(truth, predicted, strict=True):
        if t == p:
            hits[t] += 1
    f1s = []
    for c in t_count:
        prec = hits[c] / p_count[c] if p_count[c] else 0.0
        rec = hits[c] / t_count[c]
        f1s.append(_f1(prec, rec))
    return {
        "n": len(truth),
        "accuracy": round(sum(hits.values()) / max(1, len(truth)), 4),
        "macro_f1": round(sum(f1s) / max(1, len(f1s)), 4),
    }
