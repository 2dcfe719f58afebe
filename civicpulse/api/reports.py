"""Report intake and lookup: POST one, POST a batch, GET one."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from civicpulse.api.auth import Principal, TenantContext
from civicpulse.api.body import decode, read_json
from civicpulse.api.errors import HTTPError
from civicpulse.api.params import int_param
from civicpulse.api.state import AppState
from civicpulse.db import reports as reports_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.domain import limits
from civicpulse.domain.reports import (
    Accepted,
    BatchItemResult,
    BatchResult,
    Classification,
    ItemError,
    Links,
    Location,
    NewReport,
    ReportCorrection,
    ReportIn,
    ReportOut,
    WriteOutcome,
)
from civicpulse.engine import addresses
from civicpulse.engine.places import Where
from civicpulse.errors import CivicPulseError, Conflict, NotFound, ValidationFailed
from civicpulse.ids import uuid7

_decode_report = msgspec.json.Decoder(ReportIn)
_decode_batch = msgspec.json.Decoder(list[msgspec.Raw])
_json = msgspec.json.Encoder()
IDEMPOTENCY_KEY_MAX = 200


def _respond(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _json.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def idempotency_key(request: Request, principal: Principal) -> str | None:
    """The request's Idempotency-Key, as stored: scoped to the credential that sent it, so
    two apps choosing the same key neither replay nor block each other's reports."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise HTTPError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX} printable characters",
            field="idempotency-key",
        )
    owner = f"k{principal.key_id}" if principal.key_id is not None else f"u{principal.user_id}"
    return f"{owner}:{key}"


def _link(slug: str, report_id: str) -> Links:
    return Links(self=f"/v1/tenants/{slug}/reports/{report_id}")


def to_new_report(
    tenant: TenantContext,
    report: ReportIn,
    key: str | None,
    body_hash: bytes | None,
    key_id: int | None = None,
) -> NewReport:
    """Validate what msgspec cannot (the tenant's taxonomy) and encode JSON columns."""
    category = None
    if report.category is not None:
        category = tenant.category_codes.get(report.category)
        if category is None:
            raise ValidationFailed(
                f"unknown category {report.category!r} for this tenant", field="category"
            )
    if report.place is not None and report.place not in tenant.place_codes:
        raise ValidationFailed(f"unknown place {report.place!r} for this tenant", field="place")
    if (report.lat is None) != (report.lon is None):
        raise ValidationFailed(
            "lat and lon come together", field="lon" if report.lon is None else "lat"
        )
    address = report.address.strip() if report.address else None
    if report.lat is None and not address:
        raise ValidationFailed("a report needs a location: lat and lon, or an address", field="lat")
    return NewReport(
        tenant_id=tenant.id,
        id=str(uuid7()),
        text=report.text,
        lat=limits.coordinate_or_none(report.lat),
        lon=limits.coordinate_or_none(report.lon),
        address=address,
        address_key=addresses.key(address),
        requested_category=category,
        submitted_at=report.submitted_at,
        channel=report.channel,
        reporter=None if report.reporter is None else _json.encode(report.reporter).decode(),
        attributes=_json.encode(report.attributes).decode(),
        media_urls=_json.encode(report.media_urls).decode(),
        idempotency_key=key,
        body_hash=body_hash,
        place=report.place,
        key_id=key_id,
    )


def _accepted(slug: str, outcome: WriteOutcome) -> Response:
    if outcome.kind == "conflict":
        raise Conflict(
            "this Idempotency-Key was used with a different body", field="idempotency-key"
        )
    headers = {"Idempotent-Replayed": "true"} if outcome.kind == "replayed" else None
    return _respond(
        202, Accepted(id=outcome.id, status=outcome.state, links=_link(slug, outcome.id)), headers
    )


async def _tenant_knowing(state: AppState, principal: Principal, report: ReportIn) -> TenantContext:
    """The tenant context to check a report against, knowing the place it names if the
    database does (it may have been imported a moment ago)."""
    if report.place is None:
        return principal.tenant
    return await state.auth.tenant_knowing_place(principal.tenant, report.place)


async def create_report(request: Request) -> Response:
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "submit")
    key = idempotency_key(request, principal)
    body = await read_json(request, state.settings.max_body_bytes)
    report = decode(_decode_report, body)
    tenant = await _tenant_knowing(state, principal, report)
    row = to_new_report(
        tenant,
        report,
        key,
        hashlib.sha256(body).digest() if key else None,
        principal.key_id,
    )
    (outcome,) = await state.intake.submit([row])
    return _accepted(slug, outcome)


