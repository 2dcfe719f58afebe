"""Bearer-key authentication and tenant resolution, with short-lived caches.

Outcomes: no or unknown key -> 401; a live key of another tenant, or an unknown tenant ->
404 (never revealing whether the other tenant's data exists); a key whose scope is too
small -> 403. Revoking a key takes effect within `ttl` seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg
from starlette.requests import Request

from civicpulse.db import places as places_repo
from civicpulse.db import tenants as tenants_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.errors import Forbidden, NotFound, Unauthenticated

SCOPE_RANK = {"submit": 0, "staff": 1, "admin": 2}


@dataclass(frozen=True, slots=True)
class TenantContext:
    """A resolved tenant: identity plus what intake validates against."""

    id: int
    slug: str
    name: str
    timezone: str
    # Accepted category references (code or service_code) -> canonical code.
    category_codes: dict[str, str]
    # The tenant's registered place codes (a report may name one).
    place_codes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: TenantContext
    scope: str
    key_id: int
    key_prefix: str

    @property
    def actor(self) -> str:
        """How the event log names this caller."""
        return f"key:{self.key_prefix}"


class Authenticator:
    def __init__(self, pool: asyncpg.Pool, ttl: float) -> None:
        self.pool = pool
        self.ttl = ttl
        self._tenants: dict[str, tuple[float, TenantContext | None]] = {}
        self._keys: dict[bytes, tuple[float, tenants_repo.KeyIdentity | None]] = {}

    async def tenant(self, slug: str) -> TenantContext:
        """The tenant named in the URL; NotFound when there is none."""
        now = time.monotonic()
        cached = self._tenants.get(slug)
        if cached is not None and cached[0] > now:
            found = cached[1]
        else:
            found = await self._load_tenant(slug)
            self._tenants[slug] = (now + self.ttl, found)
        if found is None:
            raise NotFound("no such tenant", field="slug")
        return found

    async def _load_tenant(self, slug: str) -> TenantContext | None:
        async with self.pool.acquire() as conn:
            tenant = await tenants_repo.tenant_by_slug(conn, slug)
        if tenant is None:
            return None
        async with tenant_transaction(self.pool, tenant.id) as conn:
            categories = await tenants_repo.list_categories(conn, tenant.id)
            place_codes = await places_repo.place_codes(conn, tenant.id)
        codes: dict[str, str] = {}
        for c in categories:
            codes[c.code] = c.code
            codes[c.service_code] = c.code
        return TenantContext(
            tenant.id, tenant.slug, tenant.name, tenant.timezone, codes, place_codes
        )

    async def require(self, request: Request, slug: str, scope: str) -> Principal:
        """Authenticate the request for `slug` with at least `scope`."""
        header = request.headers.get("authorization", "")
        kind, _, key = header.partition(" ")
        if kind.lower() != "bearer" or not key.strip():
            raise Unauthenticated("missing bearer API key", field="authorization")
        key_hash = tenants_repo.hash_key(key.strip())
        now = time.monotonic()
        cached = self._keys.get(key_hash)
        if cached is not None and cached[0] > now:
            found = cached[1]
        else:
            async with self.pool.acquire() as conn:
                found = await tenants_repo.authenticate(conn, key_hash)
            self._keys[key_hash] = (now + self.ttl, found)
        if found is None:
            raise Unauthenticated("unknown or revoked API key", field="authorization")
        tenant = await self.tenant(slug)
        if tenant.id != found.tenant_id:
            raise NotFound("no such tenant", field="slug")
        if SCOPE_RANK[found.scope] < SCOPE_RANK[scope]:
            raise Forbidden(
                f"this API key's scope is {found.scope}; {scope} is required",
                field="authorization",
            )
        return Principal(tenant, found.scope, found.key_id, found.prefix)

    async def optional(self, request: Request, slug: str, scope: str) -> Principal | None:
        """Like `require` when the request carries a key; None (anonymous) when it has none."""
        if not request.headers.get("authorization"):
            await self.tenant(slug)  # an unknown tenant is still 404
            return None
        return await self.require(request, slug, scope)

    def forget_tenant(self, slug: str) -> None:
        """Drop a cached tenant (its taxonomy changed)."""
        self._tenants.pop(slug, None)

    async def tenant_knowing_place(self, tenant: TenantContext, code: str) -> TenantContext:
        """The tenant context, reloaded when `code` is a place the cached one does not know
        but the database does (another process, `civicpulse places import`, added it a moment
        ago). A code that is nowhere costs one primary-key lookup, never a reload, so requests
        naming made-up places cannot turn every submission into one."""
        if code in tenant.place_codes:
            return tenant
        async with tenant_transaction(self.pool, tenant.id) as conn:
            if not await places_repo.place_exists(conn, tenant.id, code):
                return tenant
        now = time.monotonic()
        found = await self._load_tenant(tenant.slug)
        self._tenants[tenant.slug] = (now + self.ttl, found)
        if found is None:
            raise NotFound("no such tenant", field="slug")
        return found
