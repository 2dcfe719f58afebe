"""Staff logins and sessions, and the admin's management of staff accounts.

Routes (under /v1/tenants/{slug}): POST /session logs a person in (JSON or an HTML form) and
sets the `civicpulse_session` cookie (HttpOnly, SameSite=Lax, Path=/, Secure over https);
GET /session says who is logged in and hands back the session's CSRF token; DELETE /session
logs out. GET, POST /users and PATCH /users/{user_id} manage accounts (admin: a key or an
admin's session). api/auth.py authenticates the cookie on every other route.

Design rules. A login answers the same 401, after the same Argon2 verify, whether the login
is unknown, disabled or its password wrong, so neither the body nor the time tells which
logins exist. A locked account (CIVICPULSE_LOGIN_MAX_FAILURES consecutive failures) answers
429 with Retry-After for CIVICPULSE_LOGIN_LOCKOUT_SECONDS without its password being checked
(so guessing stops paying; the 429 does tell that the login exists, which the lock needs to
say to its owner). Each client address has CIVICPULSE_LOGIN_PER_MINUTE logins a minute per
tenant. Hashing runs on the thread pool, outside any transaction, so no connection or row
lock is held while it runs. Every login, failure, lock and account change is in the audit
log, written in the transaction of the change; disabling a user or setting their password
ends their sessions in that same transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, cast

import msgspec
import structlog
from msgspec import UNSET, Meta, UnsetType
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from civicpulse import accounts
from civicpulse.api.auth import Principal, SessionPolicy
from civicpulse.api.body import decode, media_type, read_json
from civicpulse.api.errors import decode_error
from civicpulse.api.forms import FORM_MEDIA, read_form
from civicpulse.api.state import AppState
from civicpulse.db import accounts as repo
from civicpulse.db.audit import record_audit
from civicpulse.db.pool import tenant_transaction
from civicpulse.errors import Forbidden, NotFound, Throttled, Unauthenticated, ValidationFailed

log = structlog.get_logger(__name__)

Role = Literal["staff", "admin"]
Login = Annotated[str, Meta(min_length=1, max_length=accounts.MAX_LOGIN)]
Password = Annotated[str, Meta(min_length=accounts.MIN_PASSWORD, max_length=accounts.MAX_PASSWORD)]
DisplayName = Annotated[str, Meta(max_length=accounts.MAX_DISPLAY_NAME)]
LOGIN_FAILED = "wrong login or password"
MAX_USER_ID = 2**63 - 1


class LoginIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    login: Login
    # Any length up to the maximum: the rules in force when it was set may have differed.
    password: Annotated[str, Meta(min_length=1, max_length=accounts.MAX_PASSWORD)]


class UserIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # An email address or a name; stored lower-cased.
    login: Login
    password: Password
    display_name: DisplayName = ""
    role: Role = "staff"


class UserPatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    role: Role | UnsetType = UNSET
    display_name: DisplayName | UnsetType = UNSET
    # true ends the user's sessions at once; false lets them log in again.
    disabled: bool | UnsetType = UNSET
    # A new password ends the user's sessions and lifts a lockout.
    password: Password | UnsetType = UNSET


class SessionUser(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    login: str
    display_name: str
    role: Role


class SessionOut(msgspec.Struct, frozen=True, kw_only=True):
    user: SessionUser
    # Send it back in X-CSRF-Token (or a form's csrf_token field) with every write.
    csrf_token: str
    # The absolute end; the session ends earlier after CIVICPULSE_SESSION_IDLE_MINUTES idle.
    expires_at: dt.datetime


class UserOut(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    login: str
    display_name: str
    role: Role
    disabled: bool
    created_at: dt.datetime
    password_changed_at: dt.datetime
    disabled_at: dt.datetime | None
    last_login_at: dt.datetime | None
    # Set while the account is locked after too many failed logins.
    locked_until: dt.datetime | None
    failed_logins: int


class UserList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[UserOut]


_json = msgspec.json.Encoder()
_decode_login = msgspec.json.Decoder(LoginIn)
_decode_user = msgspec.json.Decoder(UserIn)
_decode_patch = msgspec.json.Decoder(UserPatch)


def _respond(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _json.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def _user_out(user: repo.User) -> UserOut:
    return UserOut(
        id=user.id,
        login=user.login,
        display_name=user.display_name,
        role=_role(user.role),
        disabled=user.disabled_at is not None,
        created_at=user.created_at,
        password_changed_at=user.password_changed_at,
        disabled_at=user.disabled_at,
        last_login_at=user.last_login_at,
        locked_until=user.locked_until,
        failed_logins=user.failed_logins,
    )


def _role(role: str) -> Role:
    return cast(Role, role)  # the users table's CHECK keeps it one


def _session_out(user: SessionUser, csrf_token: str, expires_at: dt.datetime) -> SessionOut:
    return SessionOut(user=user, csrf_token=csrf_token, expires_at=expires_at)


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


# --- the session ----------------------------------------------------------------------


async def _login_body(request: Request, limit: int) -> LoginIn:
    if media_type(request) == FORM_MEDIA:
        form = await read_form(request, limit)
        # A form carries whatever else the page put in it (a button, csrf_token): only the
        # two fields are read.
        try:
            return msgspec.convert(
                {k: form[k] for k in ("login", "password") if k in form}, LoginIn
            )
        except msgspec.ValidationError as exc:
            raise decode_error(exc) from None
    return decode(_decode_login, await read_json(request, limit))


async def login(request: Request) -> Response:
    """Log a person in: a session cookie and the session's CSRF token."""
    state: AppState = request.state.app
    settings = state.settings
    _same_origin(request)
    tenant = await state.auth.tenant(request.path_params["slug"])
    state.auth.throttle_login(request, tenant, settings.login_per_minute)
    body = await _login_body(request, settings.max_body_bytes)
    name = accounts.normalize_login(body.login)
    async with tenant_transaction(state.pool, tenant.id) as conn:
        found = None if name is None else await repo.user_by_login(conn, tenant.id, name)
    user = found if found is not None and found.disabled_at is None else None
    address = _address(request)
    now = dt.datetime.now(dt.UTC)
    if user is not None and user.locked_until is not None and user.locked_until > now:
        # Logged, not audited: attempts on a locked account are not bounded by the lock.
        log.warning("login_refused", tenant=tenant.slug, login=user.login, reason="locked",
                    address=address)  # fmt: skip
        raise Throttled(
            "too many failed logins: this account is locked for a while; retry later",
            retry_after=accounts.retry_after(user.locked_until, now),
            field="login",
        )
    # Unknown and disabled logins verify against the dummy hash: the same cost.
    verified = await state.passwords.verify(
        None if user is None else user.password_hash, body.password
    )
    if user is None or not verified:
        async with tenant_transaction(state.pool, tenant.id) as conn:
            await _record_failure(state, conn, tenant.id, found, user, address)
        raise Unauthenticated(LOGIN_FAILED, field="login")

    new_hash = None
    if accounts.needs_rehash(user.password_hash):
        new_hash = await state.passwords.hash(body.password)
    policy = SessionPolicy.of(settings)
    token = accounts.new_session_token()
    csrf_token = accounts.new_csrf_token()
    async with tenant_transaction(state.pool, tenant.id) as conn:
        stamped = await repo.record_login_success(
            conn, tenant.id, user.id, user.password_hash, new_hash
        )
        if stamped is None:
            # Disabled, locked or given a new password while this password was being
            # checked: nothing was written.
            raise Unauthenticated(LOGIN_FAILED, field="login")
        await repo.prune_user_sessions(conn, tenant.id, user.id, policy.idle)
        session = await repo.create_session(
            conn, tenant.id, user.id, accounts.hash_token(token), csrf_token, policy.lifetime
        )
        await record_audit(
            conn,
            tenant.id,
            f"user:{user.login}",
            "user.logged_in",
            f"user:{user.login}",
            {"session_id": session["id"], "address": address, "rehashed": bool(new_hash)},
        )
    out = _session_out(
        SessionUser(
            id=user.id, login=user.login, display_name=user.display_name, role=_role(user.role)
        ),
        csrf_token,
        session["expires_at"],
    )
    response = _respond(200, out, {"Cache-Control": "no-store"})
    response.set_cookie(
        accounts.SESSION_COOKIE,
        token,
        max_age=int(policy.lifetime.total_seconds()),
        path="/",
        secure=_secure(request),
        httponly=True,
        samesite="lax",
    )
    return response


