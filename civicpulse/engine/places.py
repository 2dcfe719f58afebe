"""Where in a building a report is: building, floor, room or unit, shared space, asset.

Pure functions. A tenant may register its places (sites, buildings, floors, rooms, units,
spaces and assets, each with a code, a name, aliases and a parent); a report may name one by
code, and its text and address are read for mentions ("room 412", "rm 412", "apt 4B",
"unit 3B", "4th floor", "building C", "lift 2", "the lobby"). Mentions are resolved against
the registry when the tenant has one (a room number is looked up in the building the text
names, else the one the pin is in or nearest to), and kept as text otherwise, so a hotel that
never registered a room still has "room 412" and "room 415" told apart.

Grouping compares two places by the problem's scope (`compare`): different buildings, rooms,
units or assets are different problems (a hard "no"); for a building-wide problem only the
building and the asset count, since each reporter names their own room.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec

from civicpulse.engine import geo

# A registered building counts as the pin's building within this distance of its point.
BUILDING_REACH_M = 150.0


class Where(msgspec.Struct, frozen=True, omit_defaults=True):
    """A resolved place. Keys are registered place codes, or "~" and a normalised mention
    when the tenant has no such place registered ("~412", "~b", "~lift 2")."""

    building: str | None = None
    floor: str | None = None
    unit: str | None = None  # room, unit, apartment, suite, office
    space: str | None = None  # a named shared space: lobby, gym, 3rd floor kitchen
    asset: str | None = None  # lift 2, boiler
    code: str | None = None  # the most specific registered place, when resolved to one
    label: str = ""  # for people: "Hartley Hall, room 214"

    @property
    def known(self) -> bool:
        return any((self.building, self.floor, self.unit, self.space, self.asset))


NOWHERE = Where()


class Node(NamedTuple):
    code: str
    kind: str
    name: str
    aliases: tuple[str, ...]
    parent: str | None
    lat: float | None
    lon: float | None


class Mentions(NamedTuple):
    """What a text says about the place, before any registry is consulted."""

    units: tuple[str, ...]  # "412", "4b"
    floors: tuple[str, ...]  # "4", "g", "b1"
    buildings: tuple[str, ...]  # "c", "b"  (building C, tower B)
    assets: tuple[str, ...]  # "lift 2"
    spaces: tuple[str, ...]  # "lobby", "gym"
    numbers: tuple[str, ...]  # bare numbers that may be room numbers in a registry


# fmt: off
_ORDINALS = {
    "first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5", "sixth": "6",
    "seventh": "7", "eighth": "8", "ninth": "9", "tenth": "10", "eleventh": "11",
    "twelfth": "12", "ground": "g", "basement": "b", "lower ground": "g", "top": "top",
}
_UNIT_WORDS = (
    r"room|rm|rom|suite|ste|unit|apt|apartment|appt|flat|dorm\s+room|office|classroom|"
    r"class\s+room|lab|bedroom|cabin|chalet|villa|studio"
)
_ASSET_WORDS = {
    "lift": "lift", "lifts": "lift", "elevator": "lift", "elevators": "lift", "elev": "lift",
    "escalator": "escalator", "boiler": "boiler", "chiller": "chiller", "generator": "generator",
}
# Shared spaces people name without a registry; a registry's own names come first.
COMMON_SPACES = {
    "lobby": "lobby", "foyer": "lobby", "reception": "reception", "front desk": "reception",
    "gym": "gym", "fitness center": "gym", "fitness centre": "gym", "pool": "pool",
    "swimming pool": "pool", "spa": "spa", "sauna": "spa", "restaurant": "restaurant",
    "bar": "bar", "cafe": "cafe", "café": "cafe", "cafeteria": "cafeteria", "canteen": "canteen",
    "dining hall": "cafeteria", "kitchen": "kitchen", "kitchenette": "kitchen",
    "break room": "kitchen", "pantry": "kitchen", "laundry": "laundry",
    "laundry room": "laundry", "lounge": "lounge", "common room": "lounge",
    "parking garage": "parking", "car park": "parking", "carpark": "parking",
    "parking lot": "parking", "garage": "parking", "loading dock": "loading dock",
    "ballroom": "ballroom", "library": "library", "stairwell": "stairwell",
    "stairs": "stairwell", "staircase": "stairwell", "mailroom": "mailroom",
    "mail room": "mailroom", "basement": "basement", "roof": "roof", "rooftop": "roof",
    "courtyard": "courtyard", "patio": "patio", "terrace": "terrace",
}
# fmt: on
_SPACE_RE = re.compile(
    r"\b(" + "|".join(sorted((re.escape(s) for s in COMMON_SPACES), key=len, reverse=True)) + r")\b"
)
_UNIT_RE = re.compile(
    rf"\b(?:{_UNIT_WORDS})\s*(?:#|no\.?|number)?\s*([a-z]?\d{{1,5}}[a-z]?|\d{{1,3}}[-.]\d{{1,3}}[a-z]?)\b"
)
_HASH_RE = re.compile(r"(?:^|\s)#\s?(\d{1,5}[a-z]?|[a-z]\d{1,4})\b")
_FLOOR_NUM_RE = re.compile(
    r"\b(\d{1,2})\s*(?:st|nd|rd|th)?\s*(?:floor|fl|flr|level|lvl|storey|story)\b"
)
_FLOOR_PRE_RE = re.compile(r"\b(?:floor|fl|flr|level|lvl)\s*#?\s*(\d{1,2}|[gb]\d?)\b")
_FLOOR_WORD_RE = re.compile(
    r"\b(" + "|".join(_ORDINALS) + r")\s+(?:floor|fl|flr|level|storey|story)\b"
)
_BUILDING_RE = re.compile(r"\b(?:building|bldg|blg|block|blk|tower|wing|pavilion)\s+([a-z0-9])\b")
# Lifts by number only: "the elevator I was in" is no lift "i". A lift a tenant calls "B" is
# found by its registered name or alias.
_ASSET_RE = re.compile(r"\b(" + "|".join(_ASSET_WORDS) + r")\s*(?:#|no\.?|number)?\s*(\d{1,2})\b")
_BARE_NUMBER_RE = re.compile(r"\b([a-z]?\d{2,5}[a-z]?)\b")
# A number followed by a street word is a house number, never a room.
# ("412 is way too hot" is room 412: the street name is no word of a sentence.)
_STREET_AFTER = re.compile(
    r"^\s+(?:[nsew]\.?\s+)?"
    r"(?!(?:is|in|the|a|an|of|on|at|my|our|this|that|its|no|any|by|to|and|or|was|has|had|all|"
    r"whole|entire|every|same|other|next|one|each)\s)"
    r"[a-z0-9'-]+\s+(?:st|street|ave|avenue|blvd|boulevard|rd|road|dr|drive|"
    r"ln|lane|way|pl|place|ct|court|ter|terrace|hwy|highway|pkwy|parkway|cir|circle|sq|square)\b"
)


# A number followed by a unit of time, money or measure is a quantity, never a room.
_QUANTITY_AFTER = re.compile(
    r"^\s*(?:am|pm|a\.m|p\.m|hours?|hrs?|minutes?|mins?|days?|weeks?|months?|years?|yrs?|"
    r"dollars?|bucks|people|guests|times|degrees|f|c|percent|%|ft|feet|m|meters?|metres?|"
    r"inches|in|lbs?|kg|calls?|issues?|problems?|towels?|bags?|boxes|items?|pieces?|cars?)\b"
)


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9#.\-']+|#", text.lower()))


def mentions(text: str, bare_numbers: bool = False) -> Mentions:
    """Place mentions in a text (no registry needed). Lifts, floors and buildings are read
    first and taken out, so "elevator #3" is a lift and "4th floor" no room. With
    `bare_numbers` (facilities that number their rooms), a number alone that is not a house
    number ("412 ac broken") is a room too."""
    s = _norm(text)
    assets = [f"{_ASSET_WORDS[m.group(1)]} {m.group(2)}" for m in _ASSET_RE.finditer(s)]
    s = _ASSET_RE.sub(" ", s)
    floors = [m.group(1) for m in _FLOOR_NUM_RE.finditer(s)]
    floors += [m.group(1) for m in _FLOOR_PRE_RE.finditer(s)]
    floors += [_ORDINALS[m.group(1)] for m in _FLOOR_WORD_RE.finditer(s)]
    s = _FLOOR_WORD_RE.sub(" ", _FLOOR_PRE_RE.sub(" ", _FLOOR_NUM_RE.sub(" ", s)))
    buildings = [m.group(1) for m in _BUILDING_RE.finditer(s)]
    s = _BUILDING_RE.sub(" ", s)
    # A room word or # before a quantity is no room ("unit 2 weeks old", "#1 issue").
    units = [m.group(1).replace(".", "-") for m in _UNIT_RE.finditer(s) if _not_room_quantity(s, m)]
    units += [m.group(1) for m in _HASH_RE.finditer(s) if _not_room_quantity(s, m, True)]
    spaces = [COMMON_SPACES[m.group(1)] for m in _SPACE_RE.finditer(s)]
    rest = _HASH_RE.sub(" ", _UNIT_RE.sub(" ", s))
    numbers = [m.group(1) for m in _BARE_NUMBER_RE.finditer(rest) if _not_quantity(rest, m)]
    if bare_numbers:
        units += [n for n in numbers if len(n.strip("abcdefghijklmnopqrstuvwxyz")) >= 3]
    return Mentions(
        _uniq(u.lstrip("0") or "0" for u in units),
        _uniq(f.lstrip("0") or "0" for f in floors),
        _uniq(buildings),
        _uniq(assets),
        _uniq(spaces),
        _uniq(numbers),
    )


# After a room word or "#" only a count of time, money or degrees says "no room": "room 412 in
# the east wing" and "apt 3b in building c" are rooms ("in" is no measure there).
_ROOM_QUANTITY_AFTER = re.compile(
    r"^\s*(?:hours?|hrs?|minutes?|mins?|days?|weeks?|months?|years?|yrs?|dollars?|bucks|times|"
    r"degrees|percent|%)\b"
)
_HASH_QUANTITY_AFTER = re.compile(r"^\s*(?:issues?|problems?|complaints?|priority)\b")


def _not_quantity(text: str, m: re.Match[str]) -> bool:
    """A bare number followed by a street word or a unit of measure is no room."""
    after = text[m.end() :]
    return not _STREET_AFTER.match(after) and not _QUANTITY_AFTER.match(after)


def _not_room_quantity(text: str, m: re.Match[str], hash_sign: bool = False) -> bool:
    """A room word's or "#"'s number followed by a street or a count of time is no room."""
    after = text[m.end() :]
    if _STREET_AFTER.match(after) or _ROOM_QUANTITY_AFTER.match(after):
        return False
    return not (hash_sign and _HASH_QUANTITY_AFTER.match(after))


def _uniq(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


# -- registry -----------------------------------------------------------------------------------


class Index(NamedTuple):
    """A tenant's registered places, compiled for resolution (built once per version)."""

    nodes: dict[str, Node]
    by_alias: dict[str, tuple[str, ...]]  # normalised name/alias/code -> codes
    phrases: re.Pattern[str] | None  # every multi-character name and alias, longest first
    numbered: dict[str, tuple[str, ...]]  # room/unit number -> codes of rooms/units
    buildings: tuple[str, ...]  # codes of buildings (and sites) with a point


