"""Tenant, taxonomy and API-key repository. Function names equal their query names."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from civicpulse.db import workflow as workflow_repo
from civicpulse.db.audit import record_audit
from civicpulse.db.pool import set_tenant
from civicpulse.db.queries import q
from civicpulse.engine.grouping import FACILITY_NEAREST
from civicpulse.errors import Conflict, NotFound

SCOPES = ("submit", "staff", "admin")
# A new tenant's taxonomy and grouping settings: a city, or a building operator (hotels,
# campuses, offices) whose problems are told apart by room, unit and floor.
TEMPLATES: dict[str, tuple[str, dict[str, object]]] = {
    "city": ("taxonomy.json", {}),
    "facility": (
        "taxonomy_facility.json",
        {"grouping": {"rooms_by_number": True, "nearest": FACILITY_NEAREST}},
    ),
}


@dataclass(frozen=True, slots=True)
class Tenant:
    id: int
    slug: str
    name: str
    timezone: str


@dataclass(frozen=True, slots=True)
class Category:
    code: str
    service_code: str
    name: str
    description: str
    keywords: tuple[str, ...]
    kind: str
    scope: str = "local"
    # A tenant's own grouping rule for the category: a narrower reach, its own look-back.
    group_radius_m: float | None = None
    group_lookback_hours: float | None = None
    # Its Open311 attributes (api.categories.ServiceAttribute), as stored: a JSON list.
    attributes: str = "[]"


def hash_key(key: str) -> bytes:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode()).digest()


def new_key() -> tuple[str, str]:
    """A fresh key and its public prefix (shown in listings, useless alone)."""
    prefix = secrets.token_hex(4)
    return f"cp_{prefix}_{secrets.token_urlsafe(24)}", prefix


def default_taxonomy(template: str = "city") -> list[Category]:
    """The taxonomy a new tenant of this template starts with."""
    path = TEMPLATES[template][0]
    raw = json.loads(resources.files("civicpulse.data").joinpath(path).read_text())
    return [
        Category(
            code=item["code"],
            service_code=item["service_code"],
            name=item["name"],
            description=item["description"],
            keywords=tuple(item["keywords"]),
            kind=item["kind"],
            scope=item.get("scope", "local"),
        )
        for item in raw
    ]


async def tenant_by_slug(conn: asyncpg.Connection, slug: str) -> Tenant | None:
    row = await conn.fetchrow(q("tenant_by_slug"), slug)
    return None if row is None else Tenant(**dict(row))


async def create_tenant(
    conn: asyncpg.Connection, slug: str, name: str, timezone: str, template: str = "city"
) -> Tenant:
    """Create a tenant with its template's taxonomy and settings (owner connection)."""
    if template not in TEMPLATES:
        raise Conflict(f"template must be one of {', '.join(TEMPLATES)}", field="template")
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                q("create_tenant"), slug, name, timezone, json.dumps(TEMPLATES[template][1])
            )
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"tenant {slug!r} already exists", field="slug") from exc
        except asyncpg.CheckViolationError as exc:
            raise Conflict(f"invalid tenant slug or name: {slug!r}", field="slug") from exc
        assert row is not None
        tenant = Tenant(**dict(row))
        await set_tenant(conn, tenant.id)
        await insert_categories(conn, tenant.id, default_taxonomy(template))
        await insert_sla_defaults(conn, tenant.id, timezone)
    return tenant


async def insert_sla_defaults(conn: asyncpg.Connection, tenant_id: int, timezone: str) -> None:
    """Business calendars and priority-based SLA policies, so a new tenant's issues have
    clocks from the start (civicpulse/data/sla_defaults.json)."""
    defaults = json.loads(
        resources.files("civicpulse.data").joinpath("sla_defaults.json").read_text()
    )
    for cal in defaults["calendars"]:
        await workflow_repo.upsert_calendar(
            conn, tenant_id, cal["code"], timezone, json.dumps(cal["hours"]), []
        )
    for p in defaults["policies"]:
        await workflow_repo.upsert_policy(
            conn,
            tenant_id,
            p["code"],
            p["name"],
            p["calendar"],
            p["response_minutes"],
            p["resolution_minutes"],
            0.75,
            ["waiting"],
            p["priorities"],
            [],
        )


