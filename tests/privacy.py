"""A tenant with something to hide, for the privacy tests.

Its dashboard is public, showing the category `road_defect` in the area `north` only. It has:

- `shown`: a public road defect in the north, the only issue the public may see;
- `private`: a road defect in the north made private;
- `hidden_category`: a public graffiti issue in the north (graffiti is not public);
- `hidden_area`: a public road defect in the south (south is not public);
- `own`: a private issue whose one report the tenant's resident app (`keys.submit`) sent.

Every other report was sent by another app's key, and every report, title, address and
reporter contact carries a marker (`SECRET...`), so a leak is a marker, or the id of an
issue the viewer may not see, anywhere in a response.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import asyncpg

from civicpulse.db import tenants
from tests.support import TenantKeys

LAT, LON = 34.05, -118.25


@dataclass(frozen=True)
class Secrets:
    issues: dict[str, uuid.UUID]
    reports: dict[str, uuid.UUID]
    other_key_id: int
    spare_key_id: int  # a key no test authenticates with (for the revoke route)
    markers: dict[str, list[str]] = field(default_factory=dict)

    def forbidden(self, viewer: str) -> list[str]:
        """What must never appear in a response to `viewer` ("anonymous", or "submit": the
        resident app, which may see its own report and the issue it joined): every marker
        of another's words, address or contact, and the ids of what the public may not
        see."""
        out = ["SECRETASSIGNEE", "SECRETNAME"]
        for name, issue_id in self.issues.items():
            own = viewer == "submit" and name == "own"
            if not own:
                out += self.markers[name]
                out.append(str(self.reports[name]))
            if not name.startswith("shown") and not own:
                out.append(str(issue_id))
        return out


SPEC = {
    # name: (visibility, category, area, lat offset, resolved, within its SLA)
    "shown": ("public", "road_defect", "north", 0.0, False, None),
    "shown_too": ("public", "road_defect", "north", 0.0002, True, False),
    "private": ("private", "road_defect", "north", 0.0003, True, True),
    "hidden_category": ("public", "graffiti", "north", 0.0006, False, None),
    "hidden_area": ("public", "road_defect", "south", 0.0009, True, True),
    "own": ("private", "road_defect", "north", 0.0012, False, None),
}


async def seed(db_url: str, keys: TenantKeys) -> Secrets:
    """Issues, reports and events as above (owner connection, as an import would)."""
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('civicpulse.tenant_id', $1, true)", str(keys.id))
            submit_id = await conn.fetchval(
                "SELECT id FROM api_keys WHERE tenant_id = $1 AND scope = 'submit' ORDER BY id"
                " LIMIT 1",
                keys.id,
            )
            _, other = await tenants.issue_api_key(conn, keys.id, "submit", "another app")
            _, spare = await tenants.issue_api_key(conn, keys.id, "submit", "spare")
            await conn.execute(
                """INSERT INTO dashboards (tenant_id, public, public_categories, public_areas)
                   VALUES ($1, true, ARRAY['road_defect'], ARRAY['north'])
                   ON CONFLICT (tenant_id) DO UPDATE
                      SET public = true, public_categories = ARRAY['road_defect'],
                          public_areas = ARRAY['north']""",
                keys.id,
            )
            for area in ("north", "south"):  # far away: only the seeded rows say where
                await conn.execute(
                    """INSERT INTO areas (tenant_id, code, name, geometry, min_lat, min_lon,
                                          max_lat, max_lon)
                       VALUES ($1, $2, $2, '{"type": "Polygon", "coordinates": []}', 0, 0, 0, 0)
                       ON CONFLICT DO NOTHING""",
                    keys.id,
                    area,
                )
            issues: dict[str, uuid.UUID] = {}
            reports: dict[str, uuid.UUID] = {}
            markers: dict[str, list[str]] = {}
            for name, (visibility, category, area, offset, resolved, met) in SPEC.items():
                issue_id, report_id = uuid.uuid4(), uuid.uuid4()
                text = f"SECRETTEXT-{name} the hole outside my house"
                address = f"SECRETADDR-{name} 12 Main St"
                contact = f"secretmail-{name}@example.org"
                markers[name] = [f"SECRETTEXT-{name}", f"SECRETADDR-{name}", contact]
                lat = LAT + offset
                await conn.execute(
                    """INSERT INTO issues (tenant_id, id, status, category, visibility, area,
                                           title, representative_text, lat, lon, cell,
                                           opened_at, first_reported, last_reported,
                                           report_count, team, assignee, sla_started_at,
                                           resolved_at, resolution_business_s,
                                           resolution_target_s)
                       VALUES ($1, $2, CASE WHEN $9 THEN 'resolved' ELSE 'new' END, $3, $4,
                               $5, left($6, 120), $6, $7, $8, civicpulse_cell($7, $8),
                               now() - interval '3 hours', now() - interval '3 hours',
                               now() - interval '3 hours', 1, NULL, 'SECRETASSIGNEE',
                               now() - interval '3 hours',
                               CASE WHEN $9 THEN now() - interval '1 hour' END,
                               CASE WHEN $9 THEN 3600.0 END,
                               CASE WHEN $9 THEN CASE WHEN $10 THEN 7200.0 ELSE 60.0 END END)""",
                    keys.id,
                    issue_id,
                    category,
                    visibility,
                    area,
                    text,
                    lat,
                    LON,
                    resolved,
                    bool(met),
                )
                await conn.execute(
                    """INSERT INTO reports (tenant_id, id, text, lat, lon, address,
                                            submitted_at, reporter, state, category,
                                            issue_id, key_id, processed_at)
                       VALUES ($1, $2, $3, $4, $5, $6, now() - interval '1 hour', $7::jsonb,
                               'imported', $8, $9, $10, now())""",
                    keys.id,
                    report_id,
                    text,
                    lat,
                    LON,
                    address,
                    json.dumps({"email": contact, "name": "SECRETNAME"}),
                    category,
                    issue_id,
                    submit_id if name == "own" else other["id"],
                )
                await conn.execute(
                    """INSERT INTO issue_events (tenant_id, issue_id, report_id, kind, actor,
                                                 to_status, data)
                       VALUES ($1, $2, $3, 'issue_created', 'pipeline', 'new', $4::jsonb),
                              ($1, $2, NULL, 'status_changed', 'key:staff', 'acknowledged',
                               $5::jsonb)""",
                    keys.id,
                    issue_id,
                    report_id,
                    json.dumps({"note": f"SECRETTEXT-{name}"}),
                    json.dumps({"assignee": "SECRETASSIGNEE"}),
                )
                issues[name], reports[name] = issue_id, report_id
        return Secrets(issues, reports, other["id"], spare["id"], markers)
    finally:
        await conn.close()