def _ancestors(nodes: dict[str, Node], code: str) -> list[Node]:
    out: list[Node] = []
    seen: set[str] = set()
    current = nodes.get(code)
    while current is not None and current.code not in seen:
        out.append(current)
        seen.add(current.code)
        current = nodes.get(current.parent) if current.parent else None
    return out


def _number_of(node: Node) -> list[str]:
    """The numbers people use for a room or unit: its aliases and the number in its name
    or code ("Room 412", "hotel-412")."""
    found = []
    for text in (node.name, node.code, *node.aliases):
        m = re.search(r"([a-z]?\d{1,5}[a-z]?)$", text.lower().strip())
        if m:
            found.append(m.group(1).lstrip("0") or "0")
    return list(dict.fromkeys(found))


def compile_index(nodes: Sequence[Node]) -> Index:
    by_code = {n.code: n for n in nodes}
    by_alias: dict[str, list[str]] = defaultdict(list)
    numbered: dict[str, list[str]] = defaultdict(list)
    for n in nodes:
        for name in {n.name, *n.aliases, n.code}:
            key = _norm(name)
            if key:
                by_alias[key].append(n.code)
        if n.kind in ("room", "unit"):
            for number in _number_of(n):
                numbered[number].append(n.code)
    names = sorted((k for k in by_alias if len(k) >= 3 and not k.isdigit()), key=len, reverse=True)
    phrases = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b") if names else None
    buildings = tuple(n.code for n in nodes if n.kind in ("building", "site") and n.lat is not None)
    return Index(
        by_code,
        {k: tuple(v) for k, v in by_alias.items()},
        phrases,
        {k: tuple(v) for k, v in numbered.items()},
        buildings,
    )


