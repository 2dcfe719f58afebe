"""Normalised addresses: the spellings of one place meet, different places stay apart."""

from __future__ import annotations

import pytest

from civicpulse.engine.addresses import key


@pytest.mark.parametrize(
    ("spellings", "expected"),
    [
        (
            [
                "123 N. Main Street, Apt 4B, San Francisco, CA 94103",
                "123 north main st #4b",
                "123 N MAIN ST APT 4B",
                "123 n main st, unit 4b",
            ],
            "123 n main st #4b",
        ),
        (["5718 SAN RAMON DR 90042", "5718 San Ramon Drive"], "5718 san ramon dr"),
        (
            [
                "Intersection of 5TH ST and MARKET ST",
                "Market Street and Fifth Street",
                "market st & 5th st",
            ],
            "5th st & market st",
        ),
        (["LAUREL CANYON / PIERCE, LOS ANGELES, CA 91331, USA"], "laurel canyon & pierce"),
        (["1 Hotel Plaza, Room 412", "1 hotel plz rm 412"], "1 hotel plz #412"),
        (["1600 Pennsylvania Ave NW, Washington, DC 20500"], "1600 pennsylvania ave nw"),
    ],
)
def test_spellings_of_one_address_meet(spellings: list[str], expected: str) -> None:
    assert {key(s) for s in spellings} == {expected}


def test_different_places_stay_apart() -> None:
    assert key("123 Main St Apt 4B") != key("123 Main St Apt 7C")
    assert key("123 Main St") != key("125 Main St")
    assert key("123 Main St") != key("123 Main Ave")
    assert key("123 N Main St") != key("123 S Main St")


@pytest.mark.parametrize("vague", ["", "Main St", "LANARK ST., CANOGA PARK, CA 91304, USA", "  "])
def test_a_street_alone_names_no_place(vague: str) -> None:
    assert key(vague) is None