async def tenant_config(conn: asyncpg.Connection, tenant_id: int) -> dict[str, Any]:
    """The tenant's settings (grouping, severity scale); {} when none are set."""
    raw = await conn.fetchval(q("tenant_config"), tenant_id)
    value = json.loads(raw) if isinstance(raw, str) else raw
    return value if isinstance(value, dict) else {}


async def list_tenants(conn: asyncpg.Connection) -> list[Tenant]:
    return [Tenant(**dict(row)) for row in await conn.fetch(q("list_tenants"))]


async def insert_categories(
    conn: asyncpg.Connection, tenant_id: int, categories: list[Category]
) -> None:
    await conn.execute(
        q("insert_categories"),
        tenant_id,
        [c.code for c in categories],
        [c.service_code for c in categories],
        [c.name for c in categories],
        [c.description for c in categories],
        ["|".join(c.keywords) for c in categories],
        [c.kind for c in categories],
        [c.scope for c in categories],
    )


async def list_categories(conn: asyncpg.Connection, tenant_id: int) -> list[Category]:
    rows = await conn.fetch(q("list_categories"), tenant_id)
    return [
        Category(
            code=r["code"],
            service_code=r["service_code"],
            name=r["name"],
            description=r["description"],
            keywords=tuple(r["keywords"]),
            kind=r["kind"],
            scope=r["scope"],
            attributes=r["attributes"],
        )
        for r in rows
    ]


async def create_api_key(conn: asyncpg.Connection, slug: str, scope: str, label: str = "") -> str:
    """Create a key for a tenant named by slug (owner connection) and return it; only its
    hash is stored."""
    async with conn.transaction():
        tenant = await tenant_by_slug(conn, slug)
        if tenant is None:
            raise NotFound(f"no tenant {slug!r}", field="tenant")
        await set_tenant(conn, tenant.id)
        key, row = await issue_api_key(conn, tenant.id, scope, label, created_by="cli")
        await record_audit(
            conn, tenant.id, "cli", "key.created", f"key:{row['id']}", {"scope": scope}
        )
    return key


async def issue_api_key(
    conn: asyncpg.Connection,
    tenant_id: int,
    scope: str,
    label: str = "",
    *,
    expires_at: dt.datetime | None = None,
    created_by: str = "",
    rotated_from: int | None = None,
) -> tuple[str, asyncpg.Record]:
    """A new key of the tenant set on `conn`: the key (shown once) and its stored row."""
    if scope not in SCOPES:
        raise Conflict(f"scope must be one of {', '.join(SCOPES)}", field="scope")
    key, prefix = new_key()
    row: asyncpg.Record = await conn.fetchrow(
        q("create_api_key"),
        tenant_id,
        hash_key(key),
        prefix,
        scope,
        label,
        expires_at,
        created_by,
        rotated_from,
    )
    return key, row