EMPTY_INDEX = compile_index(())


def _building_of(index: Index, code: str) -> str | None:
    for node in _ancestors(index.nodes, code):
        if node.kind == "building":
            return node.code
    return None


def _nearest_building(index: Index, lat: float, lon: float) -> str | None:
    best, best_d = None, BUILDING_REACH_M
    for code in index.buildings:
        node = index.nodes[code]
        assert node.lat is not None and node.lon is not None
        d = geo.distance_m(lat, lon, node.lat, node.lon)
        if d <= best_d:
            best, best_d = code, d
    return best


def _from_node(index: Index, code: str) -> Where:
    """A registered place and everything above it."""
    chain = _ancestors(index.nodes, code)
    parts: dict[str, str] = {}
    for node in reversed(chain):  # root first, the place itself last
        slot = {
            "site": "building",
            "building": "building",
            "floor": "floor",
            "room": "unit",
            "unit": "unit",
            "space": "space",
            "asset": "asset",
        }[node.kind]
        if node.kind == "site" and "building" in parts:
            continue
        parts[slot] = node.code
    label = ", ".join(n.name for n in reversed(chain) if n.kind != "floor" or len(chain) < 3)
    return Where(
        building=parts.get("building"),
        floor=parts.get("floor"),
        unit=parts.get("unit"),
        space=parts.get("space"),
        asset=parts.get("asset"),
        code=code,
        label=label,
    )


