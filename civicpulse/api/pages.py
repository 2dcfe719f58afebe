"""The web pages for residents, served by the same process: the landing page (the public
tenants), a tenant's home, the report form, the tracking page and a public issue page.

Pages are static HTML shells (civicpulse/api/static/) with their settings in a JSON block;
their data come from the small JSON routes here, which follow the public-view rule
(civicpulse.visibility) and the public rate limits. Nothing needs a build step: the map is
Leaflet, vendored with its hash (ops/vendor.sh).

The report form posts to `POST /t/{slug}/report` with the tenant's web form token (in the
page), a hidden honeypot field, an `Idempotency-Key` and a tracking secret the browser
makes. The report goes through the durable intake like any other; only the secret's sha256
is kept, and the tracking link holding it is how its sender follows it.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import secrets
import uuid
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from civicpulse.api.auth import TenantContext
from civicpulse.api.body import decode, read_json
from civicpulse.api.issues import nearby_issues, public_issue_out
from civicpulse.api.reports import to_new_report
from civicpulse.api.state import AppState
from civicpulse.db import analytics as analytics_repo
from civicpulse.db import issues as issues_repo
from civicpulse.db import pages as repo
from civicpulse.db import places as places_repo
from civicpulse.db import tenants as tenants_repo
from civicpulse.db.audit import record_audit
from civicpulse.db.pool import tenant_transaction
from civicpulse.domain.reports import PlaceCode, ReportIn, ShortText, Text, Url
from civicpulse.errors import Forbidden, NotFound, ValidationFailed
from civicpulse.ids import uuid7

STATIC = Path(__file__).parent / "static"
_json = msgspec.json.Encoder()


class WebReportIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the report form posts."""

    token: Annotated[str, Meta(min_length=1, max_length=200)]
    text: Text
    lat: Annotated[float, Meta(ge=-90.0, le=90.0)] | None = None
    lon: Annotated[float, Meta(ge=-180.0, le=180.0)] | None = None
    address: ShortText | None = None
    category: Annotated[str, Meta(max_length=64)] | None = None
    media_url: Url | None = None
    # The secret of the tracking link, made by the browser (so a retried post keeps it).
    track: Annotated[str, Meta(min_length=22, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]
    # A registered place (a room, a lift) picked on a facility tenant's form.
    place: PlaceCode | None = None
    # The honeypot: hidden from people, filled in by form-spam robots.
    website: Annotated[str, Meta(max_length=500)] = ""


class WebFormIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The report form's switch: off, the page and its posts are refused; `rotate` gives
    it a new token, so pages loaded before (and robots that read one) can no longer post."""

    enabled: bool = True
    rotate: bool = False


class WebFormOut(msgspec.Struct, frozen=True, kw_only=True):
    enabled: bool


_decode_web_report = msgspec.json.Decoder(WebReportIn)
_decode_web_form = msgspec.json.Decoder(WebFormIn)
_decode_report = msgspec.json.Decoder(ReportIn)


def _config_block(config: dict[str, Any]) -> str:
    """Settings for a page's script, safe inside <script type="application/json">."""
    return json.dumps(config).replace("<", "\\u003c")


def page_with_config(name: str, config: dict[str, Any]) -> HTMLResponse:
    """A static page of api/static with its settings block filled in."""
    text = (STATIC / name).read_text(encoding="utf-8")
    return HTMLResponse(text.replace("{{CONFIG}}", _config_block(config)))


def _shell(title: str, body: str) -> HTMLResponse:
    """A small server-rendered page in the pages' style; `body` is already escaped."""
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        '<link rel="stylesheet" href="/static/pages.css"></head><body>'
        '<a class="skip" href="#main">Skip to the content</a>'
        f'<main id="main">{body}</main></body></html>'
    )


def _settings(state: AppState, tenant: TenantContext) -> dict[str, Any]:
    return {
        "slug": tenant.slug,
        "name": tenant.name,
        "timezone": tenant.timezone,
        "tiles": state.settings.map_tile_url,
        "attribution": state.settings.map_attribution,
    }


