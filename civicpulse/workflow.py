"""Issue workflow: the lifecycle, per-tenant rules and SLA clocks, decided in one place.

Every change to an issue (created by grouping, a report attached, a staff transition,
assignment or comment) goes through `plan`: a pure function from the issue's state, the
change and the tenant's configuration to the new state, its due timers and the events to
log. Callers hold the issue's row lock, then `save` writes the plan. So the same rules run
whatever caused the change, and the clock and timers can never disagree with the status.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal, get_args

import asyncpg
import msgspec

from civicpulse.db import workflow as repo
from civicpulse.engine import areas as areas_engine
from civicpulse.engine import sla, tenant_rules
from civicpulse.engine.business_time import Calendar, CalendarError

_json = msgspec.json.Encoder()
_runs = msgspec.json.Decoder(tuple[tuple[dt.datetime, dt.datetime], ...])

Status = Literal[
    "new",
    "triaged",
    "assigned",
    "in_progress",
    "waiting",
    "resolved",
    "closed",
    "reopened",
    "duplicate",
    "rejected",
]
STATUSES: tuple[str, ...] = get_args(Status)
_WORKING = frozenset({"triaged", "assigned", "in_progress", "waiting", "resolved", "rejected"})
# Allowed transitions. `duplicate` is reached only by merging (POST .../merge).
TRANSITIONS: Mapping[str, frozenset[str]] = {
    "new": _WORKING,
    "triaged": _WORKING - {"triaged"},
    "assigned": _WORKING - {"assigned"},
    "in_progress": _WORKING - {"in_progress", "triaged"},
    "waiting": _WORKING - {"waiting", "triaged"},
    "reopened": _WORKING,
    "resolved": frozenset({"closed", "reopened"}),
    "closed": frozenset({"reopened"}),
    "rejected": frozenset({"reopened"}),
    "duplicate": frozenset(),
}
# Assigning an issue in one of these statuses moves it to `assigned`.
ASSIGN_MOVES = frozenset({"new", "triaged", "reopened"})
RULE_FIELDS = ("priority", "team", "visibility")


def allowed(old: str, new: str) -> bool:
    return new in TRANSITIONS.get(old, frozenset())


# --- tenant configuration -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    policy: sla.Policy
    priorities: frozenset[int]
    categories: frozenset[str]


@dataclass(frozen=True, slots=True)
class TenantConfig:
    tenant_id: int
    timezone: str
    ruleset: tenant_rules.RuleSet | None
    rules_version: int | None
    policies: Mapping[str, PolicyEntry]  # in code order

    def policy(self, code: str | None) -> sla.Policy | None:
        entry = self.policies.get(code) if code else None
        return None if entry is None else entry.policy

    def choose_policy(self, by_rule: str | None, priority: int, category: str | None) -> str | None:
        """A rule's choice, else the first policy (by code) listing the priority or category."""
        if by_rule is not None and by_rule in self.policies:
            return by_rule
        for code, entry in self.policies.items():
            if priority in entry.priorities or (category and category in entry.categories):
                return code
        return None


def calendar_from_row(timezone: str, hours: str | Mapping[str, Any], holidays: Any) -> Calendar:
    raw = msgspec.json.decode(hours) if isinstance(hours, str) else hours
    return Calendar(
        timezone,
        {int(day): [(int(s), int(e)) for s, e in ranges] for day, ranges in raw.items()},
        frozenset(holidays or ()),
    )


async def load_config(conn: asyncpg.Connection, tenant_id: int) -> TenantConfig:
    """The tenant's rules and SLA policies (a few small reads, inside the caller's
    transaction, so a change is seen by the next issue change)."""
    head = await repo.current_rules(conn, tenant_id)
    timezone = head["timezone"] if head else "UTC"
    ruleset = None
    version = None
    if head is not None and head["version"] is not None:
        ruleset = msgspec.convert(
            {"mode": head["mode"], "rules": msgspec.json.decode(head["rules"])},
            tenant_rules.RuleSet,
        )
        version = head["version"]
    calendars = {
        r["code"]: calendar_from_row(r["timezone"], r["hours"], r["holidays"])
        for r in await repo.list_calendars(conn, tenant_id)
    }
    policies = {}
    for r in await repo.list_policies(conn, tenant_id):
        policies[r["code"]] = PolicyEntry(
            sla.Policy(
                code=r["code"],
                calendar=calendars[r["calendar"]],
                response_s=None if r["response_minutes"] is None else r["response_minutes"] * 60.0,
                resolution_s=(
                    None if r["resolution_minutes"] is None else r["resolution_minutes"] * 60.0
                ),
                warn_ratio=r["warn_ratio"],
                pause_statuses=frozenset(r["pause_statuses"]),
            ),
            frozenset(r["priorities"]),
            frozenset(r["categories"]),
        )
    return TenantConfig(tenant_id, timezone, ruleset, version, policies)


