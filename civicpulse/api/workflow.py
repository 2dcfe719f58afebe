"""Staff workflow: the issue list, transitions, assignment, edits and comments.

Writes use optimistic concurrency: the client sends the version it read (`If-Match:
"<version>"`, as the issue's ETag gives it, or `"version"` in the body); a stale version
is 412 and a missing one 428. An illegal transition is 409. Each change goes through
civicpulse.workflow, so rules, the SLA clock and the event log follow every step.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from civicpulse import workflow
from civicpulse.api.auth import Principal
from civicpulse.api.body import decode, read_json
from civicpulse.api.errors import HTTPError
from civicpulse.api.issues import issue_out
from civicpulse.api.params import int_param, parse_time
from civicpulse.api.state import AppState
from civicpulse.api.versions import check_version, etag, expected_version
from civicpulse.db import issues as issues_repo
from civicpulse.db import workflow as repo
from civicpulse.db.audit import record_audit
from civicpulse.db.pool import tenant_transaction
from civicpulse.errors import Conflict, NotFound, ValidationFailed

_json = msgspec.json.Encoder()
Note = Annotated[str, Meta(min_length=1, max_length=4000)]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
PAGE_DEFAULT = 50
PAGE_MAX = 500


class TransitionIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    to: workflow.Status
    note: Note | None = None
    version: int | None = None


class AssignIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    team: Name | None = None
    assignee: Name | None = None
    note: Note | None = None
    version: int | None = None


class EditIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    priority: Annotated[int, Meta(ge=1, le=5)] | None = None
    visibility: Literal["public", "private"] | None = None
    note: Note | None = None
    version: int | None = None


class CommentIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    note: Note
    version: int | None = None


def _respond(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _json.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def _issue_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["issue_id"])
    except ValueError:
        raise NotFound("no such issue", field="issue_id") from None


async def _staff(request: Request) -> tuple[AppState, Principal]:
    """The caller, checked before the body is read: a bad key is 401, 403 or 404 whatever
    the body holds."""
    state: AppState = request.state.app
    return state, await state.auth.require(request, request.path_params["slug"], "staff")


async def _change(
    request: Request,
    principal: Principal,
    build: Any,
    body_version: int | None,
) -> Response:
    """Lock the issue, check its version, plan the change, save it; 200 with the issue."""
    state: AppState = request.state.app
    issue_id = _issue_id(request)
    expected = expected_version(request, body_version)
    tenant_id = principal.tenant.id
    at = dt.datetime.now(dt.UTC)
    async with tenant_transaction(state.pool, tenant_id) as conn:
        rows = await repo.lock_issue_workflow(conn, tenant_id, [issue_id])
        if not rows:
            raise NotFound("no such issue", field="issue_id")
        issue = workflow.state_from_row(rows[0])
        check_version(issue.version, expected)
        change: workflow.Change = build(issue, principal.actor)
        cfg = await workflow.load_config(conn, tenant_id)
        plan = workflow.plan(cfg, issue, change, at)
        try:
            version = await workflow.save(conn, tenant_id, plan, at)
        except asyncpg.ForeignKeyViolationError:
            raise ValidationFailed("unknown team for this tenant", field="team") from None
        if version is None:  # cannot happen under the row lock; kept as a guard
            raise HTTPError(412, "precondition_failed", "the issue changed", field="if-match")
        row = await issues_repo.get_issue(conn, tenant_id, issue_id)
        assert row is not None
        if row["visibility"] != issue.visibility:
            # What the public may see changed: audited beside the issue's own event log.
            await record_audit(
                conn,
                tenant_id,
                principal.actor,
                "issue.visibility_changed",
                str(issue_id),
                {"from": issue.visibility, "to": row["visibility"]},
            )
    return _respond(200, issue_out(row), {"ETag": etag(row["version"])})


_decode_transition = msgspec.json.Decoder(TransitionIn)
_decode_assign = msgspec.json.Decoder(AssignIn)
_decode_edit = msgspec.json.Decoder(EditIn)
_decode_comment = msgspec.json.Decoder(CommentIn)


async def transition(request: Request) -> Response:
    state, principal = await _staff(request)
    body = decode(_decode_transition, await read_json(request, state.settings.max_body_bytes))

    def build(issue: workflow.IssueState, actor: str) -> workflow.Change:
        if body.to == "duplicate":
            raise Conflict(
                "an issue becomes a duplicate by merging it (POST .../merge)", field="to"
            )
        if not workflow.allowed(issue.status, body.to):
            raise Conflict(f"an issue cannot move from {issue.status} to {body.to}", field="to")
        return workflow.Change("status_changed", actor, status=body.to, staff=True, note=body.note)

    return await _change(request, principal, build, body.version)


async def assign(request: Request) -> Response:
    state, principal = await _staff(request)
    body = decode(_decode_assign, await read_json(request, state.settings.max_body_bytes))
    if body.team is None and body.assignee is None:
        raise ValidationFailed("give a team, an assignee or both", field="team")

    def build(issue: workflow.IssueState, actor: str) -> workflow.Change:
        sets = {}
        if body.team is not None:
            sets["team"] = body.team
        if body.assignee is not None:
            sets["assignee"] = body.assignee
        status = "assigned" if issue.status in workflow.ASSIGN_MOVES else None
        return workflow.Change(
            "assigned", actor, status=status, sets=sets, staff=True, note=body.note, data=sets
        )

    return await _change(request, principal, build, body.version)


async def edit(request: Request) -> Response:
    state, principal = await _staff(request)
    body = decode(_decode_edit, await read_json(request, state.settings.max_body_bytes))
    sets: dict[str, Any] = {}
    if body.priority is not None:
        sets["priority"] = body.priority
    if body.visibility is not None:
        sets["visibility"] = body.visibility
    if not sets:
        raise ValidationFailed("give a priority or a visibility", field="priority")

    def build(issue: workflow.IssueState, actor: str) -> workflow.Change:
        return workflow.Change("edited", actor, sets=sets, staff=True, note=body.note, data=sets)

    return await _change(request, principal, build, body.version)


async def comment(request: Request) -> Response:
    """A note in the log; the first staff action of a cycle also acknowledges the issue, so
    it is a write like any other and needs the version read."""
    state, principal = await _staff(request)
    body = decode(_decode_comment, await read_json(request, state.settings.max_body_bytes))

    def build(issue: workflow.IssueState, actor: str) -> workflow.Change:
        return workflow.Change("comment", actor, staff=True, note=body.note)

    return await _change(request, principal, build, body.version)


def _list_param(request: Request, name: str, allowed: Any = None) -> list[str] | None:
    values = [v for raw in request.query_params.getlist(name) for v in raw.split(",") if v]
    if not values:
        return None
    if allowed is not None:
        for v in values:
            if v not in allowed:
                raise ValidationFailed(f"unknown {name} {v!r}", field=name)
    return values


def _cursor(raw: str | None) -> tuple[dt.datetime | None, str | None]:
    if not raw:
        return None, None
    try:
        opened, issue_id = base64.urlsafe_b64decode(raw.encode()).decode().split("|")
        return parse_time(opened, "cursor"), str(uuid.UUID(issue_id))
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("cursor is not one this service gave", field="cursor") from None


def _make_cursor(opened: dt.datetime, issue_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{opened.isoformat()}|{issue_id}".encode()).decode()


async def list_issues(request: Request) -> Response:
    """Issues newest first, filtered, a page at a time (`next` is the following page)."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "staff")
    params = request.query_params
    statuses = _list_param(request, "status", workflow.STATUSES)
    priorities = _list_param(request, "priority", {"1", "2", "3", "4", "5"})
    overdue = params.get("overdue", "false").lower()
    if overdue not in ("true", "false", "1", "0"):
        raise ValidationFailed("overdue must be true or false", field="overdue")
    limit = int_param(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    text = params.get("q")
    if text is not None and len(text) > 200:
        raise ValidationFailed("q is at most 200 characters", field="q")
    pattern = None
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
    after_opened, after_id = _cursor(params.get("cursor"))
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        rows = await repo.list_issues(
            conn,
            tenant_id,
            statuses,
            _list_param(request, "category"),
            _list_param(request, "area"),
            _list_param(request, "team"),
            None if priorities is None else [int(p) for p in priorities],
            overdue in ("true", "1"),
            pattern,
            limit + 1,
            after_opened,
            after_id,
        )
    items = [
        {
            "id": str(r["id"]),
            "status": r["status"],
            "category": r["category"],
            "severity": r["severity"],
            "priority": r["priority"],
            "title": r["title"],
            "area": r["area"],
            "team": r["team"],
            "assignee": r["assignee"],
            "visibility": r["visibility"],
            "report_count": r["report_count"],
            "lat": r["lat"],
            "lon": r["lon"],
            "opened_at": r["opened_at"],
            "last_reported": r["last_reported"],
            "response_due_at": r["response_due_at"],
            "resolution_due_at": r["resolution_due_at"],
            "acknowledged_at": r["acknowledged_at"],
            "resolved_at": r["resolved_at"],
            "version": r["version"],
            "links": {"self": f"/v1/tenants/{slug}/issues/{r['id']}"},
        }
        for r in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = _make_cursor(last["opened_at"], last["id"])
    return _respond(200, {"items": items, "next_cursor": next_cursor})


routes = [
    Route("/v1/tenants/{slug}/issues", list_issues, methods=["GET"]),
    Route("/v1/tenants/{slug}/issues/{issue_id}", edit, methods=["PATCH"]),
    Route("/v1/tenants/{slug}/issues/{issue_id}/transition", transition, methods=["POST"]),
    Route("/v1/tenants/{slug}/issues/{issue_id}/assign", assign, methods=["POST"]),
    Route("/v1/tenants/{slug}/issues/{issue_id}/comments", comment, methods=["POST"]),
]
