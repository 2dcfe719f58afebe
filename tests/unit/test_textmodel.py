"""The local classifier alone: what counts as evidence, stemming, the default vocabulary,
labels over taxonomy text, calibrated probabilities, subtypes."""

from __future__ import annotations

import functools
import json
from importlib import resources

from civicpulse.engine import rules, textmodel
from civicpulse.engine.textmodel import TaxonomyEntry


def template(name: str) -> list[TaxonomyEntry]:
    raw = json.loads(resources.files("civicpulse.data").joinpath(name).read_text())
    return [
        TaxonomyEntry(t["code"], t["name"], t["description"], tuple(t["keywords"]), t["kind"])
        for t in raw
    ]


@functools.cache
def city() -> textmodel.Model:
    return textmodel.load(textmodel.train(template("taxonomy.json"), [])[0])


@functools.cache
def facility() -> textmodel.Model:
    return textmodel.load(textmodel.train(template("taxonomy_facility.json"), [])[0])


def test_addresses_and_place_names_are_not_evidence() -> None:
    said = textmodel.content("Pothole outside 1432 W Park Ave in Echo Park, near the gas station")
    assert "park" not in said and "gas" not in said and "pothole" in said
    assert "412" not in textmodel.content("leak in room 412 on the 4th floor")
    # A street called "Park" does not make a pothole a park problem, nor a gas station a leak.
    assert textmodel.predict(city(), "Big pothole on Park Ave")[0] == "road_defect"
    assert textmodel.predict(city(), "Streetlight out by the gas station")[0] == "streetlight"
    # Titles and shouting are what the report is about, not a place.
    assert textmodel.predict(city(), "STRONG GAS SMELL outside")[0] == "hazard"


def test_words_are_stemmed() -> None:
    assert textmodel.words("heating") == textmodel.words("heat")
    assert textmodel.words("leaking pipes") == textmodel.words("leak pipe")


def test_the_default_vocabulary_knows_311_request_types_and_facility_wordings() -> None:
    cases = {
        "Street Light Condition: Street Light Cycling": "streetlight",
        "HEAT/HOT WATER: ENTIRE BUILDING": "building_fault",
        "Rodent: Rat Sighting in my apartment": "building_fault",
        "Catch Basin Clogged/Flooding (SC)": "water_sewer",
        "Derelict Vehicles: With License Plate": "abandoned_vehicle",
    }
    for text, category in cases.items():
        assert textmodel.predict(city(), text)[0] == category, text
    assert textmodel.predict(facility(), "the ac in 412 blows warm air")[0] == "heating_cooling"
    assert textmodel.predict(facility(), "elevator 2 stuck between floors")[0] == "lifts"


def test_labels_outweigh_the_taxonomy_text() -> None:
    taxonomy = [
        TaxonomyEntry("widgets", "Widgets", "Broken widgets.", ("widget",), "facilities"),
        TaxonomyEntry("gadgets", "Gadgets", "Anything with a gadget.", ("gadget",), "facilities"),
    ]
    untrained = textmodel.load(textmodel.train(taxonomy, [])[0])
    assert textmodel.predict(untrained, "the widget jammed")[0] == "widgets"
    labels = [(f"widget jammed again, case {n}", "gadgets") for n in range(30)]
    trained = textmodel.load(textmodel.train(taxonomy, labels)[0])
    assert trained.labels == 30
    assert textmodel.predict(trained, "the widget jammed")[0] == "gadgets"


def test_probabilities_alternatives_and_subtypes() -> None:
    probs = textmodel.probabilities(city(), "Streetlight out on Oak Ave, sparking wires")
    assert abs(sum(probs) - 1.0) < 1e-9
    pred, decided = textmodel.classify(
        city(), "Streetlight out on Oak Ave, sparking wires", None, {}
    )
    assert decided == "local" and pred.hazards == ("live_wire",)
    cats = [c for c, _ in pred.alternatives]
    assert cats[0] == pred.category and "streetlight" in cats and "hazard" in cats
    assert [p for _, p in pred.alternatives] == sorted(
        (p for _, p in pred.alternatives), reverse=True
    )
    pothole, _ = textmodel.classify(city(), "deep pothole in the road", None, {})
    sidewalk, _ = textmodel.classify(city(), "cracked sidewalk, people trip", None, {})
    assert (pothole.category, pothole.subtype) == ("road_defect", "pothole")
    assert (sidewalk.category, sidewalk.subtype) == ("road_defect", "sidewalk")
    assert abs(sum(p for _, p in pothole.subtypes) - 1.0) < 0.05


def test_subtypes_can_make_a_problem_building_wide() -> None:
    scopes = textmodel.subtype_scopes()
    assert scopes[("building_fault", "heat")] == "building"
    assert scopes[("plumbing", "supply")] == "building"
    assert ("plumbing", "toilet") not in scopes


def test_names_of_things_are_not_hazards() -> None:
    assert rules.hazards_in(rules.normalise("Fire hydrant leaking")) == ((), 2)
    assert rules.hazards_in(rules.normalise("smoke detector chirping")) == ((), 2)
    assert rules.hazards_in(rules.normalise("coffee spill in the lobby")) == ((), 2)
    assert rules.hazards_in(rules.normalise("gas leak by the gas station"))[0] == ("gas",)


def test_a_worker_keeps_one_model_per_tenant() -> None:
    # A tenant that retrains (each taxonomy edit) replaces its model in the worker; the old
    # version is dropped at once instead of piling up to the worker's cap.
    taxonomy = [
        TaxonomyEntry("widgets", "Widgets", "Broken widgets.", ("widget",), "facilities"),
        TaxonomyEntry("gadgets", "Gadgets", "Anything with a gadget.", ("gadget",), "facilities"),
    ]
    old_blob, old = textmodel.train(taxonomy, [])
    new_blob, new = textmodel.train(taxonomy, [(f"widget case {n}", "gadgets") for n in range(9)])
    other_blob, other = textmodel.train(taxonomy, [("gadget thing", "gadgets")])
    items = [("the widget jammed", None, None)]
    textmodel.classify_batch(old, old_blob, items, {}, 901)
    textmodel.classify_batch(other, other_blob, items, {}, 902)
    textmodel.classify_batch(new, new_blob, items, {}, 901)
    assert new in textmodel._worker_models and other in textmodel._worker_models
    assert old not in textmodel._worker_models
    try:
        textmodel.classify_batch(old, None, items, {}, 901)
        raise AssertionError("the replaced model is still held")
    except textmodel.ModelMissing:
        pass
