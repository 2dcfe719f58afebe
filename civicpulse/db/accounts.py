"""Staff accounts and sessions repository. Function names equal their query names;
`change_user` composes them with the audit entries of an account change.

Every function takes the tenant explicitly and runs inside the caller's tenant transaction
(the service's pool under row-level security, or the owner's connection in the CLI). Only
`user_by_login` returns a password hash, and only to the login check.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from civicpulse.db.audit import record_audit
from civicpulse.db.queries import q
from civicpulse.errors import Conflict


@dataclass(frozen=True, slots=True)
class User:
    """A staff account as listings show it (never its hash)."""

    id: int
    login: str
    display_name: str
    role: str
    created_at: dt.datetime
    password_changed_at: dt.datetime
    disabled_at: dt.datetime | None
    failed_logins: int
    locked_until: dt.datetime | None
    last_login_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class LoginCandidate:
    """The user a login names, with the hash to check the password against."""

    id: int
    login: str
    display_name: str
    role: str
    password_hash: str
    disabled_at: dt.datetime | None
    locked_until: dt.datetime | None


@dataclass(frozen=True, slots=True)
class LoginFailure:
    failed_logins: int
    locked_until: dt.datetime | None
    # True for the failure that set the lock.
    locked: bool


@dataclass(frozen=True, slots=True)
class Session:
    """A live session and its user, as one request sees it."""

    id: int
    user_id: int
    csrf_token: str
    expires_at: dt.datetime
    login: str
    display_name: str
    role: str


def _user(row: Any) -> User:
    return User(**dict(row))


async def create_user(
    conn: asyncpg.Connection,
    tenant_id: int,
    login: str,
    display_name: str,
    role: str,
    password_hash: str,
) -> User:
    """A new user; Conflict naming `login` when the tenant already has it."""
    try:
        row = await conn.fetchrow(
            q("create_user"), tenant_id, login, display_name, role, password_hash
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"a user with login {login!r} already exists", field="login") from exc
    return _user(row)


async def list_users(conn: asyncpg.Connection, tenant_id: int) -> list[User]:
    return [_user(r) for r in await conn.fetch(q("list_users"), tenant_id)]


async def user_by_login(
    conn: asyncpg.Connection, tenant_id: int, login: str
) -> LoginCandidate | None:
    row = await conn.fetchrow(q("user_by_login"), tenant_id, login)
    return None if row is None else LoginCandidate(**dict(row))


async def get_user(conn: asyncpg.Connection, tenant_id: int, user_id: int) -> User | None:
    row = await conn.fetchrow(q("get_user"), tenant_id, user_id)
    return None if row is None else _user(row)


async def lock_user(conn: asyncpg.Connection, tenant_id: int, user_id: int) -> User | None:
    """The user, locked for the rest of the transaction; None when there is none."""
    row = await conn.fetchrow(q("lock_user"), tenant_id, user_id)
    return None if row is None else _user(row)


async def lock_user_by_login(conn: asyncpg.Connection, tenant_id: int, login: str) -> User | None:
    row = await conn.fetchrow(q("lock_user_by_login"), tenant_id, login)
    return None if row is None else _user(row)


async def update_user(
    conn: asyncpg.Connection,
    tenant_id: int,
    user_id: int,
    role: str | None,
    display_name: str | None,
) -> User:
    """Change role and display name (None keeps the value); the user must exist."""
    return _user(await conn.fetchrow(q("update_user"), tenant_id, user_id, role, display_name))


async def set_user_disabled(
    conn: asyncpg.Connection, tenant_id: int, user_id: int, disabled: bool
) -> User:
    return _user(await conn.fetchrow(q("set_user_disabled"), tenant_id, user_id, disabled))


async def set_password(
    conn: asyncpg.Connection, tenant_id: int, user_id: int, password_hash: str
) -> User:
    """A new password hash; lifts any lockout."""
    return _user(await conn.fetchrow(q("set_password"), tenant_id, user_id, password_hash))


async def record_login_failure(
    conn: asyncpg.Connection,
    tenant_id: int,
    user_id: int,
    max_failures: int,
    lockout: dt.timedelta,
) -> LoginFailure:
    row = await conn.fetchrow(q("record_login_failure"), tenant_id, user_id, max_failures, lockout)
    return LoginFailure(**dict(row))


async def record_login_success(
    conn: asyncpg.Connection,
    tenant_id: int,
    user_id: int,
    checked_hash: str,
    new_hash: str | None,
) -> asyncpg.Record | None:
    """Clear the failure count and stamp the login; None when the user changed since the
    password was checked (new password, disabled, locked)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        q("record_login_success"), tenant_id, user_id, checked_hash, new_hash
    )
    return row


