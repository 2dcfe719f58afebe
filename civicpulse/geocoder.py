"""Coordinates for reports located by address only, from the tenant's geocoder.

A tenant may set a geocoder: a Nominatim-compatible search endpoint (`GET {url}?q=...&
format=jsonv2&limit=1`, answering a list of `{lat, lon, display_name}`). The default is
none: reports located by address only are grouped by their normalised address
(engine.addresses) and never get a point. With one, a background task (`run`) takes each
such tenant's oldest reports without coordinates, asks the geocoder once per normalised
address (answers, found or not, are kept in `geocodes`), and gives the reports their points.
Their issues' centroids, cells and areas follow in the same transaction, so they appear on
maps and in nearby searches, and area rules and SLA policies apply.

Requests are paced (`CIVICPULSE_GEOCODE_MIN_INTERVAL_SECONDS`, 1 s by default: Nominatim's
usage policy) and time out; one process geocodes a tenant at a time. An address the geocoder
does not know is not asked again; a failed request is retried on later rounds, up to
MAX_ATTEMPTS. A report whose address is only a street ("Main St") is never geocoded: the
middle of a street is no place to put a pothole.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import asyncpg
import msgspec
import structlog

from civicpulse import workflow
from civicpulse.db import geocoding as repo
from civicpulse.db import issues as issues_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.engine.grouping import address_region

log = structlog.get_logger(__name__)
ACTOR = "system:geocoder"
MAX_ATTEMPTS = 5
# Nominatim's usage policy asks every client to say who it is (the tenant's email goes as a
# parameter, when it set one).
USER_AGENT = "CivicPulse-geocoder/1"


class Place(msgspec.Struct, frozen=True):
    lat: str | float
    lon: str | float
    display_name: str | None = None


_places = msgspec.json.Decoder(list[Place])


class GeocoderFailed(Exception):
    """The geocoder did not answer usably (network, status, body): try again later."""


@dataclass(frozen=True, slots=True)
class Geocoder:
    url: str
    email: str | None = None
    countrycodes: str | None = None
    suffix: str | None = None

    def params(self, address: str) -> dict[str, str]:
        query = f"{address}, {self.suffix}" if self.suffix else address
        out = {"q": query, "format": "jsonv2", "limit": "1"}
        if self.email:
            out["email"] = self.email
        if self.countrycodes:
            out["countrycodes"] = self.countrycodes
        return out


@dataclass(slots=True)
class Pace:
    """At most one request per `interval` seconds from this process."""

    interval: float
    last: float = field(default=-1e9)

    async def wait(self) -> None:
        delay = self.last + self.interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self.last = time.monotonic()


async def search(
    session: aiohttp.ClientSession, geocoder: Geocoder, address: str, timeout: float
) -> tuple[tuple[float, float], str | None] | None:
    """The first place the geocoder finds for an address, or None when it finds none."""
    try:
        async with session.get(
            geocoder.url,
            params=geocoder.params(address),
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        ) as response:
            if response.status != 200:
                raise GeocoderFailed(f"HTTP {response.status}")
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise GeocoderFailed(repr(exc)) from exc
    try:
        found = _places.decode(body)
    except msgspec.DecodeError as exc:
        raise GeocoderFailed(f"not a list of places: {exc}") from exc
    if not found:
        return None
    try:
        lat, lon = float(found[0].lat), float(found[0].lon)
    except ValueError as exc:
        raise GeocoderFailed(f"not a coordinate: {exc}") from exc
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise GeocoderFailed(f"out of range: {lat}, {lon}")
    return (round(lat, 7), round(lon, 7)), found[0].display_name


async def geocode_tenant(
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    tenant_id: int,
    pace: Pace,
    *,
    batch: int = 20,
    timeout: float = 10.0,
) -> int:
    """One round for one tenant: up to `batch` reports; how many got a point."""
    async with pool.acquire() as lock:
        if not await repo.geocode_lock(lock, tenant_id):
            return 0  # another process is at it
        try:
            return await _round(pool, session, tenant_id, pace, batch, timeout)
        finally:
            await repo.geocode_unlock(lock, tenant_id)


async def _round(
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    tenant_id: int,
    pace: Pace,
    batch: int,
    timeout: float,
) -> int:
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await repo.get_geocoder(conn, tenant_id)
        if row is None:
            return 0
        geocoder = Geocoder(row["url"], row["email"], row["countrycodes"], row["suffix"])
        pending = await repo.geocode_pending(conn, tenant_id, MAX_ATTEMPTS, batch)
        keys = sorted({r["address_key"] for r in pending if r["address_key"]})
        known = await repo.cached_geocodes(conn, tenant_id, keys)
    asked: list[tuple[str, tuple[float, float] | None, str | None]] = []
    failed: set[str] = set()
    for key in keys:
        if key in known:
            continue
        address = next(r["address"] for r in pending if r["address_key"] == key)
        await pace.wait()
        try:
            found = await search(session, geocoder, address, timeout)
        except GeocoderFailed as exc:
            log.warning("geocoder_failed", tenant_id=tenant_id, error=str(exc))
            failed.add(key)
            continue
        point, name = (None, None) if found is None else found
        known[key] = point
        asked.append((key, point, name))
    points: list[tuple[uuid.UUID, float, float]] = []
    given_up: list[uuid.UUID] = []
    retry: list[uuid.UUID] = []
    for r in pending:
        key = r["address_key"]
        point = None if key is None else known.get(key)
        if key in failed:
            retry.append(r["id"])
        elif point is None:
            given_up.append(r["id"])  # too vague, or not found: asking again will not help
        else:
            points.append((r["id"], *point))
    async with tenant_transaction(pool, tenant_id) as conn:
        if asked:
            await repo.store_geocodes(conn, tenant_id, asked)
        # Grouping at these addresses waits (its claims take the same locks).
        await issues_repo.lock_regions(conn, tenant_id, sorted({address_region(k) for k in keys}))
        issues = await repo.set_geocoded(conn, tenant_id, points) if points else set()
        if issues:
            ordered = sorted(issues)
            await issues_repo.refresh_issue_aggregates(conn, tenant_id, ordered)
            await workflow.apply(
                conn,
                tenant_id,
                {str(i): workflow.Change("updated", ACTOR) for i in ordered},
                _now(),
                locate=True,
            )
        if given_up:
            await repo.geocode_missed(conn, tenant_id, given_up, MAX_ATTEMPTS)
        if retry:
            await repo.geocode_missed(conn, tenant_id, retry, 1)
    if points or given_up:
        log.info(
            "geocoded", tenant_id=tenant_id, located=len(points), not_found=len(given_up),
            asked=len(asked), failed=len(retry),
        )  # fmt: skip
    return len(points)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def run(
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    *,
    every: float,
    min_interval: float,
    timeout: float,
) -> None:
    """Geocode every `every` seconds until stop is set."""
    pace = Pace(min_interval)
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            try:
                async with pool.acquire() as conn:
                    waiting = await repo.geocoding_tenants(conn, MAX_ATTEMPTS)
                for tenant_id in waiting:
                    if stop.is_set():
                        break
                    await geocode_tenant(pool, session, tenant_id, pace, timeout=timeout)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("geocoding_round_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