def _pick(index: Index, codes: Iterable[str], building: str | None) -> str | None:
    """One of several registered places: the one in the building the report is in (named, or
    where its pin is), or the only one. A place of another building is not taken on a
    name alone ("the lobby" said in a lodge is not the main building's lobby)."""
    codes = list(dict.fromkeys(codes))
    if building is not None:
        codes = [c for c in codes if _building_of(index, c) in (building, None)]
    return codes[0] if len(codes) == 1 else None


def resolve(
    text: str,
    address: str | None,
    code: str | None,
    lat: float,
    lon: float,
    index: Index = EMPTY_INDEX,
    bare_numbers: bool = False,
) -> Where:
    """Where a report is: its named place, else what its text and address say, looked up in
    the tenant's registry when it has one."""
    if code is not None and code in index.nodes:
        return _from_node(index, code)
    said = " ".join(p for p in (text, address or "") if p)
    m = mentions(said, bare_numbers)
    normal = _norm(said)
    named: list[str] = []
    if index.phrases is not None:
        named = [c for hit in index.phrases.findall(normal) for c in index.by_alias.get(hit, ())]
    # The building: named in the text, else the registered building the pin is in or near.
    building = next(
        (c for c in named if index.nodes[c].kind in ("building", "site")), None
    ) or next(
        (c for b in m.buildings for c in index.by_alias.get(b, ()) if index.nodes[c].kind
         in ("building", "site")),
        None,
    )  # fmt: skip
    if building is None and index.buildings:
        building = _nearest_building(index, lat, lon)
    # The most specific registered place the text names: a room or unit by number, an asset,
    # a space by name.
    for numbers in (m.units, m.numbers):
        for number in numbers:
            chosen = _pick(index, index.numbered.get(number, ()), building)
            if chosen is not None:
                return _from_node(index, chosen)
    for asset in m.assets:
        kind, _, n = asset.partition(" ")
        chosen = _pick(
            index,
            (
                c
                for key in (asset, f"elevator {n}", f"{kind}-{n}", f"lift {n}")
                for c in index.by_alias.get(key, ())
                if index.nodes[c].kind == "asset"
            ),
            building,
        )
        if chosen is None:
            chosen = _pick(
                index,
                (c for c, node in index.nodes.items()
                 if node.kind == "asset" and _number_of(node) == [n]),
                building,
            )  # fmt: skip
        if chosen is not None:
            return _from_node(index, chosen)
    for kinds in (("room", "unit", "asset"), ("space",)):
        found = [c for c in named if index.nodes[c].kind in kinds]
        if found:
            chosen = _pick(index, found, building)
            if chosen is not None:
                return _from_node(index, chosen)
    # Nothing registered matched: keep the mentions as text.
    base = _from_node(index, building) if building is not None else NOWHERE
    unit_said = m.units[0] if m.units else None
    asset_said = m.assets[0] if m.assets else None
    space_said = None if unit_said else (m.spaces[0] if m.spaces else None)
    floor_said = base.floor or (m.floors[0] if m.floors else None)
    where = Where(
        building=base.building or (f"~{m.buildings[0]}" if m.buildings else None),
        floor=None
        if floor_said is None
        else (floor_said if floor_said in index.nodes else f"~{floor_said}"),
        unit=None if unit_said is None else f"~{unit_said}",
        space=None if space_said is None else f"~{space_said}",
        asset=None if asset_said is None else f"~{asset_said}",
        code=base.code,
        label="",
    )
    return msgspec.structs.replace(where, label=describe(where, index))


