"""Business-time arithmetic on calendars: pure functions, no I/O.

A calendar has an IANA time zone, several opening ranges per weekday (local wall-clock
minutes) and holidays (local dates). Ranges are turned into absolute instants day by day in
the calendar's zone, so DST changes are handled by the zone database: a 09:00-17:00 day is
eight business hours on the day clocks change, and the wall-clock hour skipped or repeated at
night counts only if the calendar is open then. An SLA clock is business time summed over the
intervals when it runs (pauses are simply intervals left out).

Both directions are memoised: a grouping batch opens many issues at the same instant on the
same calendar, and they all get the same due times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo

MINUTES_PER_DAY = 24 * 60
# How far arithmetic looks ahead before deciding a calendar can never satisfy a target.
MAX_DAYS = 3 * 366


class CalendarError(ValueError):
    """A calendar that cannot be used (bad ranges, no opening hours at all)."""


@dataclass(frozen=True)
class Calendar:
    """Opening hours: weekday (Monday = 0) -> [(start minute, end minute)] in local time."""

    timezone: str
    hours: Mapping[int, Sequence[tuple[int, int]]]
    holidays: frozenset[dt.date] = field(default_factory=frozenset)
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        ZoneInfo(self.timezone)  # raises for an unknown zone
        for day, ranges in self.hours.items():
            if day not in range(7):
                raise CalendarError(f"weekday must be 0-6, got {day}")
            previous_end = -1
            for start, end in sorted(ranges):
                if not 0 <= start < end <= MINUTES_PER_DAY:
                    raise CalendarError(f"range {start}-{end} on day {day} is not within a day")
                if start < previous_end:
                    raise CalendarError(f"ranges overlap on day {day}")
                previous_end = end
        if not any(self.hours.get(d) for d in range(7)):
            raise CalendarError("a calendar needs opening hours on at least one weekday")
        # Hashable despite the mapping, so the arithmetic below can be memoised; computed
        # once (every memoised call hashes its calendar).
        hours = tuple(sorted((d, tuple(sorted(r))) for d, r in self.hours.items()))
        object.__setattr__(self, "_hash", hash((self.timezone, hours, self.holidays)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def always(cls, timezone: str = "UTC") -> Calendar:
        """Every hour of every day (wall-clock SLAs)."""
        return cls(timezone, {d: [(0, MINUTES_PER_DAY)] for d in range(7)})


def _instant(day: dt.date, minute: int, zone: ZoneInfo) -> dt.datetime:
    """The instant of a local wall-clock minute (minute 1440 is the next local midnight)."""
    if minute >= MINUTES_PER_DAY:
        day, minute = day + dt.timedelta(days=1), minute - MINUTES_PER_DAY
    local = dt.datetime.combine(day, dt.time(minute // 60, minute % 60), tzinfo=zone)
    # A wall-clock time skipped by DST does not exist: round trip through UTC moves it on.
    return local.astimezone(dt.UTC)


def open_intervals(
    calendar: Calendar, start: dt.datetime, end: dt.datetime | None = None
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Business intervals (UTC) overlapping [start, end), clipped, in order."""
    zone = calendar.zone
    day = start.astimezone(zone).date() - dt.timedelta(days=1)  # a range may start yesterday
    last = None if end is None else end.astimezone(zone).date() + dt.timedelta(days=1)
    for _ in range(MAX_DAYS + 2):
        if last is not None and day > last:
            return
        for s, e in day_intervals(calendar, day):
            s, e = max(s, start), e if end is None else min(e, end)
            if s < e:
                yield s, e
        day += dt.timedelta(days=1)