async def create_session(
    conn: asyncpg.Connection,
    tenant_id: int,
    user_id: int,
    token_hash: bytes,
    csrf_token: str,
    lifetime: dt.timedelta,
) -> asyncpg.Record:
    """A new session; its row's id and expires_at."""
    row: asyncpg.Record = await conn.fetchrow(
        q("create_session"), tenant_id, user_id, token_hash, csrf_token, lifetime
    )
    return row


async def prune_user_sessions(
    conn: asyncpg.Connection, tenant_id: int, user_id: int, idle: dt.timedelta
) -> None:
    await conn.execute(q("prune_user_sessions"), tenant_id, user_id, idle)


async def session_by_token(
    conn: asyncpg.Connection,
    tenant_id: int,
    token_hash: bytes,
    idle: dt.timedelta,
    stamp_every: dt.timedelta,
) -> Session | None:
    """The live session with this token hash (stamping its last_seen_at when older than
    `stamp_every`); None when it is unknown, revoked, expired, idle or its user disabled."""
    row = await conn.fetchrow(q("session_by_token"), tenant_id, token_hash, idle, stamp_every)
    return None if row is None else Session(**dict(row))


async def revoke_session(conn: asyncpg.Connection, tenant_id: int, session_id: int) -> bool:
    """End one session; False when it had already ended."""
    return await conn.fetchval(q("revoke_session"), tenant_id, session_id) is not None


async def revoke_user_sessions(conn: asyncpg.Connection, tenant_id: int, user_id: int) -> int:
    """End every live session of a user; how many there were."""
    return int(await conn.fetchval(q("revoke_user_sessions"), tenant_id, user_id))


async def change_user(
    conn: asyncpg.Connection,
    tenant_id: int,
    user: User,
    actor: str,
    *,
    role: str | None = None,
    display_name: str | None = None,
    disabled: bool | None = None,
    password_hash: str | None = None,
) -> User:
    """Change a user locked by the caller (None: no change), with its audit entries:
    user.updated, user.disabled, user.enabled, user.password_reset. Disabling and a new
    password end the user's sessions in the same transaction. The API and the CLI both
    change users through this."""
    target = f"user:{user.login}"
    before = {"role": user.role, "display_name": user.display_name}
    after = {
        "role": user.role if role is None else role,
        "display_name": user.display_name if display_name is None else display_name,
    }
    if after != before:
        user = await update_user(conn, tenant_id, user.id, role, display_name)
        await record_audit(
            conn, tenant_id, actor, "user.updated", target, {"before": before, "after": after}
        )
    if disabled is not None and disabled != (user.disabled_at is not None):
        user = await set_user_disabled(conn, tenant_id, user.id, disabled)
        if disabled:
            ended = await revoke_user_sessions(conn, tenant_id, user.id)
            await record_audit(
                conn, tenant_id, actor, "user.disabled", target, {"sessions_ended": ended}
            )
        else:
            await record_audit(conn, tenant_id, actor, "user.enabled", target)
    if password_hash is not None:
        user = await set_password(conn, tenant_id, user.id, password_hash)
        ended = await revoke_user_sessions(conn, tenant_id, user.id)
        await record_audit(
            conn, tenant_id, actor, "user.password_reset", target, {"sessions_ended": ended}
        )
    return user
