"""Response shapes of the handlers that build their JSON bodies as plain dicts.

Documentation only: no handler encodes these; the OpenAPI document (api/openapi.py) turns
them into schemas. They must say exactly what the handlers send, field for field, and the
contract test holds every response it provokes to them, so a renamed, retyped or new field
that is not reflected here fails it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from civicpulse.api.categories import CategoryOut
from civicpulse.api.reports import EventOut
from civicpulse.domain.places import PlaceOut
from civicpulse.domain.reports import AwareDatetime, Links, Location
from civicpulse.engine.tenant_rules import Rule
from civicpulse.workflow import Status


class Shape(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the documentation-only shapes."""


# --- operations ---------------------------------------------------------------------


class Health(Shape, frozen=True, kw_only=True):
    status: Literal["ok"]


class Readiness(Shape, frozen=True, kw_only=True):
    """Ready when the database answers, every stage runs and intake is open."""

    status: Literal["ready", "not_ready"]
    # "database", "stage:<name>", "live", "intake" -> "ok" or what is wrong.
    checks: dict[str, str]
    # What an operator should know but that does not make the service unready: autovacuum
    # off, stale planner statistics.
    warnings: list[str]


# --- reports and categories -----------------------------------------------------------


class ReportEvents(Shape, frozen=True, kw_only=True):
    items: list[EventOut]


class CategoryList(Shape, frozen=True, kw_only=True):
    items: list[CategoryOut]


# --- issues -----------------------------------------------------------------------------


class SlaState(Shape, frozen=True, kw_only=True):
    """The issue's SLA clock: targets and business time in seconds, due times in UTC."""

    policy: str | None
    cycle: int
    running: bool
    acknowledged_at: AwareDatetime | None
    resolved_at: AwareDatetime | None
    response_due_at: AwareDatetime | None
    resolution_due_at: AwareDatetime | None
    response_target_s: float | None
    resolution_target_s: float | None
    response_business_s: float | None
    resolution_business_s: float | None


class IssueOut(Shape, frozen=True, kw_only=True):
    """An issue with its workflow and SLA state."""

    id: str
    status: Status
    category: str | None
    severity: int | None
    priority: int
    title: str
    representative_text: str
    lat: float | None
    lon: float | None
    report_count: int
    subtype: str | None
    scope: Literal["local", "building"]
    place: Location | None
    first_reported: AwareDatetime | None
    last_reported: AwareDatetime | None
    opened_at: AwareDatetime
    closed_at: AwareDatetime | None
    hazards: list[str]
    area: str | None
    team: str | None
    assignee: str | None
    visibility: Literal["public", "private"]
    sla: SlaState
    # Open311 GeoReport v2: when the service expects to resolve the request.
    expected_datetime: AwareDatetime | None
    version: int


class IssueReport(Shape, frozen=True, kw_only=True):
    id: str
    text: str
    lat: float | None  # none for a report located by address only
    lon: float | None
    address: str | None
    media_urls: list[str]
    category: str | None
    subtype: str | None
    severity: int | None
    place: Location | None
    submitted_at: AwareDatetime
    channel: str
    # The grouping rule and scores; staff also see "why_not".
    grouping: dict[str, Any] | None


class IssueEvent(Shape, frozen=True, kw_only=True):
    id: int
    kind: str
    actor: str
    report_id: str | None
    from_status: str | None
    to_status: str | None
    note: str | None
    data: dict[str, Any]
    created_at: AwareDatetime


class IssueDetail(IssueOut, frozen=True, kw_only=True, tag_field="view", tag="staff"):
    """An issue as staff see it: everything, with its reports and its event log."""

    reports: list[IssueReport]
    events: list[IssueEvent]


class PublicIssue(Shape, frozen=True, kw_only=True, tag_field="view", tag="public"):
    """An issue as a `submit` key sees it (civicpulse.visibility): its public facts, never
    a report's words, an address or who handles it."""

    id: str
    status: Status
    category: str | None
    area: str | None
    report_count: int
    opened_at: AwareDatetime
    resolved_at: AwareDatetime | None
    closed_at: AwareDatetime | None
    lat: float | None
    lon: float | None
    last_reported: AwareDatetime | None
    expected_datetime: AwareDatetime | None


class NearbyIssue(Shape, frozen=True, kw_only=True):
    id: str
    status: Status
    category: str | None
    area: str | None
    report_count: int
    opened_at: AwareDatetime
    title: str | UnsetType = UNSET  # staff only: it is the first report's words
    distance_m: float
    last_reported: AwareDatetime | None
    links: Links


class NearbyIssues(Shape, frozen=True, kw_only=True):
    radius_m: float
    items: list[NearbyIssue]


