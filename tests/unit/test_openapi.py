"""The OpenAPI document against the app's routes, the OpenAPI 3.1 schema, and the docs page."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from civicpulse.api import apidocs, open311, openapi
from civicpulse.api.direct import DirectRoutes
from civicpulse.app import create_app
from civicpulse.config import Secret, Settings

SETTINGS = Settings(database_url=Secret("postgresql://nobody@127.0.0.1:1/unused"))


@pytest.fixture(scope="module")
def app() -> Starlette:
    return create_app(SETTINGS)  # nothing connects before the lifespan starts


def served_routes(app: Starlette) -> set[tuple[str, str]]:
    """(method, path) of every route the app answers, the direct (hot) ones included;
    HEAD goes with GET."""

    def walk(routes: list[BaseRoute], prefix: str) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for route in routes:
            if isinstance(route, Mount):
                found |= walk(route.routes, prefix + route.path)
            elif isinstance(route, Route):
                found |= {(m, prefix + route.path) for m in route.methods or () if m != "HEAD"}
            else:
                raise AssertionError(f"a route of a kind the contract does not know: {route}")
        return found

    routes = walk(app.routes, "")
    for middleware in app.user_middleware:
        if middleware.cls is DirectRoutes:
            routes |= walk(list(middleware.kwargs["routes"]), "")
    # Open311 GeoReport v2 has a contract of its own (tests/e2e/test_open311.py).
    return {(m, p) for m, p in routes if not p.startswith(open311.BASE)}


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, methods in doc["paths"].items() for m in methods}


def test_every_route_is_documented_with_its_methods(app: Starlette) -> None:
    doc = openapi.document(app.routes, SETTINGS)
    routes = served_routes(app)
    assert routes - documented(doc) == set(), "routes missing from the OpenAPI document"
    assert documented(doc) - routes == set(), "documented operations that no route serves"


def test_a_route_without_an_entry_is_caught(app: Starlette) -> None:
    async def endpoint(request: Any) -> Response:
        return Response()

    extra = Route("/v1/tenants/{slug}/undocumented", endpoint, methods=["GET", "POST"])
    doc = openapi.document([*app.routes, extra], SETTINGS)
    routes = served_routes(app) | {("GET", extra.path), ("POST", extra.path)}
    assert routes - documented(doc) == {("GET", extra.path), ("POST", extra.path)}


def test_every_entry_names_a_route(app: Starlette) -> None:
    assert set(openapi.OPERATIONS) - served_routes(app) == set()


def test_document_is_valid_openapi_3_1(app: Starlette) -> None:
    doc = openapi.document(app.routes, SETTINGS)
    assert doc["openapi"].startswith("3.1.")
    validate(doc)
    # JSON as served: every value encodes, and the build is deterministic.
    encoded = msgspec.json.encode(doc)
    assert encoded == msgspec.json.encode(openapi.document(app.routes, SETTINGS))


def test_operations_state_their_security_and_errors(app: Starlette) -> None:
    doc = openapi.document(app.routes, SETTINGS)
    ids = [op["operationId"] for methods in doc["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids))
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            responses = op["responses"]
            assert any(s.startswith("2") for s in responses), (method, path)
            if op["security"]:
                assert {"401", "429"} <= set(responses), (method, path)
            if "{slug}" in path:
                assert responses["404"]["content"]["application/json"]["schema"] == envelope
            if "requestBody" in op:
                assert {"400", "413", "415", "422"} <= set(responses), (method, path)
            for p in op.get("parameters", ()):
                if p["in"] == "path":
                    assert p["required"] and f"{{{p['name']}}}" in path


def test_scopes_follow_the_handlers(app: Starlette) -> None:
    doc = openapi.document(app.routes, SETTINGS)
    paths = doc["paths"]
    assert paths["/healthz"]["get"]["security"] == []
    # A person's session works wherever a key of its role does.
    session = {"sessionCookie": []}
    assert paths["/v1/tenants/{slug}/reports"]["post"]["security"] == [
        {"bearerAuth": ["submit"]},
        session,
    ]
    assert paths["/v1/tenants/{slug}/reports"]["get"]["security"] == [
        {"bearerAuth": ["staff"]},
        session,
    ]
    assert paths["/v1/tenants/{slug}/rules"]["put"]["security"] == [
        {"bearerAuth": ["admin"]},
        session,
    ]
    assert paths["/v1/tenants/{slug}/session"]["delete"]["security"] == [session]
    assert paths["/v1/tenants/{slug}/dashboard/data"]["get"]["security"] == [
        {},
        {"bearerAuth": ["staff"]},
        session,
    ]
    stream = paths["/v1/tenants/{slug}/stream"]["get"]["responses"]["200"]["content"]
    assert set(stream) == {"text/event-stream"}


def test_docs_page_shows_every_operation_and_schema_and_loads_nothing(app: Starlette) -> None:
    doc = openapi.document(app.routes, SETTINGS)
    page = apidocs.render(doc)
    for methods in doc["paths"].values():
        for op in methods.values():
            assert f"id={op['operationId']}>" in page
    for name in doc["components"]["schemas"]:
        assert f"id=schema-{name}>" in page
    assert "<script" not in page
    assert re.search(r"""(src|href)=["']?(https?:)?//""", page) is None
    # Every internal link lands on an anchor of the page.
    anchors = set(re.findall(r"\bid=([\w-]+)", page))
    assert set(re.findall(r"href=#([\w-]+)", page)) <= anchors
