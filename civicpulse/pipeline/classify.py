"""The classify stage: what each report is about and where.

Category, subtype, severity, hazards, summary and language, and the place (building, floor,
room or unit, space, asset) from the report's place code, text and address. Reads a claim's
reports under the tenant's RLS setting. The local classifier (per-tenant model, process pool)
runs for every batch: it is the answer when no LLM is configured and the fallback when the
LLM fails, is switched off by its breaker, answers invalidly twice, or has not answered by the
report's deadline; fallbacks are flagged for review. Its subtype and next-best categories are
kept either way (grouping uses them). LLM calls for one claim run concurrently within the
client's concurrency limit, each under its own deadline, so a claim waits at most about one
deadline for a hanging model, however many reports it holds.
Results are stored only while this process still holds the lease; a failed claim is split
down to the report at fault, which is retried with backoff and finally set aside
(pipeline.stage).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import msgspec
import structlog

from civicpulse.db import classifier as classifier_repo
from civicpulse.db import places as places_repo
from civicpulse.db import reports as reports_repo
from civicpulse.db import tenants as tenants_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.db.reports import Classified
from civicpulse.engine import places, rules, textmodel
from civicpulse.llm import classifier as llm_classifier
from civicpulse.llm.client import ChatClient, LLMError
from civicpulse.metrics import Metrics
from civicpulse.pipeline.claimer import Claim
from civicpulse.pipeline.models import ModelStore
from civicpulse.pipeline.places import PlaceStore
from civicpulse.pipeline.pressure import Share
from civicpulse.pipeline.stage import Retry, run_claims

log = structlog.get_logger(__name__)
STAGE = "classify"
# A local answer less likely right than this goes to the review queue (its confidence is
# calibrated: bench/judgement reports how often answers at each confidence are right).
REVIEW_BELOW = 0.5
_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class ClassifyContext:
    pool: asyncpg.Pool
    executor: Executor
    models: ModelStore
    places: PlaceStore
    metrics: Metrics
    owner: str
    llm: ChatClient | None = None
    # Seconds each report may wait for the LLM (Settings.llm_deadline_seconds).
    llm_deadline: float = 2.0
    retry: Retry | None = None
    on_done: Callable[[], None] = lambda: None
    share: Share | None = None  # rest between claims while intake needs the process


async def run(inbox: asyncio.Queue[Claim | None], ctx: ClassifyContext) -> None:
    """Classify claims until a None sentinel arrives."""
    # Classification keeps no order: a failed claim is split at once (see pipeline.stage).
    retry = replace(ctx.retry or Retry(ctx.pool, ctx.owner), split=True)
    await run_claims(
        STAGE,
        inbox,
        lambda claim: classify_claim(ctx, claim),
        ctx.metrics,
        ctx.on_done,
        retry,
        ctx.share,
    )


async def classify_claim(ctx: ClassifyContext, claim: Claim) -> int:
    """Classify one claim; returns how many reports were stored."""
    tenant_id = claim.tenant_id
    async with tenant_transaction(ctx.pool, tenant_id) as conn:
        categories = await tenants_repo.list_categories(conn, tenant_id)
        rows = await reports_repo.load_claimed_reports(conn, tenant_id, claim.ids, ctx.owner)
        tenant = await classifier_repo.tenant_by_id(conn, tenant_id)
        model_version = await classifier_repo.latest_model_version(conn, tenant_id)
        place_version = await places_repo.place_version(conn, tenant_id)
    if not rows or tenant is None:
        return 0
    model = await ctx.models.get(tenant_id, categories, model_version)
    names = {c.code: c.name for c in categories}
    items = [(r["text"], r["address"], r["requested_category"]) for r in rows]
    local = await _local(ctx, tenant_id, model.digest, model.blob, items, names)
    local_model = f"{textmodel.MODEL_FORMAT}@v{model.version}"
    where = await _places(ctx, tenant_id, place_version, rows, _config(tenant["config"]))

    if ctx.llm is None:
        results = [
            _from_local(row["id"], pred, decided, local_model, None, place)
            for row, (pred, decided), place in zip(rows, local, where, strict=True)
        ]
    else:
        prompt = llm_classifier.TenantPrompt(
            tenant_name=tenant["name"],
            categories={c.code: f"{c.name}: {c.description}" for c in categories},
            severity_scale=_severity_scale(tenant["config"]),
        )
        results = list(
            await asyncio.gather(
                *[
                    _with_llm(
                        ctx.llm, ctx.llm_deadline, prompt, row, pred, decided, local_model, place
                    )
                    for row, (pred, decided), place in zip(rows, local, where, strict=True)
                ]
            )
        )
    for r in results:
        ctx.metrics.classified.labels(msgspec.json.decode(r.classification)["decided_by"]).inc()
    async with tenant_transaction(ctx.pool, tenant_id) as conn:
        await reports_repo.deferred_commit(conn)
        return await reports_repo.finish_classified(conn, tenant_id, results, ctx.owner)


async def _places(
    ctx: ClassifyContext, tenant_id: int, version: int, rows: list[Any], config: dict[str, Any]
) -> list[str]:
    """Where each report is (JSON), resolved in a worker against the tenant's places."""
    found = await ctx.places.get(tenant_id, version)
    # A report located by address only has no pin: NaN is nowhere (no building is near it).
    items = [(r["text"], r["address"], r["place"], _nan(r["lat"]), _nan(r["lon"])) for r in rows]
    bare = bool(config.get("grouping", {}).get("rooms_by_number", False))
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(
            ctx.executor, places.resolve_batch, found.digest, None, items, bare
        )
    except places.PlacesMissing:  # this worker has not seen these places yet
        return await loop.run_in_executor(
            ctx.executor, places.resolve_batch, found.digest, found.blob, items, bare
        )


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _config(raw: Any) -> dict[str, Any]:
    value = msgspec.json.decode(raw) if isinstance(raw, str | bytes) else (raw or {})
    return value if isinstance(value, dict) else {}