class KeyOut(Shape, frozen=True, kw_only=True):
    id: int
    prefix: str
    scope: Literal["submit", "staff", "admin"]
    label: str
    status: Literal["active", "expired", "revoked"]
    created_at: AwareDatetime
    created_by: str
    expires_at: AwareDatetime | None
    revoked_at: AwareDatetime | None
    last_used_at: AwareDatetime | None
    rotated_from: int | None


class KeyList(Shape, frozen=True, kw_only=True):
    items: list[KeyOut]


class NewKey(KeyOut, frozen=True, kw_only=True):
    """A key as it is made: the only time the key itself is shown."""

    key: str


class RotatedKey(NewKey, frozen=True, kw_only=True):
    replaced: KeyOut


class AuditEntry(Shape, frozen=True, kw_only=True):
    id: int
    at: AwareDatetime
    actor: str
    action: str
    target: str
    data: dict[str, Any]


class AuditPage(Shape, frozen=True, kw_only=True):
    items: list[AuditEntry]
    next_before: int | None


class IssueSummary(Shape, frozen=True, kw_only=True):
    id: str
    status: Status
    category: str | None
    severity: int | None
    priority: int
    title: str
    area: str | None
    team: str | None
    assignee: str | None
    visibility: Literal["public", "private"]
    report_count: int
    lat: float | None
    lon: float | None
    opened_at: AwareDatetime
    last_reported: AwareDatetime | None
    response_due_at: AwareDatetime | None
    resolution_due_at: AwareDatetime | None
    acknowledged_at: AwareDatetime | None
    resolved_at: AwareDatetime | None
    version: int
    links: Links


class IssuePage(Shape, frozen=True, kw_only=True):
    items: list[IssueSummary]
    # Pass as `cursor` for the next page; null on the last one.
    next_cursor: str | None


# --- tenant configuration ---------------------------------------------------------------


class Team(Shape, frozen=True, kw_only=True):
    code: str
    name: str


class TeamList(Shape, frozen=True, kw_only=True):
    items: list[Team]


class AreaOut(Shape, frozen=True, kw_only=True):
    code: str
    name: str
    # GeoJSON Polygon or MultiPolygon, as uploaded.
    geometry: dict[str, Any]


class AreaList(Shape, frozen=True, kw_only=True):
    items: list[AreaOut]


class CalendarOut(Shape, frozen=True, kw_only=True):
    code: str
    timezone: str
    # Weekday ("mon".."sun") -> opening ranges ["HH:MM", "HH:MM"]; missing days are closed.
    hours: dict[str, list[tuple[str, str]]]
    holidays: list[dt.date]


class CalendarList(Shape, frozen=True, kw_only=True):
    items: list[CalendarOut]


class PolicyOut(Shape, frozen=True, kw_only=True):
    code: str
    name: str
    calendar: str
    response_minutes: int | None
    resolution_minutes: int | None
    warn_ratio: float
    pause_statuses: list[str]
    priorities: list[int]
    categories: list[str]


class PolicyList(Shape, frozen=True, kw_only=True):
    items: list[PolicyOut]


class RulesOut(Shape, frozen=True, kw_only=True):
    """The rule set in force; version null (and no author) while the tenant has none."""

    version: int | None
    mode: Literal["first", "all"]
    rules: list[Rule]
    created_by: str | UnsetType = UNSET
    created_at: AwareDatetime | UnsetType = UNSET


class PlaceList(Shape, frozen=True, kw_only=True):
    items: list[PlaceOut]


class PlaceImport(Shape, frozen=True, kw_only=True):
    created: int
    updated: int


# --- SLA metrics ----------------------------------------------------------------------


class Percentiles(Shape, frozen=True, kw_only=True):
    p50: float | None
    p90: float | None


class Durations(Shape, frozen=True, kw_only=True):
    business: Percentiles
    wall: Percentiles


class TargetShare(Shape, frozen=True, kw_only=True):
    measured: int
    met: int
    met_pct: float | None


class SlaGroup(Shape, frozen=True, kw_only=True):
    key: str | None
    opened: int
    backlog: int
    overdue_now: int
    resolved: int
    response: TargetShare
    resolution: TargetShare
    time_to_acknowledge_s: Durations
    time_to_resolve_s: Durations


class SlaMetrics(Shape, frozen=True, kw_only=True):
    group_by: Literal["category", "area", "team"]
    from_: AwareDatetime | None = msgspec.field(name="from")
    to: AwareDatetime | None
    groups: list[SlaGroup]


# --- analytics and dashboards ---------------------------------------------------------


class TrendPoint(Shape, frozen=True, kw_only=True):
    period: dt.date
    key: str | None
    opened: int
    resolved: int
    within_sla_pct: float | None


class Trends(Shape, frozen=True, kw_only=True):
    interval: Literal["day", "week", "month"]
    by: Literal["category", "area", "team", "none"]
    from_: AwareDatetime = msgspec.field(name="from")
    to: AwareDatetime
    items: list[TrendPoint]


class BacklogPoint(Shape, frozen=True, kw_only=True):
    day: dt.date
    open: int


