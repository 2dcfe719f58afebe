"""The OpenAPI 3.1 contract, generated from the routes and the msgspec wire types.

Design rule: the document is derived, never written. Paths and methods come from the app's
Starlette routes; every schema comes from a msgspec type (`msgspec.json.schema_components`):
the Structs the handlers decode and encode, or api/shapes.py for the bodies they build as
dicts. OPERATIONS holds only what the code cannot say by itself: a summary, the key scope the
handler requires, the query and header parameters it reads with their bounds, and the
statuses it answers with. The error responses follow from those (a scope can be 401/403, a
body 400/413/415/422...). A route without an entry is left out of the document, and the
contract test fails on it, as it does on an entry without a route.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from civicpulse import __version__, workflow
from civicpulse.accounts import SESSION_COOKIE
from civicpulse.api import (
    apidocs,
    config,
    dashboard,
    issues,
    keys,
    metrics,
    pages,
    reports,
    sessions,
    shapes,
)
from civicpulse.api import workflow as workflow_api
from civicpulse.api.categories import KINDS, CategoryIn, CategoryOut
from civicpulse.api.errors import ErrorEnvelope
from civicpulse.api.places import MAX_PLACES_PER_REQUEST
from civicpulse.api.state import AppState
from civicpulse.config import Settings
from civicpulse.domain.places import PlaceIn, PlaceOut, PlaceWithCode
from civicpulse.domain.reports import (
    Accepted,
    BatchResult,
    Latitude,
    Longitude,
    PlaceCode,
    ReportCorrection,
    ReportIn,
    ReportOut,
)
from civicpulse.engine.tenant_rules import RuleSet

OPENAPI_VERSION = "3.1.1"
JSON = "application/json"
# public: no credential; optional: none or a key (public or staff view); session: a
# person's session cookie; submit < staff < admin: a key (or session) of that scope or above.
Scope = Literal["public", "optional", "session", "submit", "staff", "admin"]


def one_of(values: Sequence[str]) -> Any:
    """A Literal of the values a handler accepts, from the constant it checks against."""
    return Literal.__getitem__(tuple(values))


@dataclass(frozen=True, slots=True)
class Param:
    """A query or header parameter as the handler reads it."""

    name: str
    type: Any  # anything msgspec can describe; Annotated Meta carries the bounds
    description: str
    required: bool = False
    default: Any = None


@dataclass(frozen=True, slots=True)
class Reply:
    """One response: a msgspec type for its body, in a media type (None: no body)."""

    type: Any = None
    media: str | None = JSON
    description: str = ""
    headers: tuple[Param, ...] = ()


@dataclass(frozen=True, slots=True)
class Configured:
    """A type whose bounds are the operator's settings (a batch's size)."""

    build: Callable[[Settings], Any]


@dataclass(frozen=True, slots=True)
class Operation:
    """What the handler of one (method, path) needs and answers, beyond its types."""

    summary: str
    tag: str
    scope: Scope
    # Status -> the body's msgspec type, or a Reply for anything else.
    responses: Mapping[int, Any]
    body: Any = None  # the JSON request body's msgspec type (or Configured)
    # Which limit read_json enforces: max_body_bytes, or max_batch_body_bytes for bulk uploads.
    bulk: bool = False
    query: tuple[Param, ...] = ()
    headers: tuple[Param, ...] = ()
    # Path parameters other than the common ones (PATH_PARAMS): name -> (type, description).
    path: Mapping[str, tuple[Any, str]] = field(default_factory=dict)
    # Statuses other than those the scope, the body and the parameters imply.
    errors: tuple[int, ...] = ()
    description: str = ""


# --- the types that the handlers check by hand, named once here -----------------------

Slug = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
PATH_PARAMS: dict[str, tuple[Any, str]] = {
    "slug": (Slug, "The tenant's slug."),
    "report_id": (uuid.UUID, "A report id, as intake returned it."),
    "issue_id": (uuid.UUID, "An issue id."),
}
# The categories table's CHECK on a category's code.
CategoryCode = Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,64}$")]
Time = Annotated[dt.datetime, Meta(tz=True)]
Priority = Annotated[int, Meta(ge=1, le=5)]
KeyId = Annotated[int, Meta(ge=1, le=2**62)]


def bounded(low: int, high: int) -> Any:
    """An integer query parameter the handler checks against [low, high]."""
    return Annotated[int, Meta(ge=low, le=high)]


def time_range(days: int | None) -> tuple[Param, ...]:
    """`from` and `to` as api/params.time_param reads them (days None: all time)."""
    start = "Start (inclusive): an ISO 8601 date or time, UTC when it has no offset. " + (
        "Default: all time." if days is None else f"Default: {days} days before `to`."
    )
    return (
        Param("from", Time, start),
        Param("to", Time, "End (exclusive), as `from`. Default: an hour from now."),
    )


IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    Annotated[str, Meta(min_length=1, max_length=reports.IDEMPOTENCY_KEY_MAX)],
    "Printable characters. A retry with the same key and body answers with the first "
    "outcome (and `Idempotent-Replayed: true`); the same key with another body is 409.",
)
IF_MATCH = Param(
    "If-Match",
    Annotated[str, Meta(pattern=r'^\s*(W/)?"?[0-9]{1,9}"?\s*$')],
    'The issue version read, as its ETag gives it ("3"); or send "version" in the body.',
)
ETAG = Param("ETag", str, "The issue's version, for If-Match.", required=True)
SSE_DESCRIPTION = (
    "Server-sent events; the schema describes one event (as OpenAPI 3.2's itemSchema would): "
    "`event` is its kind (status changes, assignments, SLA warnings and breaches for staff; "
    "`rollup` when figures moved), `data` a StreamEventData JSON object. A comment line every "
    "15 s keeps proxies open."
)


def _batch(settings: Settings) -> Any:
    return Annotated[list[ReportIn], Meta(min_length=1, max_length=settings.max_batch_items)]


REPORTS = "/v1/tenants/{slug}/reports"
ISSUES = "/v1/tenants/{slug}/issues"
T = "/v1/tenants/{slug}"

# --- accounts: a person logs in; the session cookie then works as a key of the role ---

SET_COOKIE = Param(
    "Set-Cookie",
    str,
    f"The session: {SESSION_COOKIE}=<token>; HttpOnly; SameSite=Lax; Path=/ "
    "(and Secure over https).",
)
CSRF_TOKEN = Param(
    "X-CSRF-Token", str, "The session's CSRF token (from the login or GET .../session).", True
)
SESSION_NOTE = (
    f"Sends the `{SESSION_COOKIE}` cookie that POST .../session set; an "
    "Authorization header is not a session."
)
ADMIN_NOTE = (
    "An admin's session (the cookie) works as an admin key does; its writes need X-CSRF-Token."
)
ACCOUNT_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", f"{T}/session"): Operation(
        "Log in (a person)",
        "accounts",
        "public",
        {200: Reply(sessions.SessionOut, headers=(SET_COOKIE,))},
        body=sessions.LoginIn,
        errors=(401, 403, 429),
        description="JSON, or an HTML form (application/x-www-form-urlencoded) with the same "
        "fields. 401 for an unknown login, a disabled user or a wrong password alike. 429 "
        "with Retry-After when the address made too many logins, or the account is locked "
        "after too many failures (the password is then not checked). 403 when a browser "
        "says the login comes from another site (Origin, Sec-Fetch-Site).",
    ),
    ("GET", f"{T}/session"): Operation(
        "Who is logged in, and the session's CSRF token",
        "accounts",
        "session",
        {200: sessions.SessionOut},
        errors=(401, 429),
        description=SESSION_NOTE,
    ),
    ("DELETE", f"{T}/session"): Operation(
        "Log out",
        "accounts",
        "session",
        {204: Reply(media=None, description="Logged out", headers=(SET_COOKIE,))},
        headers=(CSRF_TOKEN,),
        errors=(401, 403, 429),
        description=SESSION_NOTE,
    ),
    ("GET", f"{T}/users"): Operation(
        "The tenant's staff accounts",
        "accounts",
        "admin",
        {200: sessions.UserList},
        description=ADMIN_NOTE,
    ),
    ("POST", f"{T}/users"): Operation(
        "Create a staff account",
        "accounts",
        "admin",
        {201: Reply(sessions.UserOut, description="Created")},
        body=sessions.UserIn,
        errors=(409,),
        description=f"409 when the login is taken. {ADMIN_NOTE}",
    ),
    ("PATCH", f"{T}/users/{{user_id}}"): Operation(
        "Change a staff account: role, display name, disabled, password",
        "accounts",
        "admin",
        {200: sessions.UserOut},
        body=sessions.UserPatch,
        path={"user_id": (Annotated[int, Meta(ge=1)], "A user id, as GET .../users lists it.")},
        description="Disabling a user or setting their password ends their sessions at once; "
        f"a new password also lifts a lockout. {ADMIN_NOTE}",
    ),
}


OPERATIONS: dict[tuple[str, str], Operation] = {
    # --- operations -------------------------------------------------------------------
    ("GET", "/healthz"): Operation("Liveness", "operations", "public", {200: shapes.Health}),
    ("GET", "/readyz"): Operation(
        "Readiness: database, pipeline stages, live stream, intake",
        "operations",
        "public",
        {200: shapes.Readiness, 503: Reply(shapes.Readiness, description="Not ready")},
    ),
    ("GET", "/metrics"): Operation(
        "Prometheus metrics",
        "operations",
        "public",
        {200: Reply(str, "text/plain", "Prometheus text exposition format 0.0.4")},
    ),
    ("GET", "/openapi.json"): Operation(
        "This OpenAPI document", "contract", "public", {200: Reply(dict[str, Any])}
    ),
    ("GET", "/docs"): Operation(
        "This document as an HTML page", "contract", "public", {200: Reply(str, "text/html")}
    ),
    # --- reports ------------------------------------------------------------------------
    ("POST", REPORTS): Operation(
        "Submit a report",
        "reports",
        "submit",
        {
            202: Reply(
                Accepted,
                description="Stored durably; classification and grouping follow",
                headers=(Param("Idempotent-Replayed", str, "`true` when this is a replay"),),
            )
        },
        body=ReportIn,
        headers=(IDEMPOTENCY_KEY,),
        errors=(400, 409, 503),
    ),
    ("POST", f"{REPORTS}/batch"): Operation(
        "Submit a batch of reports",
        "reports",
        "submit",
        {
            202: Reply(BatchResult, description="Every report was accepted"),
            207: Reply(BatchResult, description="Some reports were rejected: see each result"),
        },
        body=Configured(_batch),
        bulk=True,
        headers=(IDEMPOTENCY_KEY,),
        errors=(400, 503),
        description="Each report is checked on its own; a retried batch (same Idempotency-Key) "
        "replays report by report.",
    ),
    ("GET", REPORTS): Operation(
        "List reports, newest first",
        "reports",
        "staff",
        {200: reports.ReportPage},
        query=(
            Param("status", one_of(reports.REPORT_STATES), "Only reports in this state."),
            Param(
                "needs_review",
                bool,
                "true: only the reports the classifier was unsure of (the review queue).",
            ),
            Param("limit", bounded(1, 500), "Page size.", default=50),
            Param("cursor", uuid.UUID, "`next_cursor` of the previous page."),
        ),
    ),
    ("GET", f"{REPORTS}/{{report_id}}"): Operation(
        "Get a report", "reports", "submit", {200: ReportOut}
    ),
    ("PATCH", f"{REPORTS}/{{report_id}}"): Operation(
        "Correct a report's category or severity",
        "reports",
        "staff",
        {200: ReportOut},
        body=ReportCorrection,
        description="Logged, and a training label for the tenant's local classifier.",
    ),
    ("GET", f"{REPORTS}/{{report_id}}/events"): Operation(
        "A report's change log", "reports", "staff", {200: shapes.ReportEvents}
    ),
    # --- categories ---------------------------------------------------------------------
    ("GET", f"{T}/categories"): Operation(
        "The tenant's categories", "categories", "submit", {200: shapes.CategoryList}
    ),
    ("PUT", f"{T}/categories/{{code}}"): Operation(
        "Create or replace a category",
        "categories",
        "admin",
        {200: CategoryOut, 201: Reply(CategoryOut, description="Created")},
        body=CategoryIn,
        path={"code": (CategoryCode, "The category's code.")},
        errors=(409,),
        description=f"`kind` is one of {', '.join(KINDS)}. The local model retrains on next use.",
    ),
    # --- issues -------------------------------------------------------------------------
    ("GET", f"{ISSUES}/nearby"): Operation(
        "Open issues near a point (at most 5)",
        "issues",
        "submit",
        {200: shapes.NearbyIssues},
        query=(
            Param("lat", Latitude, "Latitude.", required=True),
            Param("lon", Longitude, "Longitude.", required=True),
            Param("category", str, "A category code or service code of the tenant."),
        ),
    ),
    ("GET", f"{ISSUES}/{{issue_id}}"): Operation(
        "Get an issue",
        "issues",
        "submit",
        {
            200: Reply(
                shapes.IssueDetail | shapes.PublicIssue,
                headers=(Param("ETag", str, "The issue's version, for If-Match (staff only)."),),
            )
        },
        description="Staff: everything, with its reports and log (`view: staff`). A `submit` "
        "key: the public facts (`view: public`) of an issue the public may see or that one "
        "of its own reports joined; 404 otherwise.",
    ),
    ("POST", f"{ISSUES}/{{issue_id}}/merge"): Operation(
        "Merge this issue into another",
        "issues",
        "staff",
        {200: Reply(shapes.IssueOut, description="The issue merged into", headers=(ETAG,))},
        body=issues.MergeIn,
        headers=(IF_MATCH,),
        errors=(400, 409, 412, 428),
        description="If-Match (or `version`) is this issue's version, the one merged away.",
    ),
    ("POST", f"{ISSUES}/{{issue_id}}/split"): Operation(
        "Split a report out into a new issue",
        "issues",
        "staff",
        {201: Reply(shapes.IssueOut, description="The new issue", headers=(ETAG,))},
        body=issues.SplitIn,
        headers=(IF_MATCH,),
        errors=(400, 412, 428),
        description="If-Match (or `version`) is this issue's version, the one split.",
    ),
    # --- workflow -----------------------------------------------------------------------
    ("GET", ISSUES): Operation(
        "List issues, newest first, filtered",
        "workflow",
        "staff",
        {200: shapes.IssuePage},
        query=(
            Param("status", list[workflow.Status], "Any of these statuses (repeat or comma)."),
            Param("priority", list[Priority], "Any of these priorities."),
            Param("category", list[str], "Any of these categories."),
            Param("area", list[str], "Any of these areas."),
            Param("team", list[str], "Any of these teams."),
            Param("overdue", bool, "Only open issues past their resolution target."),
            Param(
                "limit",
                bounded(1, workflow_api.PAGE_MAX),
                "Page size.",
                default=workflow_api.PAGE_DEFAULT,
            ),
            Param("q", Annotated[str, Meta(max_length=200)], "Text in the title or report."),
            Param("cursor", str, "`next_cursor` of the previous page."),
        ),
    ),
    ("PATCH", f"{ISSUES}/{{issue_id}}"): Operation(
        "Edit an issue's priority or visibility",
        "workflow",
        "staff",
        {200: Reply(shapes.IssueOut, headers=(ETAG,))},
        body=workflow_api.EditIn,
        headers=(IF_MATCH,),
        errors=(400, 412, 428),
    ),
    ("POST", f"{ISSUES}/{{issue_id}}/transition"): Operation(
        "Move an issue to another status",
        "workflow",
        "staff",
        {200: Reply(shapes.IssueOut, headers=(ETAG,))},
        body=workflow_api.TransitionIn,
        headers=(IF_MATCH,),
        errors=(400, 409, 412, 428),
    ),
    ("POST", f"{ISSUES}/{{issue_id}}/assign"): Operation(
        "Assign an issue to a team or a person",
        "workflow",
        "staff",
        {200: Reply(shapes.IssueOut, headers=(ETAG,))},
        body=workflow_api.AssignIn,
        headers=(IF_MATCH,),
        errors=(400, 412, 428),
    ),
    ("POST", f"{ISSUES}/{{issue_id}}/comments"): Operation(
        "Comment on an issue",
        "workflow",
        "staff",
        {200: Reply(shapes.IssueOut, headers=(ETAG,))},
        body=workflow_api.CommentIn,
        headers=(IF_MATCH,),
        errors=(400, 412, 428),
        description="A comment is the first response of a cycle when it comes first, so it "
        "needs the version read like every other issue write.",
    ),
    # --- keys and audit -------------------------------------------------------------------
    ("GET", f"{T}/keys"): Operation(
        "The tenant's API keys", "keys", "admin", {200: shapes.KeyList}
    ),
    ("POST", f"{T}/keys"): Operation(
        "Create an API key",
        "keys",
        "admin",
        {201: Reply(shapes.NewKey, description="Created: `key` is shown this once")},
        body=keys.KeyIn,
    ),
    ("DELETE", f"{T}/keys/{{key_id}}"): Operation(
        "Revoke an API key",
        "keys",
        "admin",
        {200: shapes.KeyOut},
        path={"key_id": (KeyId, "The key's id (first in `civicpulse key list`).")},
        description="Refused on every process within seconds. Revoking again changes nothing.",
    ),
    ("POST", f"{T}/keys/{{key_id}}/rotate"): Operation(
        "Replace an API key with a new one",
        "keys",
        "admin",
        {201: Reply(shapes.RotatedKey, description="Created: `key` is shown this once")},
        body=keys.RotateIn,
        path={"key_id": (KeyId, "The key's id.")},
        errors=(409,),
        description="The new key has the old one's scope and label; the old one keeps "
        "working for `grace_seconds` (0: revoked at once).",
    ),
    ("GET", f"{T}/audit"): Operation(
        "The audit log, newest first",
        "keys",
        "admin",
        {200: shapes.AuditPage},
        query=(
            Param("before", bounded(1, 2**62), "Entries before this id (`next_before`)."),
            Param("action", str, "Only this action, e.g. key.revoked."),
            Param("actor", str, "Only this actor, e.g. user:ana@example.org."),
            Param("limit", bounded(1, 1000), "How many.", default=100),
        ),
    ),
    # --- configuration ------------------------------------------------------------------
    ("GET", f"{T}/geocoder"): Operation(
        "The tenant's geocoder",
        "configuration",
        "admin",
        {200: config.GeocoderOut},
        errors=(404,),
    ),
    ("PUT", f"{T}/geocoder"): Operation(
        "Set the tenant's geocoder",
        "configuration",
        "admin",
        {200: config.GeocoderOut, 201: config.GeocoderOut},
        body=config.GeocoderIn,
        description=(
            "A Nominatim-compatible search endpoint. Reports located by address only (no "
            "lat/lon) get coordinates from it later, asynchronously; answers are cached per "
            "normalised address. Without one they are grouped by address and keep no point."
        ),
    ),
    ("DELETE", f"{T}/geocoder"): Operation(
        "Remove the tenant's geocoder",
        "configuration",
        "admin",
        {204: Reply(media=None, description="Removed")},
        errors=(404,),
    ),
    ("GET", f"{T}/rate-limits"): Operation(
        "The tenant's rate limits in force",
        "configuration",
        "admin",
        {200: config.RateLimitsOut},
    ),
    ("PUT", f"{T}/rate-limits"): Operation(
        "Set the tenant's rate limits",
        "configuration",
        "admin",
        {200: config.RateLimitsOut},
        body=config.RateLimitsIn,
        bulk=True,
    ),
    ("GET", f"{T}/teams"): Operation(
        "The tenant's teams", "configuration", "staff", {200: shapes.TeamList}
    ),
    ("PUT", f"{T}/teams/{{code}}"): Operation(
        "Create or replace a team",
        "configuration",
        "admin",
        {200: shapes.Team},
        body=config.TeamIn,
        bulk=True,
        path={"code": (config.Code, "The team's code.")},
    ),
    ("GET", f"{T}/areas"): Operation(
        "The tenant's areas", "configuration", "submit", {200: shapes.AreaList}
    ),
    ("PUT", f"{T}/areas/{{code}}"): Operation(
        "Create or replace an area (a GeoJSON Polygon or MultiPolygon)",
        "configuration",
        "admin",
        {200: shapes.AreaOut},
        body=config.AreaIn,
        bulk=True,
        path={"code": (config.Code, "The area's code.")},
    ),
    ("GET", f"{T}/calendars"): Operation(
        "The tenant's business calendars", "configuration", "staff", {200: shapes.CalendarList}
    ),
    ("PUT", f"{T}/calendars/{{code}}"): Operation(
        "Create or replace a business calendar",
        "configuration",
        "admin",
        {200: shapes.CalendarOut},
        body=config.CalendarIn,
        bulk=True,
        path={"code": (config.Code, "The calendar's code.")},
        description=f"`hours` maps weekdays ({', '.join(config.DAYS)}) to opening ranges.",
    ),
    ("GET", f"{T}/sla-policies"): Operation(
        "The tenant's SLA policies", "configuration", "staff", {200: shapes.PolicyList}
    ),
    ("PUT", f"{T}/sla-policies/{{code}}"): Operation(
        "Create or replace an SLA policy",
        "configuration",
        "admin",
        {200: shapes.PolicyOut},
        body=config.PolicyIn,
        bulk=True,
        path={"code": (config.Code, "The policy's code.")},
    ),
    ("GET", f"{T}/rules"): Operation(
        "The rule set in force", "configuration", "staff", {200: shapes.RulesOut}
    ),
    ("PUT", f"{T}/rules"): Operation(
        "Upload a new version of the rule set",
        "configuration",
        "admin",
        {201: Reply(shapes.RulesOut, description="The new version, now in force")},
        body=RuleSet,
        bulk=True,
        errors=(409,),
    ),
    # --- places -------------------------------------------------------------------------
    ("GET", f"{T}/places"): Operation(
        "The tenant's places", "places", "submit", {200: shapes.PlaceList}
    ),
    ("POST", f"{T}/places"): Operation(
        "Create or replace many places, all or nothing",
        "places",
        "admin",
        {200: shapes.PlaceImport},
        body=Annotated[list[PlaceWithCode], Meta(max_length=MAX_PLACES_PER_REQUEST)],
        bulk=True,
        errors=(409,),
        description="409 when a parent is not a place of the tenant.",
    ),
    ("GET", f"{T}/places/{{code}}"): Operation(
        "Get a place",
        "places",
        "submit",
        {200: PlaceOut},
        path={"code": (PlaceCode, "The place's code.")},
    ),
    ("PUT", f"{T}/places/{{code}}"): Operation(
        "Create or replace a place",
        "places",
        "admin",
        {200: PlaceOut, 201: Reply(PlaceOut, description="Created")},
        body=PlaceIn,
        path={"code": (PlaceCode, "The place's code.")},
        errors=(409,),
    ),
    ("DELETE", f"{T}/places/{{code}}"): Operation(
        "Delete a place",
        "places",
        "admin",
        {204: Reply(media=None, description="Deleted")},
        path={"code": (PlaceCode, "The place's code.")},
        errors=(409, 422),
        description="Reports that named it keep what they resolved to; 409 while it has children.",
    ),
    # --- metrics, analytics, dashboards ---------------------------------------------------
    ("GET", f"{T}/metrics/sla"): Operation(
        "SLA figures per category, area or team",
        "analytics",
        "staff",
        {200: shapes.SlaMetrics},
        query=(
            Param("group_by", one_of(metrics.GROUPS), "Grouping.", default="category"),
            Param("from", Time, "Issues opened from (an ISO 8601 date or time). Default: ever."),
            Param("to", Time, "Issues opened before. Default: ever."),
        ),
    ),
    ("GET", f"{T}/analytics/trends"): Operation(
        "Opened, resolved and % within SLA per period",
        "analytics",
        "staff",
        {200: shapes.Trends},
        query=(
            Param("interval", one_of(dashboard.INTERVALS), "Period.", default="day"),
            Param(
                "by",
                one_of([g for g in dashboard.GROUPS if g != "status"]),
                "Grouping.",
                default="category",
            ),
            *time_range(30),
        ),
    ),
    ("GET", f"{T}/analytics/backlog"): Operation(
        "Open issues at the end of each day",
        "analytics",
        "staff",
        {200: shapes.Backlog},
        query=time_range(30),
    ),
    ("GET", f"{T}/analytics/rankings"): Operation(
        "Areas or teams ranked by time to resolve",
        "analytics",
        "staff",
        {200: shapes.Rankings},
        query=(
            Param("by", Literal["area", "team"], "Grouping.", default="area"),
            *time_range(90),
            Param("min_sample", bounded(1, 100_000), "Fewest issues to rank.", default=5),
            Param("prior", bounded(0, 100_000), "Weight of the tenant's figures.", default=10),
        ),
    ),
    ("GET", f"{T}/analytics/hotspots"): Operation(
        "Where issues cluster",
        "analytics",
        "staff",
        {200: shapes.Hotspots},
        query=(*time_range(90), Param("limit", bounded(1, 100), "How many.", default=10)),
    ),
    ("GET", f"{T}/dashboard"): Operation(
        "The dashboard's settings", "dashboards", "staff", {200: shapes.DashboardSettings}
    ),
    ("PUT", f"{T}/dashboard"): Operation(
        "Change the dashboard's settings",
        "dashboards",
        "admin",
        {200: shapes.DashboardSettings},
        body=dashboard.DashboardIn,
        description=f"Widgets: {', '.join(dashboard.WIDGETS)}.",
    ),
    ("GET", f"{T}/dashboard/data"): Operation(
        "Everything the dashboard draws",
        "dashboards",
        "optional",
        {200: shapes.DashboardData},
        query=(
            Param("days", bounded(1, 36_600), "Period, in days to now.", default=30),
            Param(
                "seen",
                bounded(0, 2**62),
                "The newest stream event the caller has seen: the answer includes it (with a "
                "read replica, the primary answers while the replica lacks it).",
                default=0,
            ),
        ),
        description="Without a key: the public view (404 when the dashboard is private).",
    ),
    ("GET", f"{T}/stream"): Operation(
        "Live issue events (server-sent events)",
        "dashboards",
        "optional",
        {200: Reply(shapes.StreamEvent, "text/event-stream", SSE_DESCRIPTION)},
        query=(Param("last_event_id", Annotated[int, Meta(ge=0, le=2**62)], "As Last-Event-ID."),),
        headers=(Param("Last-Event-ID", str, "Resume after this event id."),),
        description="Without a key: public events of a public dashboard.",
    ),
    ("GET", f"{T}/exports/issues.csv"): Operation(
        "Issues opened in a period, as CSV",
        "analytics",
        "optional",
        {200: Reply(str, "text/csv", "One row per issue, with a header row")},
        query=time_range(None),
    ),
    ("GET", f"{T}/exports/trends.csv"): Operation(
        "Trends per period and category, as CSV",
        "analytics",
        "optional",
        {200: Reply(str, "text/csv", "One row per period and category, with a header row")},
        query=(*time_range(None), Param("interval", one_of(dashboard.INTERVALS), "Period.")),
    ),
    ("GET", "/t/{slug}/dashboard"): Operation(
        "The dashboard page (HTML)",
        "dashboards",
        "public",
        {200: Reply(str, "text/html", "The page; its data come from .../dashboard/data")},
        errors=(429,),  # limited per client address, as the public data are
    ),
    # --- resident pages (civicpulse/api/pages.py) -------------------------------------
    ("GET", "/"): Operation(
        "The landing page (HTML): the public tenants",
        "pages",
        "public",
        {200: Reply(str, "text/html", "The page")},
    ),
    ("GET", "/t/{slug}"): Operation(
        "A tenant's home page (HTML)",
        "pages",
        "public",
        {200: Reply(str, "text/html", "The page")},
        errors=(429,),
    ),
    ("GET", "/t/{slug}/report"): Operation(
        "The report form (HTML)",
        "pages",
        "public",
        {200: Reply(str, "text/html", "The page, with the tenant's web form token")},
        errors=(429,),
    ),
    ("POST", "/t/{slug}/report"): Operation(
        "Send a report from the web form",
        "pages",
        "public",
        {202: shapes.WebReportAccepted},
        body=pages.WebReportIn,
        headers=(
            Param("Idempotency-Key", str, "Retries with the same key and body are one report."),
        ),
        errors=(403, 409, 429, 503),
        description="The page's `token` is required (403 when it is out of date); a filled "
        "honeypot (`website`) is answered as if taken and kept nowhere. `lat` and `lon`, or an "
        "`address`. The answer's `track` link, holding the browser's `track` secret, follows "
        "the report.",
    ),
    ("GET", "/t/{slug}/nearby.json"): Operation(
        "Open issues near a point the public may see",
        "pages",
        "public",
        {200: shapes.NearbyIssues},
        query=(
            Param("lat", Latitude, "Latitude.", required=True),
            Param("lon", Longitude, "Longitude.", required=True),
            Param("category", str, "A category code or service code of the tenant."),
        ),
        errors=(429,),
    ),
    ("GET", "/t/{slug}/track/{report_id}"): Operation(
        "A report's tracking page (HTML)",
        "pages",
        "public",
        {200: Reply(str, "text/html", "The page; its data come from the .json route")},
        errors=(429,),
    ),
    ("GET", "/t/{slug}/track/{report_id}.json"): Operation(
        "What became of a report, for the holder of its tracking link",
        "pages",
        "public",
        {200: shapes.TrackedReport},
        query=(Param("k", str, "The tracking link's secret.", required=True),),
        errors=(404, 429),
    ),
    ("GET", "/t/{slug}/issues/{issue_id}"): Operation(
        "An issue's public page (HTML)",
        "pages",
        "public",
        {200: Reply(str, "text/html", "The page; its data come from the .json route")},
        errors=(429,),
    ),
    ("PUT", f"{T}/web-form"): Operation(
        "Turn the report form on or off, or give it a new token",
        "configuration",
        "admin",
        {200: pages.WebFormOut},
        body=pages.WebFormIn,
    ),
    ("GET", "/t/{slug}/staff"): Operation(
        "The staff triage page (HTML; its data come from the API under a staff session)",
        "pages",
        "public",
        {200: Reply(str, "text/html", "The page")},
        errors=(429,),
    ),
    ("GET", "/t/{slug}/staff/review"): Operation(
        "The staff review queue (HTML; its data come from the API under a staff session)",
        "pages",
        "public",
        {200: Reply(str, "text/html", "The page")},
        errors=(429,),
    ),
    ("GET", "/t/{slug}/staff/issues/{issue_id}"): Operation(
        "The staff issue page (HTML; its data come from the API under a staff session)",
        "pages",
        "public",
        {200: Reply(str, "text/html", "The page")},
        errors=(429,),
    ),
    ("GET", "/t/{slug}/issues/{issue_id}.json"): Operation(
        "An issue's public facts, when the public may see it",
        "pages",
        "public",
        {200: shapes.PublicIssue},
        errors=(404, 429),
    ),
    **ACCOUNT_OPERATIONS,
}

TAGS = {
    "pages": "The resident pages and the small JSON routes they read.",
    "reports": "Intake and lookup of reports.",
    "issues": "One issue per real-world problem: lookup, merge, split.",
    "workflow": "Staff work on issues: list, transitions, assignment, edits, comments.",
    "categories": "The tenant's taxonomy.",
    "places": "Sites, buildings, floors, rooms, units, spaces and assets.",
    "configuration": "Teams, areas, business calendars, SLA policies, rules.",
    "analytics": "SLA figures, trends, rankings, hotspots, exports.",
    "dashboards": "Dashboard settings, data, page and live stream.",
    "keys": "API keys (list, create, revoke, rotate) and the audit log, for admins.",
    "accounts": "Staff accounts: logins, sessions, user management.",
    "operations": "Liveness, readiness, metrics.",
    "contract": "This document.",
}

ERRORS = {
    400: "Malformed JSON or header, an empty body, or a NUL in the path or query",
    401: "No API key, or an unknown or revoked one",
    403: "The API key's scope is too small",
    404: "No such tenant (or the key is another tenant's), or no such resource",
    409: "Conflicts with the current state",
    412: "The issue changed since the version sent",
    413: "The body is larger than the limit",
    415: "Content-Type is not application/json",
    422: "A value is invalid; `field` names it",
    428: 'No version sent (If-Match header or "version")',
    429: "Over the rate limit: retry after Retry-After seconds",
    503: "Overloaded, or the write could not be stored: retry after Retry-After seconds",
}
ERROR_HEADERS = {
    401: (Param("WWW-Authenticate", str, 'Bearer realm="civicpulse"', required=True),),
    429: (Param("Retry-After", str, "Seconds to wait before retrying.", required=True),),
    503: (Param("Retry-After", str, "Seconds to wait before retrying.", required=True),),
}


def walk(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str, Route]]:
    """(method, path template, route) of every route; HEAD goes with GET and is left out."""
    for route in routes:
        if isinstance(route, Mount):
            yield from walk(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    yield method, prefix + route.path, route


def _error_statuses(op: Operation, path: str) -> list[int]:
    statuses = set(op.errors)
    statuses.add(400)  # a NUL anywhere in the path or query string (api/edge.py)
    if op.scope in ("submit", "staff", "admin", "optional", "session"):
        statuses.add(401)
    if op.scope in ("staff", "admin", "optional"):
        statuses.add(403)
    if op.scope != "public":
        statuses.add(429)  # the key's (or, without one, the address's) rate limit
    if "{" in path:
        statuses.update((400, 404))  # 400: a NUL in the path (api/edge.py)
    if op.body is not None:
        statuses.update((400, 413, 415, 422))
    if op.query:
        statuses.update((400, 422))
    return sorted(s for s in statuses if s not in op.responses)


def _security(scope: Scope) -> list[dict[str, list[str]]]:
    if scope == "public":
        return []
    if scope == "optional":
        return [{}, {"bearerAuth": ["staff"]}, {"sessionCookie": []}]
    if scope == "session":
        return [{"sessionCookie": []}]
    return [{"bearerAuth": [scope]}, {"sessionCookie": []}]


def document(routes: Sequence[BaseRoute], settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of these routes (routes without an OPERATIONS entry are left out)."""
    # Every type is described in one schema_components pass at the end, so that each named
    # Struct becomes one component; until then a schema is (index into types, default).
    types: list[Any] = []
    paths: dict[str, dict[str, Any]] = {}
    seen_ids: set[str] = set()

    def schema(type_: Any, default: Any = None) -> tuple[int, Any]:
        types.append(type_)
        return len(types) - 1, default

    def param(location: str, p: Param) -> dict[str, Any]:
        return {
            "name": p.name,
            "in": location,
            "description": p.description,
            "required": p.required,
            "schema": schema(p.type, p.default),
        }

    def header(p: Param) -> dict[str, Any]:
        return {"description": p.description, "required": p.required, "schema": schema(p.type)}

    def content(media: str | None, type_: Any) -> dict[str, Any] | None:
        return None if media is None else {media: {"schema": schema(type_)}}

    for method, path, route in walk(routes):
        op = OPERATIONS.get((method, path))
        if op is None:
            continue
        operation_id = f"{route.endpoint.__module__.rsplit('.', 1)[-1]}_{route.endpoint.__name__}"
        if operation_id in seen_ids:  # one endpoint on two routes: keep the ids unique
            operation_id = f"{operation_id}_{method.lower()}"
        seen_ids.add(operation_id)
        parameters = []
        for name in route.param_convertors:
            type_, description = op.path.get(name) or PATH_PARAMS[name]
            parameters.append(param("path", Param(name, type_, description, required=True)))
        parameters += [param("query", p) for p in op.query]
        parameters += [param("header", p) for p in op.headers]
        responses: dict[str, Any] = {}
        for status, spec in sorted(op.responses.items()):
            reply = spec if isinstance(spec, Reply) else Reply(spec)
            responses[str(status)] = _response(
                reply.description or _PHRASES.get(status, "OK"),
                content(reply.media, reply.type),
                {h.name: header(h) for h in reply.headers},
            )
        for status in _error_statuses(op, path):
            responses[str(status)] = _response(
                ERRORS[status],
                content(JSON, ErrorEnvelope),
                {h.name: header(h) for h in ERROR_HEADERS.get(status, ())},
            )
        entry: dict[str, Any] = {
            "operationId": operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "security": _security(op.scope),
            "description": _describe(op),
        }
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            body = op.body.build(settings) if isinstance(op.body, Configured) else op.body
            limit = settings.max_batch_body_bytes if op.bulk else settings.max_body_bytes
            entry["requestBody"] = {
                "required": True,
                "description": f"At most {limit} bytes.",
                "content": content(JSON, body),
            }
        entry["responses"] = responses
        paths.setdefault(path, {})[method.lower()] = entry

    types.extend(REFERENCED)
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    _fill(paths, schemas)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "CivicPulse API",
            "version": __version__,
            "summary": "Civic and facility incident reports: intake, issues, workflow, SLAs.",
            "description": (
                "Every tenant-scoped call sends `Authorization: Bearer <API key>`; a key has "
                "one scope, submit < staff < admin, and each operation names the least it "
                'needs. Errors are JSON: `{"error": {"code", "message", "field"}}`.'
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A tenant API key (`civicpulse key create`); the "
                    "requirement lists the scope it needs.",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": "A person's session (POST .../session): it works as a key "
                    "of the user's role (staff or admin); writes also need X-CSRF-Token.",
                },
            },
        },
    }


