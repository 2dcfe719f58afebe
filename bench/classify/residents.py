"""Seeded generator of resident-style report texts, for the categories of the default taxonomy.

The real exports carry no free text written by residents (LA: a request type and an address;
SF: a request type and a short code), so texts of the kind the service receives from its web
form and app are generated here: several phrasings per category, different lengths, the odd
typo, shouting or lower case, and streets, house numbers, cross streets and neighbourhoods
taken from the real addresses in the two CSV files.

Templates per category are split into two disjoint subsets, fixed in code:
  * "staff" - template number i with i % 3 == 2 (the 3rd, 6th and 9th of each list): texts
    standing in for reports that staff corrected (labelled training data);
  * "test" - every other template: the evaluation texts.
The two sets are also drawn with different seeds, and `generate` can exclude given texts, so
no evaluation text is ever a training text. Each text also comes "bare": the same words with
the street, house number, cross street and neighbourhood left out (a diagnostic of how much
address words sway the model).

Template syntax: {street} {n} {cross} {hood} {landmark} {when} {days} are filled from the
pools; [a|b|c] picks one alternative (no nesting).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from typing import NamedTuple

from bench.classify.data import CITY_NAMES, Places

SUBSETS = ("test", "staff")

TEMPLATES: dict[str, list[str]] = {
    "road_defect": [
        "Huge pothole on {street} near {landmark}, my [tyre|tire] nearly burst",
        "The asphalt is crumbling outside number {n} {street}",
        "Deep hole in the road at {street} and {cross}. Cars swerve round it",
        "[Pothole|Big pothole|Crater] {street}",
        "Sidewalk on {street} is lifted and cracked, my [mum|mom|neighbour] tripped on it {when}",
        "The curb in front of {n} {street} has broken off and [bits of concrete are|rubble is] "
        "all over the pavement",
        "Road surface on {street} in {hood} is so bumpy it's like driving on the moon. "
        "Ruts everywhere",
        "There is a sunken patch in the road by {landmark} on {street}, gets deeper every week",
        "Broken paving slabs on {street}, a wheelchair user can't get past",
    ],
    "streetlight": [
        "Street light outside {n} {street} has been out for {days}",
        "The lamp post near {landmark} on {street} keeps flickering on and off all night",
        "Whole stretch of {street} between {cross} and the corner is pitch dark, lights not "
        "working",
        "Light out {street} / {cross}",
        "The streetlamp by my house ({n} {street}) stays on all day and off at night",
        "It is really dark on {street} near {landmark}, the bulb in the lamp is dead and it "
        "feels unsafe walking home",
        "Lamp post at {street} & {cross} was hit by a car and is leaning, light not on",
        "[Streetlight|Street light] not working in front of {n} {street}",
        "Three lights in a row are out along {street} in {hood}",
    ],
    "graffiti": [
        "Someone sprayed graffiti all over the wall at {n} {street}",
        "Tagging on the [mailbox|utility box|bus shelter] at {street} and {cross}",
        "Graffiti {street} near {landmark}",
        "Offensive words spray painted on the fence by {landmark} on {street}, kids walk past it",
        "New tags on the side of the building at {n} {street} {when}",
        "The underpass on {street} is covered in scribbles and paint again",
        "Vandals painted the [stop sign|light pole|bench] at {street} & {cross}",
        "please remove graffiti from the garage door at {n} {street}",
        "There's big spray paint lettering across the shop shutters on {street} in {hood}",
    ],
    "litter_dumping": [
        "Someone dumped a pile of black bags and rubbish at {street} and {cross}",
        "Trash everywhere on {street} near {landmark}, it has not been cleaned for {days}",
        "The public bin outside {n} {street} is overflowing and garbage is blowing around",
        "Illegal dumping in the alley behind {n} {street}: boxes, paint cans, construction debris",
        "Dead [cat|raccoon|pigeon|possum] on the sidewalk at {n} {street}",
        "Used needles and human waste in the doorway at {n} {street}",
        "Litter all over {street}",
        "Encampment on {street} by {landmark} has left a big mess of trash on the sidewalk",
        "Fly tipping again at the end of {street}, loads of junk left overnight",
    ],
    "bulky_items": [
        "Old mattress left on the curb at {n} {street}, please collect",
        "Can you pick up a broken [couch|sofa] and two chairs from outside {n} {street}",
        "Fridge and washing machine dumped by {landmark} on {street}",
        "I need a bulky item pickup at {n} {street}: a wardrobe, a mattress and a desk",
        "Old TV and computer monitors (e-waste) sitting on {street} near {cross}",
        "[Mattress|Sofa|Recliner] on sidewalk {street}",
        "There is a big [dresser|bookcase|bed frame] left out at {n} {street} for {days}",
        "Please collect an old refrigerator from my driveway, {n} {street}",
        "Somebody left a couch, a microwave and a broken table at {street} and {cross}",
    ],
    "water_sewer": [
        "Water is gushing out of the ground at {street} and {cross}, looks like a burst main",
        "Sewer smell coming from the drain outside {n} {street}",
        "The storm drain on {street} near {landmark} is blocked with leaves",
        "Fire hydrant leaking on {street} {when}",
        "Sewage backing up into the basement at {n} {street}",
        "Manhole cover at {street} & {cross} is overflowing with dirty water",
        "A pipe is leaking under the sidewalk at {n} {street}, water has been running for {days}",
        "Catch basin on {street} in {hood} is clogged, water not draining",
        "Someone is wasting water, sprinklers running onto the street at {n} {street} all day",
    ],
    "flooding": [
        "The road at {street} and {cross} is flooded after the rain, cars can't get through",
        "Standing water all across {street} near {landmark}",
        "Flooding on {street}",
        "Huge puddle covering the whole crossing at {street} and {cross}, it's knee deep",
        "Our street ({street}) floods every time it rains, water up to the doors",
        "The underpass on {street} is underwater",
        "Water ponding on the path by {landmark}, people walking in the road to avoid it",
        "Flash flooding on {street} in {hood}, drains cannot cope",
        "Garden and sidewalk at {n} {street} under water since {when}",
    ],
    "trees": [
        "A big branch fell off the tree outside {n} {street} and is blocking the sidewalk",
        "Tree on {street} near {landmark} is leaning over the road and looks like it will fall",
        "Overgrown bushes at {street} and {cross} block the view of traffic",
        "Fallen tree {street}",
        "The roots of the street tree at {n} {street} are lifting the paving",
        "Dead tree in front of {n} {street}, please remove before it comes down",
        "Broken limb hanging from a tree over {street} in {hood}",
        "Weeds and overgrown hedges all along {street}, can't walk on the sidewalk",
        "Please trim the tree at {n} {street}, branches are touching the power line",
    ],
    "noise": [
        "Loud music from {n} {street} every night until 3am",
        "Construction noise on {street} starting at 5 in the morning",
        "Car alarm going off for hours at {street} and {cross}",
        "Party at {n} {street}, too loud, can't sleep",
        "The dog at {n} {street} barks all day while the owners are out",
        "Noise {street} {when}",
        "Bar near {landmark} on {street} plays music so loud the windows shake",
        "Leaf blowers and generators running all night at the site on {street}",
        "Someone revving motorbikes up and down {street} in {hood} every evening",
    ],
    "abandoned_vehicle": [
        "A car with no plates has been parked at {n} {street} for {days}",
        "Abandoned [van|truck|car] on {street} near {landmark}, flat tyres and covered in dust",
        "Burnt out car at {street} and {cross}",
        "Abandoned vehicle {street}",
        "There's a silver Honda that hasn't moved in {days} outside {n} {street}",
        "Wrecked motorhome left on {street} in {hood}, windows smashed",
        "RV parked in front of {n} {street} for weeks, someone may be living in it",
        "Old boat trailer dumped on {street} by {landmark}",
        "The same car has been parked at {street} & {cross} since {when} with expired tags",
    ],
    "parks": [
        "The swings in the playground at {landmark} are broken",
        "Drinking fountain in the park on {street} does not work",
        "Benches in {hood} park are smashed",
        "Park on {street} needs cleaning, litter everywhere on the grass",
        "Slide at the playground near {street} has a sharp broken edge, a child cut their hand",
        "Picnic tables at the park by {street} and {cross} are falling apart",
        "Park gate on {street} is broken and the dog area is open to the road",
        "Playground {street}",
        "The basketball hoop at the rec center on {street} is bent and the net is gone",
    ],
    "building_fault": [
        "The elevator in our building at {n} {street} has been broken for {days}",
        "No heating in apartment {n} {street}, it's freezing",
        "Toilet in the public restroom on {street} near {landmark} is blocked",
        "Front door lock of the housing block at {n} {street} is broken, anyone can walk in",
        "Water coming through the ceiling in unit {n} {street}",
        "Broken window in the stairwell at {n} {street}",
        "Library on {street}: the air conditioning is out and the roof leaks",
        "Mold and a leaking roof in our public housing flat at {n} {street}",
        "Building fault {street} {when}",
    ],
    "hazard": [
        "Strong smell of gas on {street} near {landmark}",
        "Power line down across {street} at {cross}, it's sparking",
        "Fire in a trash bin at {n} {street}, smoke everywhere",
        "Exposed wires hanging from the pole outside {n} {street}",
        "Chemical spill on {street}, strong fumes",
        "Part of the wall at {n} {street} collapsed onto the sidewalk",
        "Gas leak {street} & {cross}",
        "Live wire on the ground near {landmark} on {street}, keep people away",
        "Something is burning in the vacant lot on {street} in {hood}",
    ],
    "signs_signals": [
        "Stop sign at {street} and {cross} has been knocked down",
        "Traffic light at {street} & {cross} stuck on red",
        "Street sign for {street} is missing",
        "The crosswalk signal near {landmark} on {street} doesn't work, people cross blind",
        "Sign {street} bent over",
        "Tree branches hide the speed limit sign on {street}",
        "Please paint the curb red outside {n} {street}, cars block the driveway",
        "No parking sign at {n} {street} was turned the wrong way",
        "Walk signal at {street} and {cross} in {hood} never changes",
    ],
    "other": [
        "The {route} bus driver skipped my stop on {street} {when}",
        "Who do I contact about a residential parking permit for {street}?",
        "I'd like to thank the crew who worked on {street} {when}, great job",
        "Muni shelter at {street} and {cross} has no timetable posted",
        "Question about my tax bill for {n} {street}",
        "Can someone tell me when the farmers market on {street} starts again",
        "General question",
        "My neighbour at {n} {street} is running a business from home, is that allowed",
        "Bus {route} always late at {street} & {cross}",
    ],
}

LANDMARKS = [
    "the bus stop", "the school", "the primary school", "the library", "the laundromat",
    "the corner shop", "the church", "the post office", "the pharmacy", "the taco stand",
    "the park entrance", "the playground", "the train station", "the supermarket",
    "the community center", "the car wash", "the clinic", "the daycare", "the bakery",
    "the hardware store", "the high school", "the metro station", "the pizza place",
]  # fmt: skip
WHEN = [
    "this morning", "last night", "yesterday", "today", "since Monday", "over the weekend",
    "earlier today", "two days ago", "since last week",
]  # fmt: skip
DAYS = ["3 days", "a week", "two weeks", "over a month", "5 days", "ages", "10 days", "weeks"]
ROUTES = ["22", "38", "14", "N", "49", "5R", "720", "33", "1", "Rapid"]
OPENERS = [
    "Hi, ", "Hello, ", "Hello council, ", "To whom it may concern: ", "Hi there. ", "URGENT: ",
    "Good morning, ", "Reporting this again: ",
]  # fmt: skip
CLOSERS = [
    "Please send someone.", "Thanks.", "Been like this for a while.", "Kids walk past here "
    "every day.", "This is the third time I report it!", "Please fix asap", "Thank you",
    "Photo attached.", "Can someone look at this please?", "It's getting worse.",
    "Very dangerous for old people.", "Nobody has done anything yet.",
]  # fmt: skip

_SLOT = re.compile(r"\{(\w+)\}")
_CHOICE = re.compile(r"\[([^\[\]]+)\]")


class ResidentText(NamedTuple):
    text: str
    category: str
    address: str
    template: str  # "<category>#<index>"
    bare: str  # the same text without street, number, cross street and neighbourhood


def templates(category: str, subset: str) -> list[tuple[int, str]]:
    """The (index, template) pairs of one subset: 'staff' = index % 3 == 2, 'test' = the rest."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}")
    staff = subset == "staff"
    return [(i, t) for i, t in enumerate(TEMPLATES[category]) if (i % 3 == 2) == staff]


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:  # swap two letters
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:  # drop one
        return word[:i] + word[i + 1 :]
    if kind == 2:  # double one
        return word[:i] + word[i] + word[i:]
    return word[:i] + rng.choice("aeiourstnl") + word[i + 1 :]  # a wrong letter