class Backlog(Shape, frozen=True, kw_only=True):
    items: list[BacklogPoint]


class RankedGroup(Shape, frozen=True, kw_only=True):
    key: str | None
    resolved: int
    median_resolve_s: float
    within_sla_pct: float | None
    shrunk_median_resolve_s: float
    shrunk_within_sla_pct: float | None
    rank: int | UnsetType = UNSET  # only in `ranked`


class TenantFigures(Shape, frozen=True, kw_only=True):
    median_resolve_s: float
    within_sla_pct: float | None


class Rankings(Shape, frozen=True, kw_only=True):
    """Groups ranked by shrunk median time to resolve; `tenant` null while none resolved."""

    by: Literal["area", "team"]
    min_sample: int | UnsetType = UNSET
    prior_weight: float | UnsetType = UNSET
    tenant: TenantFigures | None
    ranked: list[RankedGroup]
    too_few: list[RankedGroup]


class Hotspot(Shape, frozen=True, kw_only=True):
    cell: int
    issues: int
    reports: int
    lat: float
    lon: float
    # The most severe issue's category, and the cell's whole mix (issues per category).
    category: str | None
    categories: dict[str, int]
    cell_size_m: int


class Hotspots(Shape, frozen=True, kw_only=True):
    items: list[Hotspot]


class DashboardSettings(Shape, frozen=True, kw_only=True):
    public: bool
    widgets: list[str]
    public_categories: list[str] | None
    public_areas: list[str] | None
    title: str | None


class DashboardTenant(Shape, frozen=True, kw_only=True):
    slug: str
    name: str
    timezone: str


class Totals(Shape, frozen=True, kw_only=True):
    opened: int
    resolved: int
    open_now: int


class CategoryCount(Shape, frozen=True, kw_only=True):
    key: str
    opened: int
    resolved: int


class RecentIssue(Shape, frozen=True, kw_only=True):
    id: str
    status: Status
    category: str | None
    area: str | None
    report_count: int
    opened_at: AwareDatetime
    resolved_at: AwareDatetime | None
    closed_at: AwareDatetime | None
    title: str | UnsetType = UNSET  # staff view only


class MapPoint(Shape, frozen=True, kw_only=True):
    id: str
    category: str | None
    status: Status
    lat: float
    lon: float


class DashboardData(Shape, frozen=True, kw_only=True):
    """Everything the dashboard page draws; the optional widgets as its settings list them."""

    tenant: DashboardTenant
    title: str
    view: Literal["public", "staff"]
    days: int
    widgets: list[str]
    generated_at: AwareDatetime
    totals: Totals
    trend: list[TrendPoint]
    backlog: list[BacklogPoint]
    categories: list[CategoryCount]
    category_names: dict[str, str]
    rankings: Rankings | UnsetType = UNSET
    hotspots: list[Hotspot] | UnsetType = UNSET
    recent: list[RecentIssue] | UnsetType = UNSET
    points: list[MapPoint] | UnsetType = UNSET  # the newest open issues, for the map


# --- the live stream ------------------------------------------------------------------


class StreamIssue(Shape, frozen=True, kw_only=True):
    id: str
    status: Status
    category: str | None
    area: str | None
    report_count: int
    title: str | UnsetType = UNSET  # staff view only
    visibility: Literal["public", "private"] | UnsetType = UNSET  # staff view only


class StreamEventData(Shape, frozen=True, kw_only=True):
    """The JSON in an event's `data`; a `rollup` event carries only its kind."""

    kind: str
    at: AwareDatetime | UnsetType = UNSET
    from_status: str | UnsetType | None = UNSET
    to_status: str | UnsetType | None = UNSET
    issue: StreamIssue | UnsetType = UNSET
    report_id: str | UnsetType | None = UNSET  # staff view only: the report it concerns
    data: dict[str, Any] | UnsetType = UNSET  # staff view only


class StreamEvent(Shape, frozen=True, kw_only=True):
    """One server-sent event, as the stream's lines give it."""

    id: str | UnsetType = UNSET  # the event id, for Last-Event-ID; none on `rollup`
    event: str
    data: Annotated[
        str,
        Meta(
            extra_json_schema={
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/StreamEventData"},
            }
        ),
    ]


class WebReportAccepted(Shape, frozen=True, kw_only=True):
    """A web form report taken: its id and the tracking link (with its secret)."""

    id: str
    track: str


class TrackedIssue(Shape, frozen=True, kw_only=True):
    id: str
    status: Status
    category: str | None
    report_count: int
    public: bool  # whether the issue's public page shows it


class TrackedReport(Shape, frozen=True, kw_only=True):
    """A report as its tracking link shows it to its sender."""

    id: str
    status: str  # received, classified, grouped, failed
    text: str
    category: str | None
    submitted_at: AwareDatetime
    issue: TrackedIssue | None
