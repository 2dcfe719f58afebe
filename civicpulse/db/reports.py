"""Report repository: set-based intake, lookups, pipeline claims, bulk import."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Literal, NamedTuple

import asyncpg

from civicpulse.db.queries import q
from civicpulse.domain.reports import NewReport, WriteOutcome


async def own_report_keys(
    conn: asyncpg.Connection, tenant_id: int, key_id: int | None
) -> list[int]:
    """The keys whose reports `key_id` may read back (none for a caller without a key)."""
    if key_id is None:
        return []
    keys: list[int] | None = await conn.fetchval(q("own_report_keys"), tenant_id, key_id)
    return keys or []


async def insert_reports(
    conn: asyncpg.Connection, tenant_id: int, rows: Sequence[NewReport]
) -> list[WriteOutcome]:
    """Insert one tenant's reports; resolve repeated idempotency keys. Caller holds the tx.

    Returns one outcome per input row, in order.
    """
    # A key may repeat inside one flush (a client retrying before its first answer): only its
    # first row is inserted, the others resolve against it like any replay.
    first_by_key: dict[str, int] = {}
    to_insert: list[NewReport] = []
    for i, row in enumerate(rows):
        if row.idempotency_key is not None:
            if row.idempotency_key in first_by_key:
                continue
            first_by_key[row.idempotency_key] = i
        to_insert.append(row)

    inserted = {
        str(r["id"])
        for r in await conn.fetch(
            q("insert_reports"),
            tenant_id,
            [r.id for r in to_insert],
            [r.text for r in to_insert],
            [r.lat for r in to_insert],
            [r.lon for r in to_insert],
            [r.address for r in to_insert],
            [r.requested_category for r in to_insert],
            [r.submitted_at for r in to_insert],
            [r.channel for r in to_insert],
            [r.reporter for r in to_insert],
            [r.attributes for r in to_insert],
            [r.media_urls for r in to_insert],
            [r.idempotency_key for r in to_insert],
            [r.body_hash for r in to_insert],
            [r.place for r in to_insert],
            [r.key_id for r in to_insert],
            [r.address_key for r in to_insert],
            [r.track_hash for r in to_insert],
        )
    }

    keyed_elsewhere = [
        r.idempotency_key for r in rows if r.idempotency_key is not None and r.id not in inserted
    ]
    existing: dict[str, asyncpg.Record] = {}
    if keyed_elsewhere:
        for rec in await conn.fetch(q("find_idempotent_reports"), tenant_id, keyed_elsewhere):
            existing[rec["idempotency_key"]] = rec

    outcomes: list[WriteOutcome] = []
    for row in rows:
        if row.id in inserted:
            outcomes.append(WriteOutcome("created", row.id, "received"))
            continue
        rec = existing.get(row.idempotency_key or "")
        if rec is None:  # pragma: no cover - the unique index makes this unreachable
            raise RuntimeError(f"report {row.id} neither inserted nor found by key")
        same_body = bytes(rec["body_hash"] or b"") == (row.body_hash or b"")
        kind: Literal["replayed", "conflict"] = "replayed" if same_body else "conflict"
        outcomes.append(WriteOutcome(kind, str(rec["id"]), rec["state"]))
    return outcomes


async def get_report(
    conn: asyncpg.Connection, tenant_id: int, report_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(q("get_report"), tenant_id, report_id)


async def count_reports(conn: asyncpg.Connection, tenant_id: int) -> int:
    return int(await conn.fetchval(q("count_reports"), tenant_id))


async def claim_reports(
    conn: asyncpg.Connection,
    state: str,
    owner: str,
    lease: timedelta,
    limit: int,
    max_attempts: int,
) -> list[tuple[int, uuid.UUID]]:
    """Lease up to `limit` reports in `state`, any tenant; skips rows others hold. Reports
    received and claimed `max_attempts` times without being classified are set aside."""
    rows = await conn.fetch(q("claim_reports"), state, owner, lease, limit, max_attempts)
    return [(r["tenant_id"], r["id"]) for r in rows]


async def claim_grouping(
    conn: asyncpg.Connection,
    owner: str,
    lease: timedelta,
    limit: int,
    wait: timedelta,
    max_attempts: int,
) -> list[tuple[int, uuid.UUID]]:
    """Lease classified reports in submission order, at most one claim per tenant at a time;
    a report still unclassified holds back its tenant's later ones for up to `wait`, and one
    that failed `max_attempts` groupings is set aside as 'failed'."""
    rows = await conn.fetch(q("claim_grouping"), owner, lease, limit, wait, max_attempts)
    return [(r["tenant_id"], r["id"]) for r in rows]


async def retry_failed_reports(conn: asyncpg.Connection, tenant_id: int) -> int:
    """Put a tenant's reports that were set aside back in the queue; how many."""
    return len(await conn.fetch(q("retry_failed_reports"), tenant_id))


