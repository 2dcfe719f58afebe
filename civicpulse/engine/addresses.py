"""Normalised street addresses: what a report located only by address is grouped by.

Pure functions. `key("123 N. Main Street, Apt 4B, San Francisco, CA 94103")` is
"123 n main st #4b": the house number, the street with its directional and suffix in their
short forms, and the unit when the address names one. The city, state, postcode and country
are dropped (a tenant's reports are in its own city; a geocoder gets the full text). An
intersection ("Market St and 5th St", "Intersection of 5TH ST and MARKET ST") is its two
streets in alphabetical order joined by " & ", so both spellings meet. An address with no
house number and no second street is only a street: too vague to say two reports are at the
same place, so it has no key.
"""

from __future__ import annotations

import re
from functools import lru_cache

# fmt: off
SUFFIXES = {
    "street": "st", "str": "st", "st": "st", "avenue": "ave", "av": "ave", "ave": "ave",
    "boulevard": "blvd", "blvd": "blvd", "road": "rd", "rd": "rd", "drive": "dr", "dr": "dr",
    "lane": "ln", "ln": "ln", "place": "pl", "pl": "pl", "court": "ct", "ct": "ct",
    "terrace": "ter", "ter": "ter", "highway": "hwy", "hwy": "hwy", "parkway": "pkwy",
    "pkwy": "pkwy", "circle": "cir", "cir": "cir", "square": "sq", "sq": "sq", "way": "way",
    "alley": "aly", "aly": "aly", "plaza": "plz", "plz": "plz", "expressway": "expy",
    "expy": "expy", "freeway": "fwy", "fwy": "fwy", "trail": "trl", "trl": "trl",
}
DIRECTIONS = {
    "north": "n", "south": "s", "east": "e", "west": "w", "northeast": "ne",
    "northwest": "nw", "southeast": "se", "southwest": "sw", "n": "n", "s": "s", "e": "e",
    "w": "w", "ne": "ne", "nw": "nw", "se": "se", "sw": "sw",
}
ORDINAL_WORDS = {
    "first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th",
    "sixth": "6th", "seventh": "7th", "eighth": "8th", "ninth": "9th", "tenth": "10th",
}
# fmt: on
_UNIT = re.compile(
    r"(?:^|\s)(?:apt|apartment|unit|suite|ste|room|rm|flat|#)\s*\.?\s*#?\s*([a-z0-9-]{1,8})\b"
)
_HOUSE = re.compile(r"^(\d{1,6}(?:-\d{1,6})?[a-z]?)\s+(.+)$")
_INTERSECTION = re.compile(r"^(?:intersection of\s+)?(.+?)\s+(?:and|&|at|/|@)\s+(.+)$")
_ZIP = re.compile(r"\b\d{5}(?:-\d{4})?$")
_NOISE = re.compile(r"[^a-z0-9#&/@\s-]")


def _street(text: str) -> str:
    """A street name with its directional, ordinal and suffix words in their short forms."""
    words = [w for w in text.split() if w]
    out = []
    for n, word in enumerate(words):
        word = ORDINAL_WORDS.get(word, word)
        if n == len(words) - 1 and word in SUFFIXES and n > 0:
            word = SUFFIXES[word]
        elif (n == 0 or n == len(words) - 1) and word in DIRECTIONS and len(words) > 1:
            word = DIRECTIONS[word]
        out.append(word)
    return " ".join(out)


@lru_cache(maxsize=65_536)
def key(address: str | None) -> str | None:
    """The normalised key of an address, or None when it names no single place (kept: a
    city's exports repeat their addresses)."""
    if not address:
        return None
    text = address.lower().replace("\u00a0", " ")
    parts = [p.strip() for p in text.split(",")]
    first = _NOISE.sub(" ", parts[0]).strip()
    unit = None
    # The unit may be in the first part ("123 main st apt 4b") or a later one ("apt 4b").
    for part in [first, *(_NOISE.sub(" ", p) for p in parts[1:3])]:
        found = _UNIT.search(" " + part)
        if found:
            unit = found.group(1).strip("-")
            if part is first:
                first = (" " + first)[: found.start()].strip()
            break
    first = _ZIP.sub("", first).strip()
    first = " ".join(first.split())
    if not first:
        return None
    house = _HOUSE.match(first)
    if house:
        street = _street(house.group(2))
        if not street or street.isdigit():
            return None
        out = f"{house.group(1)} {street}"
        return f"{out} #{unit}" if unit else out
    crossing = _INTERSECTION.match(first)
    if crossing:
        a, b = sorted((_street(crossing.group(1)), _street(crossing.group(2))))
        if a and b and a != b:
            return f"{a} & {b}"
    return None
