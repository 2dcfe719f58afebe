"""Streams lose nothing: with many writers whose transactions commit in any order, every
committed event reaches every stream exactly once, in the tenant's sequence, live, on a
resume and for a client too slow to keep up with the feed; rolled-back events never do."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator

import asyncpg

from civicpulse.config import Settings
from civicpulse.db.pool import create_pool
from civicpulse.live import Broker
from tests.support import TenantKeys

WRITERS = 8
TRANSACTIONS = 20  # per writer


def frames(chunk: bytes) -> list[tuple[int, dict[str, object]]]:
    """The (id, data) of each event frame in a chunk (comments and rollups have no id)."""
    out = []
    for block in chunk.split(b"\n\n"):
        fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if line and b": " in line)
        if b"id" in fields:
            out.append((int(fields[b"id"]), json.loads(fields[b"data"])))
    return out


async def collect(body: AsyncIterator[bytes], slow: float = 0.0) -> list[tuple[int, str]]:
    """Read a stream up to the event tagged "end": (id, what the writer wrote) each."""
    got: list[tuple[int, str]] = []
    async with asyncio.timeout(60):
        async for chunk in body:
            for seq, data in frames(chunk):
                got.append((seq, str(data["data"]["tag"])))  # type: ignore[index]
                if got[-1][1] == "end":
                    return got
            if slow:
                await asyncio.sleep(slow)  # a client reading far slower than events come
    raise AssertionError(f"stream ended after {len(got)} events")


async def log(conn: asyncpg.Connection, tenant_id: int, issue: uuid.UUID, tag: str) -> None:
    await conn.execute(
        "INSERT INTO issue_events (tenant_id, issue_id, kind, actor, data) "
        "VALUES ($1, $2, 'comment', 'test', jsonb_build_object('tag', $3::text))",
        tenant_id,
        issue,
        tag,
    )


async def write(db_url: str, tenant_id: int, issue: uuid.UUID, writer: int) -> list[str]:
    """Transactions of 1-3 events that linger a random while before they commit (so they
    finish in any order) and sometimes roll back; the tags of what committed."""
    rng = random.Random(writer)
    committed: list[str] = []
    conn = await asyncpg.connect(db_url)
    try:
        for n in range(TRANSACTIONS):
            tags = [f"w{writer}-t{n}-e{k}" for k in range(rng.randint(1, 3))]
            tx = conn.transaction()
            await tx.start()
            await asyncio.sleep(rng.random() * 0.01)  # started, nothing written yet
            for tag in tags:
                await log(conn, tenant_id, issue, tag)
            await asyncio.sleep(rng.random() * 0.01)
            if rng.random() < 0.1:
                await tx.rollback()
            else:
                await tx.commit()
                committed += tags
    finally:
        await conn.close()
    return committed


async def test_every_event_arrives_once_in_order_live_on_resume_and_when_slow(
    db_url: str, tenant_a: TenantKeys
) -> None:
    pool = await create_pool(Settings(), db_url, min_size=1, max_size=4)
    # A feed of 8 to 16 events: the slow stream falls behind it and reads from the table.
    broker = Broker(pool, db_url, {}, feed_capacity=8, coalesce=0.01)
    await broker.start()
    conn = await asyncpg.connect(db_url)
    live = broker.stream(tenant_a.id, public=False, last_seq=None)
    slow = broker.stream(tenant_a.id, public=False, last_seq=None)
    try:
        issue = await conn.fetchval(
            "INSERT INTO issues (tenant_id, id, category) VALUES ($1, $2, 'other') RETURNING id",
            tenant_a.id,
            uuid.uuid4(),
        )
        start = await conn.fetchval(
            "SELECT COALESCE(max(seq), 0) FROM issue_events WHERE tenant_id = $1", tenant_a.id
        )
        await anext(live), await anext(slow)  # joined (": connected")
        readers = asyncio.gather(collect(live), collect(slow, slow=0.5))
        written = await asyncio.gather(
            *(write(db_url, tenant_a.id, issue, w) for w in range(WRITERS))
        )
        await log(conn, tenant_a.id, issue, "end")
        got_live, got_slow = await readers
        # What the table holds, in its order: every committed event, nothing rolled back.
        rows = await conn.fetch(
            "SELECT seq, data->>'tag' AS tag FROM issue_events "
            "WHERE tenant_id = $1 AND seq > $2 ORDER BY seq",
            tenant_a.id,
            start,
        )
        table = [(r["seq"], r["tag"]) for r in rows]
        committed = {tag for tags in written for tag in tags} | {"end"}
        assert {tag for _, tag in table} == committed and len(table) == len(committed)
        assert got_live == table  # exactly once each, in sequence order
        assert got_slow == table
        assert broker.table_reads > 0  # the slow one fell behind the feed and caught up

        middle = table[len(table) // 2][0]
        resumed = broker.stream(tenant_a.id, public=False, last_seq=middle)
        await anext(resumed)
        assert await collect(resumed) == [t for t in table if t[0] > middle]
        await resumed.aclose()
    finally:
        await conn.close()
        await live.aclose()
        await slow.aclose()
        await broker.stop()
        await pool.close()
