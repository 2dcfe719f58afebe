"""Operations surface: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from civicpulse.api.state import AppState


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
    for name, task in state.tasks.items():
        checks[f"stage:{name}"] = "ok" if not task.done() else "stopped"
    checks["live"] = "ok" if state.broker.alive else "stopped"
    if not state.accepting:
        checks["intake"] = "shutting down"
    ready = all(v == "ok" for v in checks.values()) and state.accepting
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


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