async def list_api_keys(conn: asyncpg.Connection, tenant_id: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(q("list_api_keys"), tenant_id)
    return rows


async def lock_api_key(
    conn: asyncpg.Connection, tenant_id: int, key_id: int
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(q("lock_api_key"), tenant_id, key_id)
    return row


async def revoke_api_key(
    conn: asyncpg.Connection, tenant_id: int, key_id: int
) -> asyncpg.Record | None:
    """Revoke a live key; None when it was already revoked (or is not there)."""
    row: asyncpg.Record | None = await conn.fetchrow(q("revoke_api_key"), tenant_id, key_id)
    return row


async def expire_api_key(
    conn: asyncpg.Connection, tenant_id: int, key_id: int, at: dt.datetime
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(q("expire_api_key"), tenant_id, key_id, at)
    return row


async def rotate_api_key(
    conn: asyncpg.Connection,
    tenant_id: int,
    key_id: int,
    *,
    grace: dt.timedelta,
    expires_at: dt.datetime | None,
    actor: str,
) -> tuple[str, asyncpg.Record, asyncpg.Record]:
    """Replace a live key with a new one of the same scope and label (inside the caller's
    transaction); the old key keeps working for `grace` (zero: revoked at once). The new key
    ends at `expires_at`, or when the old one would have (a key made to last a while is not
    made permanent by a rotation). A key is rotated once: a second rotation would leave two
    live successors. Returns the new key, its row and the old key's row."""
    old = await lock_api_key(conn, tenant_id, key_id)
    if old is None:
        raise NotFound("no such API key", field="key_id")
    now = dt.datetime.now(dt.UTC)
    if old["revoked_at"] is not None or (
        old["expires_at"] is not None and old["expires_at"] <= now
    ):
        raise Conflict("this API key is revoked or expired; create a new one", field="key_id")
    successor = await api_key_successor(conn, tenant_id, key_id)
    if successor is not None:
        raise Conflict(
            f"this API key was already rotated into key {successor}; rotate that one",
            field="key_id",
        )
    key, new = await issue_api_key(
        conn,
        tenant_id,
        old["scope"],
        old["label"],
        expires_at=old["expires_at"] if expires_at is None else expires_at,
        created_by=actor,
        rotated_from=key_id,
    )
    if grace <= dt.timedelta(0):
        ended = await revoke_api_key(conn, tenant_id, key_id)
        assert ended is not None
    else:
        ended = await expire_api_key(conn, tenant_id, key_id, now + grace)
    return key, new, ended


async def api_key_successor(conn: asyncpg.Connection, tenant_id: int, key_id: int) -> int | None:
    """The id of the key that replaced this one, if any."""
    successor: int | None = await conn.fetchval(q("api_key_successor"), tenant_id, key_id)
    return successor


def key_status(row: asyncpg.Record, now: dt.datetime) -> str:
    """active, expired or revoked."""
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    return "active"


async def touch_api_keys(conn: asyncpg.Connection, key_ids: list[int]) -> None:
    """Stamp keys' last_used_at (at most once a minute each; see schema 0012)."""
    await conn.execute(q("touch_api_keys"), key_ids)


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    tenant_id: int
    scope: str
    key_id: int
    prefix: str
    expires_at: dt.datetime | None


async def authenticate(conn: asyncpg.Connection, key_hash: bytes) -> KeyIdentity | None:
    """The tenant and scope of a live key, whatever tenant the request names."""
    row = await conn.fetchrow(q("authenticate"), key_hash)
    return None if row is None else KeyIdentity(**dict(row))


async def all_categories(conn: asyncpg.Connection, tenant_id: int) -> list[asyncpg.Record]:
    """Every category of the tenant, retired ones included."""
    rows: list[asyncpg.Record] = await conn.fetch(q("all_categories"), tenant_id)
    return rows


async def upsert_category(
    conn: asyncpg.Connection, tenant_id: int, category: Category, active: bool
) -> bool:
    """Create or replace a category; True when it was created."""
    try:
        return bool(
            await conn.fetchval(
                q("upsert_category"),
                tenant_id,
                category.code,
                category.service_code,
                category.name,
                category.description,
                list(category.keywords),
                category.kind,
                category.scope,
                active,
                category.group_radius_m,
                category.group_lookback_hours,
                category.attributes,
            )
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(
            f"service_code {category.service_code!r} is used by another category",
            field="service_code",
        ) from exc
    except asyncpg.CheckViolationError as exc:
        raise Conflict("code must be 1-64 characters of a-z, 0-9 and _", field="code") from exc


async def rate_limits(conn: asyncpg.Connection, tenant_id: int) -> asyncpg.Record | None:
    """The tenant's own rate limits (None columns: the service default)."""
    row: asyncpg.Record | None = await conn.fetchrow(q("rate_limits"), tenant_id)
    return row


async def put_rate_limits(
    conn: asyncpg.Connection,
    tenant_id: int,
    key_per_second: float | None,
    key_burst: float | None,
    public_per_second: float | None,
    public_burst: float | None,
) -> asyncpg.Record:
    """Set the tenant's own rate limits; the stored row."""
    row: asyncpg.Record = await conn.fetchrow(
        q("put_rate_limits"), tenant_id, key_per_second, key_burst, public_per_second, public_burst
    )
    return row


async def delete_tenant(conn: asyncpg.Connection, slug: str) -> int | None:
    """Delete a tenant and all its data (owner connection, inside the caller's transaction);
    its id, None when unknown."""
    await conn.execute(q("delete_tenant_reports"), slug)
    tenant_id: int | None = await conn.fetchval(q("delete_tenant"), slug)
    return tenant_id
