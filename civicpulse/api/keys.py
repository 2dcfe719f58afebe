"""API keys and the audit log, for a tenant's admins.

A key is shown once, when it is made (created or rotated); listings name keys by id and
prefix, never by hash. Revoking takes effect on every process at once (schema 0012's
notice, see api/auth.py). Rotating makes a new key of the same scope and label and lets the
old one work for a grace period, so a deployment can switch without a gap. Every change is
written to the audit log in its own transaction, with the caller as actor.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from civicpulse.api.auth import Principal
from civicpulse.api.body import decode, read_json
from civicpulse.api.params import int_param, parse_int
from civicpulse.api.state import AppState
from civicpulse.db import audit as audit_repo
from civicpulse.db import tenants as tenants_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.domain.reports import AwareDatetime
from civicpulse.errors import NotFound, ValidationFailed

_json = msgspec.json.Encoder()
MAX_LIFETIME = dt.timedelta(days=3660)
DEFAULT_GRACE_SECONDS = 3600


class KeyIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    scope: Literal["submit", "staff", "admin"]
    label: Annotated[str, Meta(max_length=200)] = ""
    expires_at: AwareDatetime | None = None


class RotateIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # How long the old key keeps working (0: revoked at once).
    grace_seconds: Annotated[int, Meta(ge=0, le=30 * 24 * 3600)] = DEFAULT_GRACE_SECONDS
    expires_at: AwareDatetime | None = None  # the new key's


def key_out(row: asyncpg.Record) -> dict[str, Any]:
    status = tenants_repo.key_status(row, dt.datetime.now(dt.UTC))
    return {
        "id": row["id"],
        "prefix": row["prefix"],
        "scope": row["scope"],
        "label": row["label"],
        "status": status,
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "expires_at": row["expires_at"],
        "revoked_at": row["revoked_at"],
        "last_used_at": row["last_used_at"],
        "rotated_from": row["rotated_from"],
    }


def _respond(status: int, body: Any) -> Response:
    return Response(_json.encode(body), status_code=status, media_type="application/json")


async def _admin(request: Request) -> tuple[AppState, Principal]:
    state: AppState = request.state.app
    return state, await state.auth.require(request, request.path_params["slug"], "admin")


def _key_id(request: Request) -> int:
    try:
        return parse_int(request.path_params["key_id"], "key_id", 1, 2**62)
    except ValidationFailed:
        raise NotFound("no such API key", field="key_id") from None


def _expiry(value: dt.datetime | None, field: str) -> dt.datetime | None:
    if value is None:
        return None
    now = dt.datetime.now(dt.UTC)
    if value <= now:
        raise ValidationFailed(f"{field} must be in the future", field=field)
    if value > now + MAX_LIFETIME:
        raise ValidationFailed(f"{field} must be within 10 years", field=field)
    return value


_decode_key = msgspec.json.Decoder(KeyIn)
_decode_rotate = msgspec.json.Decoder(RotateIn)


async def list_keys(request: Request) -> Response:
    state, principal = await _admin(request)
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        rows = await tenants_repo.list_api_keys(conn, principal.tenant.id)
    return _respond(200, {"items": [key_out(r) for r in rows]})


async def create_key(request: Request) -> Response:
    state, principal = await _admin(request)
    body = decode(_decode_key, await read_json(request, state.settings.max_body_bytes))
    expires_at = _expiry(body.expires_at, "expires_at")
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        key, row = await tenants_repo.issue_api_key(
            conn,
            tenant_id,
            body.scope,
            body.label,
            expires_at=expires_at,
            created_by=principal.actor,
        )
        await audit_repo.record_audit(
            conn,
            tenant_id,
            principal.actor,
            "key.created",
            f"key:{row['id']}",
            {"scope": body.scope, "label": body.label, "expires_at": expires_at},
        )
    return _respond(201, {"key": key, **key_out(row)})


async def revoke_key(request: Request) -> Response:
    """Revoke a key (again: no change, the same answer)."""
    state, principal = await _admin(request)
    key_id = _key_id(request)
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        row = await tenants_repo.revoke_api_key(conn, tenant_id, key_id)
        if row is None:
            row = await tenants_repo.lock_api_key(conn, tenant_id, key_id)
            if row is None:
                raise NotFound("no such API key", field="key_id")
        else:
            await audit_repo.record_audit(
                conn, tenant_id, principal.actor, "key.revoked", f"key:{key_id}"
            )
    if principal.key_id == key_id:
        state.auth.forget_credentials()  # this process at once, not only on the notice
    return _respond(200, key_out(row))


async def rotate_key(request: Request) -> Response:
    state, principal = await _admin(request)
    key_id = _key_id(request)
    body = decode(_decode_rotate, await read_json(request, state.settings.max_body_bytes))
    expires_at = _expiry(body.expires_at, "expires_at")
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        key, new, old = await tenants_repo.rotate_api_key(
            conn,
            tenant_id,
            key_id,
            grace=dt.timedelta(seconds=body.grace_seconds),
            expires_at=expires_at,
            actor=principal.actor,
        )
        await audit_repo.record_audit(
            conn,
            tenant_id,
            principal.actor,
            "key.rotated",
            f"key:{key_id}",
            {"new_key": new["id"], "grace_seconds": body.grace_seconds},
        )
    return _respond(201, {"key": key, **key_out(new), "replaced": key_out(old)})


async def audit(request: Request) -> Response:
    """The audit log, newest first; `before` pages back (the last entry's id)."""
    state, principal = await _admin(request)
    limit = int_param(request, "limit", 100, 1, 1000)
    raw_before = request.query_params.get("before")
    before = None if not raw_before else parse_int(raw_before, "before", 1, 2**62)
    action = request.query_params.get("action") or None
    actor = request.query_params.get("actor") or None
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        rows = await audit_repo.audit_entries(
            conn, principal.tenant.id, before, action, actor, limit
        )
    items = [
        {
            "id": r["id"],
            "at": r["at"],
            "actor": r["actor"],
            "action": r["action"],
            "target": r["target"],
            "data": msgspec.json.decode(r["data"]),
        }
        for r in rows
    ]
    return _respond(
        200, {"items": items, "next_before": items[-1]["id"] if len(items) == limit else None}
    )


routes = [
    Route("/v1/tenants/{slug}/keys", list_keys, methods=["GET"]),
    Route("/v1/tenants/{slug}/keys", create_key, methods=["POST"]),
    Route("/v1/tenants/{slug}/keys/{key_id}", revoke_key, methods=["DELETE"]),
    Route("/v1/tenants/{slug}/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
    Route("/v1/tenants/{slug}/audit", audit, methods=["GET"]),
]
