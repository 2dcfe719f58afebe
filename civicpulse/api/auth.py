"""Bearer-key authentication, tenant resolution and rate limits, with short-lived caches.

Outcomes: no or unknown key -> 401; a live key of another tenant, or an unknown tenant ->
404 (never revealing whether the other tenant's data exists); a key whose scope is too
small -> 403; a key (or, on public routes without a key, a client address) over its
tenant's rate limit -> 429 with Retry-After. The caches are LRU-bounded, so made-up slugs
and keys cannot grow memory.

Revoking a key takes effect at once on every process: the change is announced on
`civicpulse_auth` and each process's listener (civicpulse.live.Broker) drops its key cache;
the cache's time-to-live (5 s by default) bounds it while a listener reconnects. An expiry
is checked on every request, cached or not. Use is stamped in `last_used_at` at most once a
minute per key: requests only note the key in memory, and `flush_usage` writes the notes.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import asyncpg
from starlette.requests import Request

from civicpulse.api.throttle import LRUCache, TokenBuckets
from civicpulse.db import places as places_repo
from civicpulse.db import tenants as tenants_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.errors import Forbidden, NotFound, Throttled, Unauthenticated

SCOPE_RANK = {"submit": 0, "staff": 1, "admin": 2}
USAGE_STAMP_SECONDS = 60.0  # last_used_at is at most this stale


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests per second and burst, per API key and per client address on public routes
    (0 per second: no limit)."""

    key_per_second: float = 0.0
    key_burst: float = 1.0
    public_per_second: float = 0.0
    public_burst: float = 1.0


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
    limits: RateLimits = field(default_factory=RateLimits)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a machine's API key or a person's session."""

    tenant: TenantContext
    scope: str
    # How the event and audit logs name the caller: key:<prefix> or user:<login>.
    actor: str
    key_id: int | None = None
    user_id: int | None = None

    @property
    def staff(self) -> bool:
        return SCOPE_RANK[self.scope] >= SCOPE_RANK["staff"]


class Authenticator:
    def __init__(
        self,
        pool: asyncpg.Pool,
        ttl: float,
        *,
        cache_size: int = 10_000,
        limits: RateLimits | None = None,
        buckets: int = 100_000,
    ) -> None:
        self.pool = pool
        self.ttl = ttl
        self.limits = limits or RateLimits()
        self._tenants: LRUCache[TenantContext | None] = LRUCache(cache_size, ttl)
        self._keys: LRUCache[tenants_repo.KeyIdentity | None] = LRUCache(cache_size, ttl)
        self._buckets = TokenBuckets(buckets)
        self._used: set[int] = set()  # keys used since the last flush_usage
        self._stamped: dict[int, float] = {}  # key id -> monotonic time of its last stamp

    async def tenant(self, slug: str) -> TenantContext:
        """The tenant named in the URL; NotFound when there is none."""
        cached, found = self._tenants.get(slug)
        if not cached:
            found = await self._load_tenant(slug)
            self._tenants.put(slug, found)
        if found is None:
            raise NotFound("no such tenant", field="slug")
        return found

    async def public(self, request: Request, slug: str) -> TenantContext:
        """The tenant, for a request without a key: limited per client address."""
        tenant = await self.tenant(slug)
        address = request.client.host if request.client else ""
        limits = tenant.limits
        wait = self._buckets.take(
            ("public", tenant.id, address), limits.public_per_second, limits.public_burst
        )
        if wait:
            raise Throttled(
                "too many requests from this address; retry later",
                retry_after=wait,
                field="client",
            )
        return tenant

    async def _load_tenant(self, slug: str) -> TenantContext | None:
        async with self.pool.acquire() as conn:
            tenant = await tenants_repo.tenant_by_slug(conn, slug)
        if tenant is None:
            return None
        async with tenant_transaction(self.pool, tenant.id) as conn:
            categories = await tenants_repo.list_categories(conn, tenant.id)
            place_codes = await places_repo.place_codes(conn, tenant.id)
            own = await tenants_repo.rate_limits(conn, tenant.id)
        codes: dict[str, str] = {}
        for c in categories:
            codes[c.code] = c.code
            codes[c.service_code] = c.code
        return TenantContext(
            tenant.id,
            tenant.slug,
            tenant.name,
            tenant.timezone,
            codes,
            place_codes,
            self.limits_of(own),
        )

    def limits_of(self, own: asyncpg.Record | None) -> RateLimits:
        """A tenant's limits: its own where it set them, the service's elsewhere."""
        if own is None:
            return self.limits
        d = self.limits
        return RateLimits(
            d.key_per_second if own["key_per_second"] is None else own["key_per_second"],
            d.key_burst if own["key_burst"] is None else own["key_burst"],
            d.public_per_second if own["public_per_second"] is None else own["public_per_second"],
            d.public_burst if own["public_burst"] is None else own["public_burst"],
        )

    async def require(self, request: Request, slug: str, scope: str) -> Principal:
        """Authenticate the request for `slug` with at least `scope`."""
        header = request.headers.get("authorization", "")
        kind, _, key = header.partition(" ")
        if kind.lower() != "bearer" or not key.strip():
            raise Unauthenticated("missing bearer API key", field="authorization")
        key_hash = tenants_repo.hash_key(key.strip())
        cached, found = self._keys.get(key_hash)
        if not cached:
            async with self.pool.acquire() as conn:
                found = await tenants_repo.authenticate(conn, key_hash)
            self._keys.put(key_hash, found)
        if found is None or (
            found.expires_at is not None and found.expires_at <= dt.datetime.now(dt.UTC)
        ):
            raise Unauthenticated("unknown, revoked or expired API key", field="authorization")
        tenant = await self.tenant(slug)
        if tenant.id != found.tenant_id:
            raise NotFound("no such tenant", field="slug")
        if SCOPE_RANK[found.scope] < SCOPE_RANK[scope]:
            raise Forbidden(
                f"this API key's scope is {found.scope}; {scope} is required",
                field="authorization",
            )
        limits = tenant.limits
        wait = self._buckets.take(("key", found.key_id), limits.key_per_second, limits.key_burst)
        if wait:
            raise Throttled(
                "this API key is over its rate limit; retry later",
                retry_after=wait,
                field="authorization",
            )
        stamped = self._stamped.get(found.key_id)
        if stamped is None or time.monotonic() - stamped >= USAGE_STAMP_SECONDS:
            self._used.add(found.key_id)
        return Principal(tenant, found.scope, f"key:{found.prefix}", key_id=found.key_id)

    async def optional(self, request: Request, slug: str, scope: str) -> Principal | None:
        """Like `require` when the request carries a key; None (anonymous, limited per client
        address) when it has none."""
        if not request.headers.get("authorization"):
            await self.public(request, slug)  # an unknown tenant is still 404
            return None
        return await self.require(request, slug, scope)

    def forget_keys(self) -> None:
        """Drop every cached key (one was revoked, expired or re-scoped somewhere)."""
        self._keys.clear()

    async def flush_usage(self) -> None:
        """Write `last_used_at` for the keys used since the last flush (at most once a minute
        per key: the database function skips keys stamped less than a minute ago)."""
        if not self._used:
            return
        used, self._used = self._used, set()
        now = time.monotonic()
        for key_id in used:
            self._stamped[key_id] = now
        if len(self._stamped) > 2 * self._keys.size:  # forget stamps of long-idle keys
            self._stamped = {k: t for k, t in self._stamped.items() if now - t < 60}
        async with self.pool.acquire() as conn:
            await tenants_repo.touch_api_keys(conn, sorted(used))

    def forget_tenant(self, slug: str) -> None:
        """Drop a cached tenant (its taxonomy or limits changed)."""
        self._tenants.pop(slug)

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
        found = await self._load_tenant(tenant.slug)
        self._tenants.put(tenant.slug, found)
        if found is None:
            raise NotFound("no such tenant", field="slug")
        return found
