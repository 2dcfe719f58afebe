"""Per-tenant local classifier models: load, train when missing or stale, retrain on labels.

A model is stale when the tenant's taxonomy changed since it was trained (or the model format
or the default vocabulary did), or when at least `retrain_after` new labels (imports, staff
corrections) arrived. Training runs in the process pool; the result is stored as a new version
so every process ends up using the same model. The caller passes the newest stored version it
read in its own transaction, so a model another process stored (`civicpulse classifier
train`) is used from the next claim on.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import asyncpg
import structlog

from civicpulse.db import classifier as classifier_repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.db.tenants import Category
from civicpulse.engine import textmodel

log = structlog.get_logger(__name__)
# The newest labels a model learns from: training stays within seconds (bench/judgement).
MAX_TRAINING_LABELS = 20_000


@dataclass(frozen=True, slots=True)
class LoadedModel:
    version: int
    digest: str
    taxonomy_digest: str
    labels: int
    blob: bytes


def taxonomy_entries(categories: list[Category]) -> list[textmodel.TaxonomyEntry]:
    return [
        textmodel.TaxonomyEntry(c.code, c.name, c.description, c.keywords, c.kind)
        for c in categories
    ]


def taxonomy_digest(categories: list[Category]) -> str:
    """What a model was trained for: the taxonomy, the model format and the vocabulary."""
    h = hashlib.sha256(f"{textmodel.MODEL_FORMAT}|{textmodel.vocabulary().version}".encode())
    for c in sorted(categories, key=lambda c: c.code):
        h.update(repr((c.code, c.name, c.description, c.keywords, c.kind)).encode())
    return h.hexdigest()[:16]


class ModelStore:
    def __init__(
        self,
        pool: asyncpg.Pool,
        executor: Executor,
        *,
        retrain_after: int,
        check_every: float = 60.0,
    ) -> None:
        self.pool = pool
        self.executor = executor
        self.retrain_after = retrain_after
        self.check_every = check_every
        self._models: dict[int, LoadedModel] = {}
        self._checked: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        # The newest stored version seen that was made for another taxonomy, format or
        # vocabulary (another release, during a rolling deploy): not worth reloading again.
        self._foreign: dict[int, int] = {}

    async def get(
        self, tenant_id: int, categories: list[Category], stored_version: int
    ) -> LoadedModel:
        """The model to use now for this tenant (training one if needed). `stored_version`
        is the newest version in the database, as the caller just read it."""
        wanted = taxonomy_digest(categories)

        def fresh(model: LoadedModel | None) -> bool:
            due = time.monotonic() - self._checked.get(tenant_id, 0.0) >= self.check_every
            return (
                model is not None
                and model.taxonomy_digest == wanted
                and max(model.version, self._foreign.get(tenant_id, 0)) >= stored_version
                and not due
            )

        current = self._models.get(tenant_id)
        if fresh(current):
            assert current is not None
            return current
        async with self._locks.setdefault(tenant_id, asyncio.Lock()):
            current = self._models.get(tenant_id)
            if fresh(current):
                assert current is not None
                return current  # another task refreshed it while we waited
            model = await self._refresh(tenant_id, categories, wanted, current)
            self._models[tenant_id] = model
            self._checked[tenant_id] = time.monotonic()
            return model

    async def _refresh(
        self,
        tenant_id: int,
        categories: list[Category],
        wanted: str,
        current: LoadedModel | None,
    ) -> LoadedModel:
        async with tenant_transaction(self.pool, tenant_id) as conn:
            stored = await classifier_repo.latest_model(conn, tenant_id)
            labels = await classifier_repo.count_labels(conn, tenant_id)
        if (
            stored is not None
            and stored.taxonomy_digest == wanted
            and labels - stored.labels < self.retrain_after
        ):
            return LoadedModel(
                stored.version, stored.digest, stored.taxonomy_digest, stored.labels, stored.model
            )
        if (
            stored is not None
            and stored.taxonomy_digest != wanted
            and current is not None
            and current.taxonomy_digest == wanted
            and labels - current.labels < self.retrain_after
        ):
            # The newest model was made by another release (a rolling deploy): keep ours
            # rather than retrain in turn with it on every claim.
            self._foreign[tenant_id] = stored.version
            return current
        reason = (
            "none"
            if stored is None
            else ("taxonomy" if stored.taxonomy_digest != wanted else "labels")
        )
        return await self.train(tenant_id, categories, reason=reason)

    async def train(
        self, tenant_id: int, categories: list[Category], *, reason: str = "requested"
    ) -> LoadedModel:
        """Train on the taxonomy and the newest labels, store it, and use it."""
        started = time.perf_counter()
        async with tenant_transaction(self.pool, tenant_id) as conn:
            labelled = await classifier_repo.labelled_reports(conn, tenant_id, MAX_TRAINING_LABELS)
            # Staleness counts labels that arrived since: every label the tenant has now,
            # not only the ones used (a tenant with more than the cap would retrain forever).
            known = await classifier_repo.count_labels(conn, tenant_id)
        loop = asyncio.get_running_loop()
        blob, digest = await loop.run_in_executor(
            self.executor, textmodel.train, taxonomy_entries(categories), labelled
        )
        model = textmodel.load(blob)
        wanted = taxonomy_digest(categories)
        async with tenant_transaction(self.pool, tenant_id) as conn:
            version = await classifier_repo.insert_model(
                conn,
                tenant_id,
                labels=known,
                features=len(model.weights),
                digest=digest,
                taxonomy_digest=wanted,
                model=blob,
            )
            if version is None:  # another process stored one at the same moment: use it
                stored = await classifier_repo.latest_model(conn, tenant_id)
                assert stored is not None
                return LoadedModel(
                    stored.version,
                    stored.digest,
                    stored.taxonomy_digest,
                    stored.labels,
                    stored.model,
                )
        log.info(
            "classifier_trained",
            tenant_id=tenant_id,
            version=version,
            reason=reason,
            labels=len(labelled),
            features=len(model.weights),
            seconds=round(time.perf_counter() - started, 3),
        )
        loaded = LoadedModel(version, digest, wanted, known, blob)
        self._models[tenant_id] = loaded
        self._checked[tenant_id] = time.monotonic()
        return loaded
