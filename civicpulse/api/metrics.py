"""SLA metrics per tenant: `GET /v1/tenants/{slug}/metrics/sla?group_by=&from=&to=`.

Issues opened in [from, to) (default: all time), grouped by category, area or team: how
many, the backlog and what is overdue now, the share that met the response and resolution
targets, and p50/p90 times to acknowledge and to resolve, in business time (on the SLA's
calendar) and in wall time. Merged duplicates are left out.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from civicpulse.api.params import ALL_TIME, time_param
from civicpulse.api.state import AppState
from civicpulse.db import workflow as repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.errors import ValidationFailed

GROUPS = ("category", "area", "team")
_json = msgspec.json.Encoder()
_EPOCH = ALL_TIME
_FOREVER = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


def _pair(values: list[float] | None) -> dict[str, float | None]:
    if values is None:
        return {"p50": None, "p90": None}
    return {"p50": values[0], "p90": values[1]}


def _share(met: int, measured: int) -> float | None:
    return None if measured == 0 else round(100.0 * met / measured, 2)


def group_out(r: Any) -> dict[str, Any]:
    return {
        "key": r["key"],
        "opened": r["opened"],
        "backlog": r["backlog"],
        "overdue_now": r["overdue_now"],
        "resolved": r["resolved"],
        "response": {
            "measured": r["response_measured"],
            "met": r["response_met"],
            "met_pct": _share(r["response_met"], r["response_measured"]),
        },
        "resolution": {
            "measured": r["resolution_measured"],
            "met": r["resolution_met"],
            "met_pct": _share(r["resolution_met"], r["resolution_measured"]),
        },
        "time_to_acknowledge_s": {
            "business": _pair(r["ack_business_s"]),
            "wall": _pair(r["ack_wall_s"]),
        },
        "time_to_resolve_s": {
            "business": _pair(r["resolve_business_s"]),
            "wall": _pair(r["resolve_wall_s"]),
        },
    }


async def sla(request: Request) -> Response:
    state: AppState = request.state.app
    principal = await state.auth.require(request, request.path_params["slug"], "staff")
    group_by = request.query_params.get("group_by", "category")
    if group_by not in GROUPS:
        raise ValidationFailed("group_by is one of " + ", ".join(GROUPS), field="group_by")
    start = time_param(request, "from", _EPOCH)
    end = time_param(request, "to", _FOREVER)
    if end <= start:
        raise ValidationFailed("to must be after from", field="to")
    async with tenant_transaction(state.reads.pool("analytics"), principal.tenant.id) as conn:
        rows = await repo.sla_metrics(conn, principal.tenant.id, group_by, start, end)
    body = {
        "group_by": group_by,
        "from": None if start == _EPOCH else start,
        "to": None if end == _FOREVER else end,
        "groups": [group_out(r) for r in rows],
    }
    return Response(_json.encode(body), media_type="application/json")


routes = [Route("/v1/tenants/{slug}/metrics/sla", sla, methods=["GET"])]
