"""Per-tenant workflow configuration: teams, areas, business calendars, SLA policies and
rules. Staff read it; admins change it. Every upload is validated before it is stored, and
a bad one is a 422 naming the field."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from civicpulse import workflow
from civicpulse.api.auth import Principal
from civicpulse.api.body import decode, read_json
from civicpulse.api.state import AppState
from civicpulse.db import geocoding as geocoding_repo
from civicpulse.db import tenants as tenants_repo
from civicpulse.db import workflow as repo
from civicpulse.db.audit import record_audit
from civicpulse.db.pool import tenant_transaction
from civicpulse.engine import areas as areas_engine
from civicpulse.engine import tenant_rules
from civicpulse.engine.business_time import Calendar, CalendarError, add_business_seconds
from civicpulse.errors import Conflict, NotFound, ValidationFailed

_json = msgspec.json.Encoder()
Code = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Clock = Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_TARGET_MINUTES = 366 * 24 * 60


class TeamIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name


class AreaIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    geometry: dict[str, Any]


class CalendarIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    timezone: str
    # {"mon": [["09:00", "12:00"], ["13:00", "17:00"]], ...}; missing days are closed.
    hours: dict[str, list[tuple[Clock, Clock]]]
    holidays: Annotated[list[dt.date], Meta(max_length=2000)] = []


class PolicyIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    calendar: Code
    # At most a year of wall-clock minutes; the calendar must also reach it (put_policy).
    response_minutes: Annotated[int, Meta(gt=0, le=MAX_TARGET_MINUTES)] | None = None
    resolution_minutes: Annotated[int, Meta(gt=0, le=MAX_TARGET_MINUTES)] | None = None
    warn_ratio: Annotated[float, Meta(ge=0.01, le=0.99)] = 0.75
    pause_statuses: list[str] = msgspec.field(default_factory=lambda: ["waiting"])
    priorities: list[Annotated[int, Meta(ge=1, le=5)]] = []
    categories: list[str] = []


def _respond(status: int, body: Any) -> Response:
    return Response(_json.encode(body), status_code=status, media_type="application/json")


def _code(request: Request) -> str:
    code = request.path_params["code"]
    try:
        return msgspec.convert(code, Code)
    except msgspec.ValidationError:
        raise ValidationFailed(
            "a code is 1-63 lowercase letters, digits, '-' or '_'", field="code"
        ) from None


async def _principal(request: Request, scope: str) -> tuple[AppState, Principal]:
    state: AppState = request.state.app
    return state, await state.auth.require(request, request.path_params["slug"], scope)


async def _body(request: Request, state: AppState, decoder: Any) -> Any:
    return decode(decoder, await read_json(request, state.settings.max_batch_body_bytes))


# --- teams ------------------------------------------------------------------------------

_decode_team = msgspec.json.Decoder(TeamIn)


async def list_teams(request: Request) -> Response:
    state, principal = await _principal(request, "staff")
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        rows = await repo.list_teams(conn, principal.tenant.id)
    return _respond(200, {"items": [dict(r) for r in rows]})


async def put_team(request: Request) -> Response:
    state, principal = await _principal(request, "admin")
    code = _code(request)
    body = await _body(request, state, _decode_team)
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        row = await repo.upsert_team(conn, principal.tenant.id, code, body.name)
        await record_audit(
            conn, principal.tenant.id, principal.actor, "team.updated", code, {"name": body.name}
        )
    return _respond(200, dict(row))


# --- areas ------------------------------------------------------------------------------

_decode_area = msgspec.json.Decoder(AreaIn)


def _area_out(row: Any) -> dict[str, Any]:
    return {
        "code": row["code"],
        "name": row["name"],
        "geometry": msgspec.json.decode(row["geometry"]),
    }


async def list_areas(request: Request) -> Response:
    state, principal = await _principal(request, "submit")
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        rows = await repo.list_areas(conn, principal.tenant.id)
    return _respond(200, {"items": [_area_out(r) for r in rows]})


async def put_area(request: Request) -> Response:
    """An area from a GeoJSON Polygon or MultiPolygon; new issues inside it get its code."""
    state, principal = await _principal(request, "admin")
    code = _code(request)
    body = await _body(request, state, _decode_area)
    try:
        area = areas_engine.parse(code, body.geometry)
    except areas_engine.GeometryError as exc:
        raise ValidationFailed(exc.message, field=exc.field) from None
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        row = await repo.upsert_area(
            conn,
            principal.tenant.id,
            code,
            body.name,
            _json.encode(body.geometry).decode(),
            area.bbox,
        )
        await record_audit(
            conn, principal.tenant.id, principal.actor, "area.updated", code, {"name": body.name}
        )
    return _respond(200, _area_out(row))


# --- calendars --------------------------------------------------------------------------

_decode_calendar = msgspec.json.Decoder(CalendarIn)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _calendar_out(row: Any) -> dict[str, Any]:
    hours = msgspec.json.decode(row["hours"])
    return {
        "code": row["code"],
        "timezone": row["timezone"],
        "hours": {
            DAYS[int(day)]: [
                [f"{s // 60:02d}:{s % 60:02d}", f"{e // 60:02d}:{e % 60:02d}"] for s, e in ranges
            ]
            for day, ranges in sorted(hours.items())
        },
        "holidays": [d.isoformat() for d in row["holidays"]],
    }


async def list_calendars(request: Request) -> Response:
    state, principal = await _principal(request, "staff")
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        rows = await repo.list_calendars(conn, principal.tenant.id)
    return _respond(200, {"items": [_calendar_out(r) for r in rows]})


async def put_calendar(request: Request) -> Response:
    state, principal = await _principal(request, "admin")
    code = _code(request)
    body: CalendarIn = await _body(request, state, _decode_calendar)
    try:
        ZoneInfo(body.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed("unknown IANA time zone", field="timezone") from None
    hours: dict[str, list[tuple[int, int]]] = {}
    for day, ranges in body.hours.items():
        if day not in DAYS:
            raise ValidationFailed("a weekday is one of " + ", ".join(DAYS), field=f"hours.{day}")
        hours[str(DAYS.index(day))] = [(_minutes(s), _minutes(e)) for s, e in ranges]
    try:
        calendar = workflow.calendar_from_row(body.timezone, hours, body.holidays)
    except CalendarError as exc:
        raise ValidationFailed(str(exc), field="hours") from None
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        # The policies already on this calendar must still be computable on the new hours.
        for policy in await repo.list_policies(conn, principal.tenant.id):
            if policy["calendar"] == code:
                for name in ("response_minutes", "resolution_minutes"):
                    _check_reachable(calendar, policy[name], "hours", f"policy {policy['code']}")
        row = await repo.upsert_calendar(
            conn,
            principal.tenant.id,
            code,
            body.timezone,
            _json.encode(hours).decode(),
            sorted(set(body.holidays)),
        )
        await record_audit(
            conn,
            principal.tenant.id,
            principal.actor,
            "calendar.updated",
            code,
            msgspec.to_builtins(body),
        )
    return _respond(200, _calendar_out(row))


# --- SLA policies -----------------------------------------------------------------------


def _check_reachable(calendar: Calendar, minutes: int | None, field: str, what: str) -> None:
    """Refuse a target the calendar cannot reach (the due-time arithmetic looks ahead a
    bounded number of days), so no issue's clock can fail on it later."""
    if minutes is None:
        return
    try:
        add_business_seconds(calendar, dt.datetime.now(dt.UTC), minutes * 60.0)
    except CalendarError:
        raise ValidationFailed(
            f"{what}: {minutes} minutes of business time are more than the calendar's "
            "opening hours give within three years",
            field=field,
        ) from None


