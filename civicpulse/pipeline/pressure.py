"""Intake first, and the pipeline always moving: the pipeline's share of the process adapts
to intake's latency, and the backlog has a bound.

Intake answers clients, so its latency has a target (p99). Every window the share looks at
the intake requests that finished in it: when more than 1% took longer than the target, the
pipeline's share is halved, otherwise it grows by a tenth, between a floor and the whole
(additive increase, multiplicative decrease, as TCP shares a link). The classification and
grouping workers rest after each claim in proportion: a claim that took t seconds at share s
is followed by t * (1/s - 1) seconds of rest, so the stages work a fraction s of the time and
never less than the floor: under any load they make progress.

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
    floor: float = 0.1
    window: float = 0.5
    step: float = 0.1
    clock: Callable[[], float] = time.monotonic
    value: float = 1.0
    _total: int = 0
    _slow: int = 0
    _window_end: float = field(default=0.0)

    def observe(self, latency: float, requests: int = 1) -> None:
        """Requests that finished intake, each in `latency` seconds."""
        self._roll()
        self._total += requests
        if latency > self.target:
            self._slow += requests

    def rest_after(self, worked: float) -> float:
        """How long a stage rests after a claim that took `worked` seconds."""
        self._roll()
        return worked * (1.0 / self.value - 1.0)

    def _roll(self) -> None:
        now = self.clock()
        if now < self._window_end:
            return
        if self._window_end:
            if self._total and self._slow > 0.01 * self._total:
                self.value = max(self.floor, self.value / 2)
            else:
                self.value = min(1.0, self.value + self.step)
        self._total = self._slow = 0
        self._window_end = now + self.window


@dataclass
class Backlog:
    """Reports waiting for the pipeline, as last counted, against the bound."""

    limit: int  # 0: no bound
    alert: int
    reports: int = 0

    @property
    def full(self) -> bool:
        return 0 < self.limit <= self.reports

    @property
    def alerting(self) -> bool:
        return 0 < self.alert <= self.reports