async def create_batch(request: Request) -> Response:
    state: AppState = request.state.app
    settings = state.settings
    slug = request.path_params["slug"]
    principal: Principal = await state.auth.require(request, slug, "submit")
    key = idempotency_key(request, principal)
    body = await read_json(request, settings.max_batch_body_bytes)
    raw_items = decode(_decode_batch, body)
    if not raw_items:
        raise ValidationFailed("a batch needs at least one report", field="body")
    if len(raw_items) > settings.max_batch_items:
        raise ValidationFailed(
            f"a batch holds at most {settings.max_batch_items} reports", field="body"
        )

    results: list[BatchItemResult | None] = [None] * len(raw_items)
    rows: list[NewReport] = []
    positions: list[int] = []
    tenant = principal.tenant
    for index, raw in enumerate(raw_items):
        item_bytes = bytes(raw)
        try:
            report = decode(_decode_report, item_bytes, prefix=f"[{index}]")
            if tenant is principal.tenant:  # reloaded at most once per batch
                tenant = await _tenant_knowing(state, principal, report)
            # Each item gets its own key derived from the batch's, so a retried batch
            # replays item by item.
            item_key = f"{key}#{index}" if key else None
            rows.append(
                to_new_report(
                    tenant,
                    report,
                    item_key,
                    hashlib.sha256(item_bytes).digest() if key else None,
                    principal.key_id,
                )
            )
            positions.append(index)
        except CivicPulseError as exc:
            field = (
                exc.field
                if exc.field and exc.field.startswith("[")
                else (f"[{index}].{exc.field}" if exc.field else f"[{index}]")
            )
            results[index] = BatchItemResult(
                index=index,
                status="rejected",
                error=ItemError(code=exc.code, message=exc.message, field=field),
            )
    if rows:
        outcomes = await state.intake.submit(rows)
        for index, outcome in zip(positions, outcomes, strict=True):
            if outcome.kind == "conflict":
                results[index] = BatchItemResult(
                    index=index,
                    status="rejected",
                    error=ItemError(
                        code="conflict",
                        message="this Idempotency-Key was used with a different body",
                        field=f"[{index}]",
                    ),
                )
            else:
                results[index] = BatchItemResult(
                    index=index, status="accepted", id=outcome.id, links=_link(slug, outcome.id)
                )
    final = [r for r in results if r is not None]
    accepted = sum(1 for r in final if r.status == "accepted")
    return _respond(
        207 if accepted != len(final) else 202,
        BatchResult(accepted=accepted, rejected=len(final) - accepted, results=final),
    )


async def get_report(request: Request) -> Response:
    """A report. Staff read any of their tenant's; a `submit` key (a resident app) only
    those it sent (or the key it replaced sent): another resident's words, address and
    contact are not its to read, and such a report is 404, as if it did not exist."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "submit")
    report_id = _report_id(request)
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        row = await reports_repo.get_report(conn, tenant_id, report_id)
        if row is not None and not principal.staff:
            own = await reports_repo.own_report_keys(conn, tenant_id, principal.key_id)
            if row["key_id"] is None or row["key_id"] not in own:
                row = None
    if row is None:
        raise NotFound("no such report", field="report_id")
    return _respond(200, _report_out(slug, row))


_decode_correction = msgspec.json.Decoder(ReportCorrection)


def _report_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["report_id"])
    except ValueError:
        raise NotFound("no such report", field="report_id") from None


async def correct_report(request: Request) -> Response:
    """Staff set a report's category and/or severity; logged, and a training label."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "staff")
    report_id = _report_id(request)
    body = await read_json(request, state.settings.max_body_bytes)
    change = decode(_decode_correction, body)
    if change.category is None and change.severity is None:
        raise ValidationFailed("give a category, a severity, or both", field="category")
    category = None
    if change.category is not None:
        category = principal.tenant.category_codes.get(change.category)
        if category is None:
            raise ValidationFailed(
                f"unknown category {change.category!r} for this tenant", field="category"
            )
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        before = await reports_repo.correct_report(
            conn, tenant_id, report_id, category, change.severity, principal.actor
        )
        if before is None:
            raise NotFound("no such report", field="report_id")
        await reports_repo.append_event(
            conn,
            tenant_id,
            issue_id=before["issue_id"],
            report_id=report_id,
            kind="report_corrected",
            actor=principal.actor,
            note=change.note,
            data=_json.encode(
                {
                    "from": {
                        "category": before["old_category"],
                        "severity": before["old_severity"],
                    },
                    "to": {"category": category, "severity": change.severity},
                }
            ).decode(),
        )
        row = await reports_repo.get_report(conn, tenant_id, report_id)
    return _respond(200, _report_out(slug, row))


