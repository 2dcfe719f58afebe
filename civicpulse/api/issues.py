"""Issues: one per real-world problem, with its reports. Residents look them up; staff
merge issues and split reports out (each an event in the log)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from civicpulse import workflow
from civicpulse.api.auth import TenantContext
from civicpulse.api.body import decode, read_json
from civicpulse.api.reports import location
from civicpulse.api.state import AppState
from civicpulse.api.versions import check_version, etag, expected_version
from civicpulse.db import analytics as analytics_repo
from civicpulse.db import issues as issues_repo
from civicpulse.db import reports as reports_repo
from civicpulse.db.audit import record_audit
from civicpulse.db.pool import tenant_transaction
from civicpulse.domain import limits
from civicpulse.engine import geo, grouping
from civicpulse.errors import Conflict, NotFound, ValidationFailed
from civicpulse.ids import uuid7
from civicpulse.visibility import STAFF, View

NEARBY_LIMIT = 5
NEARBY_MIN_RADIUS_M = 250.0
_json = msgspec.json.Encoder()


class MergeIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    into: str
    note: Annotated[str, Meta(max_length=2000)] | None = None
    # The merged issue's version as read (or If-Match); see api/versions.py.
    version: int | None = None


class SplitIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    report_id: str
    not_duplicate: bool = True
    note: Annotated[str, Meta(max_length=2000)] | None = None
    # The split issue's version as read (or If-Match); see api/versions.py.
    version: int | None = None


def _respond(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _json.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def _uuid(value: str, field: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no such {what}", field=field) from None


def _float(request: Request, name: str, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        raise ValidationFailed(f"{name} is required", field=name)
    try:
        value = float(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be a number", field=name) from None
    if not low <= value <= high:
        raise ValidationFailed(f"{name} must be between {low} and {high}", field=name)
    return limits.coordinate(value)


def issue_out(row: Any) -> dict[str, Any]:
    """An issue as the API shows it, with its workflow and SLA state."""
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "category": row["category"],
        "severity": row["severity"],
        "priority": row["priority"],
        "title": row["title"],
        "representative_text": row["representative_text"],
        "lat": row["lat"],
        "lon": row["lon"],
        "report_count": row["report_count"],
        "subtype": row["subtype"],
        "scope": row["scope"],
        "place": location(row["place_ref"]),
        "first_reported": row["first_reported"],
        "last_reported": row["last_reported"],
        "opened_at": row["opened_at"],
        "closed_at": row["closed_at"],
        "hazards": list(row["hazards"]),
        "area": row["area"],
        "team": row["team"],
        "assignee": row["assignee"],
        "visibility": row["visibility"],
        "sla": {
            "policy": row["sla_policy"],
            "cycle": row["sla_cycle"],
            "running": row["sla_running"],
            "acknowledged_at": row["acknowledged_at"],
            "resolved_at": row["resolved_at"],
            "response_due_at": row["response_due_at"],
            "resolution_due_at": row["resolution_due_at"],
            "response_target_s": row["response_target_s"],
            "resolution_target_s": row["resolution_target_s"],
            "response_business_s": row["response_business_s"],
            "resolution_business_s": row["resolution_business_s"],
        },
        # Open311 GeoReport v2: when the service expects to resolve the request.
        "expected_datetime": row["resolution_due_at"],
        "version": row["version"],
    }


def _grouping(raw: str | None) -> dict[str, Any] | None:
    """A report's grouping record (staff only): the rule, the link's scores, and the best
    issue it did not join with the feature that kept it out ("why_not")."""
    if raw is None:
        return None
    record: dict[str, Any] = msgspec.json.decode(raw)
    return record


def public_issue_out(view: View, row: Any) -> dict[str, Any]:
    """An issue as the public (a `submit` key) sees it: its public facts only."""
    return {
        **view.public_issue(row),
        "lat": row["lat"],
        "lon": row["lon"],
        "last_reported": row["last_reported"],
        "expected_datetime": row["resolution_due_at"],
    }


async def get_issue(request: Request) -> Response:
    """An issue with its reports and event log (staff). A `submit` key (a resident app) gets
    the issue's public facts, and only when the public may see the issue or one of the
    key's own reports joined it; otherwise 404, as if there were none."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "submit")
    issue_id = _uuid(request.path_params["issue_id"], "issue_id", "issue")
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        row = await issues_repo.get_issue(conn, tenant_id, issue_id)
        if row is None:
            raise NotFound("no such issue", field="issue_id")
        if not principal.staff:
            view, _ = await analytics_repo.public_view(conn, tenant_id)
            if not view.shows_row(row) and not await issues_repo.issue_reported_with(
                conn,
                tenant_id,
                issue_id,
                await reports_repo.own_report_keys(conn, tenant_id, principal.key_id),
            ):
                raise NotFound("no such issue", field="issue_id")
            # No ETag: the version counts staff changes the public does not see.
            return _respond(200, {"view": "public", **public_issue_out(view, row)})
        reports = await issues_repo.issue_reports(conn, tenant_id, issue_id)
        events = await issues_repo.issue_events(conn, tenant_id, issue_id)
    body = {"view": "staff", **issue_out(row)}
    body["reports"] = [
        {
            "id": str(r["id"]),
            "text": r["text"],
            "lat": r["lat"],
            "lon": r["lon"],
            "address": r["address"],
            "media_urls": msgspec.json.decode(r["media_urls"]) if r["media_urls"] else [],
            "category": r["category"],
            "subtype": r["subtype"],
            "severity": r["severity"],
            "place": location(r["place_ref"], r["place"]),
            "submitted_at": r["submitted_at"],
            "channel": r["channel"],
            "grouping": _grouping(r["grouping"]),
        }
        for r in reports
    ]
    body["events"] = [
        {
            "id": e["id"],
            "kind": e["kind"],
            "actor": e["actor"],
            "report_id": None if e["report_id"] is None else str(e["report_id"]),
            "from_status": e["from_status"],
            "to_status": e["to_status"],
            "note": e["note"],
            "data": msgspec.json.decode(e["data"]),
            "created_at": e["created_at"],
        }
        for e in events
    ]
    return _respond(200, body, {"ETag": etag(row["version"])})


