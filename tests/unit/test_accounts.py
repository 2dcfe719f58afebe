"""Passwords, logins and tokens (civicpulse/accounts.py), without a database."""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time

import pytest
from argon2 import PasswordHasher

from civicpulse import accounts
from civicpulse.errors import Overloaded, ValidationFailed

PASSWORD = "correct horse battery staple"


def test_hash_and_verify() -> None:
    stored = accounts.hash_password(PASSWORD)
    assert stored.startswith("$argon2id$")  # Argon2id, as schema 0013's CHECK requires
    assert PASSWORD not in stored
    assert accounts.hash_password(PASSWORD) != stored  # salted
    assert accounts.verify_password(stored, PASSWORD)
    assert not accounts.verify_password(stored, PASSWORD + " ")
    assert not accounts.verify_password(stored, "")
    assert not accounts.verify_password("not a hash", PASSWORD)
    assert not accounts.needs_rehash(stored)


def test_a_hash_made_with_other_parameters_needs_a_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    assert accounts.verify_password(weak, PASSWORD)  # still logs in...
    assert accounts.needs_rehash(weak)  # ...and is then rehashed
    assert accounts.needs_rehash("not a hash")


def test_the_dummy_hash_costs_what_a_real_one_does() -> None:
    # Same parameters as new hashes: verifying against it takes as long.
    assert not accounts.needs_rehash(accounts.DUMMY_HASH)
    real = accounts.hash_password(PASSWORD)

    def timed(stored: str | None) -> float:
        started = time.perf_counter()
        accounts._verify_or_dummy(stored, "not the password")
        return time.perf_counter() - started

    known = statistics.median(timed(real) for _ in range(3))
    unknown = statistics.median(timed(None) for _ in range(3))
    assert 0.5 < unknown / known < 2, (known, unknown)
    assert accounts._verify_or_dummy(None, "anything") is False


@pytest.mark.parametrize(
    ("password", "login", "ok"),
    [
        ("x" * 11, "", False),
        ("x" * 12, "", True),
        ("x" * 1024, "", True),
        ("x" * 1025, "", False),
        ("", "", False),
        ("Ana@Example.org", "ana@example.org", False),  # the login itself
        ("ana@example.org!", "ana@example.org", True),
    ],
)
def test_password_rules(password: str, login: str, ok: bool) -> None:
    if ok:
        accounts.check_password(password, login)
    else:
        with pytest.raises(ValidationFailed) as caught:
            accounts.check_password(password, login)
        assert caught.value.field == "password"


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (" Ana@Example.ORG ", "ana@example.org"),
        ("o'brien", "o'brien"),
        ("jo.smith+ops@city.example", "jo.smith+ops@city.example"),
        ("two words", None),
        ("", None),
        ("-dash-first", None),
        ("zoë", None),  # ASCII only: the same rule in Python and in the table's CHECK
        ("a" * 254, "a" * 254),
        ("a" * 255, None),
    ],
)
def test_logins(raw: str, stored: str | None) -> None:
    assert accounts.normalize_login(raw) == stored
    if stored is None:
        with pytest.raises(ValidationFailed) as caught:
            accounts.check_login(raw)
        assert caught.value.field == "login"
    else:
        assert accounts.check_login(raw) == stored


def test_tokens() -> None:
    tokens = {accounts.new_session_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) >= 43 for t in tokens)
    token = next(iter(tokens))
    assert len(accounts.hash_token(token)) == 32
    assert accounts.hash_token(token) == accounts.hash_token(token)
    assert accounts.new_csrf_token() != accounts.new_csrf_token()


async def test_hashing_runs_off_the_event_loop() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        stored = await accounts.hash_in_thread(PASSWORD)
        assert await accounts.verify_in_thread(stored, PASSWORD)
        assert not await accounts.verify_in_thread(None, PASSWORD)
    finally:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
    # Three Argon2 runs of tens of milliseconds each: the loop kept ticking meanwhile.
    assert ticks >= 5


def test_retry_after() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert accounts.retry_after(now + dt.timedelta(seconds=10.2), now) == 11
    assert accounts.retry_after(now, now) == 1


async def test_password_work_is_bounded() -> None:
    work = accounts.PasswordWork(concurrency=1, waiting=1)
    stored = accounts.hash_password("correct horse battery")
    # One hashing, one waiting; a third is refused at once rather than queued.
    first = asyncio.ensure_future(work.verify(stored, "correct horse battery"))
    second = asyncio.ensure_future(work.verify(stored, "wrong"))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await work.verify(stored, "correct horse battery")
    assert await first is True and await second is False
    assert await work.verify(stored, "correct horse battery") is True  # room again