class EventOut(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    kind: str
    actor: str
    from_status: str | None
    to_status: str | None
    note: str | None
    data: dict[str, Any]
    created_at: Any


async def report_events(request: Request) -> Response:
    """The change log of one report (staff)."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "staff")
    report_id = _report_id(request)
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        if await reports_repo.get_report(conn, tenant_id, report_id) is None:
            raise NotFound("no such report", field="report_id")
        rows = await reports_repo.report_events(conn, tenant_id, report_id)
    return _respond(
        200,
        {
            "items": [
                EventOut(
                    id=r["id"],
                    kind=r["kind"],
                    actor=r["actor"],
                    from_status=r["from_status"],
                    to_status=r["to_status"],
                    note=r["note"],
                    data=msgspec.json.decode(r["data"]),
                    created_at=r["created_at"],
                )
                for r in rows
            ]
        },
    )


REPORT_STATES = ("received", "classified", "grouped", "imported", "failed")


class ReportPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[ReportOut]
    next_cursor: str | None


async def list_reports(request: Request) -> Response:
    """Staff view: reports newest first, optionally by state, with keyset pagination."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "staff")
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in REPORT_STATES:
        raise ValidationFailed(f"status must be one of {', '.join(REPORT_STATES)}", field="status")
    limit = int_param(request, "limit", 50, 1, 500)
    cursor = params.get("cursor") or None
    try:
        before = uuid.UUID(cursor) if cursor else None
    except ValueError:
        raise ValidationFailed("cursor is not one this API returned", field="cursor") from None
    review = params.get("needs_review")
    if review not in (None, "", "true", "false"):
        raise ValidationFailed("needs_review is true or false", field="needs_review")
    if review == "true" and status is not None:
        raise ValidationFailed("the review queue takes no status", field="status")
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        if review == "true":  # the review queue
            rows = await reports_repo.review_reports(conn, tenant_id, before, limit)
        else:
            rows = await reports_repo.list_reports(conn, tenant_id, status, before, limit)
    items = [_report_out(slug, row) for row in rows]
    next_cursor = items[-1].id if len(items) == limit else None
    return _respond(200, ReportPage(items=items, next_cursor=next_cursor))


def location(raw: Any, requested: str | None = None) -> Location | None:
    """A stored place (JSON of engine.places.Where) as the API shows it; None when nothing
    is known of it."""
    where = msgspec.json.decode(raw, type=Where) if raw is not None else Where()
    if not where.known and requested is None:
        return None
    return Location(
        code=where.code,
        label=where.label,
        building=where.building,
        floor=where.floor,
        unit=where.unit,
        space=where.space,
        asset=where.asset,
        requested=requested,
    )


def _report_out(slug: str, row: Any) -> ReportOut:
    classification = None
    if row["classification"] is not None:
        c = msgspec.json.decode(row["classification"])
        classification = Classification(
            decided_by=c.get("decided_by", "unknown"),
            model=c.get("model"),
            confidence=c.get("confidence"),
            prompt_version=c.get("prompt_version"),
            latency_ms=c.get("latency_ms"),
            fallback_reason=c.get("fallback_reason"),
            alternatives=(
                None if row["alternatives"] is None else msgspec.json.decode(row["alternatives"])
            ),
        )
    rid = str(row["id"])
    return ReportOut(
        id=rid,
        status=row["state"],
        text=row["text"],
        lat=row["lat"],
        lon=row["lon"],
        address=row["address"],
        requested_category=row["requested_category"],
        category=row["category"],
        subtype=row["subtype"],
        severity=row["severity"],
        classification=classification,
        summary=row["summary"],
        hazards=list(row["hazards"]),
        language=row["language"],
        needs_review=row["needs_review"],
        issue_id=None if row["issue_id"] is None else str(row["issue_id"]),
        place=location(row["place_ref"], row["place"]),
        channel=row["channel"],
        submitted_at=row["submitted_at"],
        received_at=row["received_at"],
        processed_at=row["processed_at"],
        attributes=msgspec.json.decode(row["attributes"]),
        media_urls=msgspec.json.decode(row["media_urls"]),
        failure=row["failure"],
        links=_link(slug, rid),
    )


# The intake routes: also dispatched directly, ahead of the router (api/direct.py).
hot_routes = [
    Route("/v1/tenants/{slug}/reports", create_report, methods=["POST"]),
    Route("/v1/tenants/{slug}/reports/batch", create_batch, methods=["POST"]),
]
routes = [
    *hot_routes,
    Route("/v1/tenants/{slug}/reports", list_reports, methods=["GET"]),
    Route("/v1/tenants/{slug}/reports/{report_id}", get_report, methods=["GET"]),
    Route("/v1/tenants/{slug}/reports/{report_id}", correct_report, methods=["PATCH"]),
    Route("/v1/tenants/{slug}/reports/{report_id}/events", report_events, methods=["GET"]),
]
