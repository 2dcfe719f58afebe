"""Operations surface: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from civicpulse.api.state import AppState
from civicpulse.db import stats


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: AppState = request.state.app
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2.0):
            async with state.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    warnings: list[str] = []
    if checks["database"] == "ok":
        try:
            warnings = await _statistics_warnings(state)
        except Exception as exc:  # a warning's own failure is only a warning
            warnings = [f"statistics not checked: {type(exc).__name__}"]
    backlog = state.backlog
    if backlog.full:
        warnings.append(
            f"pipeline backlog {backlog.reports} is at its limit ({backlog.limit}): intake "
            "answers 503 until the pipeline catches up"
        )
    elif backlog.alerting:
        warnings.append(f"pipeline backlog {backlog.reports} is above {backlog.alert}")
    for name, task in state.tasks.items():
        checks[f"stage:{name}"] = "ok" if not task.done() else "stopped"
    checks["live"] = "ok" if state.broker.alive else "stopped"
    if not state.accepting:
        checks["intake"] = "shutting down"
    ready = all(v == "ok" for v in checks.values()) and state.accepting
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks, "warnings": warnings},
        status_code=200 if ready else 503,
    )


async def _statistics_warnings(state: AppState) -> list[str]:
    """What an operator should know about planner statistics (never a reason for 503)."""
    settings = state.settings
    async with asyncio.timeout(2.0), state.pool.acquire() as conn:
        autovacuum = await stats.autovacuum_on(conn)
        stale = await stats.stale_tables(
            conn, settings.analyze_changed_fraction, settings.analyze_min_rows
        )
    warnings = []
    every = settings.analyze_check_seconds
    if not autovacuum:
        warnings.append(
            f"autovacuum is off: the service analyses stale tables itself every {every:g} s"
            if every > 0
            else "autovacuum is off and CIVICPULSE_ANALYZE_CHECK_SECONDS is 0: nothing keeps "
            "the planner's statistics fresh"
        )
    if stale:
        names = ", ".join(r["relname"] for r in stale)
        warnings.append(f"statistics are stale for: {names}")
    return warnings


async def metrics(request: Request) -> Response:
    state: AppState = request.state.app
    for name, queue in state.queues.items():
        state.metrics.queue_depth.labels(name).set(queue.qsize())
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
