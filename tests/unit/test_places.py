"""Places alone: what a text says about where it is, resolution against a tenant's registry,
and how two places relate for a problem of a given scope."""

from __future__ import annotations

import pytest

from civicpulse.engine import places
from civicpulse.engine.places import NOWHERE, Node, Where

HOTEL = (34.0, -118.0)
LIBRARY = (34.0, -117.996)  # about 370 m east


def registry() -> places.Index:
    """A hotel and a library, each with rooms numbered alike, spaces and a lift."""
    nodes = [
        Node("hotel", "building", "Harbor View Hotel", ("Harbor View",), None, *HOTEL),
        Node("library", "building", "Main Library", ("the library",), None, *LIBRARY),
        Node("hotel-f4", "floor", "4th floor", (), "hotel", None, None),
        Node("hotel-412", "room", "Room 412", ("412",), "hotel-f4", None, None),
        Node("hotel-415", "room", "Room 415", ("415",), "hotel-f4", None, None),
        Node("library-412", "room", "Room 412", ("412",), "library", None, None),
        Node("hotel-lobby", "space", "Lobby", (), "hotel", None, None),
        Node("hotel-lift-2", "asset", "Lift 2", ("elevator 2",), "hotel", None, None),
        Node("salon-b", "room", "Salon B", (), "hotel", None, None),
    ]
    return places.compile_index(nodes)


def test_mentions_tell_rooms_floors_lifts_and_spaces_apart() -> None:
    m = places.mentions("AC broken in rm 412, 4th floor, lift 2 is out too, lobby is hot")
    assert (m.units, m.floors, m.assets, m.spaces) == (("412",), ("4",), ("lift 2",), ("lobby",))
    assert places.mentions("apt 4B ceiling leak").units == ("4b",)
    assert places.mentions("#912 toilet running").units == ("912",)
    assert places.mentions("Elevator #3 stuck").units == ()  # a lift, not room 3
    assert places.mentions("Building C restroom dirty").buildings == ("c",)


def test_house_numbers_and_quantities_are_not_rooms() -> None:
    assert places.mentions("Leak at 1234 Main St", bare_numbers=True).units == ()
    assert places.mentions("waited 45 minutes, 300 people", bare_numbers=True).units == ()
    # A facility that numbers its rooms: a number alone is a room.
    assert places.mentions("412 ac not cooling", bare_numbers=True).units == ("412",)
    assert places.mentions("412 ac not cooling").units == ()


def test_text_mentions_without_a_registry_are_kept_as_text() -> None:
    where = places.resolve("AC broken in room 412", None, None, *HOTEL)
    assert (where.unit, where.code, where.label) == ("~412", None, "room 412")
    assert places.resolve("pothole on Elm", None, None, *HOTEL) == NOWHERE


def test_a_named_code_wins_and_brings_its_ancestors() -> None:
    where = places.resolve("the tv is broken", None, "hotel-412", *HOTEL, registry())
    assert (where.building, where.floor, where.unit, where.code) == (
        "hotel",
        "hotel-f4",
        "hotel-412",
        "hotel-412",
    )
    assert where.label == "Harbor View Hotel, Room 412"


def test_a_room_number_is_looked_up_in_the_building_the_report_is_in() -> None:
    index = registry()
    # The same number in two buildings: the pin decides, or the name in the text.
    assert places.resolve("AC broken in 412", None, None, *HOTEL, index, True).code == "hotel-412"
    assert places.resolve("AC broken in 412", None, None, *LIBRARY, index, True).code == (
        "library-412"
    )
    far = (35.0, -120.0)
    assert places.resolve("room 412 at the library", None, None, *far, index).code == (
        "library-412"
    )
    assert places.resolve("stuck in elevator 2", None, None, *HOTEL, index).code == "hotel-lift-2"
    assert places.resolve("projector broken in Salon B", None, None, *HOTEL, index).code == (
        "salon-b"
    )