async def landing(request: Request) -> Response:
    """The public tenants: pick yours."""
    state: AppState = request.state.app
    async with state.pool.acquire() as conn:
        tenants = await repo.public_tenants(conn)
    items = "".join(
        f'<li><a href="/t/{html.escape(t["slug"])}">{html.escape(t["name"])}</a></li>'
        for t in tenants
    )
    return _shell(
        "CivicPulse",
        "<h1>Report a problem, follow it, see how your city is doing</h1>"
        "<p>Choose your city, campus or building.</p>"
        f'<ul class="tenants">{items or "<li>No public places yet.</li>"}</ul>',
    )


async def home(request: Request) -> Response:
    """A tenant's home: report a problem, see the dashboard, or (staff) triage."""
    state: AppState = request.state.app
    tenant = await state.auth.public(request, request.path_params["slug"])
    slug, name = html.escape(tenant.slug), html.escape(tenant.name)
    return _shell(
        tenant.name,
        f"<h1>{name}</h1>"
        '<ul class="actions">'
        f'<li><a class="button" href="/t/{slug}/report">Report a problem</a></li>'
        f'<li><a href="/t/{slug}/dashboard">How {name} is doing (dashboard)</a></li>'
        f'<li><a href="/t/{slug}/staff">Staff: triage</a></li>'
        "</ul>",
    )


async def report_page(request: Request) -> Response:
    """The report form: where (map pin, the browser's location, or an address), what, and
    the nearby issues to follow instead."""
    state: AppState = request.state.app
    tenant = await state.auth.public(request, request.path_params["slug"])
    async with tenant_transaction(state.pool, tenant.id) as conn:
        form = await repo.web_form_token(conn, tenant.id, secrets.token_urlsafe(24))
        categories = await tenants_repo.list_categories(conn, tenant.id)
        center = await repo.map_center(conn, tenant.id)
        registered = await places_repo.list_places(conn, tenant.id)
    if not form.enabled:
        raise NotFound("this tenant takes no reports from its web page")
    return page_with_config(
        "report.html",
        {
            **_settings(state, tenant),
            "token": form.token,
            "categories": [{"code": c.code, "name": c.name} for c in categories],
            "center": center,
            "places": _pickable(registered),
        },
    )


def _point_of(registered: list[Any], code: str) -> tuple[float, float] | None:
    """The point of a registered place, or of its nearest ancestor that has one."""
    by_code = {p.code: p for p in registered}
    node, seen = by_code.get(code), set()
    while node is not None and node.code not in seen:
        if node.lat is not None and node.lon is not None:
            return node.lat, node.lon
        seen.add(node.code)
        node = by_code.get(node.parent) if node.parent else None
    return None


PICKABLE = ("room", "unit", "space", "asset")
MAX_PICKABLE = 2_000


def _pickable(registered: list[Any]) -> list[dict[str, str]]:
    """A facility's rooms, units, spaces and assets as the form lists them: "Hartley Hall,
    Room 214" (their building's name first), in that order."""
    by_code = {p.code: p for p in registered}

    def label(p: Any) -> str:
        names, seen, node = [p.name], {p.code}, p
        while node.parent and node.parent in by_code and node.parent not in seen:
            node = by_code[node.parent]
            seen.add(node.code)
            if node.kind in ("building", "site"):
                names.insert(0, node.name)
                break
        return ", ".join(names)

    out = [{"code": p.code, "name": label(p)} for p in registered if p.kind in PICKABLE]
    return sorted(out, key=lambda p: p["name"])[:MAX_PICKABLE]


