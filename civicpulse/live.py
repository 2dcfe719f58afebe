"""Live fan-out: issue events from PostgreSQL LISTEN/NOTIFY to server-sent-event streams.

Each process holds one LISTEN connection on `civicpulse_events` (the issue_events insert
trigger and the aggregator notify it), so an event logged by any process reaches the
streams of every process. Notifications carry only (tenant, event id, kind); for tenants
with subscribers the broker reads the events in one query per tenant per flush, renders
each frame once for the private and once for the public view, and puts it on every
subscriber's bounded queue. A subscriber whose queue is full is dropped (its stream ends;
the client reconnects with Last-Event-ID and resumes from the database), so one slow client
never slows the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
import structlog

from civicpulse.db import analytics as repo
from civicpulse.db.pool import tenant_transaction

log = structlog.get_logger(__name__)
CHANNEL = "civicpulse_events"
# What the public stream shows: the life of public issues, never who or what was said.
PUBLIC_KINDS = frozenset(
    {"issue_created", "status_changed", "assigned", "report_attached", "merged_into"}
)
_json = msgspec.json.Encoder()


def render(row: Mapping[str, Any], public: bool) -> bytes | None:
    """One SSE frame for an event row, or None when this view may not see it."""
    if public and (row["kind"] not in PUBLIC_KINDS or row["visibility"] != "public"):
        return None
    issue = {
        "id": str(row["issue_id"]),
        "status": row["status"],
        "category": row["category"],
        "area": row["area"],
        "report_count": row["report_count"],
    }
    body: dict[str, Any] = {
        "kind": row["kind"],
        "at": row["created_at"],
        "from_status": row["from_status"],
        "to_status": row["to_status"],
        "issue": issue,
    }
    if not public:
        issue["title"] = row["title"]
        issue["visibility"] = row["visibility"]
        body["report_id"] = None if row["report_id"] is None else str(row["report_id"])
        body["data"] = msgspec.json.decode(row["data"])
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        row["id"],
        row["kind"].encode(),
        _json.encode(body),
    )


ROLLUP_FRAME = b'event: rollup\ndata: {"kind": "rollup"}\n\n'


@dataclass(eq=False)
class Subscriber:
    tenant_id: int
    public: bool
    # (event id, frame); id 0 for frames without one (rollup); None ends the stream.
    queue: asyncio.Queue[tuple[int, bytes] | None]
    dropped: bool = False
    last_id: int = 0


@dataclass
class Broker:
    pool: asyncpg.Pool
    dsn: str
    server_settings: Mapping[str, str]
    queue_size: int = 256
    coalesce: float = 0.05
    subscribers: dict[int, set[Subscriber]] = field(default_factory=lambda: defaultdict(set))
    _pending: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    _rollups: set[int] = field(default_factory=set)
    _last_id: dict[int, int] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-broker")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for subs in self.subscribers.values():
            for sub in subs:
                _close(sub)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def subscribe(self, tenant_id: int, public: bool, last_id: int = 0) -> Subscriber:
        sub = Subscriber(tenant_id, public, asyncio.Queue(self.queue_size), last_id=last_id)
        self.subscribers[tenant_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self.subscribers.get(sub.tenant_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subscribers[sub.tenant_id]

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            note = json.loads(payload)
            tenant_id = int(note["t"])
        except (ValueError, KeyError, TypeError):
            return
        if tenant_id not in self.subscribers:
            return
        if note.get("k") == "rollup":
            self._rollups.add(tenant_id)
        elif "id" in note:
            self._pending[tenant_id].add(int(note["id"]))
        self._wake.set()

    async def _run(self) -> None:
        """Keep a LISTEN connection; after a reconnect, catch up from the last ids seen."""
        while not self._stopping:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, server_settings=dict(self.server_settings))
                await conn.add_listener(CHANNEL, self._on_notify)
                for tenant_id in list(self.subscribers):
                    await self._catch_up(tenant_id)
                while not self._stopping and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 5.0)
                    self._wake.clear()
                    await asyncio.sleep(self.coalesce)  # gather a burst into one read
                    await self._flush()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("live_listener_failed", error=repr(exc))
                await asyncio.sleep(1.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def _catch_up(self, tenant_id: int) -> None:
        last = self._last_id.get(tenant_id)
        if last is None:
            return
        async with tenant_transaction(self.pool, tenant_id) as conn:
            rows = await repo.event_after(conn, tenant_id, last, 1000)
        self._deliver(tenant_id, rows)

    async def _flush(self) -> None:
        pending, self._pending = self._pending, defaultdict(set)
        rollups, self._rollups = self._rollups, set()
        for tenant_id, ids in pending.items():
            if tenant_id not in self.subscribers:
                continue
            async with tenant_transaction(self.pool, tenant_id) as conn:
                rows = await repo.events_by_id(conn, tenant_id, sorted(ids))
            self._deliver(tenant_id, rows)
        for tenant_id in rollups:
            for sub in list(self.subscribers.get(tenant_id, ())):
                self._offer(sub, 0, ROLLUP_FRAME)

    def _deliver(self, tenant_id: int, rows: list[asyncpg.Record]) -> None:
        subs = list(self.subscribers.get(tenant_id, ()))
        for row in rows:
            self._last_id[tenant_id] = max(self._last_id.get(tenant_id, 0), row["id"])
            frames = {False: render(row, False), True: render(row, True)}
            for sub in subs:
                frame = frames[sub.public]
                if frame is not None and row["id"] > sub.last_id:
                    self._offer(sub, row["id"], frame)

    def _offer(self, sub: Subscriber, event_id: int, frame: bytes) -> None:
        if sub.dropped:
            return
        try:
            sub.queue.put_nowait((event_id, frame))
        except asyncio.QueueFull:
            # Too slow: end its stream rather than hold anyone else up.
            _close(sub)
            self.unsubscribe(sub)


def _close(sub: Subscriber) -> None:
    """End a subscriber's stream: its queue ends with None (room is made for it)."""
    sub.dropped = True
    if sub.queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            sub.queue.get_nowait()
    sub.queue.put_nowait(None)
