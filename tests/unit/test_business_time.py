"""Business-time arithmetic, including property-based tests: DST changes, holidays,
multi-range days, spans of months."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from civicpulse.engine.business_time import (
    MAX_DAYS,
    Calendar,
    CalendarError,
    add_business_seconds,
    business_seconds,
    open_intervals,
    running_seconds,
)

NY = "America/New_York"
OFFICE = Calendar(
    NY,
    {d: [(9 * 60, 12 * 60), (13 * 60, 17 * 60)] for d in range(5)},
    frozenset({dt.date(2026, 12, 25), dt.date(2026, 7, 3)}),
)
HOUR = 3600.0


def at(y: int, m: int, d: int, h: int = 0, mi: int = 0, tz: str = NY) -> dt.datetime:
    return dt.datetime(y, m, d, h, mi, tzinfo=ZoneInfo(tz))


def test_a_multi_range_day_counts_only_open_hours() -> None:
    assert business_seconds(OFFICE, at(2026, 11, 2, 8), at(2026, 11, 2, 18)) == 7 * HOUR
    assert business_seconds(OFFICE, at(2026, 11, 2, 11), at(2026, 11, 2, 14)) == 2 * HOUR


def test_dst_days_keep_their_business_hours() -> None:
    # Spring forward (8 March 2026) is a Sunday; the Monday after is a normal 7-hour day,
    # and a 24/7 calendar sees the 23-hour day.
    assert business_seconds(OFFICE, at(2026, 3, 9), at(2026, 3, 10)) == 7 * HOUR
    always = Calendar.always(NY)
    assert business_seconds(always, at(2026, 3, 8), at(2026, 3, 9)) == 23 * HOUR
    assert business_seconds(always, at(2026, 11, 1), at(2026, 11, 2)) == 25 * HOUR
    night = Calendar(NY, {6: [(60, 4 * 60)]})  # Sundays 01:00-04:00, across the change
    assert business_seconds(night, at(2026, 3, 8), at(2026, 3, 9)) == 2 * HOUR
    assert business_seconds(night, at(2026, 11, 1), at(2026, 11, 2)) == 4 * HOUR


def test_holidays_and_weekends_are_closed() -> None:
    friday_4pm = at(2026, 12, 24, 16)  # Thursday 24th; Friday 25th is a holiday
    due = add_business_seconds(OFFICE, friday_4pm, 2 * HOUR)
    assert due == at(2026, 12, 28, 10)  # 1 h on the 24th, then Monday 09:00 + 1 h


def test_zero_time_starts_at_the_next_opening() -> None:
    assert add_business_seconds(OFFICE, at(2026, 11, 7, 20), 0) == at(2026, 11, 9, 9)


def test_a_paused_clock_counts_only_its_running_intervals() -> None:
    runs = [(at(2026, 11, 2, 9), at(2026, 11, 2, 10)), (at(2026, 11, 3, 16), at(2026, 11, 4, 10))]
    assert running_seconds(OFFICE, runs) == (1 + 1 + 1) * HOUR


def test_bad_calendars_are_refused() -> None:
    with pytest.raises(CalendarError):
        Calendar("UTC", {0: [(600, 500)]})
    with pytest.raises(CalendarError):
        Calendar("UTC", {0: [(0, 600), (500, 700)]})
    with pytest.raises(CalendarError):
        Calendar("UTC", {})
    with pytest.raises(Exception, match="Mars"):
        Calendar("Mars/Olympus", {0: [(0, 60)]})


instants = st.datetimes(
    min_value=dt.datetime(2025, 1, 1),
    max_value=dt.datetime(2027, 12, 31),
    timezones=st.just(dt.UTC),
)
zones = st.sampled_from([NY, "Europe/London", "Australia/Sydney", "Asia/Kolkata", "UTC"])


@st.composite
def calendars(draw: st.DrawFn) -> Calendar:
    zone = draw(zones)
    hours: dict[int, list[tuple[int, int]]] = {}
    for day in range(7):
        cuts = sorted(draw(st.sets(st.integers(0, 1440), max_size=6)))
        if len(cuts) % 2:
            cuts = cuts[:-1]
        ranges = [(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=True) if a < b]
        if ranges:
            hours[day] = ranges
    assume(hours)
    holidays = frozenset(
        draw(st.lists(st.dates(dt.date(2025, 1, 1), dt.date(2027, 12, 31)), max_size=30))
    )
    return Calendar(zone, hours, holidays)


@settings(max_examples=150, deadline=None)
@given(cal=calendars(), start=instants, seconds=st.floats(0, 90 * 24 * HOUR))
def test_adding_then_measuring_gives_back_the_same_time(
    cal: Calendar, start: dt.datetime, seconds: float
) -> None:
    try:
        due = add_business_seconds(cal, start, seconds)
    except CalendarError:  # only when the horizon truly holds less business time
        horizon = start + dt.timedelta(days=MAX_DAYS)
        assert business_seconds(cal, start, horizon) < seconds
        return
    assert due >= start
    assert abs(business_seconds(cal, start, due) - seconds) < 1e-3


@settings(max_examples=150, deadline=None)
@given(cal=calendars(), a=instants, b=instants, c=instants)
def test_business_time_is_additive_and_never_exceeds_wall_time(
    cal: Calendar, a: dt.datetime, b: dt.datetime, c: dt.datetime
) -> None:
    a, b, c = sorted((a, b, c))
    ab, bc, ac = (
        business_seconds(cal, a, b),
        business_seconds(cal, b, c),
        business_seconds(cal, a, c),
    )
    assert abs(ab + bc - ac) < 1e-3
    assert 0 <= ac <= (c - a).total_seconds() + 1e-6


@settings(max_examples=60, deadline=None)
@given(zone=zones, a=instants, b=instants)
def test_an_always_open_calendar_is_wall_time(zone: str, a: dt.datetime, b: dt.datetime) -> None:
    a, b = sorted((a, b))
    assert abs(business_seconds(Calendar.always(zone), a, b) - (b - a).total_seconds()) < 1e-6


@settings(max_examples=200, deadline=None)
@given(cal=calendars(), a=instants, b=instants)
def test_whole_days_summed_equal_the_day_by_day_walk(
    cal: Calendar, a: dt.datetime, b: dt.datetime
) -> None:
    """business_seconds takes whole days from a per-day cache; it must equal summing every
    open interval day by day (open_intervals), across DST changes and holidays."""
    a, b = sorted((a, b))
    walked = sum((e - s).total_seconds() for s, e in open_intervals(cal, a, b))
    assert abs(business_seconds(cal, a, b) - walked) < 1e-6