def _add_typos(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 4]
    for i in rng.sample(candidates, min(len(candidates), rng.choice((1, 1, 2)))):
        words[i] = _typo(words[i], rng)
    return " ".join(words)


_CROSS_INDEX: dict[tuple[int, str], dict[str, list[str]]] = {}


def _crosses(places: Places, city: str) -> dict[str, list[str]]:
    key = (id(places), city)
    if key not in _CROSS_INDEX:
        index: dict[str, list[str]] = {}
        for a, b in places.crossings[city]:
            index.setdefault(a, []).append(b)
            index.setdefault(b, []).append(a)
        _CROSS_INDEX[key] = index
    return _CROSS_INDEX[key]


def render(template: str, places: Places, rng: random.Random) -> tuple[str, str, str]:
    """Fill one template; returns (text, address, text without the address parts)."""
    city = rng.choice(sorted(CITY_NAMES))
    n, street = rng.choice(places.numbered[city])
    crosses = _crosses(places, city).get(street)
    if crosses:  # a real cross street of this street when the data has one
        cross = rng.choice(crosses)
    else:
        a, b = rng.choice(places.crossings[city])
        cross = b if a != street else a
    hood = rng.choice(places.hoods[city])
    if rng.random() < 0.25:  # residents write "Street"/"Avenue" or drop the suffix
        street = re.sub(r" St$", rng.choice((" Street", " st", "")), street)
        street = re.sub(r" Ave$", rng.choice((" Avenue", " ave", "")), street)
    landmark = rng.choice(LANDMARKS)
    if rng.random() < 0.25:
        landmark = f"the corner of {cross}"
    values = {
        "street": street,
        "n": n,
        "cross": cross,
        "hood": hood,
        "landmark": landmark,
        "when": rng.choice(WHEN),
        "days": rng.choice(DAYS),
        "route": rng.choice(ROUTES),
    }
    bare_values = {**values, "street": "", "n": "", "cross": "", "hood": ""}
    if landmark.startswith("the corner of"):
        bare_values["landmark"] = "the corner"
    chosen = _CHOICE.sub(lambda m: rng.choice(m.group(1).split("|")), template)
    text = _SLOT.sub(lambda m: values[m.group(1)], chosen)
    bare = _SLOT.sub(lambda m: bare_values[m.group(1)], chosen)
    bare = re.sub(r"\s+([,.!?])", r"\1", re.sub(r"\s{2,}", " ", bare)).strip()
    uses_number = "{n}" in template
    address = f"{n} {street}" if uses_number else f"{street} and {cross}"
    return text, f"{address}, {CITY_NAMES[city]}", bare


