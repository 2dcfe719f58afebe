"""Geocoding repository (civicpulse/geocoder.py). Function names equal their query names."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from civicpulse.db.queries import q


async def geocoding_tenants(conn: asyncpg.Connection, max_attempts: int) -> list[int]:
    return [r["tenant_id"] for r in await conn.fetch(q("geocoding_tenants"), max_attempts)]


async def get_geocoder(conn: asyncpg.Connection, tenant_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(q("get_geocoder"), tenant_id)
    return row


async def put_geocoder(
    conn: asyncpg.Connection,
    tenant_id: int,
    url: str,
    email: str | None,
    countrycodes: str | None,
    suffix: str | None,
) -> bool:
    """Set the tenant's geocoder; True when it had none."""
    return bool(await conn.fetchval(q("put_geocoder"), tenant_id, url, email, countrycodes, suffix))


async def delete_geocoder(conn: asyncpg.Connection, tenant_id: int) -> bool:
    return await conn.fetchval(q("delete_geocoder"), tenant_id) is not None


async def geocode_lock(conn: asyncpg.Connection, tenant_id: int) -> bool:
    return bool(await conn.fetchval(q("geocode_lock"), tenant_id))


async def geocode_unlock(conn: asyncpg.Connection, tenant_id: int) -> None:
    await conn.fetchval(q("geocode_unlock"), tenant_id)


async def geocode_pending(
    conn: asyncpg.Connection, tenant_id: int, max_attempts: int, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        q("geocode_pending"), tenant_id, max_attempts, limit
    )
    return rows


async def cached_geocodes(
    conn: asyncpg.Connection, tenant_id: int, keys: Sequence[str]
) -> dict[str, tuple[float, float] | None]:
    rows = await conn.fetch(q("cached_geocodes"), tenant_id, list(keys))
    return {r["address_key"]: None if r["lat"] is None else (r["lat"], r["lon"]) for r in rows}


async def store_geocodes(
    conn: asyncpg.Connection,
    tenant_id: int,
    found: Sequence[tuple[str, tuple[float, float] | None, str | None]],
) -> None:
    await conn.execute(
        q("store_geocodes"),
        tenant_id,
        [k for k, _, _ in found],
        [None if p is None else p[0] for _, p, _ in found],
        [None if p is None else p[1] for _, p, _ in found],
        [name for _, _, name in found],
    )


async def set_geocoded(
    conn: asyncpg.Connection,
    tenant_id: int,
    points: Sequence[tuple[uuid.UUID, float, float]],
) -> set[uuid.UUID]:
    """Give reports their points; the issues they are in."""
    rows = await conn.fetch(
        q("set_geocoded"),
        tenant_id,
        [i for i, _, _ in points],
        [lat for _, lat, _ in points],
        [lon for _, _, lon in points],
    )
    return {r["issue_id"] for r in rows if r["issue_id"] is not None}


async def geocode_missed(
    conn: asyncpg.Connection, tenant_id: int, ids: Sequence[uuid.UUID], attempts: int
) -> None:
    await conn.execute(q("geocode_missed"), tenant_id, list(ids), attempts)
