"""The Starlette application and its lifespan, the composition root.

The lifespan starts every long-lived resource in one visible order and stops them in
reverse: database (migrations, pool) -> process pool -> writer -> pipeline stages. On
shutdown the intake closes first, the writer flushes what was queued, the stages finish
what they hold, and only then does the pool close.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from multiprocessing import get_context
from typing import Any

import aiohttp
import asyncpg
import structlog
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from civicpulse import accounts, geocoder
from civicpulse.api import (
    categories,
    dashboard,
    issues,
    keys,
    open311,
    openapi,
    ops,
    pages,
    reports,
    sessions,
)
from civicpulse.api import config as config_api
from civicpulse.api import errors as api_errors
from civicpulse.api import metrics as metrics_api
from civicpulse.api import places as places_api
from civicpulse.api import workflow as workflow_api
from civicpulse.api.auth import Authenticator, RateLimits
from civicpulse.api.direct import DirectRoutes
from civicpulse.api.edge import EdgeGuard
from civicpulse.api.state import AppState
from civicpulse.config import Settings
from civicpulse.db import migrate
from civicpulse.db.pool import close_pool, create_pool, server_settings
from civicpulse.db.replica import Reads
from civicpulse.engine import worker
from civicpulse.live import Broker
from civicpulse.llm.client import ChatClient, CircuitBreaker
from civicpulse.metrics import Metrics
from civicpulse.pipeline import (
    aggregator,
    claimer,
    classify,
    group,
    maintenance,
    pressure,
    scheduler,
    stage,
    writer,
)
from civicpulse.pipeline.models import ModelStore
from civicpulse.pipeline.places import PlaceStore

log = structlog.get_logger(__name__)


def worker_id() -> str:
    """A lease owner name unique to this process run."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Counts and times requests by route template (pure ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Labelled children, looked up once: labels() costs a lock and a tuple per call.
        self._counts: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            key = (method, template, status)
            count = self._counts.get(key)
            if count is None:
                count = self._counts[key] = self.metrics.http_requests.labels(
                    method, template, str(status)
                )
            count.inc()
            latency = self._latency.get(template)
            if latency is None:
                latency = self._latency[template] = self.metrics.http_latency.labels(template)
            latency.observe(time.perf_counter() - started)


def llm_client(settings: Settings, session: aiohttp.ClientSession, metrics: Metrics) -> ChatClient:
    """The model client the settings describe."""
    assert settings.llm_base_url is not None
    return ChatClient(
        session,
        base_url=settings.llm_base_url,
        model=settings.llm_model,
        api_key=str(settings.llm_api_key) if settings.llm_api_key else None,
        json_mode=settings.llm_json_mode,
        timeout=settings.llm_timeout,
        max_concurrency=settings.llm_max_concurrency,
        max_retries=settings.llm_max_retries,
        max_tokens=settings.llm_max_tokens,
        breaker=CircuitBreaker(settings.llm_breaker_failures, settings.llm_breaker_cooldown),
        metrics=metrics,
    )