# Named only from inside a schema (a contentSchema), so never met walking the operations.
REFERENCED = (shapes.StreamEventData,)
_PHRASES = {200: "OK", 201: "Created", 202: "Accepted", 204: "No content", 207: "Multi-status"}


def _describe(op: Operation) -> str:
    scope = {
        "public": "No key needed.",
        "optional": "No key or a submit key: the public view (civicpulse.visibility). A "
        "staff key or session: the staff view.",
        "session": "Needs a person's session cookie.",
    }.get(op.scope, f"Needs a key with scope {op.scope} or above.")
    return " ".join(part for part in (op.description, scope) if part)


def _response(
    description: str, content: dict[str, Any] | None, headers: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if headers:
        out["headers"] = headers
    if content is not None:
        out["content"] = content
    return out


def _fill(node: Any, schemas: Sequence[dict[str, Any]]) -> None:
    """Replace each (type index, default) placeholder with the type's schema."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, tuple):
                index, default = value
                schema = dict(schemas[index])
                if default is not None:
                    schema["default"] = default
                node[key] = schema
            else:
                _fill(value, schemas)
    elif isinstance(node, list):
        for value in node:
            _fill(value, schemas)


# --- serving it ---------------------------------------------------------------------

_json = msgspec.json.Encoder()


def _cached(request: Request) -> dict[str, Any]:
    """The app's document, built on first use: routes and settings do not change after
    start-up, and the build walks every type."""
    cache: dict[str, Any] | None = getattr(request.app.state, "openapi", None)
    if cache is None:
        state: AppState = request.state.app
        cache = document(request.app.routes, state.settings)
        request.app.state.openapi = cache
    return cache


async def openapi_json(request: Request) -> Response:
    return Response(_json.encode(_cached(request)), media_type=JSON)


async def docs(request: Request) -> Response:
    return HTMLResponse(apidocs.render(_cached(request)))


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]
