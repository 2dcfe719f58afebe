"""Per-tenant place indexes for the worker processes: loaded when the tenant's places change.

A tenant's places change rarely; every change bumps its version (schema 0009). The classify
stage reads that version in its own transaction on every claim, so a place added through
the API or `civicpulse places import` is used from the next claim on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

from civicpulse.db import places as places_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.engine import places


@dataclass(frozen=True, slots=True)
class PlaceSet:
    version: int
    digest: str
    blob: bytes


class PlaceStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._sets: dict[int, PlaceSet] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def get(self, tenant_id: int, version: int) -> PlaceSet:
        """The tenant's places at `version` (as the caller just read it)."""
        current = self._sets.get(tenant_id)
        if current is not None and current.version >= version:
            return current
        async with self._locks.setdefault(tenant_id, asyncio.Lock()):
            current = self._sets.get(tenant_id)
            if current is not None and current.version >= version:
                return current
            async with tenant_transaction(self.pool, tenant_id) as conn:
                stored = await places_repo.place_version(conn, tenant_id)
                rows = await places_repo.list_places(conn, tenant_id)
            blob, digest = places.pack(
                [
                    places.Node(p.code, p.kind, p.name, p.aliases, p.parent, p.lat, p.lon)
                    for p in rows
                ]
            )
            current = PlaceSet(stored, digest, blob)
            self._sets[tenant_id] = current
            return current
