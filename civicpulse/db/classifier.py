"""Classifier model repository. Function names equal their query names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from civicpulse.db.queries import q


@dataclass(frozen=True, slots=True)
class StoredModel:
    version: int
    digest: str
    taxonomy_digest: str
    labels: int
    model: bytes


async def latest_model(conn: asyncpg.Connection, tenant_id: int) -> StoredModel | None:
    row = await conn.fetchrow(q("latest_model"), tenant_id)
    return None if row is None else StoredModel(**dict(row))


async def latest_model_version(conn: asyncpg.Connection, tenant_id: int) -> int:
    """The newest stored model version (0 when there is none)."""
    return int(await conn.fetchval(q("latest_model_version"), tenant_id) or 0)


# Model versions kept per tenant: a tenant editing its taxonomy retrains each time, and each
# version is a megabyte or more; only the newest is ever used, the two before are kept for
# looking back.
KEPT_MODELS = 3


async def insert_model(
    conn: asyncpg.Connection,
    tenant_id: int,
    *,
    labels: int,
    features: int,
    digest: str,
    taxonomy_digest: str,
    model: bytes,
) -> int | None:
    """Store a new version, dropping all but the newest KEPT_MODELS; None when another
    process stored that version first."""
    version = await conn.fetchval(
        q("insert_model"), tenant_id, labels, features, digest, taxonomy_digest, model
    )
    if version is None:
        return None
    await conn.execute(q("prune_models"), tenant_id, int(version) - KEPT_MODELS)
    return int(version)


async def labelled_reports(
    conn: asyncpg.Connection, tenant_id: int, limit: int
) -> list[tuple[str, str]]:
    return [
        (r["text"], r["category"])
        for r in await conn.fetch(q("labelled_reports"), tenant_id, limit)
    ]


async def count_labels(conn: asyncpg.Connection, tenant_id: int) -> int:
    return int(await conn.fetchval(q("count_labels"), tenant_id))


async def tenant_by_id(conn: asyncpg.Connection, tenant_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(q("tenant_by_id"), tenant_id)
    return None if row is None else dict(row)