@lru_cache(maxsize=512)
def _parsed_area(code: str, geometry: str) -> areas_engine.Area:
    return areas_engine.parse(code, msgspec.json.decode(geometry))


async def locate_areas(
    conn: asyncpg.Connection, tenant_id: int, points: Sequence[tuple[float, float]]
) -> list[str | None]:
    """The area of each (lat, lon) point, in one query."""
    candidates: dict[int, list[areas_engine.Area]] = {}
    for r in await repo.areas_at(conn, tenant_id, points):
        candidates.setdefault(r["i"] - 1, []).append(_parsed_area(r["code"], r["geometry"]))
    return [
        areas_engine.locate(candidates.get(i, ()), lat, lon) for i, (lat, lon) in enumerate(points)
    ]


# --- issue state and plans ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssueState:
    id: Any
    status: str
    category: str | None
    severity: int | None
    priority: int
    area: str | None
    team: str | None
    assignee: str | None
    visibility: str
    hazards: tuple[str, ...]
    text: str
    report_count: int
    lat: float | None
    lon: float | None
    version: int
    manual: frozenset[str]
    opened_at: dt.datetime
    policy: str | None
    clock: sla.Clock | None  # None until the issue's first plan
    response_target_s: float | None
    resolution_target_s: float | None
    response_due_at: dt.datetime | None = None
    resolution_due_at: dt.datetime | None = None


def state_from_row(row: Mapping[str, Any]) -> IssueState:
    clock = None
    if row["sla_started_at"] is not None:
        clock = sla.Clock(
            cycle=row["sla_cycle"],
            started_at=row["sla_started_at"],
            running_since=row["sla_running_since"],
            elapsed_s=row["sla_elapsed_s"],
            acknowledged_at=row["acknowledged_at"],
            response_s=row["response_business_s"],
            resolved_at=row["resolved_at"],
            resolution_s=row["resolution_business_s"],
            runs=None if row["sla_runs"] is None else _runs.decode(row["sla_runs"]),
        )
    return IssueState(
        id=row["id"],
        status=row["status"],
        category=row["category"],
        severity=row["severity"],
        priority=row["priority"],
        area=row["area"],
        team=row["team"],
        assignee=row["assignee"],
        visibility=row["visibility"],
        hazards=tuple(row["hazards"]),
        text=row["representative_text"],
        report_count=row["report_count"],
        lat=row["lat"],
        lon=row["lon"],
        version=row["version"],
        manual=frozenset(row["manual_fields"]),
        opened_at=row["opened_at"],
        policy=row["sla_policy"],
        clock=clock,
        response_target_s=row["response_target_s"],
        resolution_target_s=row["resolution_target_s"],
    )


@dataclass(frozen=True, slots=True)
class Change:
    """What happens to an issue. `sets` are staff field edits (team, assignee, priority,
    visibility); a staff change also acknowledges the issue (first response)."""

    kind: str  # the event kind; "updated" (grouping) logs only what rules change
    actor: str
    status: str | None = None
    sets: Mapping[str, Any] = field(default_factory=dict)
    staff: bool = False
    note: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    # Staff changed the issue's reports (merge, split): a new version, though no workflow
    # field moved, so a client holding the old one gets 412.
    touched: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    before: IssueState
    after: IssueState
    events: list[tuple[Any, ...]]  # (issue_id, kind, actor, from, to, note, data json)
    timers: tuple[tuple[str, str, dt.datetime | None], ...]
    bump: int  # 1 when staff-visible workflow state changed


