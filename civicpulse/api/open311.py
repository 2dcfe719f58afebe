"""Open311 GeoReport v2 under /open311/v2/, in JSON or XML by the path's suffix.

Mapping (docs: README "Open311"):
- `jurisdiction_id` is the tenant's slug (one endpoint serves every tenant, so it is
  required); services are the tenant's active categories (`service_code` as is);
- a service request is an issue. POST makes a report through the same durable, idempotent
  intake as the REST API and answers its `token` (the report id): the request id is not
  known until the report has joined an issue, which `GET /tokens/{token}` then tells;
- status is `open` or `closed` (resolved, closed, rejected and merged issues); a merged
  duplicate says "Duplicate of <id>" in `status_notes`; `expected_datetime` is the SLA
  resolution due time; `agency_responsible` the team's name;
- reads are public and obey the public-view rule (civicpulse.visibility): only issues the
  public may see, without report text, address or media. An `api_key` of staff scope
  reads every issue with its first report's text, address and media.
- errors are the spec's lists of `{code, description}`, with the code as the HTTP status.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from civicpulse.api.auth import Principal, TenantContext
from civicpulse.api.body import decode, media_type
from civicpulse.api.errors import HTTPError
from civicpulse.api.forms import FORM_MEDIA, read_form, read_form_pairs
from civicpulse.api.params import ALL_TIME, parse_time
from civicpulse.api.reports import idempotency_key, to_new_report
from civicpulse.api.state import AppState
from civicpulse.db import analytics as analytics_repo
from civicpulse.db import open311 as repo
from civicpulse.db import reports as reports_repo
from civicpulse.db import tenants as tenants_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.domain.reports import ReportIn
from civicpulse.errors import (
    CivicPulseError,
    Forbidden,
    NotFound,
    Overloaded,
    StorageUnavailable,
    Throttled,
    Unauthenticated,
)
from civicpulse.visibility import STAFF

SPEC = "http://wiki.open311.org/GeoReport_v2"
BASE = "/open311/v2"
MEDIA = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}
WINDOW = dt.timedelta(days=90)  # the spec's default and largest date range
MAX_REQUESTS = 1000
FOREVER = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
CHANGESET = "2026-11-30T00:00:00Z"  # when this mapping last changed
_json = msgspec.json.Encoder()
_decode_report = msgspec.json.Decoder(ReportIn)


class Open311Error(Exception):
    """One or more of the spec's errors; the first one's code is the HTTP status."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


# --- rendering --------------------------------------------------------------------------


def _xml_value(parent: ET.Element, name: str, value: Any) -> None:
    element = ET.SubElement(parent, name)
    if isinstance(value, list):
        singular = name[:-1] if name.endswith("s") else name
        for item in value:
            if isinstance(item, Mapping):
                _xml_object(element, singular, item)
            else:
                _xml_value(element, singular, item)
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            _xml_value(element, key, inner)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = value.isoformat() if isinstance(value, dt.datetime) else str(value)


def _xml_object(parent: ET.Element, name: str, item: Mapping[str, Any]) -> None:
    element = ET.SubElement(parent, name)
    for key, value in item.items():
        _xml_value(element, key, value)


def _render(fmt: str, body: Any, root: str, item: str, status: int = 200) -> Response:
    """A list (or one object) as JSON, or as XML under <root> with one <item> each."""
    if fmt == "json":
        return Response(_json.encode(body), status_code=status, media_type=MEDIA["json"])
    top = ET.Element(root)
    if isinstance(body, list):
        for entry in body:
            _xml_object(top, item, entry)
    else:
        for key, value in body.items():
            _xml_value(top, key, value)
    text = ET.tostring(top, encoding="unicode", xml_declaration=False)
    return Response(
        '<?xml version="1.0" encoding="utf-8"?>' + text,
        status_code=status,
        media_type=MEDIA["xml"],
    )


def _error(fmt: str, code: int, description: str) -> Response:
    return _render(fmt, [{"code": code, "description": description}], "errors", "error", code)