def describe(where: Where, index: Index = EMPTY_INDEX) -> str:
    """A short label for people: "Hartley Hall, room 214", "floor 4, lift 2"."""
    parts = []
    for slot, word in (
        ("building", "building"),
        ("floor", "floor"),
        ("unit", "room"),
        ("space", ""),
        ("asset", ""),
    ):
        value = getattr(where, slot)
        if value is None:
            continue
        if value.startswith("~"):
            text = value[1:]
            parts.append(
                f"{word} {text}".strip() if slot in ("building", "floor", "unit") else text
            )
        elif value in index.nodes:
            parts.append(index.nodes[value].name)
    return ", ".join(parts)


def building_wide(where: Where) -> Where:
    """The part of a place that matters for a problem of the whole building: the building and
    the asset; each reporter's own room or floor is left out."""
    if where.asset is None and where.building is None:
        return NOWHERE
    kept = Where(building=where.building, asset=where.asset, code=None, label="")
    return msgspec.structs.replace(kept, label=_label_without_rooms(where, kept))


def _label_without_rooms(where: Where, kept: Where) -> str:
    if where.code is not None and where.asset is not None and where.asset == where.code:
        return where.label
    parts = [p.strip() for p in where.label.split(",")]
    return parts[0] if kept.building and parts else ""