@lru_cache(maxsize=65_536)
def day_intervals(calendar: Calendar, day: dt.date) -> tuple[tuple[dt.datetime, dt.datetime], ...]:
    """A local day's business intervals as instants (UTC), in order; none on a holiday. Kept:
    the SLA clocks of a city's issues cross the same days over and over."""
    if day in calendar.holidays:
        return ()
    zone = calendar.zone
    return tuple(
        (_instant(day, s_min, zone), _instant(day, e_min, zone))
        for s_min, e_min in sorted(calendar.hours.get(day.weekday(), ()))
    )


@lru_cache(maxsize=65_536)
def day_seconds(calendar: Calendar, day: dt.date) -> float:
    """Business time of one whole local day (its ranges as the zone makes them instants)."""
    # A range inside the hour a DST change skips can end before it starts: it holds nothing
    # (open_intervals drops it the same way).
    return sum(max(0.0, (e - s).total_seconds()) for s, e in day_intervals(calendar, day))


# Business time is counted from a calendar's base day (kept per calendar and process, a
# year before the earliest day asked about): the time between two instants is the difference
# of their counts.
_prefixes: dict[Calendar, tuple[dt.date, list[float]]] = {}
_MARGIN = dt.timedelta(days=366)


def _before(calendar: Calendar, day: dt.date) -> float:
    """Business time of the local days from the calendar's base day up to `day` (excluded)."""
    known = _prefixes.get(calendar)
    if known is None or day < known[0]:
        if len(_prefixes) >= 256:  # many calendars: start again rather than grow
            _prefixes.clear()
        known = _prefixes[calendar] = (day - _MARGIN, [0.0])
    base, prefix = known
    i = (day - base).days
    one = dt.timedelta(days=1)
    while len(prefix) <= i:
        prefix.append(prefix[-1] + day_seconds(calendar, base + one * (len(prefix) - 1)))
    return prefix[i]


def _elapsed(calendar: Calendar, t: dt.datetime, day: dt.date) -> float:
    """Business time from the calendar's base day to `t` (whose local date is `day`). Each
    of the day's intervals counts up to t (one inside a skipped DST hour may end before it
    starts: it counts nothing, as open_intervals drops it)."""
    total = _before(calendar, day)
    for s, e in day_intervals(calendar, day):
        if s < t:
            total += max(0.0, (min(e, t) - s).total_seconds())
    return total


@lru_cache(maxsize=8192)
def business_seconds(calendar: Calendar, start: dt.datetime, end: dt.datetime) -> float:
    """Business time between two instants (0 when end <= start): the difference of their
    counts from the calendar's base day, whose whole days are summed once per calendar and
    process (an import measures 10^5 issues over the same few years of days)."""
    if end <= start:
        return 0.0
    zone = calendar.zone
    first = start.astimezone(zone).date()
    last = end.astimezone(zone).date()
    if (last - first).days > MAX_DAYS:  # a span beyond any clock's: walked, not kept
        return sum((e - s).total_seconds() for s, e in open_intervals(calendar, start, end))
    begins = _elapsed(calendar, start, first)  # first: a base day before `first` is kept
    return max(0.0, _elapsed(calendar, end, last) - begins)


@lru_cache(maxsize=8192)
def add_business_seconds(calendar: Calendar, start: dt.datetime, seconds: float) -> dt.datetime:
    """The instant when `seconds` of business time have passed since `start`."""
    if seconds < 0:
        raise ValueError("seconds must not be negative")
    remaining = dt.timedelta(seconds=seconds)
    if not remaining:
        # Zero business time: the clock starts at the next opening if closed now.
        for s, _ in open_intervals(calendar, start):
            return s
    for s, e in open_intervals(calendar, start):
        span = e - s
        if remaining <= span:
            return s + remaining
        remaining -= span
    raise CalendarError(f"no {seconds} s of business time within {MAX_DAYS} days")


def running_seconds(calendar: Calendar, runs: Sequence[tuple[dt.datetime, dt.datetime]]) -> float:
    """Business time over the intervals an SLA clock was running (pauses left out)."""
    return sum(business_seconds(calendar, s, e) for s, e in runs)
