"""Hazard rules: words that put people at risk now, and the severity they imply.

Used by the local classifier for severity and as a floor under an LLM's severity.
"""

from __future__ import annotations

import re

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
    "chemical spill": ("chemical", 4),
    "oil spill": ("chemical", 3),
    "fuel spill": ("chemical", 3),
    "swerving": ("traffic", 3),
    "needles": ("sharps", 3),
}
DEFAULT_SEVERITY = 2
# Words that name a thing, not the danger: a fire hydrant is not a fire, a smoke detector
# chirping is not smoke, the gas station is a landmark. Taken out before matching.
NOT_HAZARDS = (
    "fire hydrant", "fire hydrants", "fire plug", "fire alarm", "fire alarms", "fire door",
    "fire doors", "fire exit", "fire escape", "fire extinguisher", "fire station",
    "fire department", "fire dept", "fire lane", "smoke detector", "smoke detectors",
    "smoke alarm", "smoke alarms", "gas station", "gas stations", "gas cap", "no smoke",
    "no gas", "not gas", "no fire", "not on fire", "no injury", "no injuries", "nobody injured",
    "no one injured", "nobody was injured", "no one was injured", "no one is hurt",
)  # fmt: skip

_WORD = re.compile(r"[a-z0-9]+(?:[/'-][a-z0-9]+)*")


def normalise(text: str) -> str:
    """Lower-case words separated by single spaces, padded for whole-phrase matching."""
    return " " + " ".join(_WORD.findall(text.lower())) + " "


def hazards_in(normalised: str) -> tuple[tuple[str, ...], int]:
    """Hazard kinds present and the severity they imply."""
    for phrase in NOT_HAZARDS:
        normalised = normalised.replace(f" {phrase} ", " _ ")
    found: dict[str, int] = {}
    for phrase, (kind, severity) in HAZARD_SEVERITY.items():
        if f" {phrase} " in normalised:
            found[kind] = max(found.get(kind, 0), severity)
    severity = max(found.values(), default=DEFAULT_SEVERITY)
    return tuple(sorted(found)), severity
