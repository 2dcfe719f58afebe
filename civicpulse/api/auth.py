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

People log in instead (civicpulse/api/sessions.py) and send the `civicpulse_session` cookie.
It is looked at only when there is no Authorization header, so key requests (intake) pay
nothing for it. A session is looked up on every request, under the URL's tenant (another
tenant's session matches nothing: 401), never cached, so revoking it (logout, a disabled
user, a password reset) takes effect at once; its role is the scope. A cookie is ambient
(the browser sends it by itself), so a session's writes (any method but GET, HEAD, OPTIONS)
must also carry the session's CSRF token, in X-CSRF-Token or a form's `csrf_token` field:
403 otherwise. A key needs none. A session's requests share the per-key rate limit, one
bucket per user.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
from dataclasses import dataclass, field

import asyncpg
from starlette.requests import Request

from civicpulse import accounts
from civicpulse.api.body import media_type
from civicpulse.api.forms import FORM_MEDIA, read_form
from civicpulse.api.throttle import LRUCache, TokenBuckets
from civicpulse.config import Settings
from civicpulse.db import accounts as accounts_repo
from civicpulse.db import places as places_repo
from civicpulse.db import tenants as tenants_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.errors import Forbidden, NotFound, Throttled, Unauthenticated

SCOPE_RANK = {"submit": 0, "staff": 1, "admin": 2}
USAGE_STAMP_SECONDS = 60.0  # last_used_at is at most this stale
# A session's last_seen_at is at most this stale (or half the idle timeout, if shorter).
SESSION_STAMP_SECONDS = 60.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_TOKEN_LENGTH = 128  # longer cookies are not tokens this service made


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long sessions last, from the settings in force."""

    idle: dt.timedelta
    lifetime: dt.timedelta
    # last_seen_at is rewritten only when older than this.
    stamp_every: dt.timedelta

    @classmethod
    def of(cls, settings: Settings) -> SessionPolicy:
        idle = dt.timedelta(minutes=settings.session_idle_minutes)
        return cls(
            idle=idle,
            lifetime=dt.timedelta(hours=settings.session_max_hours),
            stamp_every=min(dt.timedelta(seconds=SESSION_STAMP_SECONDS), idle / 2),
        )


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
    # When the credential stops working by itself (a key's expiry, a session's end).
    expires_at: dt.datetime | None = None
    # The session a person's request came with (None for a key).
    session: accounts_repo.Session | None = None

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
        tenant_ttl: float | None = None,
    ) -> None:
        self.pool = pool
        self.ttl = ttl
        self.limits = limits or RateLimits()
        # Tenants change rarely and cost four queries to load: kept longer than keys.
        self._tenants: LRUCache[TenantContext | None] = LRUCache(
            cache_size, ttl if tenant_ttl is None else tenant_ttl
        )
        self._keys: LRUCache[tenants_repo.KeyIdentity | None] = LRUCache(cache_size, ttl)
        self._generation = 0  # bumped by forget_credentials
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

    def throttle_login(self, request: Request, tenant: TenantContext, per_minute: float) -> None:
        """Count a login attempt against the client address's budget for this tenant;
        Throttled (429) when it is spent."""
        address = request.client.host if request.client else ""
        wait = self._buckets.take(("login", tenant.id, address), per_minute / 60, per_minute)
        if wait:
            raise Throttled(
                "too many logins from this address; retry later",
                retry_after=wait,
                field="client",
            )

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
        """Authenticate the request for `slug` with at least `scope`: by its bearer key, or
        without one by its session cookie."""
        header = request.headers.get("authorization")
        if not header:
            token = request.cookies.get(accounts.SESSION_COOKIE)
            if token:
                return await self.session(request, slug, scope, token)
            raise Unauthenticated(
                "missing bearer API key (or session cookie)", field="authorization"
            )
        kind, _, key = header.partition(" ")
        if kind.lower() != "bearer" or not key.strip():
            raise Unauthenticated("missing bearer API key", field="authorization")
        return await self.key(key.strip(), slug, scope)

    async def key(self, key: str, slug: str, scope: str) -> Principal:
        """Authenticate an API key, however it came (a bearer header; Open311's `api_key`
        field), for `slug` with at least `scope`."""
        key_hash = tenants_repo.hash_key(key)
        cached, found = self._keys.get(key_hash)
        if not cached:
            generation = self._generation
            async with self.pool.acquire() as conn:
                found = await tenants_repo.authenticate(conn, key_hash)
            # A revocation announced while this lookup ran may not be in what it read.
            if generation == self._generation:
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
        self._throttle(tenant, ("key", found.key_id), "this API key", "authorization")
        stamped = self._stamped.get(found.key_id)
        if stamped is None or time.monotonic() - stamped >= USAGE_STAMP_SECONDS:
            self._used.add(found.key_id)
        return Principal(
            tenant,
            found.scope,
            f"key:{found.prefix}",
            key_id=found.key_id,
            expires_at=found.expires_at,
        )

    def _throttle(
        self, tenant: TenantContext, bucket: tuple[str, int], who: str, field: str
    ) -> None:
        """The tenant's per-credential rate limit: one bucket per key or user."""
        limits = tenant.limits
        wait = self._buckets.take(bucket, limits.key_per_second, limits.key_burst)
        if wait:
            raise Throttled(
                f"{who} is over its rate limit; retry later", retry_after=wait, field=field
            )

    async def session(self, request: Request, slug: str, scope: str, token: str) -> Principal:
        """Authenticate the request for `slug` with at least `scope` by its session token
        (the cookie's value): 401 unless the session is live and its user enabled, 403 for a
        write without the session's CSRF token or a role below `scope`."""
        tenant = await self.tenant(slug)
        found: accounts_repo.Session | None = None
        if len(token) <= MAX_TOKEN_LENGTH:
            settings: Settings = request.state.app.settings
            policy = SessionPolicy.of(settings)
            async with tenant_transaction(self.pool, tenant.id) as conn:
                found = await accounts_repo.session_by_token(
                    conn, tenant.id, accounts.hash_token(token), policy.idle, policy.stamp_every
                )
        if found is None:
            raise Unauthenticated(
                "no session, or it was ended or has expired; log in again", field="session"
            )
        if request.method not in SAFE_METHODS:
            await self._check_csrf(request, found)
        if SCOPE_RANK[found.role] < SCOPE_RANK[scope]:
            raise Forbidden(
                f"this user's role is {found.role}; {scope} is required", field="session"
            )
        self._throttle(tenant, ("user", found.user_id), "this user", "session")
        return Principal(
            tenant,
            found.role,
            f"user:{found.login}",
            user_id=found.user_id,
            session=found,
            expires_at=found.expires_at,
        )

    async def _check_csrf(self, request: Request, session: accounts_repo.Session) -> None:
        sent = request.headers.get(accounts.CSRF_HEADER)
        if sent is None and media_type(request) == FORM_MEDIA:
            settings: Settings = request.state.app.settings
            form = await read_form(request, settings.max_body_bytes)
            sent = form.get(accounts.CSRF_FIELD)
        if not sent or not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
            raise Forbidden(
                "a write with a session needs the session's CSRF token in X-CSRF-Token "
                "(GET .../session gives it)",
                field=accounts.CSRF_HEADER,
            )

    async def optional(self, request: Request, slug: str, scope: str) -> Principal | None:
        """Like `require` when the request carries a key or a live session; None
        (anonymous, limited per client address) when it has neither. A session cookie that
        no longer works counts as none: a stale cookie must not hide the public view."""
        if not request.headers.get("authorization"):
            token = request.cookies.get(accounts.SESSION_COOKIE)
            if token:
                try:
                    return await self.session(request, slug, scope, token)
                except Unauthenticated:
                    pass
            await self.public(request, slug)  # an unknown tenant is still 404
            return None
        return await self.require(request, slug, scope)

    def forget_credentials(self) -> None:
        """Drop every cached credential (a key was revoked, expired or re-scoped, or a user
        disabled, somewhere)."""
        self._generation += 1
        self._keys.clear()

    async def flush_usage(self) -> None:
        """Write `last_used_at` for the keys used since the last flush (at most once a minute
        per key: the database function skips keys stamped less than a minute ago)."""
        if not self._used:
            return
        used, self._used = self._used, set()
        try:
            async with self.pool.acquire() as conn:
                await tenants_repo.touch_api_keys(conn, sorted(used))
        except BaseException:
            self._used |= used  # stamped with the next flush
            raise
        now = time.monotonic()
        for key_id in used:
            self._stamped[key_id] = now
        if len(self._stamped) > 2 * self._keys.size:  # forget stamps of long-idle keys
            self._stamped = {k: t for k, t in self._stamped.items() if now - t < 60}

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
