"""A tenant's places: sites, buildings, floors, rooms, units, shared spaces and assets.

Anyone with a key reads them (a resident app offers them in a picker); admins create,
replace and delete them, one at a time or a whole tree at once. Reports name a place by its
code (`place`), and grouping never merges problems of different rooms, units or assets.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from civicpulse.api.body import decode, read_json
from civicpulse.api.state import AppState
from civicpulse.db import places as places_repo
from civicpulse.db.audit import record_audit
from civicpulse.db.pool import tenant_transaction
from civicpulse.domain.places import PlaceIn, PlaceWithCode, place_out, to_place
from civicpulse.domain.reports import PlaceCode
from civicpulse.errors import NotFound, ValidationFailed

MAX_PLACES_PER_REQUEST = 10_000
_json = msgspec.json.Encoder()
_decode_one = msgspec.json.Decoder(PlaceIn)
_decode_many = msgspec.json.Decoder(list[PlaceWithCode])


def _respond(status: int, body: Any) -> Response:
    return Response(_json.encode(body), status_code=status, media_type="application/json")


async def list_places(request: Request) -> Response:
    state: AppState = request.state.app
    principal = await state.auth.require(request, request.path_params["slug"], "submit")
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        rows = await places_repo.list_places(conn, principal.tenant.id)
    return _respond(200, {"items": [place_out(p) for p in rows]})


async def get_place(request: Request) -> Response:
    state: AppState = request.state.app
    principal = await state.auth.require(request, request.path_params["slug"], "submit")
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        found = await places_repo.get_place(conn, principal.tenant.id, request.path_params["code"])
    if found is None:
        raise NotFound("no such place", field="code")
    return _respond(200, place_out(found))


def _code(request: Request) -> str:
    code: str = request.path_params["code"]
    try:
        return msgspec.convert(code, PlaceCode)
    except msgspec.ValidationError:
        raise ValidationFailed(
            "code must be 1-64 letters, digits, '.', '_' or '-'", field="code"
        ) from None


async def put_place(request: Request) -> Response:
    """Create or replace one place (admin)."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "admin")
    code = _code(request)
    item = decode(_decode_one, await read_json(request, state.settings.max_body_bytes))
    place = to_place(code, item)
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        created, _ = await places_repo.upsert_places(conn, principal.tenant.id, [place])
        await record_audit(conn, principal.tenant.id, principal.actor, "place.updated", code)
    state.auth.forget_tenant(slug)
    return _respond(201 if created else 200, place_out(place))


async def import_places(request: Request) -> Response:
    """Create or replace many places at once (admin): a JSON array, all or nothing."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "admin")
    items = decode(_decode_many, await read_json(request, state.settings.max_batch_body_bytes))
    if len(items) > MAX_PLACES_PER_REQUEST:
        raise ValidationFailed(f"at most {MAX_PLACES_PER_REQUEST} places per request", field="body")
    codes = [i.code for i in items]
    if len(set(codes)) != len(codes):
        raise ValidationFailed("a code appears twice", field="code")
    places = [to_place(i.code, i) for i in items]
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        created, updated = await places_repo.upsert_places(conn, principal.tenant.id, places)
        await record_audit(
            conn,
            principal.tenant.id,
            principal.actor,
            "place.imported",
            "",
            {"created": created, "updated": updated},
        )
    state.auth.forget_tenant(slug)
    return _respond(200, {"created": created, "updated": updated})


async def delete_place(request: Request) -> Response:
    """Delete a place (admin); reports that named it keep what they resolved to."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "admin")
    code = _code(request)
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        deleted = await places_repo.delete_place(conn, principal.tenant.id, code)
        if deleted:
            await record_audit(conn, principal.tenant.id, principal.actor, "place.deleted", code)
    if not deleted:
        raise NotFound("no such place", field="code")
    state.auth.forget_tenant(slug)
    return Response(status_code=204)


routes = [
    Route("/v1/tenants/{slug}/places", list_places, methods=["GET"]),
    Route("/v1/tenants/{slug}/places", import_places, methods=["POST"]),
    Route("/v1/tenants/{slug}/places/{code}", get_place, methods=["GET"]),
    Route("/v1/tenants/{slug}/places/{code}", put_place, methods=["PUT"]),
    Route("/v1/tenants/{slug}/places/{code}", delete_place, methods=["DELETE"]),
]
