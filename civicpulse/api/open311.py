"""Open311 GeoReport v2 under /open311/v2/, in JSON or XML by the path's suffix.

Mapping (docs: README "Open311"):
- `jurisdiction_id` is the tenant's slug: required, since one endpoint serves every
  tenant, except on a host that serves one tenant (CIVICPULSE_OPEN311_HOSTS); services are
  the tenant's active categories (`service_code` as is), their attributes the category's;
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
from civicpulse.api.categories import LISTS, ServiceAttribute, stored_attributes
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

    def __init__(self, code: int, description: str, *more: str) -> None:
        super().__init__(description)
        self.code = code
        self.descriptions = (description, *more)


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


def _error(fmt: str, code: int, *descriptions: str) -> Response:
    body = [{"code": code, "description": d} for d in descriptions]
    return _render(fmt, body, "errors", "error", code)


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
            return _error(fmt, exc.code, *exc.descriptions)
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


def _jurisdiction(request: Request, params: Mapping[str, str]) -> str:
    """jurisdiction_id, or the tenant the request's host serves (CIVICPULSE_OPEN311_HOSTS)."""
    slug = params.get("jurisdiction_id")
    if slug is not None:
        return slug
    state: AppState = request.state.app
    host = (request.headers.get("host") or "").rsplit(":", 1)[0].lower()
    slug = state.settings.open311_jurisdictions().get(host)
    if slug is None:
        raise Open311Error(400, "jurisdiction_id is required (a tenant's slug)")
    return slug


async def _tenant(request: Request, params: Mapping[str, str]) -> TenantContext:
    slug = _jurisdiction(request, params)
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
        return await state.auth.key(key, _jurisdiction(request, params), scope)
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
            "metadata": bool(stored_attributes(c.attributes)),
            "type": "realtime",
            "keywords": ", ".join(c.keywords),
            "group": c.kind,
        }
        for c in categories
    ]
    return _render(fmt, body, "services", "service")


async def _service(state: AppState, tenant: TenantContext, code: str) -> tenants_repo.Category:
    async with tenant_transaction(state.pool, tenant.id) as conn:
        categories = await tenants_repo.list_categories(conn, tenant.id)
    found = next((c for c in categories if c.service_code == code), None)
    if found is None:
        raise Open311Error(404, f"no service {code!r} in this jurisdiction")
    return found


def _attribute_out(a: ServiceAttribute, order: int) -> dict[str, Any]:
    return {
        "variable": a.variable,
        "code": a.code,
        "datatype": a.datatype,
        "required": a.required,
        "datatype_description": a.datatype_description or None,
        "order": a.order or order,
        "description": a.description,
        "values": [{"key": v.key, "name": v.name} for v in a.values],
    }


async def service_definition(request: Request, fmt: str) -> Response:
    """A service's attributes (the category's), in their order."""
    params = await _params(request)
    tenant = await _tenant(request, params)
    service = await _service(request.state.app, tenant, request.path_params["service_code"])
    attributes = stored_attributes(service.attributes)
    body = {
        "service_code": service.service_code,
        "attributes": sorted(
            (_attribute_out(a, n) for n, a in enumerate(attributes, start=1)),
            key=lambda a: a["order"],
        ),
    }
    return _render(fmt, body, "service_definition", "attribute")


def _answers(form: Sequence[tuple[str, str]]) -> dict[str, Any]:
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


def _checked(attributes: list[ServiceAttribute], given: dict[str, Any]) -> dict[str, Any]:
    """The answers to a service's attributes, checked against their definitions: required
    ones present, numbers and datetimes parsed, list answers among the values."""
    by_code = {a.code: a for a in attributes}
    problems = [
        f"attribute[{code}] is not an attribute of this service"
        for code in given
        if code not in by_code
    ]
    out: dict[str, Any] = {}
    for a in attributes:
        value = given.get(a.code)
        name = f"attribute[{a.code}]"
        if value is None or value == []:
            if a.required and a.variable:
                problems.append(f"{name} is required: {a.description}")
            continue
        values = value if isinstance(value, list) else [value]
        wrong = _wrong_answer(a, name, values)
        if wrong:
            problems.append(wrong)
        out[a.code] = values if a.datatype == "multivaluelist" else values[0]
    if problems:  # all of them at once, as the spec's error lists allow
        raise Open311Error(400, *problems)
    return out


