"""The pure workflow pieces: SLA clocks, tenant rules, areas and workflow plans."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from civicpulse import workflow
from civicpulse.engine import areas, sla, tenant_rules
from civicpulse.engine.business_time import Calendar, business_seconds

LA = "America/Los_Angeles"
# Mon-Fri 09:00-12:00 and 13:00-17:00 (7 business hours), closed on Christmas.
OFFICE = Calendar(
    LA, {d: [(540, 720), (780, 1020)] for d in range(5)}, frozenset({dt.date(2026, 12, 25)})
)
HOUR = 3600.0
POLICY = sla.Policy("std", OFFICE, response_s=2 * HOUR, resolution_s=14 * HOUR, warn_ratio=0.75)


def at(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, h, mi, tzinfo=ZoneInfo(LA))


# --- SLA clocks ---------------------------------------------------------------------------


def test_due_times_follow_the_business_calendar() -> None:
    # Opened Thursday 24 Dec 16:00: one business hour that day, Christmas closed, then
    # Monday 28 Dec (Sat/Sun closed).
    clock = sla.start(POLICY, at(2026, 12, 24, 16))
    due = sla.due(POLICY, clock, at(2026, 12, 24, 16))
    assert due.response_breach == at(2026, 12, 28, 10)  # 1 h Thu + 1 h Mon 09-10
    assert due.response_warning == at(2026, 12, 28, 9, 30)  # 1.5 h
    # 14 h: 1 h Thu, 7 h Mon, 6 h Tue -> Tue 29 Dec 16:00.
    assert due.resolution_breach == at(2026, 12, 29, 16)


def test_a_pause_stops_the_clock_and_moves_the_due_time() -> None:
    clock = sla.start(POLICY, at(2026, 11, 2, 9))  # Monday
    clock = sla.acknowledge(POLICY, clock, at(2026, 11, 2, 10))
    assert clock.response_s == HOUR
    clock = sla.change_status(POLICY, clock, at(2026, 11, 2, 11), "assigned", "waiting")
    assert clock.running_since is None and clock.elapsed_s == 2 * HOUR
    assert sla.due(POLICY, clock, at(2026, 11, 3, 9)) == sla.Due(None, None, None, None)
    # Resumed a day later: 12 h remain from Tue 09:00 -> Tue 7 h + Wed 5 h = Wed 15:00.
    clock = sla.change_status(POLICY, clock, at(2026, 11, 3, 9), "waiting", "in_progress")
    assert sla.due(POLICY, clock, at(2026, 11, 3, 9)).resolution_breach == at(2026, 11, 4, 15)
    clock = sla.change_status(POLICY, clock, at(2026, 11, 3, 10), "in_progress", "resolved")
    assert clock.resolved_at == at(2026, 11, 3, 10)
    assert clock.resolution_s == 3 * HOUR  # 2 h Monday + 1 h Tuesday, the pause left out


def test_a_reopen_starts_a_new_cycle_and_closing_keeps_the_resolution() -> None:
    clock = sla.start(POLICY, at(2026, 11, 2, 9))
    clock = sla.change_status(POLICY, clock, at(2026, 11, 2, 11), "new", "resolved")
    clock = sla.change_status(POLICY, clock, at(2026, 11, 2, 12), "resolved", "closed")
    assert clock.resolution_s == 2 * HOUR and clock.resolved_at == at(2026, 11, 2, 11)
    again = sla.change_status(POLICY, clock, at(2026, 11, 4, 9), "closed", "reopened")
    assert again.cycle == 2 and again.started_at == at(2026, 11, 4, 9)
    assert again.elapsed_s == 0 and again.resolved_at is None and again.acknowledged_at is None


def test_past_due_targets_fire_at_once() -> None:
    clock = sla.start(POLICY, at(2026, 11, 2, 9))
    now = at(2026, 11, 2, 12)  # 3 business hours in: response (2 h) already missed
    due = sla.due(POLICY, clock, now)
    assert due.response_breach == now and due.response_warning == now


def test_a_first_policy_counts_from_the_cycle_start() -> None:
    clock = sla.start(None, at(2026, 11, 2, 9))
    clock = sla.change_policy(None, POLICY, clock, at(2026, 11, 2, 10), "new")
    assert sla.elapsed(POLICY, clock, at(2026, 11, 2, 10)) == HOUR


@settings(max_examples=60, deadline=None)
@given(
    start=st.datetimes(dt.datetime(2026, 1, 1), dt.datetime(2027, 12, 1)),
    pauses=st.lists(st.integers(1, 72 * 60), min_size=2, max_size=8),
)
def test_banked_time_equals_business_time_over_running_intervals(
    start: dt.datetime, pauses: list[int]
) -> None:
    """However a clock is paused and resumed, what it banked is the business time of the
    intervals it ran."""
    t = start.replace(tzinfo=ZoneInfo(LA))
    clock = sla.start(POLICY, t)
    running: list[tuple[dt.datetime, dt.datetime]] = []
    status = "new"
    run_start = t
    for i, minutes in enumerate(pauses):
        t = t + dt.timedelta(minutes=minutes)
        new = "waiting" if i % 2 == 0 else "in_progress"
        if new == "waiting":
            running.append((run_start, t))
        else:
            run_start = t
        clock = sla.change_status(POLICY, clock, t, status, new)
        status = new
    if status != "waiting":
        running.append((run_start, t))
    expected = sum(business_seconds(OFFICE, a, b) for a, b in running)
    assert sla.elapsed(POLICY, clock, t) == pytest.approx(expected, abs=1e-6)


# --- rules --------------------------------------------------------------------------------


def ruleset(mode: str, *rules: dict[str, object]) -> tenant_rules.RuleSet:
    return msgspec.convert({"mode": mode, "rules": list(rules)}, tenant_rules.RuleSet)


FACTS = tenant_rules.Facts("water_leak", 4, "downtown", ("flooding",), "Water main burst", 3)
NOON = at(2026, 11, 2, 12)  # Monday


def test_first_match_wins_and_all_mode_layers_actions() -> None:
    rules = [
        {"id": "hazard", "when": {"hazards_any": ["flooding"]}, "then": {"priority": 1}},
        {"id": "water", "when": {"categories": ["water_leak"]}, "then": {"team": "water"}},
        {"id": "other", "when": {"categories": ["graffiti"]}, "then": {"team": "paint"}},
    ]
    first = tenant_rules.evaluate(ruleset("first", *rules), FACTS, NOON, LA)
    assert first.matched == ("hazard",) and first.priority == 1 and first.team is None
    every = tenant_rules.evaluate(ruleset("all", *rules), FACTS, NOON, LA)
    assert every.matched == ("hazard", "water") and (every.priority, every.team) == (1, "water")


@pytest.mark.parametrize(
    ("when", "matches"),
    [
        ({"severity_min": 4}, True),
        ({"severity_min": 5}, False),
        ({"severity_max": 3}, False),
        ({"areas": ["downtown"]}, True),
        ({"areas": ["harbor"]}, False),
        ({"keywords_any": ["main burst"]}, True),
        ({"keywords_any": ["mainb"]}, False),
        ({"report_count_min": 3}, True),
        ({"report_count_min": 4}, False),
        ({"hours": ["09:00", "17:00"]}, True),
        ({"hours": ["22:00", "06:00"]}, False),  # wraps midnight
        ({"weekdays": [0]}, True),
        ({"weekdays": [5, 6]}, False),
        ({"categories": ["water_leak"], "severity_min": 5}, False),  # every condition holds
    ],
)
def test_each_condition(when: dict[str, object], matches: bool) -> None:
    rules = ruleset("first", {"id": "r", "when": when, "then": {"priority": 2}})
    assert bool(tenant_rules.evaluate(rules, FACTS, NOON, LA).matched) is matches


def test_hours_are_read_in_the_tenant_zone() -> None:
    rules = ruleset(
        "first", {"id": "night", "when": {"hours": ["22:00", "06:00"]}, "then": {"priority": 1}}
    )
    night_in_la = dt.datetime(2026, 11, 3, 7, 0, tzinfo=dt.UTC)  # 23:00 in Los Angeles
    assert tenant_rules.evaluate(rules, FACTS, night_in_la, LA).matched == ("night",)
    assert tenant_rules.evaluate(rules, FACTS, night_in_la, "UTC").matched == ()


def test_rule_sets_are_checked_against_the_tenant() -> None:
    good = ruleset(
        "first",
        {
            "id": "a",
            "when": {"categories": ["pothole"]},
            "then": {"team": "roads", "sla_policy": "p1"},
        },
    )
    names = {"categories": {"pothole"}, "areas": set(), "teams": {"roads"}, "policies": {"p1"}}
    tenant_rules.check(good, **names)
    bad = [
        (
            {"id": "a", "when": {"categories": ["nope"]}, "then": {"priority": 1}},
            "rules[0].when.categories[0]",
        ),
        ({"id": "a", "then": {"team": "ghosts"}}, "rules[0].then.team"),
        ({"id": "a", "then": {"sla_policy": "p9"}}, "rules[0].then.sla_policy"),
        ({"id": "a", "then": {}}, "rules[0].then"),
        (
            {"id": "a", "when": {"severity_min": 4, "severity_max": 2}, "then": {"priority": 1}},
            "rules[0].when.severity_max",
        ),
    ]
    for rule, field in bad:
        with pytest.raises(tenant_rules.RuleError) as err:
            tenant_rules.check(ruleset("first", rule), **names)
        assert err.value.field == field
    with pytest.raises(tenant_rules.RuleError) as err:
        tenant_rules.check(
            ruleset(
                "first", {"id": "a", "then": {"priority": 1}}, {"id": "a", "then": {"priority": 2}}
            ),
            **names,
        )
    assert err.value.field == "rules[1].id"


def test_rules_cannot_smuggle_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        ruleset("first", {"id": "a", "when": {"python": "import os"}, "then": {"priority": 1}})
    with pytest.raises(msgspec.ValidationError):
        ruleset("first", {"id": "a", "then": {"priority": 9}})


# --- areas --------------------------------------------------------------------------------

SQUARE = [[-118.3, 34.0], [-118.2, 34.0], [-118.2, 34.1], [-118.3, 34.1], [-118.3, 34.0]]
HOLE = [[-118.26, 34.04], [-118.24, 34.04], [-118.24, 34.06], [-118.26, 34.06], [-118.26, 34.04]]


def test_point_in_polygon_with_holes_edges_and_multipolygons() -> None:
    park = areas.parse("park", {"type": "Polygon", "coordinates": [SQUARE, HOLE]})
    assert areas.contains(park, 34.02, -118.28)
    assert not areas.contains(park, 34.05, -118.25)  # in the hole
    assert areas.contains(park, 34.0, -118.25)  # on the edge
    assert not areas.contains(park, 34.2, -118.25)
    twin = areas.parse(
        "twin",
        {
            "type": "Feature",
            "geometry": {"type": "MultiPolygon", "coordinates": [[SQUARE], [HOLE]]},
        },
    )
    assert areas.contains(twin, 34.05, -118.25)


def test_the_smallest_containing_area_wins() -> None:
    city = areas.parse("city", {"type": "Polygon", "coordinates": [SQUARE]})
    block = areas.parse("block", {"type": "Polygon", "coordinates": [HOLE]})
    assert areas.locate([city, block], 34.05, -118.25) == "block"
    assert areas.locate([city, block], 34.01, -118.29) == "city"
    assert areas.locate([city, block], 35.0, -118.25) is None


@pytest.mark.parametrize(
    ("geometry", "field"),
    [
        ({"type": "Point", "coordinates": [0, 0]}, "geometry.type"),
        ({"type": "Polygon", "coordinates": [SQUARE[:-1]]}, "geometry.coordinates[0]"),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0.5]]]},
            "geometry.coordinates[0]",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 91], [0, 0]]]},
            "geometry.coordinates[0][2]",
        ),
        ("not geojson", "geometry"),
    ],
)
def test_bad_geometry_names_the_field(geometry: object, field: str) -> None:
    with pytest.raises(areas.GeometryError) as err:
        areas.parse("x", geometry)
    assert err.value.field == field


# --- workflow plans -----------------------------------------------------------------------


def config(*rules: dict[str, object]) -> workflow.TenantConfig:
    return workflow.TenantConfig(
        tenant_id=1,
        timezone=LA,
        ruleset=ruleset("first", *rules) if rules else None,
        rules_version=1 if rules else None,
        policies={"std": workflow.PolicyEntry(POLICY, frozenset({3}), frozenset())},
    )


def new_issue(**changes: object) -> workflow.IssueState:
    base = workflow.IssueState(
        id="i1",
        status="new",
        category="water_leak",
        severity=4,
        priority=3,
        area="downtown",
        team=None,
        assignee=None,
        visibility="public",
        hazards=(),
        text="Water main burst",
        report_count=1,
        lat=34.05,
        lon=-118.25,
        version=1,
        manual=frozenset(),
        opened_at=at(2026, 11, 2, 9),
        policy=None,
        clock=None,
        response_target_s=None,
        resolution_target_s=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_new_issue_gets_rules_policy_clock_and_timers() -> None:
    cfg = config(
        {
            "id": "water",
            "when": {"categories": ["water_leak"]},
            "then": {"team": "water", "priority": 3},
        }
    )
    p = workflow.plan(
        cfg, new_issue(), workflow.Change("created", "system:grouping"), at(2026, 11, 2, 9, 30)
    )
    assert p.after.team == "water" and p.after.policy == "std"
    assert p.after.response_due_at == at(2026, 11, 2, 11)  # from the 09:00 opening
    assert dict(((t, k), when) for t, k, when in p.timers)[("response", "warning")] == at(
        2026, 11, 2, 10, 30
    )
    (event,) = p.events
    assert event[1] == "rules_applied"
    assert msgspec.json.decode(event[6])["matched"] == ["water"]


def test_staff_choices_are_not_overridden_by_rules() -> None:
    cfg = config({"id": "water", "when": {}, "then": {"team": "water"}})
    issue = new_issue(team="roads", manual=frozenset({"team"}))
    p = workflow.plan(cfg, issue, workflow.Change("updated", "x"), at(2026, 11, 2, 10))
    assert p.after.team == "roads"


def test_staff_transitions_acknowledge_and_stop_the_clock() -> None:
    cfg = config()
    first = workflow.plan(cfg, new_issue(), workflow.Change("created", "g"), at(2026, 11, 2, 9))
    issue = first.after
    p = workflow.plan(
        cfg,
        issue,
        workflow.Change(
            "status_changed", "key:abc", status="in_progress", staff=True, note="crew sent"
        ),
        at(2026, 11, 2, 10),
    )
    assert p.after.clock is not None and p.after.clock.response_s == HOUR
    assert p.after.response_due_at is None and p.bump == 1
    kind, actor, old, new, note = p.events[0][1:6]
    assert (kind, actor, old, new, note) == (
        "status_changed",
        "key:abc",
        "new",
        "in_progress",
        "crew sent",
    )
    done = workflow.plan(
        cfg,
        p.after,
        workflow.Change("status_changed", "k", status="resolved", staff=True),
        at(2026, 11, 2, 12),
    )
    assert done.after.resolution_due_at is None
    assert all(when is None for _, _, when in done.timers)


def test_the_transition_table() -> None:
    assert workflow.allowed("new", "triaged")
    assert workflow.allowed("resolved", "reopened")
    assert not workflow.allowed("closed", "in_progress")
    assert not workflow.allowed("new", "duplicate")
    assert not workflow.allowed("duplicate", "reopened")
    assert set(workflow.TRANSITIONS) == set(workflow.STATUSES)


ALWAYS = Calendar.always(LA)
URGENT = sla.Policy("urgent", ALWAYS, response_s=HOUR, resolution_s=8 * HOUR)


def test_a_new_policy_measures_the_cycle_from_the_opening_on_its_own_calendar() -> None:
    # Opened Sunday 22:00 under the office-hours policy (nothing counts at night); at 02:00
    # the priority rises and the around-the-clock policy takes over: its 8 hours run from
    # the opening (due 06:00), not from the change (10:00).
    opened, change = at(2026, 11, 1, 22), at(2026, 11, 2, 2)
    clock = sla.start(POLICY, opened)
    clock = sla.change_policy(POLICY, URGENT, clock, change, "new")
    assert sla.elapsed(URGENT, clock, change) == 4 * HOUR
    assert sla.due(URGENT, clock, change).resolution_breach == at(2026, 11, 2, 6)
    # Pauses stay out: waiting 23:00-01:00 leaves 2 h run by 02:00, so due 08:00.
    clock = sla.start(POLICY, opened)
    clock = sla.change_status(POLICY, clock, at(2026, 11, 1, 23), "new", "waiting")
    clock = sla.change_status(POLICY, clock, at(2026, 11, 2, 1), "waiting", "in_progress")
    clock = sla.change_policy(POLICY, URGENT, clock, change, "in_progress")
    assert sla.due(URGENT, clock, change).resolution_breach == at(2026, 11, 2, 8)
    # Resolved at 03:00 under the new policy: 3 h of its time, as the wall clock says.
    done = sla.change_status(URGENT, clock, at(2026, 11, 2, 3), "in_progress", "resolved")
    assert done.resolution_s == 3 * HOUR
    # A clock from before runs were kept keeps the old rule (the night counted as nothing).
    legacy = replace(sla.start(POLICY, opened), runs=None)
    legacy = sla.change_policy(POLICY, URGENT, legacy, change, "new")
    assert sla.due(URGENT, legacy, change).resolution_breach == at(2026, 11, 2, 10)