async def release_failed_claim(
    conn: asyncpg.Connection,
    tenant_id: int,
    ids: Sequence[uuid.UUID],
    owner: str,
    backoff: float,
    max_backoff: float,
    max_attempts: int,
    error: str,
) -> int:
    """Let reports whose processing failed be retried after a backoff, or set them aside
    after `max_attempts`; how many were set aside."""
    rows = await conn.fetch(
        q("release_failed_claim"),
        tenant_id,
        list(ids),
        owner,
        backoff,
        max_backoff,
        max_attempts,
        error[:1000],
    )
    return sum(1 for r in rows if r["state"] == "failed")


async def load_claimed_reports(
    conn: asyncpg.Connection, tenant_id: int, ids: Sequence[uuid.UUID], owner: str
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        q("load_claimed_reports"), tenant_id, list(ids), owner
    )
    return rows


class Classified(NamedTuple):
    """What the classify stage stores for one report."""

    id: uuid.UUID
    category: str
    severity: int
    classification: str  # JSON
    summary: str
    hazards: tuple[str, ...]
    language: str
    needs_review: bool
    subtype: str | None = None
    alternatives: str | None = None  # JSON [[category, probability], ...]
    place_ref: str | None = None  # JSON of civicpulse.engine.places.Where
    subtypes: str | None = None  # JSON [[subtype, probability], ...]


async def deferred_commit(conn: asyncpg.Connection) -> None:
    """Commit this transaction without waiting for the disk (see the query)."""
    await conn.execute(q("deferred_commit"))


async def finish_classified(
    conn: asyncpg.Connection, tenant_id: int, results: Sequence[Classified], owner: str
) -> int:
    """Store classifications for reports this owner still leases; returns rows updated."""
    status = await conn.execute(
        q("finish_classified"),
        tenant_id,
        [r.id for r in results],
        [r.category for r in results],
        [r.severity for r in results],
        [r.classification for r in results],
        [r.summary for r in results],
        [",".join(r.hazards) for r in results],
        [r.language for r in results],
        [r.needs_review for r in results],
        owner,
        [r.subtype for r in results],
        [r.alternatives for r in results],
        [r.place_ref for r in results],
        [r.subtypes for r in results],
    )
    return int(status.split()[-1])


async def correct_report(
    conn: asyncpg.Connection,
    tenant_id: int,
    report_id: uuid.UUID,
    category: str | None,
    severity: int | None,
    actor: str,
) -> asyncpg.Record | None:
    """Apply a staff correction; returns the old values, or None when there is no report."""
    row: asyncpg.Record | None = await conn.fetchrow(
        q("correct_report"), tenant_id, report_id, category, severity, actor
    )
    return row


async def append_event(
    conn: asyncpg.Connection,
    tenant_id: int,
    *,
    issue_id: uuid.UUID | None,
    report_id: uuid.UUID | None,
    kind: str,
    actor: str,
    from_status: str | None = None,
    to_status: str | None = None,
    note: str | None = None,
    data: str = "{}",
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        q("append_event"),
        tenant_id,
        issue_id,
        report_id,
        kind,
        actor,
        from_status,
        to_status,
        note,
        data,
    )
    return row


