"""Place repository: a tenant's place tree. Function names equal their query names."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from civicpulse.db.queries import q
from civicpulse.domain.places import Place
from civicpulse.errors import Conflict


def _place(row: Any) -> Place:
    geometry = row["geometry"]
    return Place(
        row["code"],
        row["kind"],
        row["name"],
        tuple(row["aliases"]),
        row["parent"],
        row["lat"],
        row["lon"],
        json.loads(geometry) if isinstance(geometry, str) else geometry,
    )


async def list_places(conn: asyncpg.Connection, tenant_id: int) -> list[Place]:
    return [_place(r) for r in await conn.fetch(q("list_places"), tenant_id)]


async def get_place(conn: asyncpg.Connection, tenant_id: int, code: str) -> Place | None:
    row = await conn.fetchrow(q("get_place"), tenant_id, code)
    return None if row is None else _place(row)


async def upsert_places(
    conn: asyncpg.Connection, tenant_id: int, items: Sequence[Place]
) -> tuple[int, int]:
    """Create or replace places in one transaction; returns (created, updated). A parent
    that is neither given nor stored fails the whole set (checked at commit)."""
    try:
        async with conn.transaction():
            await conn.execute(q("lock_places"), tenant_id)
            rows = await conn.fetch(
                q("upsert_places"),
                tenant_id,
                [p.code for p in items],
                [p.kind for p in items],
                [p.name for p in items],
                ["|".join(p.aliases) for p in items],
                [p.parent for p in items],
                [p.lat for p in items],
                [p.lon for p in items],
                [None if p.geometry is None else json.dumps(p.geometry) for p in items],
            )
            await conn.execute(q("check_places"))
    except asyncpg.ForeignKeyViolationError as exc:
        raise Conflict("a place's parent is not a place of this tenant", field="parent") from exc
    except asyncpg.CheckViolationError as exc:
        raise Conflict(f"a place breaks a rule: {exc.constraint_name}", field="code") from exc
    created = sum(1 for r in rows if r["created"])
    return created, len(rows) - created


async def delete_place(conn: asyncpg.Connection, tenant_id: int, code: str) -> bool:
    """Delete a place; False when there is none. A place with children cannot go."""
    try:
        async with conn.transaction():
            await conn.execute(q("lock_places"), tenant_id)
            deleted = await conn.fetchval(q("delete_place"), tenant_id, code) is not None
            await conn.execute(q("check_places"))
            return deleted
    except asyncpg.ForeignKeyViolationError as exc:
        raise Conflict("the place has children: move or delete them first", field="code") from exc


async def place_version(conn: asyncpg.Connection, tenant_id: int) -> int:
    """The tenant's place-tree version (0 before any place was stored)."""
    return int(await conn.fetchval(q("place_version"), tenant_id) or 0)


async def place_codes(conn: asyncpg.Connection, tenant_id: int) -> frozenset[str]:
    return frozenset(r["code"] for r in await conn.fetch(q("place_codes"), tenant_id))


async def place_exists(conn: asyncpg.Connection, tenant_id: int, code: str) -> bool:
    return bool(await conn.fetchval(q("place_exists"), tenant_id, code))