_decode_policy = msgspec.json.Decoder(PolicyIn)


async def list_policies(request: Request) -> Response:
    state, principal = await _principal(request, "staff")
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        rows = await repo.list_policies(conn, principal.tenant.id)
    return _respond(
        200,
        {
            "items": [
                {
                    **dict(r),
                    "pause_statuses": list(r["pause_statuses"]),
                    "priorities": list(r["priorities"]),
                    "categories": list(r["categories"]),
                }
                for r in rows
            ]
        },
    )


async def put_policy(request: Request) -> Response:
    state, principal = await _principal(request, "admin")
    code = _code(request)
    body: PolicyIn = await _body(request, state, _decode_policy)
    if body.response_minutes is None and body.resolution_minutes is None:
        raise ValidationFailed(
            "set response_minutes, resolution_minutes or both", field="response_minutes"
        )
    for i, status in enumerate(body.pause_statuses):
        if status not in workflow.STATUSES or status in ("resolved", "closed"):
            raise ValidationFailed(f"{status!r} cannot pause a clock", field=f"pause_statuses[{i}]")
    for i, category in enumerate(body.categories):
        if category not in principal.tenant.category_codes:
            raise ValidationFailed(f"unknown category {category!r}", field=f"categories[{i}]")
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        calendars = {r["code"]: r for r in await repo.list_calendars(conn, principal.tenant.id)}
        if body.calendar not in calendars:
            raise ValidationFailed("unknown calendar", field="calendar")
        row = calendars[body.calendar]
        calendar = workflow.calendar_from_row(row["timezone"], row["hours"], row["holidays"])
        _check_reachable(calendar, body.response_minutes, "response_minutes", "this policy")
        _check_reachable(calendar, body.resolution_minutes, "resolution_minutes", "this policy")
        try:
            await repo.upsert_policy(
                conn,
                principal.tenant.id,
                code,
                body.name,
                body.calendar,
                body.response_minutes,
                body.resolution_minutes,
                body.warn_ratio,
                body.pause_statuses,
                body.priorities,
                [principal.tenant.category_codes[c] for c in body.categories],
            )
        except asyncpg.ForeignKeyViolationError:
            raise ValidationFailed("unknown calendar", field="calendar") from None
        await record_audit(
            conn,
            principal.tenant.id,
            principal.actor,
            "policy.updated",
            code,
            msgspec.to_builtins(body),
        )
    return _respond(200, {"code": code, **msgspec.to_builtins(body)})