def _wrong_answer(a: ServiceAttribute, name: str, values: list[str]) -> str | None:
    if a.datatype != "multivaluelist" and len(values) > 1:
        return f"{name} takes one value"
    keys = {v.key for v in a.values}
    for v in values:
        if a.datatype in LISTS and v not in keys:
            return f"{name}: {v!r} is not one of its values"
        if a.datatype == "number":
            try:
                float(v)
            except ValueError:
                return f"{name} must be a number"
        if a.datatype == "datetime":
            try:
                parse_time(v, name)
            except CivicPulseError:
                return f"{name} must be a W3C (ISO 8601) date or time"
        if len(v) > 4000:
            return f"{name} is longer than 4000 characters"
    return None


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
    service = await _service(state, tenant, code)
    lat = lon = None
    if "lat" in params or "long" in params:
        if "lat" not in params or "long" not in params:
            raise Open311Error(400, "lat and long come together")
        try:
            lat, lon = float(params["lat"]), float(params["long"])
        except ValueError:
            raise Open311Error(400, "lat and long must be numbers") from None
    elif "address_string" not in params:
        raise Open311Error(
            400,
            "a location is required: lat and long, or address_string"
            + (" (address_id is not known here)" if "address_id" in params else ""),
        )
    form = await read_form_pairs(request, state.settings.max_body_bytes)
    attributes = _checked(stored_attributes(service.attributes), _answers(form))
    for name in ("device_id", "account_id"):
        if name in params:
            attributes[name] = params[name]
    name = " ".join(p for p in (params.get("first_name"), params.get("last_name")) if p)
    reporter = {
        k: v
        for k, v in (("name", name), ("email", params.get("email")), ("phone", params.get("phone")))
        if v
    }
    # The spec makes the description optional; a report needs words: the service's name.
    text = params.get("description") or service.name
    raw: dict[str, Any] = {
        "text": text,
        "category": code,
        "channel": "api",
        "attributes": attributes,
    }
    if lat is not None:
        raw["lat"], raw["lon"] = lat, lon
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
) -> tuple[list[dict[str, Any]], bool]:
    """The requests a GET names, as GeoReport request objects, and whether the caller is
    staff. By ids; else changed in [updated_after, updated_before) when either is given
    (incremental sync, oldest change first); else opened in [start_date, end_date) (at most
    90 days, the last 90 by default; newest first)."""
    tenant = await _tenant(request, params)
    caller = await _caller(request, params, "submit")
    state: AppState = request.state.app
    now = dt.datetime.now(dt.UTC)
    updated = "updated_after" in params or "updated_before" in params
    if updated:
        end = _time(params, "updated_before") or now + dt.timedelta(seconds=1)
        start = _time(params, "updated_after") or ALL_TIME
    else:
        end = _time(params, "end_date") or now + dt.timedelta(seconds=1)
        start = _time(params, "start_date") or end - WINDOW
    if ids is None:
        if end <= start:
            raise Open311Error(400, "the period must end after it starts")
        if not updated and end - start > WINDOW:
            raise Open311Error(400, "start_date and end_date may be at most 90 days apart")
    codes = _list(params, "service_code")
    categories = None
    if codes is not None and ids is None:
        categories = [tenant.category_codes.get(c, "") for c in codes]
    statuses = _list(params, "status")
    if statuses is not None and not set(statuses) <= {"open", "closed"}:
        raise Open311Error(400, "status is open, closed, or both")
    extensions = params.get("extensions", "false").lower()
    if extensions not in ("true", "false"):
        raise Open311Error(400, "extensions is true or false")
    size, offset = _page(params)
    is_staff = caller is not None and caller.staff
    # The public's searches may come from the replica. Staff's, who act on them, do not; nor
    # do lookups by id, which an app makes right after its token gave it the id.
    pool = state.pool if is_staff or ids is not None else state.reads.pool("open311")
    async with tenant_transaction(pool, tenant.id) as conn:
        view = STAFF if is_staff else (await analytics_repo.public_view(conn, tenant.id))[0]
        if updated and ids is None:
            rows = await repo.open311_requests_updated(
                conn, tenant.id, start, end, categories, statuses, view, size, offset
            )
        else:
            rows = await repo.open311_requests(
                conn, tenant.id, start, end, ids, categories, statuses, view, size, offset
            )
        notes: dict[uuid.UUID, list[dict[str, Any]]] = {}
        if extensions == "true" and rows:
            for n in await repo.open311_notes(conn, tenant.id, [r["id"] for r in rows], is_staff):
                notes.setdefault(n["issue_id"], []).append(_note(n, is_staff))
    out = []
    for r in rows:
        item = _request_out(r, is_staff)
        if extensions == "true":
            item["extended_attributes"] = {"civicpulse_status": r["status"]}
            item["notes"] = notes.get(r["id"], [])
        out.append(item)
    return out, is_staff