def plan(cfg: TenantConfig, issue: IssueState, change: Change, at: dt.datetime) -> Plan:
    """The issue after `change` at `at`: rules applied, SLA clock moved, timers due."""
    s = issue
    events: list[tuple[Any, ...]] = []
    bump = 0
    # A new issue's first plan: its cycle starts when it opened.
    clock = s.clock or sla.start(None, s.opened_at, s.status)
    if change.touched:
        bump = 1
    if change.sets:
        s = replace(s, **change.sets, manual=s.manual | set(change.sets))
        bump = 1
    old_status = s.status
    if change.status is not None and change.status != s.status:
        clock = sla.change_status(cfg.policy(s.policy), clock, at, s.status, change.status)
        s = replace(s, status=change.status)
        bump = 1
    if change.staff and change.status != "reopened":
        # The first staff action of a cycle is its response; a reopen starts a cycle and
        # waits for the next one.
        clock = sla.acknowledge(cfg.policy(s.policy), clock, at)
    if change.kind not in ("created", "updated"):  # their callers log those themselves
        data = dict(change.data)
        events.append(
            (
                s.id,
                change.kind,
                change.actor,
                old_status if s.status != old_status else None,
                s.status if s.status != old_status else None,
                change.note,
                _json.encode(data).decode(),
            )
        )

    # Rules see the issue as it is now; staff-set fields are not overridden.
    outcome = tenant_rules.evaluate(
        cfg.ruleset,
        tenant_rules.Facts(s.category, s.severity, s.area, s.hazards, s.text, s.report_count),
        at,
        cfg.timezone,
    )
    changes: dict[str, Any] = {}
    for name in RULE_FIELDS:
        value = getattr(outcome, name)
        if value is not None and name not in s.manual and getattr(s, name) != value:
            changes[name] = value
    s = replace(s, **changes)
    policy_code = cfg.choose_policy(outcome.sla_policy, s.priority, s.category)
    if policy_code != s.policy:
        old, new = cfg.policy(s.policy), cfg.policy(policy_code)
        clock = sla.change_policy(old, new, clock, at, s.status)
        s = replace(
            s,
            policy=policy_code,
            response_target_s=None if new is None else new.response_s,
            resolution_target_s=None if new is None else new.resolution_s,
        )
        changes["sla_policy"] = policy_code
    elif change.status == "reopened" and s.policy is not None:
        # A new cycle takes the policy's current targets.
        pol = cfg.policy(s.policy)
        if pol is not None:
            s = replace(s, response_target_s=pol.response_s, resolution_target_s=pol.resolution_s)
    if changes:
        bump = 1
    if changes or (outcome.matched and change.kind == "created"):
        events.append(
            (
                s.id,
                "rules_applied",
                "system:rules",
                None,
                None,
                None,
                _json.encode(
                    {
                        "version": cfg.rules_version,
                        "matched": list(outcome.matched),
                        "changes": changes,
                        "cause": change.kind,
                    }
                ).decode(),
            )
        )

    pol = cfg.policy(s.policy)
    # Targets recorded on the issue take precedence (a policy edited mid-cycle).
    if pol is not None:
        pol = replace(pol, response_s=s.response_target_s, resolution_s=s.resolution_target_s)
    try:
        due = sla.due(pol, clock, at)
    except CalendarError as exc:
        # A target the calendar cannot reach (a policy or calendar changed after it was
        # checked): this issue runs without due times, flagged in its log, and the batch it
        # is in (a whole tenant's grouping) goes on.
        due = sla.Due(None, None, None, None)
        events.append(
            (
                s.id,
                "sla_unavailable",
                "system:sla",
                None,
                None,
                str(exc),
                _json.encode({"policy": s.policy}).decode(),
            )
        )
    s = replace(
        s,
        clock=clock,
        response_due_at=due.response_breach,
        resolution_due_at=due.resolution_breach,
    )
    timers = (
        ("response", "warning", due.response_warning),
        ("response", "breach", due.response_breach),
        ("resolution", "warning", due.resolution_warning),
        ("resolution", "breach", due.resolution_breach),
    )
    return Plan(issue, s, events, timers, bump)


