"""The judgement sets: labelled report streams for a city and for facilities.

Written before any tuning (see README.md for every assumption and where it comes from). A
stream is what a tenant receives: reports in submission order, each with the text a client
sends, its pin, its time, an optional place code, and the truth (which problem it is about,
that problem's kind, category, subtype and scope).

Texts come from wording families (`wordings/<family>.json`), written independently of each
other and of the service's code by writers who saw only `problems.json` and `WRITERS.md`.
Family c is kept out of all fitting.

* **City**: problems at the real places of the LA or SF 311 records (`../shared/data`),
  street kinds and apartment buildings, with same-kind neighbours and other problems at the
  same spot, pins scattered about 25 m, duplicates spread over about 72 hours.
* **Facility**: a hotel, a university campus and an office tower, each with its own place
  tree (buildings, floors, rooms, shared spaces, lifts). Local problems in rooms and spaces,
  building-wide problems (wifi, power, lifts, heating, hot water, fire alarm, gas) reported
  from anywhere in the building, pins scattered about 15 m around the building (indoor GPS).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bench.dedup_quality.dataset import Seed, add_cross_streets, read_la, read_sf
from civicpulse.engine import geo

HERE = Path(__file__).resolve().parent
HOUR = 3600.0
DAY = 24 * HOUR
SLOT = re.compile(r"\{([a-z_]+)\}")


class Kind(NamedTuple):
    id: str
    set: str  # city | facility
    category: str
    subtype: str
    scope: str  # local | building


def kinds() -> dict[str, Kind]:
    spec = json.loads((HERE / "problems.json").read_text())
    return {
        k["id"]: Kind(k["id"], k["set"], k["category"], k["subtype"], k["scope"])
        for k in spec["kinds"]
    }


def wordings(family: str) -> dict[str, list[str]]:
    raw = json.loads((HERE / "wordings" / f"{family}.json").read_text())
    return {k: list(v) for k, v in raw["wordings"].items()}


class Truth(NamedTuple):
    problem: str  # one real-world problem
    kind: str
    category: str
    subtype: str
    scope: str


class Item(NamedTuple):
    """One report as a client sends it, with its truth."""

    id: str
    text: str
    lat: float
    lon: float
    t: float  # submitted_at, Unix seconds
    place: str | None  # a place code the client sent (a room picked in the app)
    family: str
    wording: int  # index of the wording in its family's list for the kind
    truth: Truth


class PlaceNode(NamedTuple):
    """A place as a tenant registers it (civicpulse places import)."""

    code: str
    kind: str  # site | building | floor | room | unit | space | asset
    name: str
    aliases: tuple[str, ...]
    parent: str | None
    lat: float | None
    lon: float | None


@dataclass
class Stream:
    name: str
    tenant: str  # city | hotel | campus | office
    taxonomy: str  # city | facility
    items: list[Item]
    places: list[PlaceNode] = field(default_factory=list)
    stats: dict[str, object] = field(default_factory=dict)


# -- shared helpers ------------------------------------------------------------------------------


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return (
        lat + north_m / geo.METRES_PER_DEGREE,
        lon + east_m / (geo.METRES_PER_DEGREE * math.cos(math.radians(lat))),
    )


def scatter(lat: float, lon: float, rnd: random.Random, sd_m: float) -> tuple[float, float]:
    """A phone's pin for a place: normal scatter, and one time in ten a pin 40-80 m off
    (dropped at the block's address, across the street, or a stale fix)."""
    if rnd.random() < 0.10:
        r, a = rnd.uniform(40.0, 80.0), rnd.uniform(0, 2 * math.pi)
        return offset(lat, lon, r * math.cos(a), r * math.sin(a))
    return offset(lat, lon, rnd.gauss(0, sd_m), rnd.gauss(0, sd_m))


def cluster_size(rnd: random.Random, p_single: float, alpha: float, top: int) -> int:
    """1 with probability p_single, else k in 2..top with P(k) proportional to k^-alpha."""
    if rnd.random() < p_single:
        return 1
    ks = list(range(2, top + 1))
    return rnd.choices(ks, [k**-alpha for k in ks])[0]


def fill(template: str, slots: dict[str, str]) -> str:
    text = SLOT.sub(lambda m: slots.get(m.group(1), ""), template)
    return re.sub(r"\s+", " ", text).strip()


class Writer:
    """Draws a wording for a kind from the stream's families."""

    def __init__(self, families: Sequence[str], rnd: random.Random) -> None:
        self.families = list(families)
        self.by_family = {f: wordings(f) for f in families}
        self.rnd = rnd

    def __call__(
        self, kind: str, slots: dict[str, str], forbid: frozenset[str] = frozenset()
    ) -> tuple[str, str, int]:
        """A wording of the kind, without the slots that would contradict the problem's place
        (a room's problem is not told in a wording about a shared space)."""
        family = self.rnd.choice(self.families)
        options = self.by_family[family][kind]
        fits = [n for n, w in enumerate(options) if not forbid & set(SLOT.findall(w))]
        n = self.rnd.choice(fits or list(range(len(options))))
        return fill(options[n], slots), family, n


# -- city ----------------------------------------------------------------------------------------

LANDMARKS = (
    "the bus stop", "the school", "the church", "the gas station", "the library",
    "the 7-Eleven", "the laundromat", "the park entrance", "the post office", "the clinic",
    "the taco truck", "the community center", "the liquor store", "the dry cleaners",
)  # fmt: skip
STREET_KINDS_P_SINGLE = 0.5
APARTMENT_KINDS = ("apartment_no_heat", "apartment_leak", "apartment_paint_mold", "apartment_pests")


def _title(street: str) -> str:
    """A street as people write it: "W VANOWEN ST" -> "W Vanowen St". A house number some
    intersection records carry ("500 E CLARA ST AT ...") is dropped: it is not the street."""
    words = street.split()
    if len(words) > 1 and words[0].isdigit():
        words = words[1:]
    return " ".join(w if any(c.isdigit() for c in w) else w.capitalize() for w in words)


def _hood(raw: str | None) -> str:
    """A neighbourhood as residents write it: LA's council names lose their " NC"."""
    hood = re.sub(r"\s+NC$", "", (raw or "").strip())
    return hood.title() if hood.isupper() else hood


def _units(rnd: random.Random) -> list[str]:
    if rnd.random() < 0.5:
        return [f"{f}{u}" for f in range(1, 7) for u in "ABCDEF"]
    return [str(n) for n in range(1, 41)]


@dataclass
class CityConfig:
    city: str  # la | sf
    families: tuple[str, ...]
    seed: int
    problems: int = 500
    days: float = 14.0
    pin_sd_m: float = 18.0  # per axis: a mean pin offset of about 22 m, p90 about 40 m
    spread_h: float = 72.0  # duplicates arrive within this time of the first report
    neighbour_p: float = 0.25  # a same-kind problem 30-250 m away on the same street
    same_spot_p: float = 0.10  # another subtype of the category at the same spot
    apartment_share: float = 0.15


def city_stream(cfg: CityConfig) -> Stream:
    rnd = random.Random(cfg.seed)
    spec = kinds()
    street_kinds = [k.id for k in spec.values() if k.set == "city" and k.id not in APARTMENT_KINDS]
    by_category: dict[str, list[str]] = {}
    for k in street_kinds:
        by_category.setdefault(spec[k].category, []).append(k)
    seeds = [
        s for s in add_cross_streets(read_la() if cfg.city == "la" else read_sf()) if s.place.street
    ]
    rnd.shuffle(seeds)
    streets = sorted({s.place.street for s in seeds if s.place.street})
    t0 = min(s.t for s in seeds)
    write = Writer(cfg.families, rnd)
    items: list[Item] = []
    n_problem = 0

    def slots_for(seed: Seed, number: str | None) -> dict[str, str]:
        street = _title(seed.place.street or "")
        cross = seed.place.cross
        if not cross or cross == seed.place.street:
            cross = rnd.choice([s for s in streets if s != seed.place.street])
        return {
            "address": f"{number} {street}" if number else street,
            "street": street,
            "cross": _title(cross),
            "landmark": rnd.choice(LANDMARKS),
            "hood": _hood(seed.place.hood),
        }

    def emit(
        kind: str,
        lat: float,
        lon: float,
        start: float,
        slots: dict[str, str],
        k: int,
        *,
        units: Sequence[str] = (),
    ) -> None:
        nonlocal n_problem
        n_problem += 1
        truth = Truth(
            f"p{n_problem}", kind, spec[kind].category, spec[kind].subtype, spec[kind].scope
        )
        times = [
            start,
            *sorted(start + cfg.spread_h * HOUR * rnd.betavariate(0.8, 1.6) for _ in range(k - 1)),
        ]
        for t in times:
            own = dict(slots)
            if units:  # a building-wide problem: each tenant names their own apartment
                own["unit"] = rnd.choice(units)
            plat, plon = scatter(lat, lon, rnd, cfg.pin_sd_m)
            text, family, n = write(kind, own)
            items.append(Item("", text, plat, plon, t, None, family, n, truth))

    def problem_at(kind: str, seed: Seed, lat: float, lon: float, number: str | None) -> None:
        p_single = 0.3 if spec[kind].category in ("hazard", "flooding", "signs_signals") else 0.5
        k = cluster_size(rnd, p_single, 2.0, 12)
        start = t0 + rnd.uniform(0, cfg.days * DAY)
        emit(kind, lat, lon, start, slots_for(seed, number), k)

    n_apartment = round(cfg.problems * cfg.apartment_share)
    street_problems = cfg.problems - n_apartment
    seed_iter = iter(seeds)
    made = 0
    while made < street_problems:
        seed = next(seed_iter)
        kind = rnd.choice(street_kinds)
        number = seed.place.number
        problem_at(kind, seed, seed.lat, seed.lon, number)
        made += 1
        if rnd.random() < cfg.neighbour_p:
            # Another problem of the same kind down the street: the next pothole, the next
            # dark pole, another household's couch.
            d, a = rnd.uniform(30.0, 250.0), rnd.uniform(0, 2 * math.pi)
            lat, lon = offset(seed.lat, seed.lon, d * math.cos(a), d * math.sin(a))
            moved = None
            if number and number.isdigit():
                moved = str(max(1, int(number) + rnd.choice((-1, 1)) * max(2, round(d / 2))))
            problem_at(kind, seed, lat, lon, moved)
            made += 1
        if rnd.random() < cfg.same_spot_p and len(by_category[spec[kind].category]) > 1:
            other = rnd.choice([k for k in by_category[spec[kind].category] if k != kind])
            lat, lon = offset(seed.lat, seed.lon, rnd.gauss(0, 8), rnd.gauss(0, 8))
            problem_at(other, seed, lat, lon, number)
            made += 1
    # Apartment buildings: several tenants' problems at one address; heat is building-wide.
    made = 0
    while made < n_apartment:
        seed = next(seed_iter)
        number = seed.place.number or str(rnd.randint(100, 9999))
        units = _units(rnd)
        for _ in range(rnd.randint(2, 5)):
            kind = rnd.choice(APARTMENT_KINDS)
            start = t0 + rnd.uniform(0, cfg.days * DAY)
            slots = slots_for(seed, number)
            if kind == "apartment_no_heat":
                k = cluster_size(rnd, 0.3, 1.6, 12)
                emit(kind, seed.lat, seed.lon, start, slots, k, units=units)
            else:
                slots["unit"] = rnd.choice(units)
                k = cluster_size(rnd, 0.6, 2.2, 5)
                emit(kind, seed.lat, seed.lon, start, slots, k)
            made += 1
    items.sort(key=lambda i: i.t)
    items = [i._replace(id=f"r{n}") for n, i in enumerate(items)]
    return Stream(f"city-{cfg.city}", "city", "city", items)


# -- facilities ----------------------------------------------------------------------------------


class Building(NamedTuple):
    code: str
    name: str  # as {building} is filled
    aliases: tuple[str, ...]
    lat: float
    lon: float
    floors: int
    rooms: tuple[str, ...]  # room numbers
    meeting_rooms: tuple[str, ...]
    spaces: tuple[tuple[str, str], ...]  # (code, how people name it: "the lobby")
    lifts: int


@dataclass
class FacilityConfig:
    tenant: str  # hotel | campus | office
    families: tuple[str, ...]
    seed: int
    problems: int = 90
    days: float = 7.0
    pin_sd_m: float = 15.0
    local_spread_h: float = 36.0
    building_spread_h: float = 6.0
    place_code_p: float = 0.3  # a local report names its room in the app (registered tenants)
    registered: bool = True  # the tenant imported its place tree
    building_weight: float = 0.25  # how often a building-wide kind is drawn, next to a room's


def _hotel() -> list[Building]:
    rooms = tuple(f"{f}{r:02d}" for f in range(2, 13) for r in range(1, 25))
    spaces = (
        ("lobby", "the lobby"), ("restaurant", "the restaurant"), ("bar", "the bar"),
        ("gym", "the gym"), ("pool", "the pool"), ("laundry", "the guest laundry"),
        ("ballroom", "the ballroom"), ("garage", "the parking garage"),
        ("restroom-1", "the lobby restrooms"), ("restroom-m", "the restrooms by the ballroom"),
        ("corridor-5", "the 5th floor hallway"), ("corridor-9", "the 9th floor hallway"),
    )  # fmt: skip
    return [
        Building(
            "hotel", "the hotel", ("Harbor View Hotel", "Harbor View"),
            37.7946, -122.3999, 12, rooms, ("Salon A", "Salon B", "Boardroom"), spaces, 4,
        )
    ]  # fmt: skip


def _campus() -> list[Building]:
    base = (34.0689, -118.4452)

    def at(n: float, e: float) -> tuple[float, float]:
        return offset(*base, n, e)

    def dorm(code: str, name: str, alias: str, n: float, e: float) -> Building:
        rooms = tuple(f"{f}{r:02d}" for f in range(1, 6) for r in range(1, 31))
        spaces = (
            (f"{code}-lounge", f"the {name} lounge"), (f"{code}-laundry", "the laundry room"),
            (f"{code}-kitchen", "the shared kitchen"), (f"{code}-bath-2", "the 2nd floor bathroom"),
            (f"{code}-bath-4", "the 4th floor bathroom"),
        )  # fmt: skip
        return Building(code, name, (alias,), *at(n, e), 5, rooms, (), spaces, 1)

    def hall(code: str, name: str, alias: str, n: float, e: float, lifts: int) -> Building:
        rooms = tuple(f"{f}{r:02d}" for f in range(1, 5) for r in range(1, 21))
        spaces = (
            (f"{code}-lobby", f"the {name} lobby"), (f"{code}-cafe", "the cafe"),
            (f"{code}-restroom-1", "the ground floor restrooms"),
            (f"{code}-restroom-3", "the 3rd floor restrooms"),
        )  # fmt: skip
        meeting = tuple(f"{f}00" for f in range(1, 5))
        return Building(code, name, (alias,), *at(n, e), 4, rooms, meeting, spaces, lifts)

    return [
        dorm("hartley", "Hartley Hall", "Hartley", 0, 0),
        dorm("ashby", "Ashby Hall", "Ashby", 160, 240),
        hall("science", "the Science Center", "Science Center", -220, 180, 2),
        hall("library", "Main Library", "the library", 90, -260, 2),
        hall("union", "the Student Union", "Student Union", 330, -40, 1),
    ]


def _office() -> list[Building]:
    rooms = tuple(f"{f}{r:02d}" for f in range(2, 21) for r in range(1, 17))
    meeting = tuple(f"{f}20" for f in range(2, 21))
    spaces = (
        ("reception", "reception"), ("kitchen-3", "the 3rd floor kitchen"),
        ("kitchen-8", "the 8th floor kitchen"), ("kitchen-14", "the 14th floor kitchen"),
        ("restroom-3", "the 3rd floor restrooms"), ("restroom-11", "the 11th floor restrooms"),
        ("loading", "the loading dock"), ("garage", "the car park"), ("gym", "the gym"),
        ("canteen", "the canteen"),
    )  # fmt: skip
    return [
        Building(
            "tower", "Meridian Tower", ("the tower", "Meridian"),
            40.7536, -73.9832, 20, rooms, meeting, spaces, 6,
        )
    ]  # fmt: skip


def _resort() -> list[Building]:
    """A resort: a main building and guest lodges 100-250 m apart (tuning only)."""
    base = (20.6296, -156.4453)
    out = []
    for n, (code, name, north, east) in enumerate(
        (("main", "the main building", 0, 0), ("palm", "Palm Lodge", 120, 90),
         ("reef", "Reef Lodge", -150, 140), ("lagoon", "Lagoon Lodge", 60, -210))
    ):  # fmt: skip
        lat, lon = offset(*base, north, east)
        floors = 3 if n else 5
        rooms = tuple(f"{f}{r:02d}" for f in range(1, floors + 1) for r in range(1, 21))
        spaces = (
            ((f"{code}-lobby", "the lobby"), (f"{code}-pool", "the pool"),
             (f"{code}-restaurant", "the restaurant"), (f"{code}-spa", "the spa"))
            if n == 0
            else ((f"{code}-laundry", "the laundry room"), (f"{code}-lounge", f"the {name} lounge"))
        )  # fmt: skip
        meeting = ("Ohana Room", "Kona Room") if n == 0 else ()
        out.append(Building(code, name, (name.removeprefix("the "),), lat, lon, floors, rooms,
                            meeting, spaces, 2 if n == 0 else 1))  # fmt: skip
    return out


TENANTS = {"hotel": _hotel, "resort": _resort, "campus": _campus, "office": _office}
SPACE_KINDS = {"spill", "restroom_dirty"}
MEETING_KINDS = {"projector_broken"}
OUTDOOR_KINDS = {"parking_gate"}


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _floor_of(room: str) -> int:
    return int(room[:-2]) if room[:-2].isdigit() else 1


def room_code(b: Building, room: str) -> str:
    """A room's place code: "hotel-412", "hotel-Salon-B"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{b.code}-{room}")


def place_tree(buildings: Sequence[Building]) -> list[PlaceNode]:
    """The tenant's places as it would import them: buildings, floors, rooms, spaces, lifts."""
    nodes: list[PlaceNode] = []
    for b in buildings:
        nodes.append(PlaceNode(b.code, "building", b.name.removeprefix("the "), b.aliases,
                               None, b.lat, b.lon))  # fmt: skip
        for f in range(1, b.floors + 1):
            nodes.append(PlaceNode(f"{b.code}-f{f}", "floor", f"{_ordinal(f)} floor", (),
                                   b.code, None, None))  # fmt: skip
        for r in (*b.rooms, *b.meeting_rooms):
            nodes.append(PlaceNode(room_code(b, r), "room", f"Room {r}", (r,),
                                   f"{b.code}-f{_floor_of(r)}", None, None))  # fmt: skip
        for code, said in b.spaces:
            nodes.append(PlaceNode(code, "space", said.removeprefix("the ").capitalize(), (),
                                   b.code, None, None))  # fmt: skip
        for n in range(1, b.lifts + 1):
            nodes.append(PlaceNode(f"{b.code}-lift-{n}", "asset", f"Lift {n}",
                                   (f"elevator {n}",), b.code, None, None))  # fmt: skip
    return nodes


def facility_stream(cfg: FacilityConfig) -> Stream:
    rnd = random.Random(cfg.seed)
    spec = kinds()
    facility = [k for k in spec.values() if k.set == "facility"]
    buildings = TENANTS[cfg.tenant]()
    write = Writer(cfg.families, rnd)
    t0 = 1_700_000_000.0
    items: list[Item] = []

    def where(b: Building, room: str | None, space: tuple[str, str] | None) -> dict[str, str]:
        own_room = room or rnd.choice(b.rooms)
        floor = _floor_of(own_room)
        return {
            "room": own_room,
            "floor": str(floor),
            "floor_ord": _ordinal(floor),
            "building": b.name,
            "space": space[1] if space else rnd.choice(b.spaces)[1],
            "lift": str(rnd.randint(1, b.lifts)) if b.lifts else "1",
        }

    # A building has far more rooms than building-wide systems: a room fault is drawn four
    # times as often as a building-wide one (first drawn equally, which gave every hotel three
    # gas leaks and three wifi outages a week; changed after the first runs, see README).
    weights = [cfg.building_weight if k.scope == "building" else 1.0 for k in facility]
    # A place has one problem of a kind at a time: a second report about the restroom being
    # dirty while it still is, is about the same problem. Problems of a kind at one place are
    # apart by their spread and a day to fix (drawn again until they are).
    busy: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for n in range(cfg.problems):
        for _ in range(50):
            kind = rnd.choices(facility, weights)[0]
            b = rnd.choice(buildings)
            room: str | None = None
            space: tuple[str, str] | None = None
            lift: str | None = None
            if kind.scope == "building":
                truth_place = b.code
                if kind.id == "lift_out" and b.lifts:
                    lift = str(rnd.randint(1, b.lifts))
                    truth_place = f"{b.code}-lift-{lift}"
                k = cluster_size(rnd, 0.15, 1.2, 15)
                spread = cfg.building_spread_h
            else:
                if kind.id in SPACE_KINDS or kind.id in OUTDOOR_KINDS:
                    space = rnd.choice(b.spaces)
                    truth_place = space[0]
                elif kind.id in MEETING_KINDS and b.meeting_rooms:
                    room = rnd.choice(b.meeting_rooms)
                    truth_place = room_code(b, room)
                else:
                    room = rnd.choice(b.rooms)
                    truth_place = room_code(b, room)
                k = cluster_size(rnd, 0.55, 2.0, 5)
                spread = cfg.local_spread_h
            start = t0 + rnd.uniform(0, cfg.days * DAY)
            window = (start, start + spread * HOUR + DAY)
            taken = busy.setdefault((truth_place, kind.id), [])
            if not any(a < window[1] and window[0] < b_ for a, b_ in taken):
                taken.append(window)
                break
        if kind.scope == "building":
            forbid: frozenset[str] = frozenset()
        elif space is not None:
            forbid = frozenset({"room", "floor", "floor_ord"})
        else:
            forbid = frozenset({"space"})
        truth = Truth(f"p{n}", kind.id, kind.category, kind.subtype, kind.scope)
        times = [
            start,
            *sorted(start + spread * HOUR * rnd.betavariate(0.8, 1.6) for _ in range(k - 1)),
        ]
        for t in times:
            # Building-wide: each reporter says where they are, not where the fault is.
            slots = where(b, room, space)
            if lift:
                slots["lift"] = lift
            text, family, w = write(kind.id, slots, forbid)
            plat, plon = scatter(b.lat, b.lon, rnd, cfg.pin_sd_m)
            code = None
            if cfg.registered and kind.scope == "local" and rnd.random() < cfg.place_code_p:
                code = truth_place
            items.append(Item("", text, plat, plon, t, code, family, w, truth))
    items.sort(key=lambda i: i.t)
    items = [i._replace(id=f"r{n}") for n, i in enumerate(items)]
    places = place_tree(buildings) if cfg.registered else []
    name = f"{cfg.tenant}{'' if cfg.registered else '-unregistered'}"
    return Stream(name, cfg.tenant, "facility", items, places)
