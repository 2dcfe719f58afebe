"""SLA clocks: pure state transitions over business time, no I/O.

A clock belongs to an issue and measures one cycle (a reopen starts the next). It runs
while the issue is in a running status and banks business seconds whenever it stops: on a
pause (policy.pause_statuses, `waiting` by default) and when the issue is resolved,
closed, rejected or merged. Two targets share it: **response** ends at the first staff
action of the cycle (acknowledgement), **resolution** when the clock stops for good.
Due times are the instants when the running clock would reach each target (and each
warning threshold); a paused or stopped clock has none.

A clock keeps the intervals it ran in its cycle (`runs`), so a new policy measures the whole
cycle on its own calendar: the clock runs from the issue's opening whatever policy it ends
up with, pauses left out. A clock from before `runs` were kept (None) keeps the old rule:
time so far counted on the old policy's calendar.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from civicpulse.engine.business_time import Calendar, add_business_seconds, business_seconds

# Statuses that stop the resolution clock; `resolved` and `closed` count as resolutions.
STOPPED = frozenset({"resolved", "closed", "rejected", "duplicate"})


@dataclass(frozen=True, slots=True)
class Policy:
    """What an SLA asks for: targets in business seconds on a calendar."""

    code: str
    calendar: Calendar
    response_s: float | None
    resolution_s: float | None
    warn_ratio: float = 0.75
    pause_statuses: frozenset[str] = frozenset({"waiting"})


@dataclass(frozen=True, slots=True)
class Clock:
    cycle: int
    started_at: dt.datetime
    running_since: dt.datetime | None
    elapsed_s: float
    acknowledged_at: dt.datetime | None = None
    response_s: float | None = None
    resolved_at: dt.datetime | None = None
    resolution_s: float | None = None
    # Closed run intervals of this cycle (the open one starts at running_since); None: not
    # kept (a clock from before they were).
    runs: tuple[tuple[dt.datetime, dt.datetime], ...] | None = ()


@dataclass(frozen=True, slots=True)
class Due:
    """The instants timers fire at; None where a target is met, stopped or paused."""

    response_warning: dt.datetime | None
    response_breach: dt.datetime | None
    resolution_warning: dt.datetime | None
    resolution_breach: dt.datetime | None


def start(policy: Policy | None, at: dt.datetime, status: str = "new", cycle: int = 1) -> Clock:
    """A new cycle starting at `at` in `status`."""
    paused = policy is not None and status in policy.pause_statuses
    return Clock(cycle=cycle, started_at=at, running_since=None if paused else at, elapsed_s=0)


def _stopped_running(clock: Clock, at: dt.datetime, banked: float) -> Clock:
    """The clock stops running at `at` with `banked` seconds: its run is kept."""
    runs = clock.runs
    if runs is not None and clock.running_since is not None and clock.running_since < at:
        runs = (*runs, (clock.running_since, at))
    return replace(clock, running_since=None, elapsed_s=banked, runs=runs)


def elapsed(policy: Policy | None, clock: Clock, at: dt.datetime) -> float:
    """Business seconds the clock has run in this cycle up to `at`."""
    if clock.running_since is None or policy is None:
        return clock.elapsed_s
    return clock.elapsed_s + business_seconds(policy.calendar, clock.running_since, at)


def acknowledge(policy: Policy | None, clock: Clock, at: dt.datetime) -> Clock:
    """A staff action: the first one of a cycle meets (or misses) the response target."""
    if clock.acknowledged_at is not None:
        return clock
    spent = None if policy is None else elapsed(policy, clock, at)
    return replace(clock, acknowledged_at=at, response_s=spent)


def change_status(
    policy: Policy | None, clock: Clock, at: dt.datetime, old: str, new: str
) -> Clock:
    """The clock after the issue moves from `old` to `new` at `at`."""
    if new == "reopened" and old in STOPPED:
        return start(policy, at, new, clock.cycle + 1)
    banked = elapsed(policy, clock, at)
    if new in STOPPED:
        clock = _stopped_running(clock, at, banked)
        if clock.resolved_at is None:
            spent = None if policy is None else banked
            clock = replace(clock, resolved_at=at, resolution_s=spent)
        return clock
    if policy is not None and new in policy.pause_statuses:
        return _stopped_running(clock, at, banked)
    if clock.running_since is None:
        return replace(clock, running_since=at, elapsed_s=banked)
    return clock


def due(policy: Policy | None, clock: Clock, now: dt.datetime) -> Due:
    """When each warning and breach would fire if nothing else happens."""
    if policy is None or clock.running_since is None:
        return Due(None, None, None, None)
    spent = elapsed(policy, clock, now)

    def at(target: float | None, fraction: float) -> dt.datetime | None:
        if target is None:
            return None
        remaining = target * fraction - spent
        if remaining <= 0:
            # Already past: fire now (a timer in the past fires at the next tick).
            return now
        return add_business_seconds(policy.calendar, now, remaining)

    respond = clock.acknowledged_at is None
    resolve = clock.resolved_at is None
    return Due(
        response_warning=at(policy.response_s, policy.warn_ratio) if respond else None,
        response_breach=at(policy.response_s, 1.0) if respond else None,
        resolution_warning=at(policy.resolution_s, policy.warn_ratio) if resolve else None,
        resolution_breach=at(policy.resolution_s, 1.0) if resolve else None,
    )


def change_policy(
    old: Policy | None, new: Policy | None, clock: Clock, at: dt.datetime, status: str
) -> Clock:
    """Move a clock to another policy: the cycle so far is measured again on the new
    policy's calendar, from its start, pauses left out (a clock without `runs` keeps what
    the old calendar counted); the new policy's pause statuses apply from `at`."""
    if clock.resolved_at is not None:
        return clock
    if new is not None and clock.runs is not None:
        clock = replace(
            clock, elapsed_s=sum(business_seconds(new.calendar, s, e) for s, e in clock.runs)
        )
        running = clock.running_since is not None
        if running and status in new.pause_statuses:
            return _stopped_running(clock, at, elapsed(new, clock, at))
        if not running and status not in new.pause_statuses:
            return replace(clock, running_since=at)
        return clock
    if clock.running_since is None:
        paused_before = old is not None and status in old.pause_statuses
        if paused_before and (new is None or status not in new.pause_statuses):
            return replace(clock, running_since=at)
        return clock
    if old is not None:
        clock = replace(clock, elapsed_s=elapsed(old, clock, at), running_since=at)
    if new is not None and status in new.pause_statuses:
        return replace(clock, elapsed_s=elapsed(new, clock, at), running_since=None)
    return clock