def _same_origin(request: Request) -> None:
    """Refuse a login posted from another site (login CSRF: a page elsewhere logging the
    visitor's browser into an account its author controls). Browsers say where a request
    comes from (Origin, Sec-Fetch-Site); scripts and apps that say nothing are let through."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Forbidden("a login must come from this site's own pages", field="origin")
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host", ""):
        raise Forbidden("a login must come from this site's own pages", field="origin")


async def _record_failure(
    state: AppState,
    conn: Any,
    tenant_id: int,
    found: repo.LoginCandidate | None,
    user: repo.LoginCandidate | None,
    address: str,
) -> None:
    """Count a failed login against its user (locking at the limit) and audit it."""
    settings = state.settings
    if user is not None:
        failure = await repo.record_login_failure(
            conn,
            tenant_id,
            user.id,
            settings.login_max_failures,
            dt.timedelta(seconds=settings.login_lockout_seconds),
        )
        actor = target = f"user:{user.login}"
        data = {"reason": "wrong_password", "address": address, "failures": failure.failed_logins}
        await record_audit(conn, tenant_id, actor, "user.login_failed", target, data)
        if failure.locked:
            await record_audit(
                conn,
                tenant_id,
                actor,
                "user.locked",
                target,
                {"until": failure.locked_until, "failures": failure.failed_logins},
            )
    # Attempts on a disabled or unknown login are logged, not audited: nothing bounds how
    # many anyone may make, and the audit log is never pruned. (The lock bounds the rest.)
    elif found is not None:
        log.warning("login_refused", tenant_id=tenant_id, login=found.login, reason="disabled",
                    address=address)  # fmt: skip
    else:
        # What was typed is not kept: a login field sometimes holds a password.
        log.warning("login_refused", tenant_id=tenant_id, reason="unknown_login", address=address)


async def _session_principal(request: Request) -> tuple[AppState, Principal]:
    """The caller's session (the cookie only: a key has no session)."""
    state: AppState = request.state.app
    slug = request.path_params["slug"]
    token = request.cookies.get(accounts.SESSION_COOKIE)
    if not token:
        await state.auth.tenant(slug)  # an unknown tenant is still 404
        raise Unauthenticated("no session: log in first", field="session")
    return state, await state.auth.session(request, slug, "staff", token)


