"""Staff accounts: logins, passwords (Argon2id), session and CSRF tokens.

Design rules. Hashing and verifying cost tens of milliseconds of CPU each, so the service
runs them on the event loop's default thread pool (`hash_in_thread`, `verify_in_thread`;
argon2-cffi releases the GIL), never on the loop itself. An unknown or disabled login costs
the same verify as a known one (against DUMMY_HASH, made with the same parameters), so the
time a login takes does not tell which logins exist. Session tokens leave the process only
in the cookie; the database keeps their sha256 (`hash_token`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import math
import re
import secrets
from collections.abc import AsyncIterator

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from civicpulse.errors import Overloaded, ValidationFailed

# argon2-cffi's default: RFC 9106's low-memory profile, Argon2id, t=3, m=64 MiB, p=4.
HASHER = PasswordHasher()
# Verified against when a login names no (usable) user. Same parameters as HASHER, so a
# verify costs the same; if HASHER's parameters ever change, _dummy_hash makes a new one.
DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$twrkXcHsv14M/Xpf2FgQSw"
    "$rAXQ8NLSXad9nlE7a+4V6YZf7biOOM5iZsgoml6bFww"
)

ROLES = ("staff", "admin")  # the API-key scopes of the same names
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
MAX_LOGIN = 254  # the longest email address
MAX_DISPLAY_NAME = 200
# A lower-cased email address or name; schema 0013's CHECK on users.login is the same rule.
LOGIN = re.compile(r"[a-z0-9][a-z0-9._%+@'-]{0,253}")

SESSION_COOKIE = "civicpulse_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"  # the form field, for HTML form posts


def normalize_login(raw: str) -> str | None:
    """The stored form of a login (trimmed, lower-cased); None when it cannot be one."""
    login = raw.strip().lower()
    return login if LOGIN.fullmatch(login) else None


def check_login(raw: str) -> str:
    """The stored form of a new login; ValidationFailed naming `login` when it is not one."""
    login = normalize_login(raw)
    if login is None:
        raise ValidationFailed(
            f"a login is 1-{MAX_LOGIN} characters: letters, digits and . _ % + @ ' - "
            "(an email address or a name), starting with a letter or digit",
            field="login",
        )
    return login


def check_password(password: str, login: str = "") -> None:
    """The password rules; ValidationFailed naming `password` when one is broken."""
    if len(password) < MIN_PASSWORD:
        raise ValidationFailed(
            f"a password has at least {MIN_PASSWORD} characters", field="password"
        )
    if len(password) > MAX_PASSWORD:
        raise ValidationFailed(
            f"a password has at most {MAX_PASSWORD} characters", field="password"
        )
    if login and password.strip().lower() == login:
        raise ValidationFailed("the password must not be the login", field="password")


def hash_password(password: str) -> str:
    """The Argon2id hash of a password (CPU-heavy: see hash_in_thread)."""
    return HASHER.hash(password)


def verify_password(stored: str, password: str) -> bool:
    """Whether `password` matches the stored hash (CPU-heavy: see verify_in_thread)."""
    try:
        return HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether the hash was made with other parameters than HASHER's (cheap: parses it)."""
    try:
        return HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(32)) if needs_rehash(DUMMY_HASH) else DUMMY_HASH


def _verify_or_dummy(stored: str | None, password: str) -> bool:
    if stored is None:
        verify_password(_dummy_hash(), password)
        return False
    return verify_password(stored, password)


async def hash_in_thread(password: str) -> str:
    """hash_password on the default thread pool executor."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, hash_password, password)


async def verify_in_thread(stored: str | None, password: str) -> bool:
    """verify_password on the default thread pool executor; with no hash (unknown or
    disabled user) it verifies against the dummy hash, at the same cost, and is False."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _verify_or_dummy, stored, password)


class PasswordWork:
    """Argon2 work in one process, bounded: at most `concurrency` hashes at once (each holds
    64 MiB and a core for ~0.2 s) and `waiting` more queued; beyond that a login is refused
    at once with 503 (Overloaded), so a flood of logins (unknown ones cost as much) cannot
    take the process's memory, its thread pool or every core."""

    def __init__(self, concurrency: int, waiting: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._room = concurrency + waiting
        self._inside = 0

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._inside >= self._room:
            raise Overloaded("too many logins at once; retry in a moment", retry_after=1)
        self._inside += 1
        try:
            async with self._slots:
                yield
        finally:
            self._inside -= 1

    async def hash(self, password: str) -> str:
        async with self._slot():
            return await hash_in_thread(password)

    async def verify(self, stored: str | None, password: str) -> bool:
        async with self._slot():
            return await verify_in_thread(stored, password)


def new_session_token() -> str:
    """A fresh session token (256 random bits), the cookie's value."""
    return secrets.token_urlsafe(32)


def new_csrf_token() -> str:
    """A fresh CSRF token for a session."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    """The stored form of a session token."""
    return hashlib.sha256(token.encode()).digest()


def retry_after(locked_until: dt.datetime, now: dt.datetime) -> int:
    """Whole seconds until a lock ends (at least 1)."""
    return max(1, math.ceil((locked_until - now).total_seconds()))