def _settle_garbage_collector(gen0_threshold: int) -> None:
    """What start-up made (modules, routes, models, pools) lives as long as the process:
    freeze it, so collections stop walking it again and again, and collect the young
    generation less often. Requests make short-lived objects freed by reference counting,
    so collections found little, and cost 10% of intake's CPU and most of its p99 tail."""
    gc.collect()
    gc.freeze()
    if gen0_threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app; the database URL must already be resolved (see cli.serve)."""
    settings = settings or Settings.from_env()
    if settings.database_url is None:
        raise RuntimeError(
            "create_app needs settings.database_url; `civicpulse serve` "
            "starts the embedded database when it is unset"
        )
    dsn = str(settings.database_url)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        applied = await migrate.migrate(dsn, settings.schema_dir)
        if applied:
            log.info("migrations_applied", versions=[m.version for m in applied])
        pool = await create_pool(settings, dsn)
        workers = settings.process_pool_workers or os.cpu_count() or 1
        executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("forkserver"),
            initializer=worker.lower_priority,
            initargs=(settings.process_pool_nice,),
        )
        # Start the pool's processes now rather than on the first report.
        await asyncio.gather(
            *(
                asyncio.get_running_loop().run_in_executor(executor, worker.ready)
                for _ in range(workers)
            )
        )
        owner = worker_id()

        intake_queue: asyncio.Queue[writer.WriteRequest | None] = asyncio.Queue(
            settings.ingest_queue_size
        )
        classify_queue: asyncio.Queue[claimer.Claim | None] = asyncio.Queue(
            settings.pipeline_queue_size
        )
        group_queue: asyncio.Queue[claimer.Claim | None] = asyncio.Queue(
            settings.pipeline_queue_size
        )
        stop = asyncio.Event()
        received = asyncio.Event()  # set when reports were committed
        share = pressure.Share(
            target=settings.intake_latency_target_ms / 1000,
            limit=settings.intake_latency_limit_ms / 1000,
            max_delay=settings.pipeline_max_delay_seconds,
            floor=settings.pipeline_min_share,
        )
        backlog = pressure.Backlog(settings.backlog_limit, settings.backlog_alert)

        def committed(rows: int) -> None:
            received.set()

        classified = asyncio.Event()  # set when reports were classified
        intake = writer.Intake(intake_queue, settings.ingest_retry_after, metrics, backlog)
        http = aiohttp.ClientSession() if settings.llm_base_url else None
        retry = stage.Retry(
            pool,
            owner,
            backoff=settings.pipeline_retry_backoff,
            max_backoff=settings.pipeline_retry_backoff_max,
            max_attempts=settings.pipeline_max_attempts,
        )
        classify_ctx = classify.ClassifyContext(
            pool=pool,
            executor=executor,
            models=ModelStore(
                pool,
                executor,
                retrain_after=settings.retrain_after_labels,
                check_every=settings.retrain_check_seconds,
            ),
            places=PlaceStore(pool),
            metrics=metrics,
            owner=owner,
            llm=None if http is None else llm_client(settings, http, metrics),
            llm_deadline=settings.llm_deadline_seconds,
            retry=retry,
            on_done=classified.set,
            share=share,
        )
        # A finished grouping claim frees its tenant for the next one: wake the claimer.
        group_ctx = group.GroupContext(
            pool=pool,
            executor=executor,
            metrics=metrics,
            owner=owner,
            retry=retry,
            on_done=classified.set,
            share=share,
        )
        # Several writers share the intake queue: while one waits for its commit to reach
        # the disk, the next batch is already being written (commits overlap).
        tasks: dict[str, asyncio.Task[None]] = {
            f"writer-{i}": asyncio.create_task(
                writer.run(
                    intake_queue,
                    pool,
                    metrics,
                    max_batch=settings.ingest_max_batch,
                    on_committed=committed,
                    share=share,
                ),
                name=f"writer-{i}",
            )
            for i in range(settings.ingest_writers)
        }
        if settings.pipeline_enabled:
            lease = timedelta(seconds=settings.pipeline_lease_seconds)
            for state_name, queue, wake in (
                ("received", classify_queue, received),
                ("classified", group_queue, classified),
            ):
                tasks[f"claimer-{state_name}"] = asyncio.create_task(
                    claimer.run(
                        queue,
                        pool,
                        stop,
                        wake,
                        state=state_name,
                        owner=owner,
                        lease=lease,
                        batch=settings.pipeline_claim_batch,
                        poll=settings.pipeline_poll_seconds,
                        order_wait=timedelta(seconds=settings.group_order_wait_seconds),
                        max_attempts=settings.pipeline_max_attempts,
                    ),
                    name=f"claimer-{state_name}",
                )
            # As many workers per stage as pool processes, so batches use every core and a
            # slow LLM answer for one claim does not hold up the next.
            for i in range(workers):
                tasks[f"classify-{i}"] = asyncio.create_task(
                    classify.run(classify_queue, classify_ctx), name=f"classify-{i}"
                )
                tasks[f"group-{i}"] = asyncio.create_task(
                    group.run(group_queue, group_ctx), name=f"group-{i}"
                )
        tasks["scheduler"] = asyncio.create_task(
            scheduler.run(
                pool, stop, metrics, tick=settings.sla_tick_seconds, batch=settings.sla_fire_batch
            ),
            name="scheduler",
        )
        tasks["aggregator"] = asyncio.create_task(
            aggregator.run(
                pool,
                stop,
                tick=settings.aggregate_tick_seconds,
                batch=settings.aggregate_batch_hours,
                snapshot_every=settings.snapshot_check_seconds,
            ),
            name="aggregator",
        )
        tasks["maintenance"] = asyncio.create_task(
            maintenance.run(
                dsn,
                stop,
                every=settings.analyze_check_seconds,
                changed_fraction=settings.analyze_changed_fraction,
                min_rows=settings.analyze_min_rows,
                backlog=backlog,
                backlog_every=settings.backlog_check_seconds,
                share=share,
                metrics=metrics,
            ),
            name="maintenance",
        )
        auth = Authenticator(
            pool,
            settings.auth_cache_seconds,
            cache_size=settings.auth_cache_size,
            limits=RateLimits(
                settings.rate_limit_key_per_second,
                settings.rate_limit_key_burst,
                settings.rate_limit_public_per_second,
                settings.rate_limit_public_burst,
            ),
            buckets=settings.rate_limit_buckets,
            tenant_ttl=settings.tenant_cache_seconds,
        )
        tasks["geocoder"] = asyncio.create_task(
            geocoder.run(
                pool,
                stop,
                every=settings.geocode_every_seconds,
                min_interval=settings.geocode_min_interval_seconds,
                timeout=settings.geocode_timeout_seconds,
            ),
            name="geocoder",
        )
        tasks["key-usage"] = asyncio.create_task(
            _stamp_key_usage(auth, stop, settings.key_usage_flush_seconds), name="key-usage"
        )
        reads = Reads(
            pool,
            max_lag=settings.read_max_lag_seconds,
            on_route=lambda surface, db: metrics.reads.labels(surface, db).inc(),
        )
        if settings.read_database_url is not None:
            read_dsn = str(settings.read_database_url)
            tasks["read-replica"] = asyncio.create_task(
                reads.run(
                    stop,
                    settings.read_lag_check_seconds,
                    connect=lambda: create_pool(settings, read_dsn),
                    connect_probe=lambda: asyncpg.connect(
                        dsn, server_settings=server_settings(settings)
                    ),
                    on_lag=metrics.set_replica_lag,
                ),
                name="read-replica",
            )
        broker = Broker(
            pool,
            dsn,
            server_settings(settings),
            max_wakeups=settings.stream_max_wakeups,
            reads=reads,
        )
        metrics.streams_open.set_function(lambda: broker.streams)
        broker.on_table_read = metrics.stream_table_reads.inc
        broker.on_auth_change = auth.forget_credentials
        await broker.start()
        state = AppState(
            settings=settings,
            pool=pool,
            intake=intake,
            backlog=backlog,
            auth=auth,
            metrics=metrics,
            tasks=tasks,
            queues={
                "intake": intake_queue,
                "classify": classify_queue,
                "group": group_queue,
            },
            broker=broker,
            reads=reads,
            passwords=accounts.PasswordWork(
                settings.password_hash_concurrency, settings.password_hash_waiting
            ),
        )
        log.info(
            "service_started",
            owner=owner,
            pipeline=settings.pipeline_enabled,
            process_workers=workers,
        )
        _settle_garbage_collector(settings.gc_gen0_threshold)
        try:
            yield {"app": state}
        finally:
            state.accepting = False
            intake.closed = True
            await broker.stop()  # ends every stream, so the server can finish its requests
            await _drain(
                state, intake_queue, classify_queue, group_queue, stop, settings.shutdown_timeout
            )
            if http is not None:
                await http.close()
            executor.shutdown(wait=True, cancel_futures=True)
            if reads.replica is not None:
                await close_pool(reads.replica, settings.shutdown_timeout)
            await close_pool(pool, settings.shutdown_timeout)
            log.info("service_stopped", owner=owner)

    app = Starlette(
        routes=[
            *ops.routes,
            *reports.routes,
            *categories.routes,
            *issues.routes,
            *workflow_api.routes,
            *config_api.routes,
            *places_api.routes,
            *metrics_api.routes,
            *dashboard.routes,
            *keys.routes,
            *open311.routes,
            *sessions.routes,
            *openapi.routes,
            *pages.routes,
        ],
        lifespan=lifespan,
        exception_handlers=api_errors.HANDLERS,
    )
    # Intake skips the router (see api/direct.py); RequestMetrics still counts it.
    app.add_middleware(DirectRoutes, routes=reports.hot_routes)
    app.add_middleware(EdgeGuard)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


async def _stamp_key_usage(auth: Authenticator, stop: asyncio.Event, every: float) -> None:
    """Write API keys' last_used_at every `every` seconds (and once more on the way out)."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        try:
            await auth.flush_usage()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("key_usage_not_stamped", error=repr(exc))
        if stop.is_set():
            return


