"""Intake first, and the pipeline never left behind: the pipeline's share of the process
adapts to intake's latency and to how far behind the pipeline is, and the backlog has a
bound.

Intake answers clients, so its latency has a target (p99). The pipeline has a target too:
no report should wait more than `max_delay` seconds for it. Every window the share looks at
the intake requests that finished in it ("slow": more than 1% took longer than the target)
and at the oldest report waiting for the pipeline:
- pipeline within its delay, intake slow: the share halves (intake first; a burst waits in
  the database and is caught up after it);
- pipeline behind: the share doubles, as long as intake's p99 stays under `limit`, a harder
  bound; past it the share halves, and the backlog's bound below takes over;
- otherwise it grows by a tenth,
between a floor and the whole (additive increase, multiplicative decrease, as TCP shares a
link). The classification and grouping workers rest after each claim in proportion: a claim
that took t seconds at share s is followed by t * (1/s - 1) seconds of rest, so the stages
work a fraction s of the time and never less than the floor.

The backlog (reports received but not yet grouped) is counted every few seconds. Past
`limit` intake answers 503 with Retry-After until the pipeline has caught up below it, so a
load the machine cannot sustain slows its clients down instead of growing a backlog that
never ends; past `alert` /readyz says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Share:
    """The pipeline's share of the process (0 < floor <= value <= 1)."""

    target: float  # intake's latency target, seconds (its p99)
    limit: float  # intake's p99 bound, seconds, however far behind the pipeline is
    max_delay: float  # how long a report may wait for the pipeline, seconds
    floor: float = 0.1
    window: float = 0.5
    step: float = 0.1
    clock: Callable[[], float] = time.monotonic
    value: float = 1.0
    oldest_wait: float = 0.0  # the oldest report waiting for the pipeline, seconds (Backlog)
    _total: int = 0
    _slow: int = 0
    _over_limit: int = 0
    _window_end: float = field(default=0.0)

    def observe(self, latency: float, requests: int = 1) -> None:
        """Requests that finished intake, each in `latency` seconds."""
        self._roll()
        self._total += requests
        if latency > self.target:
            self._slow += requests
            if latency > self.limit:
                self._over_limit += requests

    def rest_after(self, worked: float) -> float:
        """How long a stage rests after a claim that took `worked` seconds."""
        self._roll()
        return worked * (1.0 / self.value - 1.0)

    def _roll(self) -> None:
        now = self.clock()
        if now < self._window_end:
            return
        if self._window_end:
            behind = self.oldest_wait > self.max_delay
            if behind:
                slow = self._over_limit > 0.01 * self._total
            else:
                slow = self._slow > 0.01 * self._total
            if slow:
                self.value = max(self.floor, self.value / 2)
            elif behind:  # catch up fast: a tenth a window would take seconds from the floor
                self.value = min(1.0, self.value * 2)
            else:
                self.value = min(1.0, self.value + self.step)
        self._total = self._slow = self._over_limit = 0
        self._window_end = now + self.window


@dataclass
class Backlog:
    """Reports waiting for the pipeline, as last counted, against the bound."""

    limit: int  # 0: no bound
    alert: int
    reports: int = 0
    oldest_wait: float = 0.0  # seconds the oldest of them has waited

    @property
    def full(self) -> bool:
        return 0 < self.limit <= self.reports

    @property
    def alerting(self) -> bool:
        return 0 < self.alert <= self.reports