def _style(text: str, rng: random.Random) -> str:
    """Openers, closers, typos, case: the variety of real submissions."""
    if rng.random() < 0.15:
        text = rng.choice(OPENERS) + text[0].lower() + text[1:]
    if rng.random() < 0.35:
        text = text.rstrip(".") + ". " + rng.choice(CLOSERS)
        if rng.random() < 0.3:
            text += " " + rng.choice(CLOSERS)
    elif rng.random() < 0.2:
        text += rng.choice(("!", "!!", "...", "?!"))
    if rng.random() < 0.2:
        text = _add_typos(text, rng)
    r = rng.random()
    if r < 0.06:
        text = text.lower()
    elif r < 0.09:
        text = text.upper()
    return text


def generate(
    categories: Iterable[str],
    per_category: int,
    *,
    seed: int,
    subset: str,
    places: Places,
    exclude: Iterable[str] = (),
) -> list[ResidentText]:
    """per_category distinct texts for each category, from the templates of one subset."""
    rng = random.Random(f"residents:{seed}:{subset}")
    seen = set(exclude)
    out: list[ResidentText] = []
    for category in categories:
        pool = templates(category, subset)
        made = attempts = 0
        while made < per_category:
            attempts += 1
            if attempts > per_category * 50:
                raise RuntimeError(f"cannot make {per_category} distinct texts for {category}")
            index, template = rng.choice(pool)
            text, address, bare = render(template, places, rng)
            state = rng.getstate()
            text = _style(text, rng)
            twin = random.Random()
            twin.setstate(state)  # the same openers, closers and case for the bare text
            bare = _style(bare, twin)
            if text in seen:
                continue
            seen.add(text)
            out.append(ResidentText(text, category, address, f"{category}#{index}", bare))
            made += 1
    rng.shuffle(out)
    return out