async def _drain(
    state: AppState,
    intake_queue: asyncio.Queue[writer.WriteRequest | None],
    classify_queue: asyncio.Queue[claimer.Claim | None],
    group_queue: asyncio.Queue[claimer.Claim | None],
    stop: asyncio.Event,
    timeout: float,
) -> None:
    """Stop in the order of the flow: the writer flushes, the claimers stop, then each
    stage finishes the claims it already holds."""
    tasks = state.tasks
    deadline = asyncio.get_running_loop().time() + timeout

    async def finish(name: str) -> None:
        task = tasks[name]
        remaining = max(0.1, deadline - asyncio.get_running_loop().time())
        try:
            await asyncio.wait_for(asyncio.shield(task), remaining)
        except TimeoutError:
            log.warning("stage_cancelled", stage=name)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except Exception as exc:
            log.error("stage_crashed", stage=name, error=repr(exc))

    writers = [n for n in tasks if n.startswith("writer-")]
    for _ in writers:  # one sentinel each; everything queued before them is flushed
        await intake_queue.put(None)
    for name in writers:
        await finish(name)
    stop.set()
    stopped_by_event = (
        "scheduler", "aggregator", "maintenance", "key-usage", "geocoder", "read-replica"
    )  # fmt: skip
    for name in [n for n in tasks if n.startswith("claimer-") or n in stopped_by_event]:
        await finish(name)
    for prefix, queue in (("classify-", classify_queue), ("group-", group_queue)):
        workers = [n for n in tasks if n.startswith(prefix)]
        for _ in workers:
            await queue.put(None)
        for name in workers:
            await finish(name)