def _handler(endpoint: Any) -> Any:
    """Answer errors as the spec's error lists, in the request's format."""

    async def handle(request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in MEDIA:
            return _error("json", 404, "formats are .json and .xml")
        try:
            response: Response = await endpoint(request, fmt)
            return response
        except Open311Error as exc:
            return _error(fmt, exc.code, exc.description)
        except (Unauthenticated, Forbidden) as exc:
            return _error(fmt, 403, exc.message)
        except NotFound as exc:
            return _error(fmt, 404, exc.message)
        except CivicPulseError as exc:
            status = 503 if isinstance(exc, Overloaded | StorageUnavailable) else 400
            status = 429 if isinstance(exc, Throttled) else status
            status = exc.status if isinstance(exc, HTTPError) else status
            where = f" ({exc.field})" if exc.field else ""
            return _error(fmt, status, exc.message + where)

    handle.__name__ = endpoint.__name__
    handle.__doc__ = endpoint.__doc__
    return handle


# --- parameters -------------------------------------------------------------------------


async def _params(request: Request) -> Mapping[str, str]:
    """The query string, and for a form post its fields too (form wins). An empty value is
    an absent one (the spec)."""
    values = dict(request.query_params)
    if request.method == "POST":
        if media_type(request) != FORM_MEDIA:
            raise Open311Error(400, "POST requests.{fmt} takes a form (" + FORM_MEDIA + ")")
        state: AppState = request.state.app
        values.update(await read_form(request, state.settings.max_body_bytes))
    return {k: v for k, v in values.items() if v != ""}


async def _tenant(request: Request, params: Mapping[str, str]) -> TenantContext:
    slug = params.get("jurisdiction_id")
    if slug is None:
        raise Open311Error(400, "jurisdiction_id is required (a tenant's slug)")
    state: AppState = request.state.app
    try:
        return await state.auth.public(request, slug)
    except NotFound:
        raise Open311Error(404, f"no jurisdiction {slug!r}") from None


async def _caller(request: Request, params: Mapping[str, str], scope: str) -> Principal | None:
    """The api_key's principal (None without one); any bad key is the spec's 403."""
    key = params.get("api_key")
    if key is None:
        return None
    state: AppState = request.state.app
    try:
        return await state.auth.key(key, params["jurisdiction_id"], scope)
    except NotFound:  # a key of another jurisdiction
        raise Open311Error(403, "api_key is not a key of this jurisdiction") from None


def _list(params: Mapping[str, str], name: str) -> list[str] | None:
    raw = params.get(name)
    return None if raw is None else [p.strip() for p in raw.split(",") if p.strip()]


# --- endpoints --------------------------------------------------------------------------


async def discovery(request: Request, fmt: str) -> Response:
    """Where the service is and what it speaks."""
    url = str(request.base_url).rstrip("/") + BASE
    body = {
        "changeset": CHANGESET,
        "contact": "Your city's 311 team",
        "key_service": "Ask the city for a submit key (civicpulse key create --scope submit)",
        "endpoints": [
            {
                "specification": SPEC,
                "url": url,
                "changeset": CHANGESET,
                "type": "production",
                "formats": ["text/xml", "application/json"],
            }
        ],
    }
    return _render(fmt, body, "discovery", "endpoint")


async def services(request: Request, fmt: str) -> Response:
    """The tenant's categories as services."""
    params = await _params(request)
    tenant = await _tenant(request, params)
    state: AppState = request.state.app
    async with tenant_transaction(state.pool, tenant.id) as conn:
        categories = await tenants_repo.list_categories(conn, tenant.id)
    body = [
        {
            "service_code": c.service_code,
            "service_name": c.name,
            "description": c.description,
            "metadata": False,
            "type": "realtime",
            "keywords": ", ".join(c.keywords),
            "group": c.kind,
        }
        for c in categories
    ]
    return _render(fmt, body, "services", "service")


async def service_definition(request: Request, fmt: str) -> Response:
    """A service's attributes: none are asked for (every service has metadata false)."""
    params = await _params(request)
    tenant = await _tenant(request, params)
    code = request.path_params["service_code"]
    if tenant.category_codes.get(code) is None:
        raise Open311Error(404, f"no service {code!r} in this jurisdiction")
    body = {"service_code": code, "attributes": []}
    return _render(fmt, body, "service_definition", "attribute")


def _attributes(form: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """attribute[CODE]=v and attribute[CODE][]=v1&attribute[CODE][]=v2."""
    out: dict[str, Any] = {}
    for name, value in form:
        if not name.startswith("attribute[") or value == "":
            continue
        code, _, rest = name[len("attribute[") :].partition("]")
        if not code:
            continue
        if rest == "[]":
            current = out.setdefault(code, [])
            if isinstance(current, list):
                current.append(value)
        else:
            out[code] = value
    return out


async def post_request(request: Request, fmt: str) -> Response:
    """A new service request: a report through the durable intake; answers its token."""
    state: AppState = request.state.app
    params = await _params(request)
    await _tenant(request, params)
    principal = await _caller(request, params, "submit")
    if principal is None:
        raise Open311Error(403, "api_key is required to post a request")
    tenant = principal.tenant
    code = params.get("service_code")
    if code is None:
        raise Open311Error(400, "service_code is required")
    if tenant.category_codes.get(code) is None:
        raise Open311Error(404, f"no service {code!r} in this jurisdiction")
    if "lat" not in params or "long" not in params:
        raise Open311Error(
            400,
            "a location by lat and long is required (requests located by address_string "
            "or address_id alone are not accepted yet)",
        )
    try:
        lat, lon = float(params["lat"]), float(params["long"])
    except ValueError:
        raise Open311Error(400, "lat and long must be numbers") from None
    form = await read_form_pairs(request, state.settings.max_body_bytes)
    attributes = _attributes(form)
    for name in ("device_id", "account_id"):
        if name in params:
            attributes[name] = params[name]
    name = " ".join(p for p in (params.get("first_name"), params.get("last_name")) if p)
    reporter = {
        k: v
        for k, v in (("name", name), ("email", params.get("email")), ("phone", params.get("phone")))
        if v
    }
    text = params.get("description")
    if text is None:  # the spec makes it optional; a report needs words: the service's name
        async with tenant_transaction(state.pool, tenant.id) as conn:
            categories = await tenants_repo.list_categories(conn, tenant.id)
        text = next((c.name for c in categories if c.service_code == code), code)
    raw: dict[str, Any] = {
        "text": text,
        "lat": lat,
        "lon": lon,
        "category": code,
        "channel": "api",
        "attributes": attributes,
    }
    if params.get("address_string"):
        raw["address"] = params["address_string"]
    if reporter:
        raw["reporter"] = reporter
    if params.get("media_url"):
        raw["media_urls"] = [params["media_url"]]
    body_bytes = _json.encode(raw)
    report = decode(_decode_report, body_bytes)
    key = idempotency_key(request, principal)
    row = to_new_report(
        tenant,
        report,
        key,
        hashlib.sha256(body_bytes).digest() if key else None,
        principal.key_id,
    )
    (outcome,) = await state.intake.submit([row])
    if outcome.kind == "conflict":
        raise Open311Error(409, "this Idempotency-Key was used with a different request")
    body = [{"token": outcome.id, "service_notice": "", "account_id": params.get("account_id")}]
    return _render(fmt, body, "service_requests", "request", 201)


def _status(issue_status: str) -> str:
    return "closed" if issue_status in CLOSED else "open"


CLOSED = frozenset({"resolved", "closed", "rejected", "duplicate"})


def _request_out(row: Any, staff: bool) -> dict[str, Any]:
    """An issue as a GeoReport service request; report text, address and media for staff
    only (the public-view rule)."""
    media = msgspec.json.decode(row["media_urls"]) if row["media_urls"] else []
    return {
        "service_request_id": str(row["id"]),
        "status": _status(row["status"]),
        "status_notes": None
        if row["duplicate_of"] is None
        else f"Duplicate of {row['duplicate_of']}",
        "service_name": row["service_name"],
        "service_code": row["service_code"],
        "description": row["representative_text"] if staff else None,
        "agency_responsible": row["agency"],
        "service_notice": None,
        "requested_datetime": row["opened_at"],
        "updated_datetime": row["updated_at"],
        "expected_datetime": row["resolution_due_at"],
        "address": row["address"] if staff else None,
        "address_id": None,
        "zipcode": None,
        "lat": row["lat"],
        "long": row["lon"],
        "media_url": media[0] if staff and media else None,
    }


def _time(params: Mapping[str, str], name: str) -> dt.datetime | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return parse_time(raw, name)
    except CivicPulseError:
        raise Open311Error(400, f"{name} must be a W3C (ISO 8601) date or time") from None


def _page(params: Mapping[str, str]) -> tuple[int, int]:
    """(page_size, offset) from the page and page_size extensions."""
    try:
        size = int(params.get("page_size", MAX_REQUESTS))
        page = int(params.get("page", 1))
    except ValueError:
        raise Open311Error(400, "page and page_size must be whole numbers") from None
    if not 1 <= size <= MAX_REQUESTS or not 1 <= page <= 1_000_000:
        raise Open311Error(400, f"page_size is 1-{MAX_REQUESTS}, page at least 1")
    return size, (page - 1) * size


async def _read(
    request: Request, params: Mapping[str, str], ids: list[uuid.UUID] | None
) -> tuple[list[Any], bool]:
    tenant = await _tenant(request, params)
    staff = await _caller(request, params, "submit")
    state: AppState = request.state.app
    now = dt.datetime.now(dt.UTC)
    end = _time(params, "end_date") or now + dt.timedelta(seconds=1)
    start = _time(params, "start_date") or end - WINDOW
    if ids is None:
        if end <= start:
            raise Open311Error(400, "end_date must be after start_date")
        if end - start > WINDOW:
            raise Open311Error(400, "start_date and end_date may be at most 90 days apart")
    codes = _list(params, "service_code")
    categories = None
    if codes is not None and ids is None:
        categories = [tenant.category_codes.get(c, "") for c in codes]
    statuses = _list(params, "status")
    if statuses is not None and not set(statuses) <= {"open", "closed"}:
        raise Open311Error(400, "status is open, closed, or both")
    size, offset = _page(params)
    is_staff = staff is not None and staff.staff
    async with tenant_transaction(state.pool, tenant.id) as conn:
        view = STAFF if is_staff else (await analytics_repo.public_view(conn, tenant.id))[0]
        rows = await repo.open311_requests(
            conn, tenant.id, start, end, ids, categories, statuses, view, size, offset
        )
    return rows, is_staff


def _ids(raw: str) -> list[uuid.UUID]:
    out = []
    for part in raw.split(","):
        try:
            out.append(uuid.UUID(part.strip()))
        except ValueError:
            continue  # names nothing: no request has it
    return out


async def get_requests(request: Request, fmt: str) -> Response:
    """Requests by id, or opened in a period (default: the last 90 days, at most 1,000)."""
    params = await _params(request)
    named = params.get("service_request_id")
    rows, staff = await _read(request, params, None if named is None else _ids(named))
    body = [_request_out(r, staff) for r in rows]
    return _render(fmt, body, "service_requests", "request")


async def get_request(request: Request, fmt: str) -> Response:
    """One request, as a list of one."""
    params = await _params(request)
    rows, staff = await _read(request, params, _ids(request.path_params["service_request_id"]))
    if not rows:
        raise Open311Error(404, "no such service request")
    return _render(fmt, [_request_out(rows[0], staff)], "service_requests", "request")


async def get_token(request: Request, fmt: str) -> Response:
    """What a token became: its request's id once the report has joined an issue that the
    caller may read (the public view, unless the api_key sent the report or is staff's)."""
    params = await _params(request)
    tenant = await _tenant(request, params)
    caller = await _caller(request, params, "submit")
    state: AppState = request.state.app
    tokens = _ids(request.path_params["token"])
    row = None
    if len(tokens) == 1:
        async with tenant_transaction(state.pool, tenant.id) as conn:
            row = await repo.open311_token(conn, tenant.id, tokens[0])
            if row is not None and row["issue_id"] is not None:
                own = caller is not None and (
                    caller.staff
                    or row["key_id"]
                    in await reports_repo.own_report_keys(conn, tenant.id, caller.key_id)
                )
                if not own:
                    view, _ = await analytics_repo.public_view(conn, tenant.id)
                    shown = await repo.open311_requests(
                        conn, tenant.id, ALL_TIME, FOREVER, [row["issue_id"]], None, None,
                        view, 1, 0,
                    )  # fmt: skip
                    if not shown:
                        row = None  # nothing the caller may know of, not even that it exists
    if row is None:
        raise Open311Error(404, "no such token (or not yours to read)")
    item: dict[str, Any] = {"token": str(row["id"])}
    if row["issue_id"] is not None:
        item = {"service_request_id": str(row["issue_id"]), **item}
    return _render(fmt, [item], "service_requests", "request")


routes = [
    Route(f"{BASE}/discovery.{{fmt}}", _handler(discovery), methods=["GET"]),
    Route(f"{BASE}/services.{{fmt}}", _handler(services), methods=["GET"]),
    Route(
        f"{BASE}/services/{{service_code}}.{{fmt}}",
        _handler(service_definition),
        methods=["GET"],
    ),
    Route(f"{BASE}/requests.{{fmt}}", _handler(get_requests), methods=["GET"]),
    Route(f"{BASE}/requests.{{fmt}}", _handler(post_request), methods=["POST"]),
    Route(
        f"{BASE}/requests/{{service_request_id}}.{{fmt}}",
        _handler(get_request),
        methods=["GET"],
    ),
    Route(f"{BASE}/tokens/{{token}}.{{fmt}}", _handler(get_token), methods=["GET"]),
]