async def submit(request: Request) -> Response:
    """A report from the web form: the page's token, the honeypot empty; 202 with the
    tracking link, as the REST intake answers (durable before it answers)."""
    state: AppState = request.state.app
    tenant = await state.auth.public(request, request.path_params["slug"])
    body = await read_json(request, state.settings.max_body_bytes)
    item = decode(_decode_web_report, body)
    async with tenant_transaction(state.pool, tenant.id) as conn:
        form = await repo.web_form(conn, tenant.id)  # only the page makes one
    # As bytes: compare_digest refuses str with non-ASCII characters (a fuzzer's token).
    if (
        form is None
        or not form.enabled
        or not hmac.compare_digest(item.token.encode(), form.token.encode())
    ):
        raise Forbidden("this form is out of date: reload the page", field="token")
    slug = tenant.slug
    if item.website:  # a robot: answered as if taken, kept nowhere
        fake = str(uuid7())
        return _accepted(slug, fake, item.track)
    raw: dict[str, Any] = {"text": item.text, "channel": "web"}
    for name in ("lat", "lon", "address", "category", "place"):
        if getattr(item, name) not in (None, ""):
            raw[name] = getattr(item, name)
    if item.media_url:
        raw["media_urls"] = [item.media_url]
    if item.place and item.lat is None and not item.address:
        # A room picked with no pin: the room's point, or its building's.
        async with tenant_transaction(state.pool, tenant.id) as conn:
            point = _point_of(await places_repo.list_places(conn, tenant.id), item.place)
        if point is not None:
            raw["lat"], raw["lon"] = point
    report = decode(_decode_report, _json.encode(raw))
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 200:
        raise ValidationFailed("Idempotency-Key must be 1-200 characters", field="idempotency-key")
    if report.place is not None:  # places imported a moment ago are known too
        tenant = await state.auth.tenant_knowing_place(tenant, report.place)
    row = to_new_report(
        tenant,
        report,
        None if key is None else f"web:{key}",
        hashlib.sha256(body).digest() if key else None,
    )
    row = msgspec.structs.replace(row, track_hash=_track_hash(item.track))
    (outcome,) = await state.intake.submit([row])
    if outcome.kind == "conflict":
        raise ValidationFailed(
            "this Idempotency-Key was used with a different report", field="idempotency-key"
        )
    return _accepted(slug, outcome.id, item.track)


def _track_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _accepted(slug: str, report_id: str, secret: str) -> Response:
    body = {"id": report_id, "track": f"/t/{slug}/track/{report_id}?k={secret}"}
    return Response(_json.encode(body), status_code=202, media_type="application/json")


async def nearby(request: Request) -> Response:
    """Open issues near a point the public may see: "already reported: follow this"."""
    state: AppState = request.state.app
    tenant = await state.auth.public(request, request.path_params["slug"])
    body = await nearby_issues(request, state, tenant, False, f"/t/{tenant.slug}/issues")
    return Response(_json.encode(body), media_type="application/json")