async def nearby(request: Request) -> Response:
    """The closest open issues (at most 5), so a resident can follow one instead of filing.
    Staff see every issue with its title; anyone else the public view's issues as public
    summaries."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "submit")
    body = await nearby_issues(
        request, state, principal.tenant, principal.staff, f"/v1/tenants/{slug}/issues"
    )
    return _respond(200, body)


async def nearby_issues(
    request: Request, state: AppState, tenant: TenantContext, staff: bool, links: str
) -> dict[str, Any]:
    """The nearby issues of `lat`, `lon` and `category` in the query, as the view sees
    them (staff, or the public view); each links to `links`/{id}."""
    lat = _float(request, "lat", -90, 90)
    lon = _float(request, "lon", -180, 180)
    category = request.query_params.get("category") or None
    if category is not None:
        category = tenant.category_codes.get(category)
        if category is None:
            raise ValidationFailed("unknown category for this tenant", field="category")
    radius = max(NEARBY_MIN_RADIUS_M, grouping.search_radius(category or "other", "", {}))
    async with tenant_transaction(state.pool, tenant.id) as conn:
        view = STAFF if staff else (await analytics_repo.public_view(conn, tenant.id))[0]
        rows = await issues_repo.nearby_issues(
            conn, tenant.id, geo.cells_within(lat, lon, radius), category, view
        )
    ranked = sorted(
        ((geo.distance_m(lat, lon, r["lat"], r["lon"]), r) for r in rows),
        key=lambda pair: (pair[0], -(pair[1]["last_reported"] or datetime.min).timestamp()),
    )
    items = [
        {
            **view.public_issue(r),
            **({"title": r["title"]} if view.staff else {}),
            "distance_m": round(d, 1),
            "last_reported": r["last_reported"],
            "links": {"self": f"{links}/{r['id']}"},
        }
        for d, r in ranked
        if d <= radius
    ][:NEARBY_LIMIT]
    return {"radius_m": radius, "items": items}


_decode_merge = msgspec.json.Decoder(MergeIn)
_decode_split = msgspec.json.Decoder(SplitIn)


async def merge(request: Request) -> Response:
    """Move every report of this issue into another; this one becomes a duplicate."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "staff")
    source = _uuid(request.path_params["issue_id"], "issue_id", "issue")
    change = decode(_decode_merge, await read_json(request, state.settings.max_body_bytes))
    expected = expected_version(request, change.version)
    target = _uuid(change.into, "into", "issue")
    if target == source:
        raise ValidationFailed("an issue cannot be merged into itself", field="into")
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        await issues_repo.lock_issue_regions(conn, tenant_id, [source, target])
        locked = {}
        for issue_id in sorted((source, target)):  # one lock order: no deadlock
            row = await issues_repo.lock_issue(conn, tenant_id, issue_id)
            if row is None:
                raise NotFound("no such issue", field="into" if issue_id == target else "issue_id")
            locked[issue_id] = row
        check_version(locked[source]["version"], expected)
        if locked[source]["status"] == "duplicate":
            raise Conflict("this issue was already merged", field="issue_id")
        if locked[target]["status"] == "duplicate":
            raise Conflict("cannot merge into an issue that is itself a duplicate", field="into")
        moved = await issues_repo.move_reports(conn, tenant_id, source, target)
        await issues_repo.refresh_issue_aggregates(conn, tenant_id, [source, target])
        await issues_repo.refresh_issue_profiles(conn, tenant_id, [target])
        # The duplicate's clock stops; the target's rules see its new reports.
        await workflow.apply(
            conn,
            tenant_id,
            {
                str(source): workflow.Change(
                    "updated", principal.actor, status="duplicate", staff=True, touched=True
                ),
                str(target): workflow.Change("updated", principal.actor, touched=True),
            },
            datetime.now(UTC),
        )
        data = _json.encode(
            {"source": str(source), "target": str(target), "reports": [str(r) for r in moved]}
        ).decode()
        await issues_repo.append_events(
            conn,
            tenant_id,
            principal.actor,
            [
                (source, None, "merged_into", "duplicate", data),
                (target, None, "merged_from", None, data),
            ],
        )
        if change.note:
            await issues_repo.append_events(
                conn,
                tenant_id,
                principal.actor,
                [(target, None, "comment", None, _json.encode({"note": change.note}).decode())],
            )
        await record_audit(
            conn,
            tenant_id,
            principal.actor,
            "issue.merged",
            str(source),
            {"into": str(target), "reports": len(moved)},
        )
        row = await issues_repo.get_issue(conn, tenant_id, target)
        assert row is not None  # locked above
    return _respond(200, issue_out(row), {"ETag": etag(row["version"])})