# mySociety's extended statuses (servicerequestupdates), from the workflow's.
EXTENDED_STATUS = {
    "new": "open",
    "triaged": "investigating",
    "assigned": "action_scheduled",
    "in_progress": "in_progress",
    "waiting": "action_scheduled",
    "reopened": "reopen",
    "resolved": "fixed",
    "closed": "closed",
    "rejected": "no_further_action",
    "duplicate": "duplicate",
}


def _note(row: Any, staff: bool) -> dict[str, Any]:
    """An event as a notes[] entry: a status change, or (staff only) a comment. The public
    never reads a note's words: staff write them for staff."""
    if row["kind"] == "comment":
        return {"datetime": row["created_at"], "summary": row["note"], "type": "comment"}
    words = f"Status changed to {row['to_status'].replace('_', ' ')}"
    if staff and row["note"]:
        words += f": {row['note']}"
    return {"datetime": row["created_at"], "summary": words, "type": "status"}


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
    body, _ = await _read(request, params, None if named is None else _ids(named))
    return _render(fmt, body, "service_requests", "request")


async def get_request(request: Request, fmt: str) -> Response:
    """One request, as a list of one."""
    params = await _params(request)
    body, _ = await _read(request, params, _ids(request.path_params["service_request_id"]))
    if not body:
        raise Open311Error(404, "no such service request")
    return _render(fmt, body[:1], "service_requests", "request")


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


async def service_request_updates(request: Request, fmt: str) -> Response:
    """mySociety's extension: status changes made in [start_date, end_date) (the last 90
    days by default, at most 1,000), with its extended statuses."""
    params = await _params(request)
    tenant = await _tenant(request, params)
    caller = await _caller(request, params, "submit")
    is_staff = caller is not None and caller.staff
    now = dt.datetime.now(dt.UTC)
    end = _time(params, "end_date") or now + dt.timedelta(seconds=1)
    start = _time(params, "start_date") or end - WINDOW
    if end <= start:
        raise Open311Error(400, "end_date must be after start_date")
    state: AppState = request.state.app
    pool = state.pool if is_staff else state.reads.pool("open311")
    async with tenant_transaction(pool, tenant.id) as conn:
        view = STAFF if is_staff else (await analytics_repo.public_view(conn, tenant.id))[0]
        rows = await repo.open311_updates(conn, tenant.id, start, end, view, MAX_REQUESTS)
    body = [
        {
            "update_id": str(r["seq"]),
            "service_request_id": str(r["issue_id"]),
            "status": EXTENDED_STATUS.get(r["to_status"], "open"),
            "updated_datetime": r["created_at"],
            "description": _note(r, is_staff)["summary"],
            "media_url": None,
        }
        for r in rows
    ]
    return _render(fmt, body, "service_request_updates", "request_update")


routes = [
    Route(
        f"{BASE}/servicerequestupdates.{{fmt}}",
        _handler(service_request_updates),
        methods=["GET"],
    ),
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