class Relation(NamedTuple):
    value: int  # 1 the same place, -1 different places (never the same problem), 0 unknown
    floor: int  # 1 same floor, -1 different floors, 0 unknown (local scope only)
    space: int  # 1 same space, -1 different spaces, 0 unknown (local scope only)
    reason: str | None  # for a -1: "different rooms (412, 415)"


def _pretty(value: str | None) -> str:
    return (value or "").lstrip("~")


def _same(a: str | None, b: str | None) -> int:
    """1 the same place, -1 different places, 0 unknown. A mention kept as text ("~412") and
    a registered code ("hotel-412") are never told apart: an issue opened before the tenant
    imported its rooms may be at the very room a later report names by code."""
    if not a or not b or a.startswith("~") != b.startswith("~"):
        return 0
    return 1 if a == b else -1


def compare(a: Where, b: Where, scope: str) -> Relation:
    """How two places relate for a problem of the given scope."""
    if _same(a.building, b.building) < 0:
        return Relation(
            -1, 0, 0, f"different buildings ({_pretty(a.building)}, {_pretty(b.building)})"
        )
    asset = _same(a.asset, b.asset)
    if asset < 0:
        return Relation(-1, 0, 0, f"different assets ({_pretty(a.asset)}, {_pretty(b.asset)})")
    if scope == "building":
        # Every report of a building-wide problem is in the building: only a shared asset (the
        # same lift) says more.
        return Relation(1 if asset > 0 else 0, 0, 0, None)
    unit = _same(a.unit, b.unit)
    if unit < 0:
        return Relation(-1, 0, 0, f"different rooms ({_pretty(a.unit)}, {_pretty(b.unit)})")
    if unit > 0:
        return Relation(1, 1, 0, None)
    floor = _same(a.floor, b.floor)
    space = _same(a.space, b.space)
    same = asset > 0 or (space > 0 and floor >= 0)
    return Relation(1 if same else 0, floor, space, None)


def merge(issue: Where, report: Where) -> Where:
    """An issue's place after a report joins it: what the issue knew, completed by the
    report where the issue knew nothing."""
    if not issue.known:
        return report
    if issue.unit or issue.space or issue.asset or not report.known:
        return issue
    if issue.building and report.building and issue.building != report.building:
        return issue
    return report if (report.unit or report.space or report.asset) else issue


# -- in worker processes ------------------------------------------------------------------------


class PlacesMissing(LookupError):
    """The worker does not hold this place index yet: send the places with the batch."""


_encoder = msgspec.msgpack.Encoder()
_nodes_decoder = msgspec.msgpack.Decoder(list[Node])
_json = msgspec.json.Encoder()
_worker_indexes: dict[str, Index] = {}


def pack(nodes: Sequence[Node]) -> tuple[bytes, str]:
    """A tenant's places as bytes for the worker processes, and their digest."""
    blob = _encoder.encode(sorted(nodes))
    return blob, hashlib.sha256(blob).hexdigest()[:16]


def resolve_batch(
    digest: str,
    blob: bytes | None,
    items: list[tuple[str, str | None, str | None, float, float]],
    bare_numbers: bool,
) -> list[str]:
    """Resolve one tenant's reports (text, address, place code, lat, lon) in a worker; the
    places JSON per report. Raises PlacesMissing when the places must be sent."""
    index = _worker_indexes.get(digest)
    if index is None:
        if blob is None:
            raise PlacesMissing(digest)
        index = compile_index(_nodes_decoder.decode(blob))
        if len(_worker_indexes) > 64:  # many tenants: forget the oldest
            _worker_indexes.pop(next(iter(_worker_indexes)))
        _worker_indexes[digest] = index
    return [
        _json.encode(resolve(text, address, code, lat, lon, index, bare_numbers)).decode()
        for text, address, code, lat, lon in items
    ]
