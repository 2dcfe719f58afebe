"""Rule-based classification: the reporter's category if valid, else taxonomy keywords.

Pure and picklable: takes and returns plain tuples so it runs in the process pool. Severity
comes from hazard words; the result records who decided and with what confidence.
"""

from __future__ import annotations

import re
from typing import NamedTuple

RULES_VERSION = "keywords-v1"

# Words that put people at risk now, and the severity (1-5) they imply.
HAZARD_SEVERITY: dict[str, tuple[str, int]] = {
    "gas": ("gas", 5),
    "gas leak": ("gas", 5),
    "smell of gas": ("gas", 5),
    "fire": ("fire", 5),
    "smoke": ("fire", 4),
    "explosion": ("fire", 5),
    "live wire": ("live_wire", 5),
    "downed wire": ("live_wire", 5),
    "power line": ("live_wire", 4),
    "sparking": ("live_wire", 5),
    "exposed wires": ("live_wire", 5),
    "injury": ("injury", 5),
    "injured": ("injury", 5),
    "bleeding": ("injury", 5),
    "collapse": ("structural", 5),
    "collapsed": ("structural", 5),
    "flood": ("flooding", 4),
    "flooding": ("flooding", 4),
    "sinkhole": ("structural", 4),
    "chemical": ("chemical", 4),
    "spill": ("chemical", 3),
    "swerving": ("traffic", 3),
    "needles": ("sharps", 3),
}
DEFAULT_SEVERITY = 2

_WORD = re.compile(r"[a-z0-9]+(?:[/'-][a-z0-9]+)*")


class CategoryTerms(NamedTuple):
    code: str
    service_code: str
    terms: tuple[str, ...]


class RuleResult(NamedTuple):
    category: str
    severity: int
    confidence: float
    hazards: tuple[str, ...]
    decided_by: str
    model: str


def normalise(text: str) -> str:
    """Lower-case words separated by single spaces, padded for whole-phrase matching."""
    return " " + " ".join(_WORD.findall(text.lower())) + " "


def hazards_in(normalised: str) -> tuple[tuple[str, ...], int]:
    """Hazard kinds present and the severity they imply."""
    found: dict[str, int] = {}
    for phrase, (kind, severity) in HAZARD_SEVERITY.items():
        if f" {phrase} " in normalised:
            found[kind] = max(found.get(kind, 0), severity)
    severity = max(found.values(), default=DEFAULT_SEVERITY)
    return tuple(sorted(found)), severity


def classify(
    text: str, requested: str | None, categories: tuple[CategoryTerms, ...], fallback: str
) -> RuleResult:
    """Classify one report by rules."""
    normalised = normalise(text)
    hazards, severity = hazards_in(normalised)
    if requested:
        for cat in categories:
            if requested in (cat.code, cat.service_code):
                return RuleResult(cat.code, severity, 0.9, hazards, "rule", "requested-category")
    best, best_hits = fallback, 0
    for cat in categories:
        hits = sum(1 for term in cat.terms if f" {term} " in normalised)
        if hits > best_hits:
            best, best_hits = cat.code, hits
    confidence = 0.2 if best_hits == 0 else min(0.85, 0.4 + 0.15 * best_hits)
    return RuleResult(best, severity, confidence, hazards, "rule", RULES_VERSION)


def classify_batch(
    items: list[tuple[str, str | None]], categories: tuple[CategoryTerms, ...], fallback: str
) -> list[RuleResult]:
    """Classify many reports of one tenant: the unit of work sent to the process pool."""
    return [classify(text, requested, categories, fallback) for text, requested in items]


def terms_for(code: str, service_code: str, name: str, keywords: tuple[str, ...]) -> CategoryTerms:
    """Matching terms for a category: its keywords and its name, normalised."""
    terms = {normalise(k).strip() for k in (*keywords, name) if normalise(k).strip()}
    return CategoryTerms(code, service_code, tuple(sorted(terms)))
