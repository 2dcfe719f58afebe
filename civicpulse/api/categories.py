"""A tenant's taxonomy: anyone with a key reads it, admins edit it."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from civicpulse.api.body import decode, read_json
from civicpulse.api.state import AppState
from civicpulse.db import tenants as tenants_repo
from civicpulse.db.audit import record_audit
from civicpulse.db.pool import tenant_transaction
from civicpulse.errors import ValidationFailed

KINDS = (
    "infrastructure",
    "appearance",
    "sanitation",
    "utilities",
    "hazard",
    "environment",
    "nuisance",
    "vehicles",
    "facilities",
    "other",
)
_json = msgspec.json.Encoder()


Datatype = Literal["string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"]
LISTS = ("singlevaluelist", "multivaluelist")


class AttributeValue(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: Annotated[str, Meta(min_length=1, max_length=100)]
    name: Annotated[str, Meta(min_length=1, max_length=200)]


class ServiceAttribute(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A question an Open311 client asks before it posts a request of this service
    (GeoReport v2 service definitions). Answers arrive as `attribute[CODE]`."""

    code: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    datatype: Datatype
    description: Annotated[str, Meta(min_length=1, max_length=500)]
    required: bool = False
    # false: information only, nothing to answer.
    variable: bool = True
    order: Annotated[int, Meta(ge=1, le=1000)] | None = None
    datatype_description: Annotated[str, Meta(max_length=500)] = ""
    # For the list datatypes: the allowed answers.
    values: Annotated[list[AttributeValue], Meta(max_length=200)] = []


def check_attributes(attributes: list[ServiceAttribute]) -> None:
    """What the types cannot say: unique codes, values exactly for the list datatypes."""
    seen: set[str] = set()
    for n, a in enumerate(attributes):
        where = f"attributes[{n}]"
        if a.code in seen:
            raise ValidationFailed(f"attribute code {a.code!r} is used twice", field=where)
        seen.add(a.code)
        if (a.datatype in LISTS) != bool(a.values):
            raise ValidationFailed(
                "the list datatypes need values, the others take none", field=f"{where}.values"
            )
        if len({v.key for v in a.values}) != len(a.values):
            raise ValidationFailed("value keys must be unique", field=f"{where}.values")


class CategoryIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    service_code: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    description: Annotated[str, Meta(max_length=2000)] = ""
    keywords: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=60)]], Meta(max_length=100)
    ] = []
    kind: str = "other"
    # local: a problem at one spot, room or unit; building: of the whole building (a lift,
    # the wifi): grouped across its rooms and floors.
    scope: Literal["local", "building"] = "local"
    active: bool = True
    # The tenant's grouping rule: reports join issues of this category only within this many
    # metres (never farther than the model's own reach; a report naming a registered room or
    # asset still finds that place's issue) and this many hours of the last report.
    # None: the model's reach and look-back.
    group_radius_m: Annotated[float, Meta(ge=1, le=1000)] | None = None
    group_lookback_hours: Annotated[float, Meta(ge=0.1, le=24 * 365)] | None = None
    # Open311 service attributes (GET /open311/v2/services/{service_code}).
    attributes: Annotated[list[ServiceAttribute], Meta(max_length=50)] = []


class CategoryOut(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    service_code: str
    name: str
    description: str
    keywords: list[str]
    kind: str
    scope: str
    active: bool
    group_radius_m: float | None
    group_lookback_hours: float | None
    attributes: list[ServiceAttribute]


_decode = msgspec.json.Decoder(CategoryIn)
_attributes = msgspec.json.Decoder(list[ServiceAttribute])


def stored_attributes(raw: str | None) -> list[ServiceAttribute]:
    return _attributes.decode(raw) if raw else []


# The database's own rule for a category code (schema 0001), checked first for a clear 422.
_CODE = re.compile(r"[a-z0-9_]{1,64}")


async def list_categories(request: Request) -> Response:
    state: AppState = request.state.app
    principal = await state.auth.require(request, request.path_params["slug"], "submit")
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        rows = await tenants_repo.all_categories(conn, tenant_id)
    items = [
        CategoryOut(
            code=r["code"],
            service_code=r["service_code"],
            name=r["name"],
            description=r["description"],
            keywords=list(r["keywords"]),
            kind=r["kind"],
            scope=r["scope"],
            active=r["active"],
            group_radius_m=r["group_radius_m"],
            group_lookback_hours=r["group_lookback_hours"],
            attributes=stored_attributes(r["attributes"]),
        )
        for r in rows
    ]
    return Response(_json.encode({"items": items}), media_type="application/json")


async def put_category(request: Request) -> Response:
    """Create or replace one category (admin). The local model retrains on next use."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    principal = await state.auth.require(request, slug, "admin")
    code = request.path_params["code"]
    if _CODE.fullmatch(code) is None:
        raise ValidationFailed(
            "a category code is 1-64 lowercase letters, digits or '_'", field="code"
        )
    body = await read_json(request, state.settings.max_body_bytes)
    item = decode(_decode, body)
    if item.kind not in KINDS:
        raise ValidationFailed(f"kind must be one of {', '.join(KINDS)}", field="kind")
    check_attributes(item.attributes)
    category = tenants_repo.Category(
        code,
        item.service_code,
        item.name,
        item.description,
        tuple(item.keywords),
        item.kind,
        item.scope,
        item.group_radius_m,
        item.group_lookback_hours,
        _json.encode(item.attributes).decode(),
    )
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        created = await tenants_repo.upsert_category(
            conn, principal.tenant.id, category, item.active
        )
        await record_audit(
            conn,
            principal.tenant.id,
            principal.actor,
            "category.created" if created else "category.updated",
            code,
            msgspec.to_builtins(item),
        )
    state.auth.forget_tenant(slug)
    out = CategoryOut(
        code=code,
        service_code=item.service_code,
        name=item.name,
        description=item.description,
        keywords=list(item.keywords),
        kind=item.kind,
        scope=item.scope,
        active=item.active,
        group_radius_m=item.group_radius_m,
        group_lookback_hours=item.group_lookback_hours,
        attributes=item.attributes,
    )
    return Response(
        _json.encode(out), status_code=201 if created else 200, media_type="application/json"
    )


routes = [
    Route("/v1/tenants/{slug}/categories", list_categories, methods=["GET"]),
    Route("/v1/tenants/{slug}/categories/{code}", put_category, methods=["PUT"]),
]