# --- rules ------------------------------------------------------------------------------

_decode_rules = msgspec.json.Decoder(tenant_rules.RuleSet)


def _rules_out(row: Any) -> dict[str, Any]:
    if row is None or row["version"] is None:
        return {"version": None, "mode": "first", "rules": []}
    return {
        "version": row["version"],
        "mode": row["mode"],
        "rules": msgspec.json.decode(row["rules"]),
        "created_by": row["created_by"],
        "created_at": row["created_at"],
    }


async def get_rules(request: Request) -> Response:
    state, principal = await _principal(request, "staff")
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        row = await repo.current_rules(conn, principal.tenant.id)
    return _respond(200, _rules_out(row))


async def put_rules(request: Request) -> Response:
    """A new version of the tenant's rule set (the whole set, validated)."""
    state, principal = await _principal(request, "admin")
    ruleset: tenant_rules.RuleSet = await _body(request, state, _decode_rules)
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        categories = await tenants_repo.list_categories(conn, tenant_id)
        try:
            tenant_rules.check(
                ruleset,
                categories={c.code for c in categories},
                areas={r["code"] for r in await repo.list_areas(conn, tenant_id)},
                teams={r["code"] for r in await repo.list_teams(conn, tenant_id)},
                policies={r["code"] for r in await repo.list_policies(conn, tenant_id)},
            )
        except tenant_rules.RuleError as exc:
            raise ValidationFailed(exc.message, field=exc.field) from None
        try:
            await repo.insert_rules(
                conn,
                tenant_id,
                ruleset.mode,
                _json.encode(msgspec.to_builtins(ruleset.rules)).decode(),
                principal.actor,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                "another rule set was uploaded at the same time; retry", field="rules"
            ) from None
        row = await repo.current_rules(conn, tenant_id)
        await record_audit(
            conn,
            tenant_id,
            principal.actor,
            "rules.updated",
            f"version:{row['version'] if row else ''}",
            {"mode": ruleset.mode, "rules": len(ruleset.rules)},
        )
    return _respond(201, _rules_out(row))


# --- rate limits ------------------------------------------------------------------------

PerSecond = Annotated[float, Meta(ge=0, le=1_000_000)]
Burst = Annotated[float, Meta(ge=1, le=10_000_000)]


class RateLimitsIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tenant's own limits; a field left out (null) takes the service default, and a rate
    of 0 means no limit."""

    key_per_second: PerSecond | None = None
    key_burst: Burst | None = None
    public_per_second: PerSecond | None = None
    public_burst: Burst | None = None


class RateLimitsOut(msgspec.Struct, frozen=True, kw_only=True):
    """The limits in force (own or default), per process; see the README's caveat."""

    key_per_second: float
    key_burst: float
    public_per_second: float
    public_burst: float


_decode_limits = msgspec.json.Decoder(RateLimitsIn)


def _limits_out(state: AppState, own: Any) -> RateLimitsOut:
    limits = state.auth.limits_of(own)
    return RateLimitsOut(
        key_per_second=limits.key_per_second,
        key_burst=limits.key_burst,
        public_per_second=limits.public_per_second,
        public_burst=limits.public_burst,
    )


async def get_rate_limits(request: Request) -> Response:
    state, principal = await _principal(request, "admin")
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        own = await tenants_repo.rate_limits(conn, principal.tenant.id)
    return _respond(200, _limits_out(state, own))


