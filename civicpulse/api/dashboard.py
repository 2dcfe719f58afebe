"""Analytics, dashboards, live streams and exports.

Every figure comes from the hourly rollups (or, for medians and hotspots, from issues
through their indexes), never from a scan of raw reports. A dashboard is public by
default. Who sees what is decided by civicpulse.visibility alone: without a key (or with a
`submit` key) every widget, the stream and the exports show the public view; a staff key or
session shows everything. Stored widgets are keyed by view.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from civicpulse.api.auth import Principal, TenantContext
from civicpulse.api.body import decode, read_json
from civicpulse.api.params import ALL_TIME, int_param, parse_int, time_param
from civicpulse.api.state import AppState
from civicpulse.db import analytics as repo
from civicpulse.db import tenants as tenants_repo
from civicpulse.db.audit import record_audit
from civicpulse.db.pool import tenant_transaction
from civicpulse.engine import geo
from civicpulse.errors import NotFound, ValidationFailed
from civicpulse.visibility import STAFF, View

_json = msgspec.json.Encoder()
INTERVALS = ("day", "week", "month")
GROUPS = ("category", "area", "team", "status", "none")
WIDGETS = ("totals", "trend", "backlog", "categories", "map", "rankings", "hotspots", "recent")
MAP_POINTS = 500  # the newest open issues the dashboard's map shows
PAGE = Path(__file__).parent / "static" / "dashboard.html"


class DashboardIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    public: bool = True
    widgets: list[str] = msgspec.field(default_factory=lambda: list(WIDGETS))
    public_categories: list[str] | None = None
    public_areas: list[str] | None = None
    title: Annotated[str, Meta(max_length=200)] | None = None


def _respond(body: Any, status: int = 200) -> Response:
    return Response(_json.encode(body), status_code=status, media_type="application/json")


def _range(request: Request, days: int | None = 30) -> tuple[dt.datetime, dt.datetime]:
    """`from` and `to`: by default the `days` before an hour from now (None: all time)."""
    end = time_param(request, "to", dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    start = time_param(request, "from", ALL_TIME if days is None else end - dt.timedelta(days=days))
    if end <= start:
        raise ValidationFailed("to must be after from", field="to")
    return start, end


def _choice(request: Request, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.query_params.get(name, default)
    if value not in allowed:
        raise ValidationFailed(f"{name} is one of " + ", ".join(allowed), field=name)
    return value


async def _staff(request: Request) -> tuple[AppState, TenantContext]:
    state: AppState = request.state.app
    principal = await state.auth.require(request, request.path_params["slug"], "staff")
    return state, principal.tenant


# --- settings -----------------------------------------------------------------------


def settings_out(row: Any) -> dict[str, Any]:
    if row is None:
        return {
            "public": True,
            "widgets": list(WIDGETS),
            "public_categories": None,
            "public_areas": None,
            "title": None,
        }
    return {
        "public": row["public"],
        "widgets": list(row["widgets"]) or list(WIDGETS),
        "public_categories": row["public_categories"],
        "public_areas": row["public_areas"],
        "title": row["title"],
    }


_decode_dashboard = msgspec.json.Decoder(DashboardIn)


async def get_settings(request: Request) -> Response:
    state, tenant = await _staff(request)
    async with tenant_transaction(state.pool, tenant.id) as conn:
        row = await repo.dashboard_settings(conn, tenant.id)
    return _respond(settings_out(row))


async def put_settings(request: Request) -> Response:
    state: AppState = request.state.app
    principal = await state.auth.require(request, request.path_params["slug"], "admin")
    body = decode(_decode_dashboard, await read_json(request, state.settings.max_body_bytes))
    for i, widget in enumerate(body.widgets):
        if widget not in WIDGETS:
            raise ValidationFailed(f"unknown widget {widget!r}", field=f"widgets[{i}]")
    tenant = principal.tenant
    for i, code in enumerate(body.public_categories or ()):
        if code not in tenant.category_codes:
            raise ValidationFailed(f"unknown category {code!r}", field=f"public_categories[{i}]")
    async with tenant_transaction(state.pool, tenant.id) as conn:
        before = settings_out(await repo.dashboard_settings(conn, tenant.id))
        await repo.upsert_dashboard(
            conn,
            tenant.id,
            body.public,
            body.widgets,
            None
            if body.public_categories is None
            else [tenant.category_codes[c] for c in body.public_categories],
            body.public_areas,
            body.title,
        )
        row = await repo.dashboard_settings(conn, tenant.id)
        after = settings_out(row)
        # A widget made for the old view must not be served for the new one, and open
        # public streams must stop showing what may now be hidden.
        await repo.forget_widgets(conn, tenant.id)
        await repo.notify_view(conn, tenant.id)
        await record_audit(
            conn,
            tenant.id,
            principal.actor,
            "dashboard.updated",
            "dashboard",
            {"before": before, "after": after},
        )
    return _respond(after)


# --- analytics ----------------------------------------------------------------------


async def _trend(
    conn: Any,
    tenant: TenantContext,
    interval: str,
    group: str,
    start: dt.datetime,
    end: dt.datetime,
    view: View,
) -> list[dict[str, Any]]:
    rows = await repo.trend_rows(
        conn,
        tenant.id,
        interval,
        "none" if group == "status" else group,
        start,
        end,
        tenant.timezone,
        *view.sql_args,
    )
    return [
        {
            "period": r["period"].date().isoformat(),
            "key": r["key"] if group != "none" else None,
            "opened": r["opened"],
            "resolved": r["resolved"],
            "within_sla_pct": None
            if not r["measured"]
            else round(100 * r["met"] / r["measured"], 2),
        }
        for r in rows
    ]


async def _backlog(
    conn: Any,
    tenant: TenantContext,
    start: dt.datetime,
    end: dt.datetime,
    view: View,
    daily: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Open issues at the end of each day; `daily` is the same range's per-day trend when
    the caller already read it."""
    zone = ZoneInfo(tenant.timezone)
    # One point per day, only where there can be issues: from the tenant's first day ("all
    # time" is not a century of zeros) to tomorrow (the future has no backlog). So a range of
    # centuries costs what the tenant's history costs, not a body of 100 MB.
    end = min(end, dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    first = await repo.first_rollup_day(conn, tenant.id)
    first_start = end if first is None else dt.datetime.combine(first, dt.time(), tzinfo=zone)
    start = max(start, first_start)
    local_start = start.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    start = local_start.astimezone(dt.UTC)
    level = await repo.backlog_before(conn, tenant.id, start, *view.sql_args, tenant.timezone)
    if daily is None:
        daily = await _trend(conn, tenant, "day", "none", start, end, view)
    changes = {dt.date.fromisoformat(t["period"]): t["opened"] - t["resolved"] for t in daily}
    series = []
    day = local_start.date()
    last = end.astimezone(zone).date()
    while day <= last:
        level += changes.get(day, 0)
        series.append({"day": day.isoformat(), "open": level})
        day += dt.timedelta(days=1)
    return series


async def _rankings(
    conn: Any,
    tenant: TenantContext,
    by: str,
    start: dt.datetime,
    end: dt.datetime,
    min_sample: int,
    prior: float,
    view: View,
) -> dict[str, Any]:
    """Median time to resolve and % within SLA per area or team, shrunk toward the tenant's
    figures in proportion to how few issues a group has (so 2 lucky issues do not top the
    table), ranked by the shrunk median; groups under `min_sample` are listed apart."""
    rows = await repo.ranking_rows(conn, tenant.id, by, start, end, view)
    total = sum(r["resolved"] for r in rows)
    if not total:
        return {"by": by, "ranked": [], "too_few": [], "tenant": None}
    tenant_median = sum(r["median_s"] * r["resolved"] for r in rows) / total
    measured = sum(r["measured"] for r in rows)
    tenant_pct = (sum(r["met"] for r in rows) / measured) if measured else None
    ranked: list[dict[str, Any]] = []
    too_few: list[dict[str, Any]] = []
    for r in rows:
        n = r["resolved"]
        item = {
            "key": r["key"],
            "resolved": n,
            "median_resolve_s": r["median_s"],
            "within_sla_pct": None
            if not r["measured"]
            else round(100 * r["met"] / r["measured"], 2),
            "shrunk_median_resolve_s": (n * r["median_s"] + prior * tenant_median) / (n + prior),
            # With prior 0, a group none of whose issues had an SLA has no figure at all.
            "shrunk_within_sla_pct": None
            if tenant_pct is None or r["measured"] + prior == 0
            else round(100 * (r["met"] + prior * tenant_pct) / (r["measured"] + prior), 2),
        }
        (ranked if n >= min_sample else too_few).append(item)
    ranked.sort(key=lambda i: (i["shrunk_median_resolve_s"], str(i["key"])))
    for rank, item in enumerate(ranked, 1):
        item["rank"] = rank
    return {
        "by": by,
        "min_sample": min_sample,
        "prior_weight": prior,
        "tenant": {
            "median_resolve_s": tenant_median,
            "within_sla_pct": None if tenant_pct is None else round(100 * tenant_pct, 2),
        },
        "ranked": ranked,
        "too_few": sorted(too_few, key=lambda i: str(i["key"])),
    }


async def _hotspots(
    conn: Any,
    tenant: TenantContext,
    start: dt.datetime,
    end: dt.datetime,
    view: View,
    limit: int,
) -> list[dict[str, Any]]:
    rows = await repo.hotspot_rows(conn, tenant.id, start, end, view, limit)
    return [
        {
            "cell": r["cell"],
            "issues": r["issues"],
            "reports": r["reports"],
            "lat": round(r["lat"], 5),
            "lon": round(r["lon"], 5),
            "category": r["category"],
            "categories": _counts(r["categories"]),
            "cell_size_m": round(geo.CELL_DEGREES * geo.METRES_PER_DEGREE),
        }
        for r in rows
    ]


def _counts(categories: list[str | None]) -> dict[str, int]:
    """Issues per category, most first (uncategorised under "uncategorised")."""
    counts = Counter(category or "uncategorised" for category in categories)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


async def trends(request: Request) -> Response:
    state, tenant = await _staff(request)
    interval = _choice(request, "interval", INTERVALS, "day")
    group = _choice(request, "by", GROUPS, "category")
    if group == "status":
        raise ValidationFailed("trends group by category, area, team or none", field="by")
    start, end = _range(request)
    async with tenant_transaction(state.reads.pool("analytics"), tenant.id) as conn:
        items = await _trend(conn, tenant, interval, group, start, end, STAFF)
    return _respond({"interval": interval, "by": group, "from": start, "to": end, "items": items})


async def backlog(request: Request) -> Response:
    state, tenant = await _staff(request)
    start, end = _range(request)
    async with tenant_transaction(state.reads.pool("analytics"), tenant.id) as conn:
        items = await _backlog(conn, tenant, start, end, STAFF)
    return _respond({"items": items})


async def rankings(request: Request) -> Response:
    state, tenant = await _staff(request)
    by = _choice(request, "by", ("area", "team"), "area")
    start, end = _range(request, days=90)
    min_sample = int_param(request, "min_sample", 5, 1, 100_000)
    prior = float(int_param(request, "prior", 10, 0, 100_000))
    async with tenant_transaction(state.reads.pool("analytics"), tenant.id) as conn:
        body = await _rankings(conn, tenant, by, start, end, min_sample, prior, STAFF)
    return _respond(body)


async def hotspots(request: Request) -> Response:
    state, tenant = await _staff(request)
    start, end = _range(request, days=90)
    limit = int_param(request, "limit", 10, 1, 100)
    async with tenant_transaction(state.reads.pool("analytics"), tenant.id) as conn:
        items = await _hotspots(conn, tenant, start, end, STAFF, limit)
    return _respond({"items": items})


# --- the dashboard's data -----------------------------------------------------------


async def _viewer(
    request: Request,
) -> tuple[AppState, TenantContext, View, dict[str, Any], Principal | None]:
    """Who is looking: (state, tenant, view, dashboard settings). Staff (key or session) get
    the staff view. Anyone else (no key, or a resident app's `submit` key) gets the public
    view, and only while the dashboard is public (404 otherwise: nothing tells a private one
    exists)."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal: Principal | None = await state.auth.optional(request, slug, "submit")
    tenant = principal.tenant if principal else await state.auth.tenant(slug)
    async with tenant_transaction(state.pool, tenant.id) as conn:
        settings = settings_out(await repo.dashboard_settings(conn, tenant.id))
    if principal is not None and principal.staff:
        return state, tenant, STAFF, settings, principal
    if not settings["public"]:
        raise NotFound("no such tenant", field="slug")
    return state, tenant, View.public(settings), settings, principal


async def _stored(
    conn: Any,
    tenant_id: int,
    name: str,
    max_age: float,
    compute: Callable[[], Awaitable[Any]],
    primary: asyncpg.Pool | None = None,
) -> Any:
    """A widget from dashboard_widgets when it is fresh enough, else computed and stored.
    Medians and recurring places read the period's issues (10^5 rows for a large city);
    computing them once a minute, not once per viewer, keeps a busy dashboard cheap.
    `primary`: where to store it when `conn` is a replica's."""
    if max_age > 0:
        stored = await repo.widget_get(conn, tenant_id, name, max_age)
        if stored is not None:
            return msgspec.json.decode(stored)
    value = await compute()
    if max_age > 0:
        body = _json.encode(value).decode()
        if primary is None:
            await repo.widget_put(conn, tenant_id, name, body)
        else:
            async with tenant_transaction(primary, tenant_id) as writer:
                await repo.widget_put(writer, tenant_id, name, body)
    return value


async def data(request: Request) -> Response:
    """Everything the dashboard page draws, in one read."""
    state, tenant, view, settings, _ = await _viewer(request)
    public = not view.staff
    days = int_param(request, "days", 30, 1, 36600)
    end = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    start = end - dt.timedelta(days=days)
    widgets = settings["widgets"]
    body: dict[str, Any] = {
        "tenant": {"slug": tenant.slug, "name": tenant.name, "timezone": tenant.timezone},
        "title": settings["title"] or f"{tenant.name}: reports and how they are handled",
        "view": "public" if public else "staff",
        "days": days,
        "widgets": widgets,
        "generated_at": dt.datetime.now(dt.UTC),
    }
    # The page asks again after each live event, naming the newest it has seen (`seen`): the
    # replica answers only when it has that event too, so the figures never go back in time.
    seen = int_param(request, "seen", 0, 0, 2**62)
    async with state.reads.holding("dashboard", tenant.id, seen) as (conn, on_replica):
        # Widgets computed on the replica are stored on the primary (it takes no writes).
        store = state.pool if on_replica else None
        # Category names for people (the codes are for machines); public, like Open311's.
        body["category_names"] = {
            c.code: c.name for c in await tenants_repo.list_categories(conn, tenant.id)
        }
        trend = await _trend(conn, tenant, "day", "none", start, end, view)
        series = await _backlog(conn, tenant, start, end, view, trend)
        by_category = await _trend(conn, tenant, "month", "category", start, end, view)
        opened = sum(t["opened"] for t in trend)
        resolved = sum(t["resolved"] for t in trend)
        body["totals"] = {
            "opened": opened,
            "resolved": resolved,
            "open_now": series[-1]["open"] if series else 0,
        }
        body["trend"] = trend
        body["backlog"] = series
        per_cat: dict[str, dict[str, int]] = defaultdict(lambda: {"opened": 0, "resolved": 0})
        for item in by_category:
            per_cat[item["key"] or "uncategorised"]["opened"] += item["opened"]
            per_cat[item["key"] or "uncategorised"]["resolved"] += item["resolved"]
        body["categories"] = [
            {"key": k, **v}
            for k, v in sorted(per_cat.items(), key=lambda kv: (-kv[1]["opened"], kv[0]))
        ]
        max_age = state.settings.dashboard_widget_seconds
        if "rankings" in widgets:
            body["rankings"] = await _stored(
                conn,
                tenant.id,
                f"rankings:area:{days}:{view.cache_key}",
                max_age,
                lambda: _rankings(conn, tenant, "area", start, end, 5, 10.0, view),
                store,
            )
        if "hotspots" in widgets:
            body["hotspots"] = await _stored(
                conn,
                tenant.id,
                f"hotspots:{days}:{view.cache_key}",
                max_age,
                lambda: _hotspots(conn, tenant, start, end, view, 10),
                store,
            )
        if "map" in widgets:

            async def points() -> list[dict[str, Any]]:
                rows = await repo.open_issue_points(conn, tenant.id, view, MAP_POINTS)
                return [
                    {"id": str(r["id"]), "category": r["category"], "status": r["status"],
                     "lat": round(r["lat"], 5), "lon": round(r["lon"], 5)}
                    for r in rows
                ]  # fmt: skip

            body["points"] = (
                await _stored(conn, tenant.id, f"points:{view.cache_key}", max_age, points, store)
                if public
                else await points()
            )
        if "recent" in widgets:

            async def recent() -> list[dict[str, Any]]:
                rows = await repo.recent_issues(conn, tenant.id, view, 10, start)
                if public:
                    return [view.public_issue(r) for r in rows]
                return [{**view.public_issue(r), "title": r["title"]} for r in rows]

            # Staff see it live; the public, whom anyone can be, from the stored widget.
            body["recent"] = (
                await _stored(
                    conn, tenant.id, f"recent:{days}:{view.cache_key}", max_age, recent, store
                )
                if public
                else await recent()
            )
    return _respond(body)


async def page(request: Request) -> Response:
    """The dashboard page: static HTML and script; the data come from the API."""
    state: AppState = request.state.app
    await state.auth.public(request, request.path_params["slug"])
    from civicpulse.api.pages import page_with_config  # pages imports the issue routes

    config = {"tiles": state.settings.map_tile_url, "attribution": state.settings.map_attribution}
    return page_with_config(PAGE.name, config)


# --- the live stream ----------------------------------------------------------------


async def stream(request: Request) -> Response:
    """Server-sent events: issue changes, SLA warnings and breaches (staff), rollup updates.
    Event ids are the tenant's own event numbers, in commit order; `Last-Event-ID` resumes
    after that event. A comment line every 15 s keeps proxies open."""
    state, tenant, view, _, principal = await _viewer(request)
    raw_last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    last_seq = None
    if raw_last:
        last_seq = parse_int(raw_last.strip(), "last-event-id", 0, 2**62)
    return StreamingResponse(
        state.broker.stream(
            tenant.id,
            not view.staff,
            last_seq,
            until=None if principal is None else principal.expires_at,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# --- exports ------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "id",
    "status",
    "category",
    "area",
    "team",
    "priority",
    "severity",
    "report_count",
    "lat",
    "lon",
    "opened_at",
    "acknowledged_at",
    "resolved_at",
    "closed_at",
    "sla_policy",
    "response_business_s",
    "response_target_s",
    "resolution_business_s",
    "resolution_target_s",
    "visibility",
    "title",
)
# The public export: public issues' public facts, the staff export without these: the
# title (a report's words), who handles the issue, its priority and internal policy name.
STAFF_ONLY_COLUMNS = frozenset(
    {"team", "priority", "severity", "sla_policy", "visibility", "title"}
)
PUBLIC_EXPORT_COLUMNS = tuple(c for c in EXPORT_COLUMNS if c not in STAFF_ONLY_COLUMNS)


def _csv_line(values: Any) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerow(
        ["" if v is None else v.isoformat() if isinstance(v, dt.datetime) else v for v in values]
    )
    return out.getvalue().encode()


async def export_issues(request: Request) -> Response:
    """Issues opened in [from, to) as CSV, streamed from a server-side cursor: memory stays
    flat however long the period. Staff get every issue and column; anyone else, while the
    dashboard is public, the public view's issues and public columns (open data)."""
    state, tenant, view, _, _ = await _viewer(request)
    start, end = _range(request, days=None)
    columns = EXPORT_COLUMNS if view.staff else PUBLIC_EXPORT_COLUMNS

    async def rows() -> AsyncIterator[bytes]:
        yield _csv_line(columns)
        async with tenant_transaction(state.reads.pool("export"), tenant.id) as conn:
            chunk: list[bytes] = []
            async for row in repo.export_issues(conn, tenant.id, start, end, view):
                chunk.append(_csv_line(row[c] for c in columns))
                if len(chunk) >= 500:
                    yield b"".join(chunk)
                    chunk = []
            if chunk:
                yield b"".join(chunk)

    name = f"{tenant.slug}-issues-{start.date()}-{end.date()}.csv"
    return StreamingResponse(
        rows(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def export_trends(request: Request) -> Response:
    """Opened, closed out and % within SLA per day and category, as CSV, in the caller's view
    (see export_issues)."""
    state, tenant, view, _, _ = await _viewer(request)
    start, end = _range(request, days=None)
    interval = _choice(request, "interval", INTERVALS, "day")
    async with tenant_transaction(state.reads.pool("export"), tenant.id) as conn:
        items = await _trend(conn, tenant, interval, "category", start, end, view)
    lines = [_csv_line(("period", "category", "opened", "resolved", "within_sla_pct"))]
    lines += [
        _csv_line((i["period"], i["key"], i["opened"], i["resolved"], i["within_sla_pct"]))
        for i in items
    ]
    return Response(b"".join(lines), media_type="text/csv")


routes = [
    Route("/v1/tenants/{slug}/analytics/trends", trends, methods=["GET"]),
    Route("/v1/tenants/{slug}/analytics/backlog", backlog, methods=["GET"]),
    Route("/v1/tenants/{slug}/analytics/rankings", rankings, methods=["GET"]),
    Route("/v1/tenants/{slug}/analytics/hotspots", hotspots, methods=["GET"]),
    Route("/v1/tenants/{slug}/dashboard", get_settings, methods=["GET"]),
    Route("/v1/tenants/{slug}/dashboard", put_settings, methods=["PUT"]),
    Route("/v1/tenants/{slug}/dashboard/data", data, methods=["GET"]),
    Route("/v1/tenants/{slug}/stream", stream, methods=["GET"]),
    Route("/v1/tenants/{slug}/exports/issues.csv", export_issues, methods=["GET"]),
    Route("/v1/tenants/{slug}/exports/trends.csv", export_trends, methods=["GET"]),
    Route("/t/{slug}/dashboard", page, methods=["GET"]),
]
