"""The grouping engine alone: geo cells, scores, decisions."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from civicpulse.engine import geo, grouping
from civicpulse.engine.grouping import Candidate, Report
from civicpulse.engine.places import NOWHERE, Where

DAY = 86_400.0


def report(
    rid: str,
    lat: float,
    lon: float,
    t: float = 0.0,
    category: str = "road_defect",
    text: str = "Pothole on Main St",
    kind: str = "infrastructure",
) -> Report:
    return Report(rid, lat, lon, category, kind, text, t, 2)


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return (
        lat + north_m / geo.METRES_PER_DEGREE,
        lon + east_m / (geo.METRES_PER_DEGREE * math.cos(math.radians(lat))),
    )


@settings(max_examples=300, deadline=None)
@given(
    lat=st.floats(-70, 70),
    lon=st.floats(-179, 179),
    radius=st.floats(5, 1000),
    bearing=st.floats(0, 2 * math.pi),
    fraction=st.floats(0, 1),
)
def test_every_point_within_the_radius_is_in_a_listed_cell(
    lat: float, lon: float, radius: float, bearing: float, fraction: float
) -> None:
    north, east = radius * fraction * math.cos(bearing), radius * fraction * math.sin(bearing)
    plat, plon = offset(lat, lon, north, east)
    assert geo.distance_m(lat, lon, plat, plon) <= radius * 1.001 + 0.01
    assert geo.cell_of(plat, plon) in set(geo.cells_within(lat, lon, radius * 1.001 + 0.01))


def test_distance_is_haversine() -> None:
    assert abs(geo.distance_m(34.0, -118.0, 34.0009, -118.0) - 100.0) < 0.5


def test_nearby_reports_of_one_problem_share_an_issue() -> None:
    a = report("a", 34.05, -118.25, 0)
    b = report(
        "b", *offset(34.05, -118.25, 15, 10), t=3600, text="Big pothole in the road on Main Street"
    )
    decisions = grouping.group_batch([a, b], [], {}, set())
    assert [d.report_id for d in decisions] == ["a", "b"]
    assert decisions[0].created and not decisions[1].created
    assert decisions[1].issue == decisions[0].issue
    assert decisions[1].scores is not None and decisions[1].scores.total >= grouping.THRESHOLD


def test_reports_are_decided_in_the_order_given_not_by_time() -> None:
    # Submission order decides (a late-arriving report written earlier still comes second),
    # so the same stream gives the same issues however claims split it.
    a = report("a", 34.05, -118.25, t=3600)
    b = report("b", *offset(34.05, -118.25, 15, 10), t=0)
    decisions = grouping.group_batch([a, b], [], {}, set())
    assert [d.report_id for d in decisions] == ["a", "b"]
    assert decisions[0].created and not decisions[1].created


def test_far_apart_other_category_or_too_late_open_new_issues() -> None:
    base = Candidate(
        "issue-1", 34.05, -118.25, "road_defect", "infrastructure", "Pothole on Main St", 0.0, 1
    )
    far = report("far", *offset(34.05, -118.25, 300, 0), t=10)
    other = report("other", 34.05, -118.25, t=10, category="graffiti", kind="appearance")
    late = report("late", 34.05, -118.25, t=60 * DAY)
    decisions = grouping.group_batch([far, other, late], [base], {}, set())
    assert all(d.created for d in decisions)


def test_house_numbers_weigh_for_and_against_a_merge() -> None:
    # LA's pattern: one caller files bulky-item pickups at houses along a street. The same
    # pair at the same distance scores lower with different house numbers than with none
    # named, and higher with the same one.
    issue = Candidate(
        "i", 34.05, -118.25, "bulky_items", "sanitation", "Bulky Items at 100 ELM ST", 0.0, 1
    )
    lat, lon = offset(34.05, -118.25, 0, 40)

    def p(text: str) -> float:
        r = report("r", lat, lon, 60, "bulky_items", text, "sanitation")
        return grouping.pair(r, issue, 40.0).scores.total

    assert (
        p("Bulky Items at 104 ELM ST") < p("Bulky Items on ELM ST") < p("Bulky Items at 100 ELM ST")
    )


def test_category_overrides_and_staff_feedback_are_respected() -> None:
    cand = Candidate(
        "issue-1", 34.05, -118.25, "road_defect", "infrastructure", "Pothole on Main St", 0.0, 1
    )
    near = report("r", *offset(34.05, -118.25, 40, 0), t=10)
    assert not grouping.group_batch([near], [cand], {}, set())[0].created
    # A 20 m radius for this tenant's road defects puts the report out of reach.
    assert grouping.group_batch([near], [cand], {"road_defect": (20.0, None)}, set())[0].created
    # Staff said this report is not a duplicate of that issue.
    assert grouping.group_batch([near], [cand], {}, {("r", "issue-1")})[0].created


def test_text_similarity_ranks_paraphrases_above_unrelated_text() -> None:
    base = "Large pothole in the road near 5th and Main"
    paraphrase = grouping.text_similarity(base, "Deep hole in the asphalt at Main St & 5th Ave")
    unrelated = grouping.text_similarity(base, "Graffiti on the bus shelter")
    assert paraphrase > unrelated + 0.2


@settings(max_examples=400, deadline=None)
@given(
    category=st.sampled_from([*sorted(grouping.MODEL.categories), "tenant_custom"]),
    beyond=st.floats(1, 2000),
    count=st.integers(1, 500),
    gap_h=st.floats(0, 24 * 30),
    local=st.booleans(),
)
def test_nothing_beyond_a_categorys_reach_could_attach(
    category: str, beyond: float, count: int, gap_h: float, local: bool
) -> None:
    # The group stage fetches candidates only within the reach (and at the report's own
    # place), so the reach must be a true bound: past it even the best case (same text, house
    # number, subtype and category, no time gap) stays under the threshold.
    kind = "infrastructure"
    t = grouping.terms_for(category, kind)
    d = t.radius_m + beyond
    text = "Pothole outside 1200 Oak St"
    where = NOWHERE if local else Where(unit="~412")
    r = Report(
        "r", *offset(34.05, -118.25, d, 0), category, kind, text, gap_h * 3600, 2, "pothole",
        "local", where, ((category, 1.0),),
    )  # fmt: skip
    cand = Candidate(
        "i", 34.05, -118.25, category, kind, text, 0.0, count, "pothole", "local", NOWHERE,
        ((category, 1.0),),
    )  # fmt: skip
    if d <= 2 * t.radius_m + 200:  # the decision also refuses anything past the radius
        assert grouping.pair(r, cand, d).scores.total < grouping.THRESHOLD
    params = grouping.params_for(category, kind, {})
    assert params.radius_m == t.radius_m
    assert grouping.group_batch([r], [cand], {}, set())[0].created


def test_a_report_that_opens_its_own_issue_keeps_the_best_one_it_did_not_join() -> None:
    cand = Candidate(
        "i", 34.05, -118.25, "graffiti", "appearance", "Graffiti on the wall at 1200 Oak St", 0, 2
    )
    lat, lon = offset(34.05, -118.25, 150, 0)
    far = report("f", lat, lon, 3600, "graffiti", "Tagging on wall, 1260 Oak Street", "appearance")
    decision = grouping.group_batch([far], [cand], {}, set())[0]
    assert decision.created
    assert decision.why_not is not None and decision.why_not.issue == "i"
    assert decision.why_not.scores.total < grouping.THRESHOLD
    assert decision.why_not.reason  # the feature that kept it out, in words


def test_an_issue_left_without_reports_counts_as_one_report() -> None:
    # A split can take an issue's only report away; distance must still count for it.
    lat, lon = offset(34.05, -118.25, 100, 0)
    r = report("r", lat, lon, t=3600, category="flooding", kind="hazard", text="Flooded street")
    scores = [
        grouping.pair(
            r, Candidate("i", 34.05, -118.25, "flooding", "hazard", "Flooded", 0, n), 100.0
        ).scores
        for n in (0, 1)
    ]
    assert scores[0].total == scores[1].total


def test_house_numbers_are_addresses_not_quantities() -> None:
    assert grouping.house_numbers("Streetlight out at 1200 Oak St for 10 days") == {1200}
    assert grouping.house_numbers("in front of 836 42nd Ave, 12 inches of water") == {836}
    assert grouping.house_numbers("AT 109 PLYMOUTH: CAR PARKED FOR 3 WEEKS") == {109}
    assert grouping.house_agreement("Light out for 10 days", "Light out at 1200 Oak St") == 0


def test_a_report_finds_the_issue_at_its_room_however_far_its_pin() -> None:
    # Indoors a pin is only good to tens of metres, or stale: the same room still groups.
    room = Where(building="hotel", unit="hotel-412", code="hotel-412")
    issue = Candidate(
        "i", 34.05, -118.25, "plumbing", "utilities", "Toilet clogged in room 412", 0.0, 1,
        "toilet", "local", room, (("plumbing", 1.0),), (("toilet", 1.0),),
    )  # fmt: skip
    far = grouping.terms_for("plumbing", "utilities").radius_m + 300
    r = Report(
        "r", *offset(34.05, -118.25, far, 0), "plumbing", "utilities", "toilet in 412 clogged",
        3600, 2, "toilet", "local", room, (("plumbing", 1.0),), (("toilet", 1.0),),
    )  # fmt: skip
    decision = grouping.group_batch([r], [issue], {}, set(), nearest=5)[0]
    assert not decision.created and decision.issue == "i"
    # Another room does not, even with its pin on the issue's: the rooms decide.
    other = r._replace(
        lat=34.05, lon=-118.25, place=Where(building="hotel", unit="hotel-415", code="hotel-415")
    )
    decision = grouping.group_batch([other], [issue], {}, set())[0]
    assert decision.created and decision.why_not is not None
    assert decision.why_not.issue == "i" and decision.why_not.scores.place == -1


def test_an_issue_follows_its_reports() -> None:
    # The founder read as one room's heater; two reports of the whole building's boiler
    # later, the issue reads as the boiler.
    first = report("a", 34.05, -118.25, 0, "building_fault", "freezing in apt 4B", "facilities")
    first = first._replace(subtypes=(("heat", 0.2), ("plumbing", 0.8)), alternatives=())
    issue = grouping.found(first, "i")
    for n in range(2):
        boiler = first._replace(id=f"b{n}", subtypes=(("heat", 1.0),))
        issue = grouping.absorb(issue, boiler)
    assert issue.report_count == 3
    assert dict(issue.subtypes)["heat"] > dict(issue.subtypes)["plumbing"]


def test_a_merged_issue_keeps_its_own_category_profile() -> None:
    # Staff merged an older issue of another category into a plumbing issue: the profile is
    # founded on the issue's own category, so its subtype and mix stay the toilet's.
    older = report("o", 34.05, -118.25, 0, "building_fault", "paint peeling", "facilities")
    older = older._replace(subtype="paint", subtypes=(("paint", 1.0),))
    toilet = report("t", 34.05, -118.25, 60, "plumbing", "toilet clogged", "utilities")
    toilet = toilet._replace(subtype="toilet", subtypes=(("toilet", 1.0),))
    merged = grouping.profile([older, toilet], "i", "plumbing")
    assert merged is not None
    assert (merged.category, merged.subtype, merged.subtypes) == (
        "plumbing",
        "toilet",
        (("toilet", 1.0),),
    )
    assert merged.report_count == 2
    # Without the issue's category the first report founds it, as grouping would have.
    first = grouping.profile([older, toilet], "i")
    assert first is not None and first.category == "building_fault"
    assert grouping.profile([], "i") is None