async def split(request: Request) -> Response:
    """Move one report out into a new issue of its own (by default: not a duplicate)."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "staff")
    source = _uuid(request.path_params["issue_id"], "issue_id", "issue")
    change = decode(_decode_split, await read_json(request, state.settings.max_body_bytes))
    expected = expected_version(request, change.version)
    report_id = _uuid(change.report_id, "report_id", "report")
    tenant_id = principal.tenant.id
    new_issue = uuid7()
    async with tenant_transaction(state.pool, tenant_id) as conn:
        await issues_repo.lock_issue_regions(conn, tenant_id, [source])
        locked = await issues_repo.lock_issue(conn, tenant_id, source)
        if locked is None:
            raise NotFound("no such issue", field="issue_id")
        check_version(locked["version"], expected)
        # The new issue exists first so the report can point at it.
        if not await issues_repo.issue_from_report(conn, tenant_id, new_issue, report_id, source):
            raise NotFound("the report is not part of this issue", field="report_id")
        await issues_repo.detach_report(conn, tenant_id, report_id, new_issue, source)
        if change.not_duplicate:
            await issues_repo.insert_not_duplicate(
                conn, tenant_id, report_id, source, principal.actor
            )
        await record_audit(
            conn,
            tenant_id,
            principal.actor,
            "issue.split",
            str(source),
            {"report": str(report_id), "new_issue": str(new_issue)},
        )
        await issues_repo.refresh_issue_aggregates(conn, tenant_id, [source, new_issue])
        # Where each issue is, its scope and mixes, from the reports each now holds.
        await issues_repo.refresh_issue_profiles(conn, tenant_id, [source, new_issue])
        await workflow.apply(
            conn,
            tenant_id,
            {
                str(new_issue): workflow.Change("created", principal.actor),
                str(source): workflow.Change("updated", principal.actor, touched=True),
            },
            datetime.now(UTC),
        )
        data = _json.encode(
            {
                "source": str(source),
                "new_issue": str(new_issue),
                "report": str(report_id),
                "not_duplicate": change.not_duplicate,
                "note": change.note,
            }
        ).decode()
        await issues_repo.append_events(
            conn,
            tenant_id,
            principal.actor,
            [
                (source, report_id, "report_split", None, data),
                (new_issue, report_id, "issue_created", "new", data),
            ],
        )
        row = await issues_repo.get_issue(conn, tenant_id, new_issue)
        assert row is not None  # created above
    return _respond(201, issue_out(row), {"ETag": etag(row["version"])})


routes = [
    Route("/v1/tenants/{slug}/issues/nearby", nearby, methods=["GET"]),
    Route("/v1/tenants/{slug}/issues/{issue_id}", get_issue, methods=["GET"]),
    Route("/v1/tenants/{slug}/issues/{issue_id}/merge", merge, methods=["POST"]),
    Route("/v1/tenants/{slug}/issues/{issue_id}/split", split, methods=["POST"]),
]
