"""Every route that writes an issue needs the version the client read, checked over the
app's route table: a new write route without the check fails here, not in production."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from civicpulse.app import create_app
from civicpulse.config import Settings
from tests.e2e.test_grouping import grouped, near, submit
from tests.support import TenantKeys, running_server

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# A body each issue write route would accept (what it needs besides the version). A new
# write route must be added here, and then must answer 428 without a version and 412 with
# a stale one.
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/tenants/{slug}/issues/{issue_id}"): {"priority": 2},
    ("POST", "/v1/tenants/{slug}/issues/{issue_id}/transition"): {"to": "in_progress"},
    ("POST", "/v1/tenants/{slug}/issues/{issue_id}/assign"): {"assignee": "maria"},
    ("POST", "/v1/tenants/{slug}/issues/{issue_id}/comments"): {"note": "on it"},
    ("POST", "/v1/tenants/{slug}/issues/{issue_id}/merge"): {"into": "{other}"},
    ("POST", "/v1/tenants/{slug}/issues/{issue_id}/split"): {"report_id": "{report}"},
}


def issue_writes(settings: Settings) -> set[tuple[str, str]]:
    routes = create_app(settings).routes
    return {
        (method, route.path)
        for route in routes
        if isinstance(route, Route) and "{issue_id}" in route.path
        for method in (route.methods or ())
        if method in WRITES
    }


async def test_every_issue_write_needs_the_version_read(
    settings: Settings, tenant_a: TenantKeys
) -> None:
    assert issue_writes(settings) == set(BODIES), "an issue write route is not listed here"
    staff = tenant_a.headers("staff")
    async with running_server(settings) as client:
        one = await submit(client, tenant_a, "Broken sign at the corner", 51.5, -0.12)
        two = await submit(client, tenant_a, "Stop sign knocked over", *near(51.5, -0.12, 400, 0))
        a, b = await grouped(client, tenant_a, [one, two])
        issue, other = a["issue_id"], b["issue_id"]
        path = f"/v1/tenants/{tenant_a.slug}/issues/{issue}"
        before = await client.get(path, headers=staff)
        for (method, template), body in BODIES.items():
            url = template.replace("{slug}", tenant_a.slug).replace("{issue_id}", issue)
            filled = {
                k: v.replace("{other}", other).replace("{report}", one) if isinstance(v, str) else v
                for k, v in body.items()
            }
            r = await client.request(method, url, json=filled, headers=staff)
            assert r.status_code == 428, (method, template, r.text)
            assert r.json()["error"]["field"] == "if-match"
            stale = {**staff, "If-Match": '"999"'}
            r = await client.request(method, url, json=filled, headers=stale)
            assert r.status_code == 412, (method, template, r.text)
        # Nothing was changed by any of them.
        after = await client.get(path, headers=staff)
        assert after.headers["etag"] == before.headers["etag"]
        assert after.json()["report_count"] == before.json()["report_count"]