def save_args(tenant_id: int, p: Plan) -> tuple[Any, ...]:
    """One issue's row for save_issues_workflow: tenant, id, the 20 columns, the version
    the plan was made from, the version bump, and the clock's runs (JSON)."""
    s, c = p.after, p.after.clock
    assert c is not None
    return (
        tenant_id,
        s.id,
        s.status,
        s.priority,
        s.area,
        s.team,
        s.assignee,
        s.visibility,
        sorted(s.manual),
        s.policy,
        c.cycle,
        c.started_at,
        c.running_since,
        c.elapsed_s,
        s.response_target_s,
        s.resolution_target_s,
        c.acknowledged_at,
        c.response_s,
        c.resolved_at,
        c.resolution_s,
        s.response_due_at,
        s.resolution_due_at,
        p.before.version,
        p.bump,
        None if c.runs is None else _json.encode(c.runs).decode(),
    )


def timer_rows(p: Plan) -> list[tuple[Any, int, str, str, dt.datetime | None]]:
    assert p.after.clock is not None
    return [(p.after.id, p.after.clock.cycle, target, kind, at) for target, kind, at in p.timers]


async def save(conn: asyncpg.Connection, tenant_id: int, p: Plan, at: dt.datetime) -> int | None:
    """Write one plan; its new version, or None when the issue's version moved on (the
    caller answers 412)."""
    if await repo.save_issues_workflow(conn, [save_args(tenant_id, p)], at) != 1:
        return None
    await repo.replace_timers(conn, tenant_id, timer_rows(p))
    await repo.append_workflow_events(conn, tenant_id, p.events)
    return p.before.version + p.bump


async def save_many(
    conn: asyncpg.Connection, tenant_id: int, plans: Sequence[Plan], at: dt.datetime
) -> None:
    """Write plans for rows the caller holds locked, pipelined (grouping batches)."""
    plans = [p for p in plans if p.bump or p.events or p.before.clock is None]
    await repo.save_issues_workflow(conn, [save_args(tenant_id, p) for p in plans], at)
    # A clock that has just started has no timers yet: its rows are only inserted.
    started = [t for p in plans if p.before.clock is None for t in timer_rows(p)]
    moved = [t for p in plans if p.before.clock is not None for t in timer_rows(p)]
    await repo.insert_timers(conn, tenant_id, started)
    await repo.replace_timers(conn, tenant_id, moved)
    await repo.append_workflow_events(conn, tenant_id, [e for p in plans for e in p.events])


async def apply(
    conn: asyncpg.Connection,
    tenant_id: int,
    changes: Mapping[str, Change],
    at: dt.datetime,
    *,
    locate: bool = False,
) -> None:
    """Plan and save changes to several issues the caller may already have written in this
    transaction (grouping, merge, split). A `created` issue first gets its area, and with
    `locate` every issue without one (the geocoder has just given it a point)."""
    if not changes:
        return
    cfg = await load_config(conn, tenant_id)
    issues = [
        state_from_row(row)
        for row in await repo.lock_issue_workflow(conn, tenant_id, sorted(changes))
    ]
    # New issues take the area their location falls in.
    unplaced = [
        i
        for i, issue in enumerate(issues)
        if (locate or changes[str(issue.id)].kind == "created")
        and issue.area is None
        and issue.lat is not None
        and issue.lon is not None
    ]
    if unplaced:
        points = [(issues[i].lat or 0.0, issues[i].lon or 0.0) for i in unplaced]
        for i, area in zip(unplaced, await locate_areas(conn, tenant_id, points), strict=True):
            issues[i] = replace(issues[i], area=area)
    plans = [plan(cfg, issue, changes[str(issue.id)], at) for issue in issues]
    await save_many(conn, tenant_id, plans, at)


async def apply_to_issues(
    conn: asyncpg.Connection,
    tenant_id: int,
    created: Sequence[Any],
    updated: Sequence[Any],
    actor: str,
    at: dt.datetime,
) -> None:
    """After grouping: start new issues' workflow (area, rules, SLA clock) and re-run the
    rules on issues whose reports changed."""
    changes = {str(i): Change("updated", actor) for i in updated}
    changes.update({str(i): Change("created", actor) for i in created})
    await apply(conn, tenant_id, changes, at)