def test_a_space_of_another_building_is_not_taken_on_its_name_alone() -> None:
    # "the lobby" said at the library is not the hotel's lobby.
    where = places.resolve("spill in the lobby", None, None, *LIBRARY, registry())
    assert where.building == "library" and where.space == "~lobby" and where.code == "library"


def test_different_rooms_units_assets_or_buildings_are_never_one_problem() -> None:
    r412 = Where(building="hotel", unit="hotel-412")
    r415 = Where(building="hotel", unit="hotel-415")
    assert places.compare(r412, r415, "local").value == -1
    assert places.compare(r412, r412, "local").value == 1
    assert places.compare(Where(asset="~lift 1"), Where(asset="~lift 2"), "building").value == -1
    assert places.compare(Where(building="hotel"), Where(building="library"), "local").value == -1
    assert places.compare(r412, NOWHERE, "local").value == 0


def test_a_building_wide_problem_ignores_each_reporters_room() -> None:
    r412 = Where(building="hotel", unit="hotel-412")
    r415 = Where(building="hotel", unit="hotel-415")
    assert places.compare(r412, r415, "building").value == 0  # not a veto: the same wifi
    wide = places.building_wide(r412)
    assert (wide.building, wide.unit) == ("hotel", None)


def test_an_issue_learns_its_room_from_a_later_report() -> None:
    room = Where(unit="~412", label="room 412")
    assert places.merge(NOWHERE, room) == room
    assert places.merge(room, Where(unit="~415")) == room  # never moved by a later report


def test_places_travel_to_workers_by_digest() -> None:
    nodes = [Node("hotel", "building", "Hotel", (), None, *HOTEL)]
    blob, digest = places.pack(nodes)
    with pytest.raises(places.PlacesMissing):
        places.resolve_batch(digest, None, [("x", None, None, *HOTEL)], False)
    resolved = places.resolve_batch(digest, blob, [("rm 7 tv", None, None, *HOTEL)], False)
    assert '"unit":"~7"' in resolved[0] and '"building":"hotel"' in resolved[0]
    # Now cached in this process: the places need not be sent again.
    (again,) = places.resolve_batch(digest, None, [("x", None, "hotel", *HOTEL)], False)
    assert again == '{"building":"hotel","code":"hotel","label":"Hotel"}'


def test_quantities_and_words_are_not_rooms_or_lifts() -> None:
    for text in ("no 2 towels in 412", "#1 issue is the noise", "AC unit 2 weeks old"):
        assert "2" not in places.mentions(text).units and "1" not in places.mentions(text).units
    assert places.mentions("the elevator I was in got stuck").assets == ()
    assert places.mentions("elevator a bit jerky").assets == ()
    assert places.mentions("elevator 2 jerky").assets == ("lift 2",)
    assert places.mentions("#12 Main Street, hydrant open").units == ()


def test_a_room_before_ordinary_words_is_still_a_room() -> None:
    # "in" is a measure only after a bare number, and a sentence is no street name.
    assert places.mentions("Room 412 in the east wing is hot").units == ("412",)
    assert places.mentions("apt 3B in building C, no heat").units == ("3b",)
    assert places.mentions("room 412 is way too hot").units == ("412",)
    assert places.mentions("412 is way too hot", bare_numbers=True).units == ("412",)
    assert places.mentions("#705 in the corner room, tv dead").units == ("705",)
    assert places.mentions("thermostat says 78 f in 412", bare_numbers=True).units == ("412",)


def test_a_room_named_in_text_and_a_registered_room_are_never_told_apart() -> None:
    # An issue opened before the hotel imported its rooms ("~412") and a report naming the
    # room by code: not different rooms (they may be the same one).
    said = Where(unit="~412")
    registered = Where(building="hotel", unit="hotel-412", code="hotel-412")
    assert places.compare(said, registered, "local").value == 0
    assert places.compare(Where(unit="~415"), Where(unit="~412"), "local").value == -1
