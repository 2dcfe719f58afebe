"""Seeded generator of a labelled duplicate-report set built on real 311 records.

Everything here is deterministic for a given `Config` (one `random.Random(seed)` drives all
draws, records are read in file order). The steps, documented with their figures in
README.md:

1. Seeds: every real LA and SF record with a location becomes a candidate *problem*: its
   real location, its real creation time, its category mapped to the taxonomy with
   `civicpulse.imports.LA_CATEGORIES` / `SF_CATEGORIES` (plus three request-type
   refinements: SF "Flooding" -> flooding, SF "Hazardous Materials" -> hazard). Categories
   with fewer than `min_seeds` seeds borrow the location and time of SF records that map to
   "other". A record is dropped when an earlier kept seed of the same category lies within
   `ambiguous_m` metres and `ambiguous_days` days: such natural pairs may be real duplicates
   and their truth is unknown, so they are left out instead of mislabelled.
2. Problem lifetime: the record's own open time (closed - created), clamped to
   [6 h, 30 d], and to a category cap for transient problems (flooding 24 h, hazard 12 h,
   noise 3 h); 7 days when the record has no closing time.
3. Cluster size (reports about the problem): singleton with a per-category probability,
   otherwise a power law P(k) ~ k^-alpha on 2..20.
4. Duplicates: reports 2..k land at the true location plus a jitter (isotropic normal with
   a per-category per-axis sd of 18-40 m, and with probability `tail_p` a radial offset drawn
   uniformly from a wider ring, e.g. 40-80 m for area problems such as flooding or water),
   at times seed + Beta(0.6, 1.5) x lifetime.
5. Hard negatives: with a per-category probability a problem gets 1-3 *different* problems
   of the same category nearby (a per-category distance range, 20-150 m for point problems,
   wider for area problems), on the same street (house number moved with the distance),
   within the problem's lifetime (or, for bulky items and dumping, 50% of the time filed by
   the same caller within 90 minutes). Each has its own cluster of duplicates.
6. Text: every report gets its own resident-style text: per-category problem subtypes, each
   with synonym noun phrases and detail phrases; a problem fixes its subtype, two detail
   "facts", a landmark and its address; each report picks a template (generic or
   category-specific), a way of naming the place (house number, street only, cross street,
   landmark, neighbourhood, nothing), synonyms, and may get typos or a case change.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import math
import random
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

from civicpulse.engine import geo
from civicpulse.imports import LA_CATEGORIES, SF_CATEGORIES

ROOT = Path(__file__).resolve().parents[2]
DATA = Path("/work/shared/data")
LA_FILE = DATA / "la311_2020-01-01_to_03.csv"
SF_FILE = DATA / "sf311_sample_2008-2016.csv"
TAXONOMY = ROOT / "civicpulse" / "data" / "taxonomy.json"
ZONE = ZoneInfo("America/Los_Angeles")
HOUR = 3600.0
DAY = 24 * HOUR

# Request-type refinements: the exports file these under broader categories.
SF_TYPE_REFINEMENTS = {"Flooding": "flooding", "Hazardous Materials": "hazard"}


def kinds() -> dict[str, str]:
    return {c["code"]: c["kind"] for c in json.loads(TAXONOMY.read_text())}


# -- per-category generation parameters ------------------------------------------------------
class CatGen(NamedTuple):
    jitter_sd_m: float  # per-axis sd of a duplicate's pin around the true location
    tail_ring_m: tuple[float, float]  # radial offset range of a tail (badly placed) pin
    p_single: float  # probability that a problem is reported once
    alpha: float  # power-law exponent of cluster sizes >= 2
    p_hardneg: float  # probability that a problem has different problems nearby
    hardneg_m: tuple[float, float]  # distance range of those different problems
    lifetime_cap_s: float  # transient problems end quickly whatever the record says


_D = 30 * DAY
CATEGORY_GEN: dict[str, CatGen] = {
    # Point problems: one object at one address.
    "bulky_items": CatGen(18, (30, 60), 0.90, 2.6, 0.35, (20, 60), _D),
    "abandoned_vehicle": CatGen(18, (30, 60), 0.70, 2.4, 0.25, (20, 100), _D),
    "building_fault": CatGen(20, (30, 60), 0.85, 2.6, 0.20, (25, 120), _D),
    "graffiti": CatGen(22, (30, 60), 0.80, 2.5, 0.40, (25, 150), _D),
    "streetlight": CatGen(22, (30, 60), 0.60, 2.2, 0.30, (30, 120), _D),
    "signs_signals": CatGen(22, (30, 60), 0.65, 2.3, 0.25, (30, 150), _D),
    "trees": CatGen(22, (30, 60), 0.65, 2.3, 0.25, (20, 100), _D),
    # Street problems: a stretch of road or sidewalk.
    "road_defect": CatGen(28, (35, 70), 0.60, 2.2, 0.35, (40, 150), _D),
    "litter_dumping": CatGen(28, (35, 70), 0.85, 2.5, 0.15, (30, 150), _D),
    "other": CatGen(28, (35, 70), 0.85, 2.6, 0.20, (30, 150), _D),
    # Area problems: heard or seen from a distance, pins spread wider.
    "water_sewer": CatGen(32, (40, 80), 0.55, 2.1, 0.25, (60, 200), _D),
    "parks": CatGen(38, (40, 80), 0.65, 2.3, 0.25, (60, 250), _D),
    "noise": CatGen(40, (40, 80), 0.55, 2.2, 0.25, (80, 250), 3 * HOUR),
    "hazard": CatGen(35, (40, 80), 0.45, 1.9, 0.25, (100, 300), 12 * HOUR),
    "flooding": CatGen(40, (40, 80), 0.40, 1.8, 0.30, (150, 400), 1 * DAY),
}
MAX_CLUSTER = 20
LIFETIME_MIN_S = 6 * HOUR
LIFETIME_MAX_S = 30 * DAY
LIFETIME_DEFAULT_S = 7 * DAY


@dataclass(frozen=True)
class Config:
    seed: int = 20240611
    la_fraction: float = 1.0  # share of the (kept) LA seeds used
    sf_fraction: float = 1.0
    min_seeds: int = 80
    ambiguous_m: float = 50.0
    ambiguous_days: float = 7.0
    tail_p: float = 0.10
    typo_p: float = 0.20
    same_caller_p: float = 0.5  # bulky items / dumping hard negatives filed by one caller
    jitter_scale: float = 1.0  # stress test: scales every jitter sd and tail ring


class Problem(NamedTuple):
    id: str
    city: str
    category: str
    kind: str
    lat: float
    lon: float
    t0: float
    lifetime_s: float
    role: str  # seed | borrowed | hardneg
    parent: str | None  # the seed a hard negative sits next to
    source_id: str


class LabelledReport(NamedTuple):
    id: str
    problem: str
    city: str
    category: str
    kind: str
    lat: float
    lon: float
    t: float
    text: str
    role: str  # first | duplicate  (of its problem)
    problem_role: str  # seed | borrowed | hardneg
    offset_m: float  # distance from the problem's true location


@dataclass
class Dataset:
    config: Config
    reports: list[LabelledReport]
    problems: dict[str, Problem]
    stats: dict[str, object] = field(default_factory=dict)


# -- real records ------------------------------------------------------------------------------
class Place(NamedTuple):
    number: str | None
    street: str | None  # e.g. "W VANOWEN ST"
    cross: str | None
    hood: str | None


class Seed(NamedTuple):
    city: str
    source_id: str
    category: str
    lat: float
    lon: float
    t: float
    lifetime_s: float | None
    place: Place


def _ts(raw: str) -> float | None:
    raw = raw.strip()
    if not raw or raw == "NA":
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    return value.replace(tzinfo=ZONE).timestamp()


def _coord(raw: str) -> float | None:
    try:
        v = float(raw)
    except ValueError:
        return None
    return None if v == 0.0 else v


_SF_NUMBERED = re.compile(r"^(\d+[A-Z]?)\s+(.+?),\s*SAN FRANCISCO", re.I)
_SF_STREET = re.compile(r"^([^,\d][^,]*),\s*SAN FRANCISCO", re.I)
_SF_CROSS = re.compile(r"^Intersection of (.+?) and (.+)$", re.I)


def read_la() -> list[Seed]:
    out = []
    with LA_FILE.open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            lat, lon = _coord(row["latitude"] or ""), _coord(row["longitude"] or "")
            t = _ts(row["createddate"] or "")
            if lat is None or lon is None or t is None:
                continue
            closed = _ts(row["closeddate"] or "")
            street = " ".join(
                p for p in (row["direction"], row["streetname"], row["suffix"]) if p and p.strip()
            )
            number = (row["housenumber"] or "").strip() or None
            cross = None
            if not (row["streetname"] or "").strip():
                # Intersections: "VAN NUYS BLVD AT ALBERS ST, 91411".
                addr = re.sub(r",?\s*\d{5}$", "", (row["address"] or "").strip())
                a, _, b = addr.partition(" AT ")
                street, cross, number = a.strip(" ,") or "", b.strip(" ,") or None, None
            out.append(
                Seed(
                    "la",
                    row["srnumber"],
                    LA_CATEGORIES.get(row["requesttype"], "other"),
                    lat,
                    lon,
                    t,
                    None if closed is None else closed - t,
                    Place(number, street or None, cross, (row["ncname"] or "").strip() or None),
                )
            )
    return out


def read_sf() -> list[Seed]:
    out = []
    with SF_FILE.open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            lat, lon = _coord(row["Lat"]), _coord(row["Long"])
            t = _ts(row["Opened"])
            if lat is None or lon is None or t is None:
                continue
            closed = _ts(row["Closed"])
            category = SF_TYPE_REFINEMENTS.get(
                row["Request.Type"], SF_CATEGORIES.get(row["Category"], "other")
            )
            address = row["Address"].strip()
            number = street = cross = None
            if m := _SF_CROSS.match(address):
                street, cross = m.group(1).strip(), m.group(2).strip()
            elif m := _SF_NUMBERED.match(address):
                number, street = m.group(1), m.group(2).strip()
            elif m := _SF_STREET.match(address):
                street = m.group(1).strip()
            hood = row["Neighborhood"].strip()
            out.append(
                Seed(
                    "sf",
                    row["CaseID"],
                    category,
                    lat,
                    lon,
                    t,
                    None if closed is None else closed - t,
                    Place(number, street, cross, hood if hood and hood != "NA" else None),
                )
            )
    return out


def _metres_to_deg(lat: float, north_m: float, east_m: float) -> tuple[float, float]:
    return (
        north_m / geo.METRES_PER_DEGREE,
        east_m / (geo.METRES_PER_DEGREE * math.cos(math.radians(lat))),
    )


def _grid_key(lat: float, lon: float, size_deg: float = 0.005) -> tuple[int, int]:
    return (math.floor(lat / size_deg), math.floor(lon / size_deg))


def _near(index: dict, lat: float, lon: float) -> list:
    k0, k1 = _grid_key(lat, lon)
    return [x for a in (-1, 0, 1) for b in (-1, 0, 1) for x in index.get((k0 + a, k1 + b), ())]


def add_cross_streets(seeds: list[Seed]) -> list[Seed]:
    """A cross street for each record: the nearest other real record (same city) within
    300 m whose street differs."""
    index: dict[tuple[int, int], list[Seed]] = defaultdict(list)
    for s in seeds:
        if s.place.street:
            index[_grid_key(s.lat, s.lon)].append(s)
    out = []
    for s in seeds:
        if s.place.cross or not s.place.street:
            out.append(s)
            continue
        best, best_d = None, 300.0
        mine = _street_core(s.place.street)
        for o in _near(index, s.lat, s.lon):
            if o.city != s.city or _street_core(o.place.street or "") == mine:
                continue
            d = geo.distance_m(s.lat, s.lon, o.lat, o.lon)
            if d < best_d:
                best, best_d = o.place.street, d
        out.append(s._replace(place=s.place._replace(cross=best)))
    return out


def drop_ambiguous(seeds: list[Seed], radius_m: float, window_s: float) -> tuple[list, int]:
    """Leave out a record when an earlier kept one of the same category is within reach."""
    kept: list[Seed] = []
    index: dict[tuple[str, int, int], list[Seed]] = defaultdict(list)
    dropped = 0
    for s in sorted(seeds, key=lambda s: (s.t, s.source_id)):
        k0, k1 = _grid_key(s.lat, s.lon)
        clash = False
        for a in (-1, 0, 1):
            for b in (-1, 0, 1):
                for o in index.get((s.category, k0 + a, k1 + b), ()):
                    if s.t - o.t <= window_s and (
                        geo.distance_m(s.lat, s.lon, o.lat, o.lon) <= radius_m
                    ):
                        clash = True
        if clash:
            dropped += 1
            continue
        kept.append(s)
        index[(s.category, k0, k1)].append(s)
    return kept, dropped


# -- texts -----------------------------------------------------------------------------------
class Subtype(NamedTuple):
    nouns: tuple[str, ...]  # synonym noun phrases, without article
    details: tuple[str, ...]  # facts a resident may add


def S(nouns: str, details: str) -> Subtype:
    return Subtype(tuple(nouns.split("|")), tuple(details.split("|")))


SUBTYPES: dict[str, dict[str, Subtype]] = {
    "road_defect": {
        "pothole": S(
            "pothole|big pothole|pot hole|deep hole in the road|crater in the road|"
            "hole in the asphalt|huge pothole|road damage",
            "my tire blew out on it|cars swerve around it|it is getting bigger every week|"
            "about a foot wide|it fills with water when it rains|a cyclist nearly fell in it|"
            "it's right in the middle of the lane",
        ),
        "sunken": S(
            "sunken patch of road|dip in the road|road surface crumbling|cracked asphalt|"
            "sinking pavement|broken road surface",
            "getting deeper|cars bottom out on it|looks like it could collapse|"
            "water pools in it|the cracks run across both lanes",
        ),
        "sidewalk": S(
            "lifted sidewalk|cracked sidewalk|broken sidewalk|raised slab on the sidewalk|"
            "uneven pavement|damaged footpath",
            "an elderly neighbour tripped|wheelchairs can't get past|tree roots pushed it up|"
            "it sticks up about 3 inches|strollers get stuck",
        ),
        "curb": S(
            "broken curb|crumbling curb|damaged kerb|curb ramp broken",
            "concrete chunks on the sidewalk|the ramp is impassable|rebar sticking out",
        ),
    },
    "streetlight": {
        "out": S(
            "streetlight out|street light not working|light out|broken street lamp|"
            "dead streetlight|lamp post not lit|street lamp out",
            "pitch dark at night|out for a week|feels unsafe walking home|"
            "the whole corner is dark|been out since the storm",
        ),
        "flicker": S(
            "flickering streetlight|street light flickering|lamp blinking on and off|"
            "light keeps turning off",
            "flickers all night|buzzing noise too|goes off every few minutes",
        ),
        "dayburner": S(
            "street light on during the day|streetlight stuck on|lamp on all day",
            "on 24 hours a day|wasting electricity|on at noon",
        ),
        "pole": S(
            "damaged light pole|leaning lamp post|knocked down light pole|"
            "light pole with exposed wires",
            "a car hit it|the access panel is open|wires hanging out|leaning over the road",
        ),
    },
    "graffiti": {
        "wall": S(
            "graffiti on the wall|tagging on the wall|spray paint on the building|"
            "graffiti on a building|tags on the side of the building",
            "big black letters|gang tags|it's offensive|covers the whole wall|"
            "came back after being painted over",
        ),
        "box": S(
            "graffiti on the utility box|tagged electrical box|spray paint on the mailbox|"
            "graffiti on the traffic signal box",
            "silver and blue paint|tagged overnight|kids walk past it",
        ),
        "shelter": S(
            "graffiti on the bus shelter|tags on the bus stop|scratched and painted bus bench|"
            "graffiti on the stop sign",
            "glass is etched too|offensive words|sign is hard to read now",
        ),
        "door": S(
            "graffiti on the garage door|tagged shop shutters|spray paint on the fence|"
            "graffiti on a garage",
            "red spray paint|done last night|the whole fence is covered",
        ),
        "posters": S(
            "illegal posters|flyers stapled on the poles|posters glued on the wall|"
            "illegal signs posted",
            "dozens of them|advertising a party|stapled to every pole",
        ),
    },
    "litter_dumping": {
        "bags": S(
            "dumped trash bags|pile of garbage bags|illegal dumping|rubbish dumped|"
            "bags of trash dumped|garbage pile",
            "it smells awful|rats are getting into it|about ten bags|dumped overnight|"
            "blocking the sidewalk",
        ),
        "debris": S(
            "construction debris dumped|dumped building materials|pile of junk|"
            "illegally dumped debris",
            "drywall and wood|paint cans too|a truck dumped it last night|broken tiles",
        ),
        "bin": S(
            "overflowing trash can|overflowing public bin|full litter bin|garbage can overflowing",
            "trash blowing everywhere|hasn't been emptied in days|birds pulling trash out",
        ),
        "animal": S(
            "dead animal|dead cat|dead raccoon|dead dog|dead possum|animal carcass",
            "on the sidewalk|in the gutter|it smells|been there since yesterday",
        ),
        "encampment": S(
            "encampment trash|homeless encampment debris|tents and trash|needles and trash",
            "blocking the sidewalk|needles on the ground|human waste|growing every day",
        ),
        "litter": S(
            "litter everywhere|street needs cleaning|trash all over the street|"
            "sidewalk covered in litter",
            "after the weekend|fast food wrappers|broken glass too",
        ),
    },
    "bulky_items": {
        "mattress": S(
            "mattress|old mattress|mattress and box spring|used mattress|dirty mattress",
            "left on the curb|leaning against the wall|queen size|soaked from the rain|"
            "blocking the sidewalk",
        ),
        "sofa": S(
            "couch|sofa|old couch|broken sofa|sectional sofa|recliner",
            "and two chairs|cushions everywhere|torn up|with a coffee table",
        ),
        "appliance": S(
            "fridge|refrigerator|washing machine|old stove|dryer|washer and dryer|metal appliances",
            "door still on it|rusty|dumped at night|left by the previous tenant",
        ),
        "ewaste": S(
            "old TV|e-waste|computer monitors|electronic waste|old television|printer and monitors",
            "screen broken|three of them|cables everywhere",
        ),
        "furniture": S(
            "furniture|bulky items|old furniture|dresser and bed frame|wardrobe|"
            "bookcase and desk|bulky item pickup",
            "a few pieces|broken in half|for pickup|left out for days",
        ),
    },
    "water_sewer": {
        "main": S(
            "water main break|burst water pipe|water gushing from the street|"
            "broken water main|water leak in the road",
            "water running down the street|pressure is low in the houses|"
            "it's been flowing for hours|the asphalt is lifting",
        ),
        "sewer": S(
            "sewer smell|sewage backup|sewer overflow|sewage coming up|bad sewer odor",
            "smells like rotten eggs|coming out of the manhole|into the basement|"
            "worse in the evening",
        ),
        "drain": S(
            "blocked storm drain|clogged catch basin|blocked drain|drain full of leaves|"
            "clogged gutter drain",
            "water is not draining|full of leaves and trash|smells bad",
        ),
        "hydrant": S(
            "leaking hydrant|fire hydrant leaking|hydrant spraying water|broken fire hydrant",
            "someone opened it|water spraying the cars|leaking for days",
        ),
        "waste": S(
            "water waste|sprinklers running onto the street|water being wasted|broken sprinkler",
            "running all day|water running down the gutter|every morning",
        ),
    },
    "flooding": {
        "road": S(
            "flooding|flooded street|street flooding|road under water|flooded intersection|"
            "flash flooding",
            "cars can't get through|water up to the curb|knee deep|after the storm|"
            "drains can't cope",
        ),
        "standing": S(
            "standing water|big puddle across the road|water ponding|huge puddle|water pooling",
            "people walk in the road to avoid it|it never drains|mosquitos",
        ),
        "underpass": S(
            "flooded underpass|underpass under water|tunnel flooded",
            "a car is stuck|water up to the windows|closed off by police",
        ),
    },
    "trees": {
        "branch": S(
            "fallen branch|broken tree limb|large branch down|tree limb hanging|"
            "branch blocking the sidewalk",
            "fell in the wind|hanging over the sidewalk|blocking the road|hit a parked car",
        ),
        "leaning": S(
            "leaning tree|tree about to fall|dangerous tree|dead tree|unstable tree",
            "roots coming up|leaning over the house|it's cracked at the base",
        ),
        "overgrown": S(
            "overgrown tree|overgrown bushes|tree needs trimming|weeds and overgrown plants|"
            "branches blocking the sign",
            "can't see the traffic|covering the streetlight|blocking the sidewalk",
        ),
        "fallen": S(
            "fallen tree|tree down|uprooted tree|tree fell over",
            "blocking the whole street|on top of a car|power lines too",
        ),
    },
    "noise": {
        "music": S(
            "loud music|loud party|music blasting|noise from a party|loud speakers",
            "every weekend|until 3am|bass shaking the windows|people shouting",
        ),
        "construction": S(
            "construction noise|jackhammering|construction work at night|"
            "noise from the building site",
            "starting at 5am|on a Sunday|generators running all night",
        ),
        "alarm": S(
            "car alarm going off|alarm ringing|burglar alarm going off",
            "for two hours|won't stop|every night",
        ),
        "trucks": S(
            "garbage truck noise|noisy trucks|trucks idling",
            "at 4am|banging bins|engines running for an hour",
        ),
    },
    "abandoned_vehicle": {
        "parked": S(
            "abandoned car|car parked for weeks|abandoned vehicle|car that hasn't moved|"
            "abandoned van|abandoned RV",
            "hasn't moved in a month|flat tires|covered in dust|parking tickets on it",
        ),
        "noplates": S(
            "car with no plates|vehicle without license plates|unregistered car|"
            "car with expired tags",
            "no plates at all|tags expired 2018|someone sleeping in it",
        ),
        "wreck": S(
            "wrecked car|burned out car|stripped car|car with broken windows|vandalized vehicle",
            "windows smashed|wheels missing|leaking oil|burned last night",
        ),
    },
    "parks": {
        "play": S(
            "broken playground equipment|broken swing|damaged slide|broken play structure",
            "sharp edges|kids could get hurt|chains snapped|taped off",
        ),
        "bench": S(
            "broken bench|damaged picnic table|broken park bench",
            "slats missing|nails sticking out|burned",
        ),
        "fountain": S(
            "broken drinking fountain|water fountain not working|fountain leaking",
            "no water|water everywhere|been broken for weeks",
        ),
        "restroom": S(
            "park restroom closed|dirty park bathroom|park toilets broken",
            "no soap|locked all day|flooded floor",
        ),
        "mess": S(
            "park full of trash|litter in the park|overflowing bins in the park",
            "after the weekend|broken glass|needles near the sandbox",
        ),
    },
    "building_fault": {
        "window": S(
            "broken window|smashed window in the building|broken door|front door won't lock",
            "glass on the floor|cold air coming in|security risk",
        ),
        "leak": S(
            "leaking roof|water leak in the ceiling|mold in the apartment|ceiling leak",
            "dripping into the hallway|mold growing|ceiling sagging",
        ),
        "heating": S(
            "no heat in the building|heating broken|no hot water|boiler broken",
            "for three days|kids are cold|landlord not responding",
        ),
        "elevator": S(
            "elevator out of service|elevator broken|lift not working",
            "elderly residents stuck upstairs|for a week|stuck between floors",
        ),
    },
    "hazard": {
        "gas": S(
            "gas smell|smell of gas|possible gas leak|strong gas odor",
            "very strong near the corner|people feeling dizzy|coming from the street",
        ),
        "chemical": S(
            "hazardous materials dumped|chemical spill|paint and oil spilled|"
            "barrels of chemicals dumped|motor oil dumped",
            "strong fumes|leaking into the drain|several barrels",
        ),
        "wires": S(
            "downed power line|wires hanging low|exposed electrical wires|power line down",
            "sparking|across the sidewalk|touching the fence",
        ),
    },
    "signs_signals": {
        "stop": S(
            "stop sign knocked down|missing stop sign|bent stop sign|stop sign down",
            "cars running through|lying in the grass|hit by a truck",
        ),
        "signal": S(
            "traffic light out|signal not working|traffic signal stuck on red|broken traffic light",
            "causing near misses|flashing red all day|long backups",
        ),
        "defaced": S(
            "sign defaced|street sign missing|sign faded|street name sign fell",
            "can't read it|stickers all over it|turned the wrong way",
        ),
        "meter": S(
            "broken parking meter|parking meter not working|meter eating coins",
            "screen blank|card reader broken",
        ),
    },
    "other": {
        "blocked": S(
            "blocked driveway|car blocking the sidewalk|blocked parking space",
            "every day|can't get my car out|for hours",
        ),
        "general": S(
            "problem|issue on the street|general request|something that needs attention",
            "please send someone|not sure who to call|it's been weeks",
        ),
        "posting": S(
            "shopping carts abandoned|abandoned shopping carts|pile of shopping carts",
            "five of them|blocking the path",
        ),
    },
}

GENERIC_TEMPLATES = (
    "{Thing} {loc}",
    "{Thing} {loc}. {Detail}.",
    "There is {a_thing} {loc}. {Detail}. {extra}",
    "Reporting {a_thing} {loc}, {detail}",
    "{Loc}: {thing}. {extra}",
    "Hi, I want to report {a_thing} {loc}. {Detail}, {detail2}. {extra} Thanks",
    "{thing}!! {loc}",
    "Please send someone, {thing} {loc}, {detail}",
    "{Thing} {loc} - {detail}",
    "{Thing} again {loc}. {extra}",
    "Can someone take care of the {thing} {loc}? {Detail}.",
    "{Detail}. {Thing} {loc}",
)
CATEGORY_TEMPLATES: dict[str, tuple[str, ...]] = {
    "road_defect": (
        "Road needs repair {loc}, {thing}. {Detail}",
        "Watch out for the {thing} {loc}, {detail}. {extra}",
    ),
    "streetlight": (
        "The {thing} {loc}. {Detail}",
        "{Loc} is dark, {thing}. {extra}",
    ),
    "graffiti": (
        "Please remove the {thing} {loc}",
        "Someone did {thing} {loc} {when}. {Detail}",
    ),
    "litter_dumping": (
        "Somebody left {a_thing} {loc} {when}. {Detail}.",
        "Clean up needed {loc}: {thing}, {detail}",
    ),
    "bulky_items": (
        "Bulky item pickup {loc}: {thing}",
        "Please pick up {a_thing} {loc}, {detail}",
        "{Thing} {detail} {loc}, need collection",
    ),
    "water_sewer": (
        "Water problem {loc}, {thing}. {Detail}",
        "URGENT {thing} {loc} {detail}",
    ),
    "flooding": (
        "{Loc} is flooded, {detail}",
        "Warning: {thing} {loc}. {Detail}. {extra}",
    ),
    "trees": ("Tree problem {loc}: {thing}, {detail}",),
    "noise": ("Noise complaint {loc}, {thing} {detail}",),
    "abandoned_vehicle": ("{Thing} {loc}. {Detail}. Please tow it",),
    "parks": ("In the park {loc}: {thing}, {detail}",),
    "building_fault": ("Apartment building {loc}: {thing}. {Detail}",),
    "hazard": ("DANGER {thing} {loc}, {detail}. {extra}",),
    "signs_signals": ("{Thing} {loc}, {detail}. Someone will get hurt",),
    "other": ("{Thing} {loc}",),
}
EXTRAS = (
    "Please fix asap.",
    "This has been going on for days.",
    "Third time I report this!",
    "It's dangerous.",
    "Thank you.",
    "Kids walk past here every day.",
    "",
    "",
    "Can someone come look at it?",
    "Nobody has done anything yet.",
    "Thanks for your help",
    "My neighbours reported it too.",
)
WHENS = ("last night", "yesterday", "this morning", "over the weekend", "again", "today")
LANDMARKS = (
    "the bus stop",
    "the school",
    "the church",
    "the 7-Eleven",
    "the park entrance",
    "the gas station",
    "the laundromat",
    "the library",
    "the taco truck",
    "the liquor store",
    "the post office",
    "the community center",
)
SYNONYMS = {
    "road": ("street", "road"),
    "sidewalk": ("sidewalk", "pavement"),
    "big": ("big", "huge", "large"),
    "broken": ("broken", "damaged", "busted"),
    "trash": ("trash", "garbage", "rubbish"),
    "dangerous": ("dangerous", "unsafe", "a hazard"),
}
SUFFIXES = {
    "ST": ("St", "Street", "st"),
    "AVE": ("Ave", "Avenue", "av"),
    "BLVD": ("Blvd", "Boulevard"),
    "DR": ("Dr", "Drive"),
    "PL": ("Pl", "Place"),
    "RD": ("Rd", "Road"),
    "WAY": ("Way",),
    "CT": ("Ct", "Court"),
    "LN": ("Ln", "Lane"),
}
DIRECTIONS = {"N": "North", "S": "South", "E": "East", "W": "West"}
KEYBOARD = "qwertyuiopasdfghjklzxcvbnm"


def _street_core(street: str) -> str:
    words = [w for w in street.upper().split() if w not in DIRECTIONS and w not in SUFFIXES]
    return " ".join(words)


def say_street(street: str, rnd: random.Random) -> str:
    """One way of writing a street name: "W Vanowen St", "Vanowen Street", "vanowen"."""
    words = street.split()
    out = []
    for i, w in enumerate(words):
        up = w.upper()
        if i == 0 and up in DIRECTIONS and len(words) > 1:
            r = rnd.random()
            if r < 0.5:
                continue
            out.append(up if r < 0.8 else DIRECTIONS[up])
        elif i == len(words) - 1 and up in SUFFIXES and len(words) > 1:
            r = rnd.random()
            if r < 0.2:
                continue
            out.append(rnd.choice(SUFFIXES[up]))
        else:
            out.append(w.lower() if re.match(r"^\d", w) else w.capitalize())
    return " ".join(out) or street.title()


MASS_NOUNS = frozenset(
    [
        "debris",
        "trash",
        "music",
        "noise",
        "damage",
        "flooding",
        "litter",
        "furniture",
        "dumping",
        "waste",
        "work",
        "cleaning",
        "water",
        "graffiti",
        "paint",
        "asphalt",
        "tagging",
        "smell",
        "odor",
        "heat",
        "e-waste",
        "rubbish",
        "garbage",
        "jackhammering",
        "overflow",
        "backup",
        "materials",
        "oil",
    ]
)
_PREPOSITIONS = frozenset(
    [
        "on",
        "in",
        "of",
        "from",
        "with",
        "at",
        "for",
        "across",
        "blocking",
        "about",
        "under",
        "during",
        "that",
        "without",
        "and",
        "to",
        "stuck",
        "onto",
        "going",
        "ringing",
        "spraying",
        "coming",
        "being",
        "not",
        "hasn't",
        "won't",
        "keeps",
    ]
)


def _article(phrase: str) -> str:
    """ "a pothole", "an old TV", but "graffiti on the wall", "dumped trash bags"."""
    words = phrase.split()
    head = words[-1]
    for i, w in enumerate(words[1:], 1):
        if w in _PREPOSITIONS:
            head = words[i - 1]
            break
    if head in MASS_NOUNS or (head.endswith("s") and not head.endswith("ss")):
        return phrase
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def _typos(text: str, rnd: random.Random) -> str:
    chars = list(text)
    for _ in range(rnd.choice((1, 1, 1, 2, 3))):
        letters = [i for i, c in enumerate(chars) if c.isalpha()]
        if len(letters) < 4:
            break
        i = rnd.choice(letters)
        op = rnd.random()
        if op < 0.3 and i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif op < 0.55:
            del chars[i]
        elif op < 0.75:
            chars.insert(i, chars[i])
        else:
            chars[i] = rnd.choice(KEYBOARD)
    return "".join(chars)


class ProblemText(NamedTuple):
    subtype: str
    facts: tuple[str, ...]
    landmark: str
    place: Place


def new_problem_text(
    category: str, place: Place, rnd: random.Random, subtype: str | None = None
) -> ProblemText:
    subs = SUBTYPES[category]
    name = subtype or rnd.choice(sorted(subs))
    details = subs[name].details
    facts = tuple(rnd.sample(details, min(2, len(details))))
    return ProblemText(name, facts, rnd.choice(LANDMARKS), place)


def say_place(p: ProblemText, rnd: random.Random) -> str:
    place = p.place
    options: list[tuple[float, str]] = [(0.08, ""), (0.08, f"near {p.landmark}")]
    if place.street:
        st = say_street(place.street, rnd)
        options += [(0.2, f"on {st}"), (0.08, f"{st}")]
        if place.number:
            options += [
                (0.25, f"at {place.number} {st}"),
                (0.12, f"in front of {place.number} {st}"),
                (0.05, f"outside my house at {place.number} {st}"),
            ]
        if place.cross:
            cr = say_street(place.cross, rnd)
            options += [
                (0.15, f"at {st} and {cr}"),
                (0.08, f"{st} & {cr}"),
                (0.06, f"on {st} near {cr}"),
            ]
        options.append((0.06, f"on {st} by {p.landmark}"))
    if place.hood:
        options.append((0.05, f"in {place.hood.title()}"))
    total = sum(w for w, _ in options)
    r = rnd.random() * total
    for w, s in options:
        r -= w
        if r <= 0:
            return s
    return options[-1][1]


def render(category: str, p: ProblemText, rnd: random.Random, typo_p: float) -> str:
    sub = SUBTYPES[category][p.subtype]
    thing = rnd.choice(sub.nouns)
    # Reporters mention the problem's own facts most of the time, sometimes something else.
    pool = list(p.facts) * 3 + list(sub.details)
    detail, detail2 = rnd.choice(pool), rnd.choice(pool)
    templates = GENERIC_TEMPLATES + CATEGORY_TEMPLATES.get(category, ()) * 2
    tpl = rnd.choice(templates)
    loc = say_place(p, rnd)
    values = {
        "thing": thing,
        "Thing": thing[0].upper() + thing[1:],
        "a_thing": _article(thing),
        "detail": detail,
        "Detail": detail[0].upper() + detail[1:],
        "detail2": detail2,
        "loc": loc,
        "Loc": (loc[0].upper() + loc[1:]) if loc else "Here",
        "extra": rnd.choice(EXTRAS),
        "when": rnd.choice(WHENS),
    }
    text = tpl.format(**values)
    words = text.split(" ")
    for i, w in enumerate(words):
        alts = SYNONYMS.get(w.lower())
        if alts and rnd.random() < 0.5:
            words[i] = rnd.choice(alts)
    text = re.sub(r"\s+", " ", " ".join(words)).strip()
    text = re.sub(r"\s+([,.!?])", r"\1", text).replace(",.", ".").replace("..", ".")
    if rnd.random() < typo_p:
        text = _typos(text, rnd)
    r = rnd.random()
    if r < 0.10:
        text = text.lower()
    elif r < 0.14:
        text = text.upper()
    return text


# -- the generator ---------------------------------------------------------------------------
def cluster_size(gen: CatGen, rnd: random.Random) -> int:
    if rnd.random() < gen.p_single:
        return 1
    ks = range(2, MAX_CLUSTER + 1)
    weights = [k**-gen.alpha for k in ks]
    return rnd.choices(ks, weights)[0]


def jitter(
    lat: float, lon: float, gen: CatGen, tail_p: float, rnd: random.Random, scale: float = 1.0
) -> tuple[float, float]:
    if rnd.random() < tail_p:
        r = rnd.uniform(*gen.tail_ring_m) * scale
        a = rnd.uniform(0, 2 * math.pi)
        north, east = r * math.cos(a), r * math.sin(a)
    else:
        sd = gen.jitter_sd_m * scale
        north, east = rnd.gauss(0, sd), rnd.gauss(0, sd)
    dlat, dlon = _metres_to_deg(lat, north, east)
    return lat + dlat, lon + dlon


def lifetime(seed: Seed, gen: CatGen) -> float:
    raw = seed.lifetime_s if seed.lifetime_s is not None and seed.lifetime_s >= 0 else None
    life = LIFETIME_DEFAULT_S if raw is None else min(LIFETIME_MAX_S, max(LIFETIME_MIN_S, raw))
    return min(life, gen.lifetime_cap_s)


def _moved_number(number: str | None, metres: float, rnd: random.Random) -> str | None:
    if not number or not number.isdigit():
        return number
    delta = max(2, 2 * round(metres / 4))  # ~2 m per house number, same side of the street
    n = int(number) + (delta if rnd.random() < 0.5 or int(number) <= delta else -delta)
    return str(n)


def generate(cfg: Config) -> Dataset:
    rnd = random.Random(cfg.seed)
    kind_of = kinds()
    la, sf = read_la(), read_sf()
    stats: dict[str, object] = {
        "la_records_with_location": len(la),
        "sf_records_with_location": len(sf),
    }
    seeds: list[tuple[Seed, str]] = []
    dropped_total = 0
    for city, records, fraction in (("la", la, cfg.la_fraction), ("sf", sf, cfg.sf_fraction)):
        records = add_cross_streets(records)
        # Borrowing: categories short of real seeds take "other" records' places and times.
        counts = Counter(r.category for r in records)
        kept, dropped = drop_ambiguous(records, cfg.ambiguous_m, cfg.ambiguous_days * DAY)
        dropped_total += dropped
        stats[f"{city}_dropped_ambiguous"] = dropped
        if fraction < 1.0:
            kept = [s for s in kept if rnd.random() < fraction]
        seeds += [(s, "seed") for s in kept]
        stats[f"{city}_category_counts_raw"] = dict(sorted(counts.items()))
    have = Counter(s.category for s, _ in seeds)
    pool = [s for s, _ in seeds if s.city == "sf" and s.category == "other"]
    rnd.shuffle(pool)
    borrowed: dict[str, int] = {}
    used: set[str] = set()
    for cat in sorted(CATEGORY_GEN):
        need = cfg.min_seeds - have[cat]
        while need > 0 and pool:
            s = pool.pop()
            if s.source_id in used:
                continue
            used.add(s.source_id)
            seeds.append((s._replace(category=cat), "borrowed"))
            borrowed[cat] = borrowed.get(cat, 0) + 1
            need -= 1
    # A record lent to another category is no longer an "other" seed.
    seeds = [
        (s, role)
        for s, role in seeds
        if not (role == "seed" and s.city == "sf" and s.category == "other" and s.source_id in used)
    ]
    stats["borrowed"] = borrowed
    seeds.sort(key=lambda x: (x[0].city, x[0].t, x[0].source_id))

    problems: dict[str, Problem] = {}
    reports: list[LabelledReport] = []

    def emit(problem: Problem, ptext: ProblemText, size: int, gen: CatGen) -> None:
        times = [problem.t0] + [
            problem.t0 + rnd.betavariate(0.6, 1.5) * problem.lifetime_s for _ in range(size - 1)
        ]
        for k, t in enumerate(sorted(times)):
            if k == 0:
                lat, lon = problem.lat, problem.lon
            else:
                lat, lon = jitter(problem.lat, problem.lon, gen, cfg.tail_p, rnd, cfg.jitter_scale)
            reports.append(
                LabelledReport(
                    f"{problem.id}.{k}",
                    problem.id,
                    problem.city,
                    problem.category,
                    problem.kind,
                    lat,
                    lon,
                    round(t, 1),
                    render(problem.category, ptext, rnd, cfg.typo_p),
                    "first" if k == 0 else "duplicate",
                    problem.role,
                    round(geo.distance_m(problem.lat, problem.lon, lat, lon), 1),
                )
            )

    for n, (s, role) in enumerate(seeds):
        gen = CATEGORY_GEN[s.category]
        pid = f"{s.city}{n:05d}"
        life = lifetime(s, gen)
        prob = Problem(
            pid,
            s.city,
            s.category,
            kind_of[s.category],
            s.lat,
            s.lon,
            s.t,
            life,
            role,
            None,
            s.source_id,
        )
        problems[pid] = prob
        ptext = new_problem_text(s.category, s.place, rnd)
        emit(prob, ptext, cluster_size(gen, rnd), gen)
        if rnd.random() >= gen.p_hardneg:
            continue
        for j in range(rnd.choices((1, 2, 3), (0.6, 0.3, 0.1))[0]):
            d = rnd.uniform(*gen.hardneg_m)
            a = rnd.uniform(0, 2 * math.pi)
            dlat, dlon = _metres_to_deg(s.lat, d * math.cos(a), d * math.sin(a))
            if s.category in ("bulky_items", "litter_dumping") and rnd.random() < cfg.same_caller_p:
                t0 = s.t + rnd.uniform(0, 90 * 60)
            else:
                t0 = s.t + rnd.uniform(-0.5, 1.0) * life
            hid = f"{pid}h{j}"
            hn = Problem(
                hid,
                s.city,
                s.category,
                kind_of[s.category],
                s.lat + dlat,
                s.lon + dlon,
                t0,
                life,
                "hardneg",
                pid,
                s.source_id,
            )
            problems[hid] = hn
            place = ptext.place._replace(number=_moved_number(ptext.place.number, d, rnd))
            same = rnd.random() < 0.5
            htext = new_problem_text(s.category, place, rnd, ptext.subtype if same else None)
            emit(hn, htext, cluster_size(gen, rnd), gen)

    reports.sort(key=lambda r: (r.t, r.id))
    stats["dropped_ambiguous_total"] = dropped_total
    return Dataset(cfg, reports, problems, stats)


def describe(ds: Dataset) -> dict[str, object]:
    """Figures of a generated set (for the README and the results)."""
    sizes = Counter(r.problem for r in ds.reports)
    hist = Counter(min(v, 10) for v in sizes.values())
    offsets = sorted(r.offset_m for r in ds.reports if r.role == "duplicate")
    by_cat = Counter(r.category for r in ds.reports)
    prob_cat = Counter(p.category for p in ds.problems.values())
    pair_d: list[float] = []
    by_problem: dict[str, list[LabelledReport]] = defaultdict(list)
    for r in ds.reports:
        by_problem[r.problem].append(r)
    for rs in by_problem.values():
        for i in range(len(rs)):
            for j in range(i + 1, len(rs)):
                pair_d.append(geo.distance_m(rs[i].lat, rs[i].lon, rs[j].lat, rs[j].lon))
    pair_d.sort()

    def pct(xs: list[float], p: float) -> float:
        return round(xs[min(len(xs) - 1, int(p * len(xs)))], 1) if xs else 0.0

    gaps = []
    for rs in by_problem.values():
        ts = sorted(r.t for r in rs)
        gaps += [(b - a) / HOUR for a, b in itertools.pairwise(ts)]
    gaps.sort()
    n = len(ds.reports)
    return {
        "reports": n,
        "problems": len(ds.problems),
        "duplicate_share": round(1 - len(sizes) / n, 3),
        "hard_negative_problems": sum(1 for p in ds.problems.values() if p.role == "hardneg"),
        "cluster_size_histogram": {("10+" if k == 10 else str(k)): hist[k] for k in sorted(hist)},
        "largest_cluster": max(sizes.values()),
        "duplicate_offset_m_p50_p90_p99": [
            pct(offsets, 0.5),
            pct(offsets, 0.9),
            pct(offsets, 0.99),
        ],
        "pin_pair_distance_m_p50_p90": [pct(pair_d, 0.5), pct(pair_d, 0.9)],
        "gap_between_consecutive_reports_h_p10_p50_p90": [
            pct(gaps, 0.1),
            pct(gaps, 0.5),
            pct(gaps, 0.9),
        ],
        "reports_per_category": dict(sorted(by_cat.items())),
        "problems_per_category": dict(sorted(prob_cat.items())),
        "la_same_category_within_50m_24h": {
            "real_records": round(
                colocation_share([(s.lat, s.lon, s.t, s.category) for s in read_la()]), 3
            ),
            "generated_reports": round(
                colocation_share(
                    [(r.lat, r.lon, r.t, r.category) for r in ds.reports if r.city == "la"]
                ),
                3,
            ),
        },
        "source_stats": ds.stats,
    }


def colocation_share(
    items: list[tuple[float, float, float, str]], radius_m: float = 50.0, window_s: float = DAY
) -> float:
    """Share of items with another item of the same category within 50 m and 24 h (the
    statistic dedup-notes.md quotes for LA), to compare the generated set with the real."""
    index: dict[tuple[str, int, int], list[int]] = defaultdict(list)
    for i, (lat, lon, _, cat) in enumerate(items):
        index[(cat, *_grid_key(lat, lon))].append(i)
    hits = 0
    for i, (lat, lon, t, cat) in enumerate(items):
        k0, k1 = _grid_key(lat, lon)
        hits += any(
            j != i
            and abs(items[j][2] - t) <= window_s
            and geo.distance_m(lat, lon, items[j][0], items[j][1]) <= radius_m
            for a in (-1, 0, 1)
            for b in (-1, 0, 1)
            for j in index.get((cat, k0 + a, k1 + b), ())
        )
    return hits / len(items) if items else 0.0


def dump(ds: Dataset, path: Path) -> None:
    with path.open("w") as fh:
        for r in ds.reports:
            fh.write(json.dumps(r._asdict()) + "\n")
    meta = path.with_suffix(".config.json")
    meta.write_text(json.dumps(asdict(ds.config), indent=1))