async def put_rate_limits(request: Request) -> Response:
    state, principal = await _principal(request, "admin")
    body: RateLimitsIn = await _body(request, state, _decode_limits)
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        own = await tenants_repo.put_rate_limits(
            conn,
            principal.tenant.id,
            body.key_per_second,
            body.key_burst,
            body.public_per_second,
            body.public_burst,
        )
        await record_audit(
            conn,
            principal.tenant.id,
            principal.actor,
            "rate_limits.updated",
            "",
            msgspec.to_builtins(body),
        )
    state.auth.forget_tenant(principal.tenant.slug)  # other processes: within the cache TTL
    return _respond(200, _limits_out(state, own))


class GeocoderIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A Nominatim-compatible search endpoint, e.g. https://nominatim.openstreetmap.org/search
    (mind its usage policy) or your own Nominatim's /search."""

    url: Annotated[str, Meta(max_length=500, pattern=r"^https?://[^\s]+$")]
    # Sent as Nominatim's `email` parameter: its usage policy asks for a contact.
    email: Annotated[str, Meta(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    # ISO 3166-1 alpha-2 codes, comma-separated ("us" or "gb,ie"): results elsewhere are not
    # taken.
    countrycodes: Annotated[str, Meta(pattern=r"^[a-z]{2}(,[a-z]{2})*$")] | None = None
    # Appended to every query: exports give "123 Main St", the geocoder needs the city.
    suffix: Annotated[str, Meta(max_length=200)] | None = None


class GeocoderOut(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    email: str | None
    countrycodes: str | None
    suffix: str | None
    updated_at: dt.datetime


_decode_geocoder = msgspec.json.Decoder(GeocoderIn)


def _geocoder_out(row: Any) -> GeocoderOut:
    return GeocoderOut(
        url=row["url"],
        email=row["email"],
        countrycodes=row["countrycodes"],
        suffix=row["suffix"],
        updated_at=row["updated_at"],
    )


async def get_geocoder(request: Request) -> Response:
    state, principal = await _principal(request, "admin")
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        row = await geocoding_repo.get_geocoder(conn, principal.tenant.id)
    if row is None:
        raise NotFound("this tenant has no geocoder (reports located by address keep none)")
    return _respond(200, _geocoder_out(row))


async def put_geocoder(request: Request) -> Response:
    """Set the geocoder that gives reports located by address only their coordinates."""
    state, principal = await _principal(request, "admin")
    body: GeocoderIn = await _body(request, state, _decode_geocoder)
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        created = await geocoding_repo.put_geocoder(
            conn, tenant_id, body.url, body.email, body.countrycodes, body.suffix
        )
        await record_audit(
            conn,
            tenant_id,
            principal.actor,
            "geocoder.created" if created else "geocoder.updated",
            "",
            msgspec.to_builtins(body),
        )
        row = await geocoding_repo.get_geocoder(conn, tenant_id)
    return _respond(201 if created else 200, _geocoder_out(row))


async def delete_geocoder(request: Request) -> Response:
    state, principal = await _principal(request, "admin")
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        if not await geocoding_repo.delete_geocoder(conn, tenant_id):
            raise NotFound("this tenant has no geocoder")
        await record_audit(conn, tenant_id, principal.actor, "geocoder.deleted", "", {})
    return Response(status_code=204)


routes = [
    Route("/v1/tenants/{slug}/geocoder", get_geocoder, methods=["GET"]),
    Route("/v1/tenants/{slug}/geocoder", put_geocoder, methods=["PUT"]),
    Route("/v1/tenants/{slug}/geocoder", delete_geocoder, methods=["DELETE"]),
    Route("/v1/tenants/{slug}/rate-limits", get_rate_limits, methods=["GET"]),
    Route("/v1/tenants/{slug}/rate-limits", put_rate_limits, methods=["PUT"]),
    Route("/v1/tenants/{slug}/teams", list_teams, methods=["GET"]),
    Route("/v1/tenants/{slug}/teams/{code}", put_team, methods=["PUT"]),
    Route("/v1/tenants/{slug}/areas", list_areas, methods=["GET"]),
    Route("/v1/tenants/{slug}/areas/{code}", put_area, methods=["PUT"]),
    Route("/v1/tenants/{slug}/calendars", list_calendars, methods=["GET"]),
    Route("/v1/tenants/{slug}/calendars/{code}", put_calendar, methods=["PUT"]),
    Route("/v1/tenants/{slug}/sla-policies", list_policies, methods=["GET"]),
    Route("/v1/tenants/{slug}/sla-policies/{code}", put_policy, methods=["PUT"]),
    Route("/v1/tenants/{slug}/rules", get_rules, methods=["GET"]),
    Route("/v1/tenants/{slug}/rules", put_rules, methods=["PUT"]),
]