async def get_session(request: Request) -> Response:
    """Who is logged in, and the session's CSRF token."""
    _, principal = await _session_principal(request)
    session = principal.session
    assert session is not None  # a session's principal carries it
    out = _session_out(
        SessionUser(
            id=session.user_id,
            login=session.login,
            display_name=session.display_name,
            role=_role(session.role),
        ),
        session.csrf_token,
        session.expires_at,
    )
    return _respond(200, out, {"Cache-Control": "no-store"})


async def logout(request: Request) -> Response:
    """End the caller's session and clear its cookie (CSRF token required)."""
    state, principal = await _session_principal(request)
    session = principal.session
    assert session is not None
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        await repo.revoke_session(conn, tenant_id, session.id)
        await record_audit(
            conn,
            tenant_id,
            principal.actor,
            "user.logged_out",
            principal.actor,
            {"session_id": session.id, "address": _address(request)},
        )
    response = Response(status_code=204)
    response.delete_cookie(
        accounts.SESSION_COOKIE, path="/", secure=_secure(request), httponly=True, samesite="lax"
    )
    return response


# --- user management (admin) ------------------------------------------------------------


async def list_users(request: Request) -> Response:
    state: AppState = request.state.app
    principal = await state.auth.require(request, request.path_params["slug"], "admin")
    async with tenant_transaction(state.pool, principal.tenant.id) as conn:
        users = await repo.list_users(conn, principal.tenant.id)
    return _respond(200, UserList(items=[_user_out(u) for u in users]))


async def create_user(request: Request) -> Response:
    state: AppState = request.state.app
    principal = await state.auth.require(request, request.path_params["slug"], "admin")
    body = decode(_decode_user, await read_json(request, state.settings.max_body_bytes))
    login_name = accounts.check_login(body.login)
    accounts.check_password(body.password, login_name)
    password_hash = await state.passwords.hash(body.password)
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        user = await repo.create_user(
            conn, tenant_id, login_name, body.display_name, body.role, password_hash
        )
        await record_audit(
            conn,
            tenant_id,
            principal.actor,
            "user.created",
            f"user:{user.login}",
            {"id": user.id, "role": user.role, "display_name": user.display_name},
        )
    return _respond(201, _user_out(user))


def _user_id(request: Request) -> int:
    raw: str = request.path_params["user_id"]
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= MAX_USER_ID:
        raise NotFound("no such user", field="user_id")
    return int(raw)


async def update_user(request: Request) -> Response:
    """Change a user's role, display name, state or password (admin)."""
    state: AppState = request.state.app
    principal = await state.auth.require(request, request.path_params["slug"], "admin")
    user_id = _user_id(request)
    body = decode(_decode_patch, await read_json(request, state.settings.max_body_bytes))
    if body == UserPatch():
        raise ValidationFailed(
            "name at least one of role, display_name, disabled, password", field="body"
        )
    tenant_id = principal.tenant.id
    new_hash = None
    if not isinstance(body.password, UnsetType):
        async with tenant_transaction(state.pool, tenant_id) as conn:
            current = await repo.get_user(conn, tenant_id, user_id)
        if current is None:
            raise NotFound("no such user", field="user_id")
        accounts.check_password(body.password, current.login)
        # Hashed before the transaction: no row lock is held while it runs.
        new_hash = await state.passwords.hash(body.password)
    async with tenant_transaction(state.pool, tenant_id) as conn:
        user = await repo.lock_user(conn, tenant_id, user_id)
        if user is None:
            raise NotFound("no such user", field="user_id")
        user = await repo.change_user(
            conn,
            tenant_id,
            user,
            principal.actor,
            role=None if isinstance(body.role, UnsetType) else body.role,
            display_name=None if isinstance(body.display_name, UnsetType) else body.display_name,
            disabled=None if isinstance(body.disabled, UnsetType) else body.disabled,
            password_hash=new_hash,
        )
    return _respond(200, _user_out(user))


T = "/v1/tenants/{slug}"
routes = [
    Route(f"{T}/session", login, methods=["POST"]),
    Route(f"{T}/session", get_session, methods=["GET"]),
    Route(f"{T}/session", logout, methods=["DELETE"]),
    Route(f"{T}/users", list_users, methods=["GET"]),
    Route(f"{T}/users", create_user, methods=["POST"]),
    Route(f"{T}/users/{{user_id}}", update_user, methods=["PATCH"]),
]
