"""Report wire types: what clients send and what they get back."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

Text = Annotated[str, Meta(min_length=1, max_length=4000)]
Latitude = Annotated[float, Meta(ge=-90.0, le=90.0)]
Longitude = Annotated[float, Meta(ge=-180.0, le=180.0)]
ShortText = Annotated[str, Meta(max_length=500)]
Code = Annotated[str, Meta(min_length=1, max_length=64)]
AwareDatetime = Annotated[dt.datetime, Meta(tz=True)]
Url = Annotated[str, Meta(min_length=1, max_length=2000, pattern=r"^https?://")]
Channel = Literal["api", "web", "mobile", "phone", "email", "sms", "kiosk", "staff", "import"]
PlaceCode = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class Reporter(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: ShortText | None = None
    email: Annotated[str, Meta(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    phone: Annotated[str, Meta(max_length=40, pattern=r"^[0-9+() .-]+$")] | None = None


class ReportIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A report as a client submits it."""

    text: Text
    # Where: lat and lon, or an address alone (grouped by its normalised form, and given
    # coordinates later by the tenant's geocoder when it has one), or both.
    lat: Latitude | None = None
    lon: Longitude | None = None
    address: ShortText | None = None
    category: Code | None = None
    submitted_at: AwareDatetime | None = None
    channel: Channel = "api"
    reporter: Reporter | None = None
    attributes: Annotated[dict[str, Any], Meta(max_length=50)] = {}
    media_urls: Annotated[list[Url], Meta(max_length=10)] = []
    # A place the tenant registered (a room picked in the app, a QR code on the door).
    place: PlaceCode | None = None


class Links(msgspec.Struct, frozen=True, kw_only=True):
    self: str


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: str
    links: Links


class ItemError(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    field: str | None = None


class BatchItemResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    index: int
    status: Literal["accepted", "rejected"]
    id: str | None = None
    error: ItemError | None = None
    links: Links | None = None


class BatchResult(msgspec.Struct, frozen=True, kw_only=True):
    accepted: int
    rejected: int
    results: list[BatchItemResult]


class Classification(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    decided_by: str
    model: str | None = None
    confidence: float | None = None
    prompt_version: str | None = None
    latency_ms: float | None = None
    fallback_reason: str | None = None
    # The most likely categories and their probabilities, best first (grouping looks for
    # issues in these too when the classifier was unsure).
    alternatives: list[tuple[str, float]] | None = None


class Location(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where a report or issue is: the registered place it resolved to (code), a label for
    people, and each level known (registered codes, or what the text said, "~412")."""

    code: str | None = None
    label: str = ""
    building: str | None = None
    floor: str | None = None
    unit: str | None = None
    space: str | None = None
    asset: str | None = None
    requested: str | None = None  # the code the client sent


class ReportOut(msgspec.Struct, frozen=True, kw_only=True):
    """A report as staff and its submitter see it (no contact details)."""

    id: str
    status: str
    text: str
    lat: float | None
    lon: float | None
    address: str | None
    requested_category: str | None
    category: str | None
    subtype: str | None
    severity: int | None
    classification: Classification | None
    summary: str | None
    hazards: list[str]
    language: str | None
    needs_review: bool
    issue_id: str | None
    place: Location | None
    channel: str
    submitted_at: dt.datetime
    received_at: dt.datetime
    processed_at: dt.datetime | None
    attributes: dict[str, Any]
    media_urls: list[str]
    # Why the report was set aside (status 'failed'), or the last error while it is retried.
    failure: str | None
    links: Links


class ReportCorrection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A staff correction of a report's classification."""

    category: Code | None = None
    severity: Annotated[int, Meta(ge=1, le=5)] | None = None
    note: Annotated[str, Meta(max_length=2000)] | None = None


class NewReport(msgspec.Struct, frozen=True, kw_only=True):
    """A validated report on its way to the writer (JSON columns already encoded)."""

    tenant_id: int
    id: str
    text: str
    lat: float | None
    lon: float | None
    address: str | None
    requested_category: str | None
    submitted_at: dt.datetime | None
    channel: str
    reporter: str | None
    attributes: str
    media_urls: str
    idempotency_key: str | None
    body_hash: bytes | None
    place: str | None = None
    # The API key it came with: a `submit` key reads back only its own reports.
    key_id: int | None = None
    address_key: str | None = None  # engine.addresses.key(address)
    # sha256 of the secret in a web form report's tracking link (api/pages.py).
    track_hash: bytes | None = None


class WriteOutcome(msgspec.Struct, frozen=True):
    """What the writer did with one report: created it, or found it under its key."""

    kind: Literal["created", "replayed", "conflict"]
    id: str
    state: str