async def report_events(
    conn: asyncpg.Connection, tenant_id: int, report_id: uuid.UUID
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(q("report_events"), tenant_id, report_id)
    return rows


IMPORT_COLUMNS = (
    "line",
    "source_id",
    "text",
    "lat",
    "lon",
    "address",
    "address_key",
    "category",
    "submitted_at",
    "channel",
    "closed_at",
)
# The staging table's attribute columns, a1..aN: values of the format's attribute keys.
IMPORT_ATTRIBUTES = 12
# Then the record's SLA figures, as the importer measured it (imports.measure_one).
IMPORT_SLA_COLUMNS = (
    "sla_policy",
    "resolution_target_s",
    "resolution_business_s",
    "resolution_due_at",
)


def import_columns(attributes: int) -> tuple[str, ...]:
    """The staged columns of a format with `attributes` attribute keys, in CSV order."""
    if attributes > IMPORT_ATTRIBUTES:
        raise ValueError(f"at most {IMPORT_ATTRIBUTES} attributes can be imported")
    return (
        *IMPORT_COLUMNS,
        *(f"a{i}" for i in range(1, attributes + 1)),
        *IMPORT_SLA_COLUMNS,
    )


async def import_source_known(conn: asyncpg.Connection, tenant_id: int, source: str) -> bool:
    """Whether the tenant holds any imported record of `source`."""
    return bool(await conn.fetchval(q("import_source_known"), tenant_id, source))


async def import_reports(
    conn: asyncpg.Connection,
    tenant_id: int,
    source: str,
    attribute_keys: Sequence[str],
    data: bytes,
    *,
    skip_known: bool = True,
    measure: Callable[[list[int]], list[tuple[Any, ...]]] | None = None,
) -> list[tuple[uuid.UUID, bool]]:
    """COPY rows into a temp table, then move them under RLS; returns the issues made (one
    per record inserted), each with whether it has an SLA policy (was measured).

    Caller holds a tenant transaction. `data` holds rows of import_columns(len(
    attribute_keys)), in that order, in COPY's text format with "" for NULL; the attribute
    columns pair with `attribute_keys`. skip_known=False leaves out the look-up of known
    records, for a source the tenant did not hold when the import started: a record
    imported since is still refused by the unique index, and then looked up. With
    `measure`, the staged rows came without their SLA figures: it is given the lines of the
    records the tenant does not hold yet and answers (line, policy, target s, business s,
    due at) for those it measured.
    """
    await conn.execute(q("import_stage_create"))
    await conn.copy_to_table(
        "import_stage",
        source=memoryview(data),  # a buffer; asyncpg would take bytes for a file name
        columns=import_columns(len(attribute_keys)),
        format="text",
        null="",
    )
    if measure is not None:
        lines = [r[0] for r in await conn.fetch(q("import_stage_unknown"), tenant_id, source)]
        measured = measure(lines) if lines else []
        if measured:
            await conn.execute(
                q("import_stage_measure"), *[list(c) for c in zip(*measured, strict=True)]
            )
    keys = list(attribute_keys)
    try:
        async with conn.transaction():  # a savepoint: a lost race rolls back only this
            rows = await conn.fetch(q("import_from_stage"), tenant_id, keys, source, skip_known)
    except asyncpg.UniqueViolationError:
        # Another import committed some of these records since the import started or the
        # anti-join looked (the unique index waited for it), or a record repeats one of an
        # earlier chunk: drop repeats within the chunk and move it again, looking them up.
        await conn.execute(q("import_stage_dedupe"))
        rows = await conn.fetch(q("import_from_stage"), tenant_id, keys, source, True)
    return [(r[0], r[1]) for r in rows]


async def review_reports(
    conn: asyncpg.Connection, tenant_id: int, before: uuid.UUID | None, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(q("review_reports"), tenant_id, before, limit)
    return rows


async def list_reports(
    conn: asyncpg.Connection,
    tenant_id: int,
    state: str | None,
    before: uuid.UUID | None,
    limit: int,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        q("list_reports"), tenant_id, state, before, limit
    )
    return rows
