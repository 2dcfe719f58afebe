"""Per-tenant rules: declarative JSON, validated on upload, evaluated without running code.

A rule set is an ordered list of rules and a mode: `first` applies the first rule that
matches, `all` applies every matching rule in order (a later rule's action wins where two
set the same field). A rule matches when every condition it states holds:

    {"id": "gas-leak", "when": {"hazards_any": ["gas"], "severity_min": 4},
     "then": {"priority": 1, "team": "emergency", "sla_policy": "p1", "visibility": "private"}}

Conditions: categories, severity_min/max, areas, hazards_any, keywords_any (whole words,
case-insensitive, in the issue's representative text), report_count_min, hours (local time
of day range "HH:MM"-"HH:MM", may wrap midnight) and weekdays (0 = Monday), both in the
tenant's time zone at the moment of evaluation.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import msgspec
from msgspec import Meta

Code = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
HourMinute = Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
Severity = Annotated[int, Meta(ge=1, le=5)]
MAX_RULES = 200


class When(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    categories: list[str] | None = None
    severity_min: Severity | None = None
    severity_max: Severity | None = None
    areas: list[str] | None = None
    hazards_any: list[str] | None = None
    keywords_any: list[Annotated[str, Meta(min_length=1, max_length=100)]] | None = None
    report_count_min: Annotated[int, Meta(ge=1)] | None = None
    hours: tuple[HourMinute, HourMinute] | None = None
    weekdays: list[Annotated[int, Meta(ge=0, le=6)]] | None = None


class Then(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    priority: Severity | None = None
    team: str | None = None
    sla_policy: str | None = None
    visibility: Literal["public", "private"] | None = None


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: Annotated[str, Meta(min_length=1, max_length=100)]
    description: Annotated[str, Meta(max_length=1000)] = ""
    when: When = When()
    then: Then


class RuleSet(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mode: Literal["first", "all"] = "first"
    rules: Annotated[list[Rule], Meta(max_length=MAX_RULES)]


class RuleError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check(
    ruleset: RuleSet,
    *,
    categories: Collection[str],
    areas: Collection[str],
    teams: Collection[str],
    policies: Collection[str],
) -> None:
    """What msgspec cannot check: names that must exist for the tenant, unique ids."""
    seen: set[str] = set()
    for i, rule in enumerate(ruleset.rules):
        at = f"rules[{i}]"
        if rule.id in seen:
            raise RuleError(f"{at}.id", f"rule id {rule.id!r} is used twice")
        seen.add(rule.id)
        w, t = rule.when, rule.then
        for name, values, known in (
            ("categories", w.categories, categories),
            ("areas", w.areas, areas),
        ):
            for j, value in enumerate(values or ()):
                if value not in known:
                    raise RuleError(f"{at}.when.{name}[{j}]", f"unknown {name[:-1]} {value!r}")
        if w.severity_min and w.severity_max and w.severity_min > w.severity_max:
            raise RuleError(f"{at}.when.severity_max", "severity_max is below severity_min")
        if t.team is not None and t.team not in teams:
            raise RuleError(f"{at}.then.team", f"unknown team {t.team!r}")
        if t.sla_policy is not None and t.sla_policy not in policies:
            raise RuleError(f"{at}.then.sla_policy", f"unknown SLA policy {t.sla_policy!r}")
        if t == Then():
            raise RuleError(f"{at}.then", "a rule must set at least one field")


@dataclass(frozen=True, slots=True)
class Facts:
    """What rules can see of an issue."""

    category: str | None
    severity: int | None
    area: str | None
    hazards: Sequence[str]
    text: str
    report_count: int


@dataclass(frozen=True, slots=True)
class Outcome:
    matched: tuple[str, ...]
    priority: int | None = None
    team: str | None = None
    sla_policy: str | None = None
    visibility: str | None = None


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def matches(when: When, facts: Facts, local: dt.datetime, words: set[str]) -> bool:
    if when.categories is not None and facts.category not in when.categories:
        return False
    if when.severity_min is not None and (facts.severity or 0) < when.severity_min:
        return False
    if when.severity_max is not None and (facts.severity or 0) > when.severity_max:
        return False
    if when.areas is not None and facts.area not in when.areas:
        return False
    if when.hazards_any is not None and not set(when.hazards_any) & set(facts.hazards):
        return False
    if when.keywords_any is not None and not any(
        _words(k) and _words(k) <= words for k in when.keywords_any
    ):
        return False
    if when.report_count_min is not None and facts.report_count < when.report_count_min:
        return False
    if when.weekdays is not None and local.weekday() not in when.weekdays:
        return False
    if when.hours is not None:
        start, end = _minutes(when.hours[0]), _minutes(when.hours[1])
        now = local.hour * 60 + local.minute
        inside = start <= now < end if start <= end else (now >= start or now < end)
        if not inside:
            return False
    return True


def evaluate(ruleset: RuleSet | None, facts: Facts, at: dt.datetime, timezone: str) -> Outcome:
    """The actions of the matching rule(s); fields no rule sets stay None."""
    if ruleset is None:
        return Outcome(matched=())
    local = at.astimezone(ZoneInfo(timezone))
    words = _words(facts.text)
    matched: list[str] = []
    fields: dict[str, object] = {}
    for rule in ruleset.rules:
        if not matches(rule.when, facts, local, words):
            continue
        matched.append(rule.id)
        for name in ("priority", "team", "sla_policy", "visibility"):
            value = getattr(rule.then, name)
            if value is not None:
                fields[name] = value
        if ruleset.mode == "first":
            break
    return Outcome(matched=tuple(matched), **fields)  # type: ignore[arg-type]