async def _local(
    ctx: ClassifyContext,
    tenant_id: int,
    digest: str,
    blob: bytes,
    items: list[tuple[str, str | None, str | None]],
    names: dict[str, str],
) -> list[tuple[textmodel.Prediction, str]]:
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(
            ctx.executor, textmodel.classify_batch, digest, None, items, names, tenant_id
        )
    except textmodel.ModelMissing:  # this worker has not seen the model yet
        return await loop.run_in_executor(
            ctx.executor, textmodel.classify_batch, digest, blob, items, names, tenant_id
        )


def _severity_scale(config: Any) -> dict[int, str]:
    scale = _config(config).get("severity_scale")
    if isinstance(scale, dict) and scale:
        return {int(k): str(v) for k, v in scale.items()}
    return llm_classifier.DEFAULT_SEVERITY_SCALE


def _from_local(
    report_id: Any,
    pred: textmodel.Prediction,
    decided_by: str,
    model: str,
    fallback_reason: str | None,
    place: str | None,
) -> Classified:
    record: dict[str, Any] = {
        "decided_by": decided_by,
        "model": model,
        "confidence": pred.confidence,
    }
    if fallback_reason is not None:
        record["fallback_reason"] = fallback_reason
    review = fallback_reason is not None or pred.confidence < REVIEW_BELOW
    return Classified(
        report_id,
        pred.category,
        pred.severity,
        _json.encode(record).decode(),
        pred.summary,
        pred.hazards,
        pred.language,
        review,
        pred.subtype,
        _json.encode(pred.alternatives).decode(),
        place,
        _json.encode(pred.subtypes).decode(),
    )


async def _with_llm(
    client: ChatClient,
    deadline: float,
    prompt: llm_classifier.TenantPrompt,
    row: Any,
    local: textmodel.Prediction,
    local_decided: str,
    local_model: str,
    place: str | None,
) -> Classified:
    started = time.perf_counter()
    # Cancelling at the deadline ends the HTTP request (aiohttp closes its connection) and
    # the client tells its breaker; nothing is left running in the background.
    timer = asyncio.timeout(deadline)
    try:
        async with timer:
            outcome = await llm_classifier.classify(
                client,
                prompt,
                row["text"],
                row["address"],
                row["requested_category"],
                deadline=timer.when(),
            )
    except (LLMError, llm_classifier.InvalidAnswer) as exc:
        return _from_local(row["id"], local, "local", local_model, str(exc)[:300], place)
    except TimeoutError:
        if not timer.expired():
            raise
        return _from_local(row["id"], local, "local", local_model, "deadline", place)
    answer = outcome.answer
    # Safety floor: hazard words the rules know (gas, live wire...) never rate below them.
    hazards = sorted(set(answer.hazards) | set(local.hazards))
    _, rule_severity = rules.hazards_in(rules.normalise(row["text"]))
    severity = max(answer.severity, rule_severity if local.hazards else 1)
    record = {
        "decided_by": "llm",
        "model": outcome.result.model,
        "prompt_version": llm_classifier.PROMPT_VERSION,
        "confidence": answer.confidence,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "repaired": outcome.repaired,
        "tokens": outcome.result.prompt_tokens + outcome.result.completion_tokens,
    }
    return Classified(
        row["id"],
        answer.category,
        severity,
        _json.encode(record).decode(),
        answer.summary[:400],
        tuple(hazards),
        answer.language[:8],
        False,
        # The local model's subtype and mix, around the LLM's category: grouping still looks
        # at the next likely categories when the two disagree.
        local.subtype if local.category == answer.category else None,
        _json.encode(
            textmodel.around(answer.category, answer.confidence, local.alternatives)
        ).decode(),
        place,
        _json.encode(local.subtypes if local.category == answer.category else ()).decode(),
    )
