"""The audit log: who changed what, appended in the transaction of the change itself, so an
entry exists exactly when the change committed. Function names equal their query names."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from civicpulse.db.queries import q


async def record_audit(
    conn: asyncpg.Connection,
    tenant_id: int,
    actor: str,
    action: str,
    target: str = "",
    data: dict[str, Any] | None = None,
) -> None:
    """Append an entry; `action` is `noun.verb` (key.revoked, rules.updated)."""
    await conn.execute(
        q("record_audit"), tenant_id, actor, action, target, json.dumps(data or {}, default=str)
    )


async def audit_entries(
    conn: asyncpg.Connection,
    tenant_id: int,
    before: int | None,
    action: str | None,
    actor: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """A page of entries, newest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        q("audit_entries"), tenant_id, before, action, actor, limit
    )
    return rows