def _uuid(raw: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no such {field}") from None


async def _tenant_page(request: Request, name: str, **extra: str) -> Response:
    """A page of the tenant with its settings and category names (and `extra`)."""
    state: AppState = request.state.app
    tenant = await state.auth.public(request, request.path_params["slug"])
    async with tenant_transaction(state.pool, tenant.id) as conn:
        categories = await tenants_repo.list_categories(conn, tenant.id)
    names = [{"code": c.code, "name": c.name} for c in categories]
    return page_with_config(name, {**_settings(state, tenant), "categories": names, **extra})


async def track_page(request: Request) -> Response:
    """A report's tracking page; its data come from track_data."""
    return await _tenant_page(request, "track.html", id=request.path_params["report_id"])


async def track_data(request: Request) -> Response:
    """What became of a report, for whoever holds its tracking link: its status, and its
    issue's public facts (status and category only when the public may not see the issue).
    Any other id or secret is 404, as if there were none."""
    state: AppState = request.state.app
    tenant = await state.auth.public(request, request.path_params["slug"])
    report_id = _uuid(request.path_params["report_id"], "report")
    secret = request.query_params.get("k", "")
    async with tenant_transaction(state.pool, tenant.id) as conn:
        row = await repo.tracked_report(conn, tenant.id, report_id)
        view, _ = await analytics_repo.public_view(conn, tenant.id)
    if row is None or row["track_hash"] is None:
        raise NotFound("no such report (or this link is not its own)")
    if not hmac.compare_digest(row["track_hash"], _track_hash(secret)):
        raise NotFound("no such report (or this link is not its own)")
    issue = None
    if row["issue_id"] is not None:
        issue = {
            "id": str(row["issue_id"]),
            "status": row["issue_status"],
            "category": row["issue_category"],
            "report_count": row["report_count"],
            "public": view.shows(row["visibility"], row["issue_category"], row["area"]),
        }
    body = {
        "id": str(row["id"]),
        "status": "grouped" if row["issue_id"] is not None else row["state"],
        "text": row["text"],
        "category": row["category"],
        "submitted_at": row["submitted_at"],
        "issue": issue,
    }
    return Response(_json.encode(body), media_type="application/json")


async def issue_page(request: Request) -> Response:
    """An issue's public page; its data come from issue_data."""
    return await _tenant_page(request, "issue.html", id=request.path_params["issue_id"])


async def issue_data(request: Request) -> Response:
    """An issue's public facts, when the public may see it (else 404)."""
    state: AppState = request.state.app
    tenant = await state.auth.public(request, request.path_params["slug"])
    issue_id = _uuid(request.path_params["issue_id"], "issue")
    async with tenant_transaction(state.pool, tenant.id) as conn:
        row = await issues_repo.get_issue(conn, tenant.id, issue_id)
        view, _ = await analytics_repo.public_view(conn, tenant.id)
    if row is None or not view.shows_row(row):
        raise NotFound("no such issue")
    body = {"view": "public", **public_issue_out(view, row)}
    return Response(_json.encode(body), media_type="application/json")


async def staff_page(request: Request) -> Response:
    """Triage: sign in (a staff account), then the open issues, overdue first, live."""
    return await _tenant_page(request, "staff.html")


async def staff_issue_page(request: Request) -> Response:
    """An issue for staff: its reports, map, log and SLA clocks, and every action on it. The
    shell is public; everything in it comes from the API under the staff session."""
    return await _tenant_page(request, "staff_issue.html", id=request.path_params["issue_id"])


async def review_page(request: Request) -> Response:
    """The review queue: reports the classifier was unsure of; a staff correction of the
    category becomes a label the tenant's model learns from."""
    return await _tenant_page(request, "review.html")


async def put_web_form(request: Request) -> Response:
    """Turn the tenant's report form on or off, or give it a new token (admin)."""
    state: AppState = request.state.app
    principal = await state.auth.require(request, request.path_params["slug"], "admin")
    body = decode(_decode_web_form, await read_json(request, state.settings.max_body_bytes))
    tenant_id = principal.tenant.id
    async with tenant_transaction(state.pool, tenant_id) as conn:
        enabled = await repo.set_web_form(
            conn, tenant_id, body.enabled, body.rotate, secrets.token_urlsafe(24)
        )
        await record_audit(
            conn, tenant_id, principal.actor, "web_form.updated", "", msgspec.to_builtins(body)
        )
    return Response(_json.encode(WebFormOut(enabled=enabled)), media_type="application/json")


routes = [
    Route("/", landing, methods=["GET"]),
    Route("/v1/tenants/{slug}/web-form", put_web_form, methods=["PUT"]),
    Route("/t/{slug}/staff/review", review_page, methods=["GET"]),
    Route("/t/{slug}/staff", staff_page, methods=["GET"]),
    Route("/t/{slug}/staff/issues/{issue_id}", staff_issue_page, methods=["GET"]),
    Route("/t/{slug}", home, methods=["GET"]),
    Route("/t/{slug}/report", report_page, methods=["GET"]),
    Route("/t/{slug}/report", submit, methods=["POST"]),
    Route("/t/{slug}/nearby.json", nearby, methods=["GET"]),
    # The .json routes first: `{id}` alone would take "x.json" too.
    Route("/t/{slug}/track/{report_id}.json", track_data, methods=["GET"]),
    Route("/t/{slug}/track/{report_id}", track_page, methods=["GET"]),
    Route("/t/{slug}/issues/{issue_id}.json", issue_data, methods=["GET"]),
    Route("/t/{slug}/issues/{issue_id}", issue_page, methods=["GET"]),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]
