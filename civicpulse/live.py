"""Live fan-out: issue events from PostgreSQL to server-sent-event streams, in commit order.

Every event has a per-tenant sequence number given in commit order (schema 0011), so the
events a reader can see are always a prefix of the tenant's sequence, and "everything after
the last number sent" is exact: nothing committed later can carry a smaller number.

Each process holds one LISTEN connection on `civicpulse_events` (an insert on issue_events
and the aggregator's rollups notify it), so an event logged by any process reaches the
streams of every process. A notification only names the tenant. For each tenant with open
streams the broker keeps a `Feed`: the newest events read from the table, each rendered once
for the staff view and once for the public view. Fan-out costs the broker one read per
tenant per flush, not one put per subscriber: it appends to the feed and wakes the streams,
and each stream writes what is new for it in one chunk. A stream that falls behind what the
feed holds (a slow client, a resume with Last-Event-ID) reads from the table until it is
back, so nobody is dropped and nobody waits for anyone else.

Waking thousands of streams costs the event loop that intake also runs on, so wake-ups are
paced: at most `max_wakeups` stream wake-ups per second in the process (with 10,000 open
streams at 2,000 a second each is woken every 5 s, with everything new in one write), and a
feed's streams are woken in up to 256 groups spread evenly over that interval, so the loop
reads intake's sockets between groups.

What a public stream shows is decided by civicpulse.visibility: the feed holds the tenant's
public view (from its dashboard settings) and renders public frames with it, live or read
back from the table. When the settings change (`k: view` notice, sent on commit by the
dashboard's PUT), every process re-reads them, drops the frames rendered for the old view
and ends its open public streams; clients reconnect (EventSource does so by itself) and get
the new view, or 404 when the dashboard turned private.

The same LISTEN connection carries `civicpulse_auth` (schemas 0012, 0013): a key revoked,
expired early or re-scoped, a session ended, a user disabled, re-roled or given a new
password. Every process drops its credential caches (`on_auth_change`) and ends the tenant's
open staff streams: access was checked when they opened, and may no longer hold. Their
clients reconnect with Last-Event-ID (nothing is lost) and are checked again. A staff
stream also ends when its credential expires by itself (`until`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
import structlog

from civicpulse.db import analytics as repo
from civicpulse.db.pool import tenant_transaction
from civicpulse.db.replica import Reads
from civicpulse.visibility import STAFF, View

log = structlog.get_logger(__name__)
CHANNEL = "civicpulse_events"
AUTH_CHANNEL = "civicpulse_auth"
# What the public stream shows: the life of public issues, never who or what was said.
PUBLIC_KINDS = frozenset(
    {"issue_created", "status_changed", "assigned", "report_attached", "merged_into"}
)
ROLLUP_FRAME = b'event: rollup\ndata: {"kind": "rollup"}\n\n'
KEEPALIVE_FRAME = b": keep-alive\n\n"
READ_ROWS = 500  # events per table read (flush, resume, catch-up)
WAKE_GROUPS = 256
_json = msgspec.json.Encoder()


def render(row: Mapping[str, Any], view: View) -> bytes | None:
    """One SSE frame for an event row, or None when this view may not see it."""
    public = not view.staff
    if public and (row["kind"] not in PUBLIC_KINDS or not view.shows_row(row)):
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
        row["seq"],
        row["kind"].encode(),
        _json.encode(body),
    )


@dataclass(eq=False)
class Feed:
    """One tenant's newest events in this process, rendered once for each view.

    It holds every event numbered in (floor, last_seq]; older ones are read from the table.
    """

    tenant_id: int
    last_seq: int
    view: View  # the tenant's public view
    shown: bool = True  # is the tenant's dashboard public?
    view_version: int = 0  # bumped when the view changes: public streams then end
    auth_version: int = 0  # bumped when a credential changes: staff streams then end
    capacity: int = 2048
    floor: int = 0
    subscribers: int = 0
    rollups: int = 0  # bumped by every rollup notice: streams compare it with what they saw
    # Streams wait in WAKE_GROUPS groups, and a wake-up sets the groups that have streams
    # one after another, spread evenly over the pacing interval: the event loop writes a few
    # dozen streams at a time and reads its sockets (intake's requests) in between, instead
    # of writing ten thousand streams in one go while every request waits.
    ready: list[asyncio.Event] = field(
        default_factory=lambda: [asyncio.Event() for _ in range(WAKE_GROUPS)]
    )
    group_sizes: list[int] = field(default_factory=lambda: [0] * WAKE_GROUPS)
    joined: int = 0  # streams that have joined, for spreading them over the groups
    woken_at: float = 0.0
    wake_handle: asyncio.TimerHandle | None = None
    _seqs: list[int] = field(default_factory=list)
    _staff: list[bytes] = field(default_factory=list)
    _public: list[bytes | None] = field(default_factory=list)
    _issues: list[str] = field(default_factory=list)  # each event's issue
    # Issues with public frames held (a superset after trims): when one of them stops being
    # shown (made private, moved out of the public areas), its held frames are dropped.
    _shown: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.floor = self.last_seq

    def add(self, rows: list[asyncpg.Record]) -> None:
        for row in rows:
            staff = render(row, STAFF)
            assert staff is not None
            issue = str(row["issue_id"])
            public = render(row, self.view)
            if public is not None:
                self._shown.add(issue)
            elif issue in self._shown and not self.view.shows_row(row):
                self._hide(issue)
            self._seqs.append(row["seq"])
            self._staff.append(staff)
            self._public.append(public)
            self._issues.append(issue)
            self.last_seq = row["seq"]
        if len(self._seqs) > 2 * self.capacity:  # trimmed in bulk: amortised O(1) per event
            cut = len(self._seqs) - self.capacity
            self.floor = self._seqs[cut - 1]
            del self._seqs[:cut], self._staff[:cut], self._public[:cut], self._issues[:cut]

    def _hide(self, issue: str) -> None:
        """The public may no longer see this issue: a stream joining now must not be sent
        the frames it had while it was shown (a read from the table would not show them)."""
        self._shown.discard(issue)
        for i, held in enumerate(self._issues):
            if held == issue:
                self._public[i] = None

    def set_view(self, view: View, shown: bool) -> None:
        """The tenant's public view changed: frames rendered for the old one are dropped
        (streams behind the new floor read from the table) and public streams end."""
        self.view = view
        self.shown = shown
        self.view_version += 1
        self.floor = self.last_seq
        self._seqs.clear()
        self._staff.clear()
        self._public.clear()
        self._issues.clear()
        self._shown.clear()

    def since(self, cursor: int, public: bool) -> tuple[bytes, int]:
        """What a stream at `cursor` (>= floor) has not had yet, as one chunk, and where it
        then stands."""
        start = bisect.bisect_right(self._seqs, cursor)
        if start == len(self._seqs):
            return b"", max(cursor, self.last_seq)
        frames = self._public[start:] if public else self._staff[start:]
        return b"".join(f for f in frames if f is not None), self.last_seq


@dataclass
class Broker:
    pool: asyncpg.Pool
    dsn: str
    server_settings: Mapping[str, str]
    feed_capacity: int = 2048
    coalesce: float = 0.05
    max_wakeups: float = 2_000.0  # stream wake-ups per second in this process
    keepalive: float = 15.0
    # Replays from the table may read a replica (see _from_table); live events never do.
    reads: Reads | None = None
    feeds: dict[int, Feed] = field(default_factory=dict)
    streams: int = 0
    table_reads: int = 0  # reads by streams behind their feed (resume, slow clients)
    on_table_read: Callable[[], None] = lambda: None
    on_auth_change: Callable[[], None] = lambda: None
    _pending: set[int] = field(default_factory=set)
    _views: set[int] = field(default_factory=set)  # tenants whose public view changed
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-broker")

    async def stop(self) -> None:
        """Stop listening and end every open stream."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for feed in self.feeds.values():
            self._wake_streams(feed)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stream(
        self,
        tenant_id: int,
        public: bool,
        last_seq: int | None,
        until: dt.datetime | None = None,
    ) -> AsyncIterator[bytes]:
        """A stream's body: everything after `last_seq` (or from now), then live events,
        rollup notices and keep-alives, until the client leaves, the broker stops, what the
        stream may show changes, or (staff) its credential changes or expires at `until`."""
        feed, group = await self._join(tenant_id)
        version = feed.view_version
        auth_version = feed.auth_version
        try:
            if public and not feed.shown:
                return
            yield b"retry: 3000\n: connected\n\n"
            if last_seq is None:
                cursor = feed.last_seq
            else:
                # A number from the future (another deployment, a typo) would hold the stream
                # silent until the tenant caught up with it: resume from the newest instead.
                async with tenant_transaction(self.pool, tenant_id) as conn:
                    cursor = min(last_seq, await repo.last_event_seq(conn, tenant_id))
            rollups = feed.rollups
            while not self._stopping:
                if public and feed.view_version != version:
                    return  # what it may show changed: the client reconnects to the new view
                if not public and (
                    feed.auth_version != auth_version
                    or (until is not None and until <= dt.datetime.now(dt.UTC))
                ):
                    return  # the credential may no longer hold: the client reconnects
                if cursor < feed.floor:
                    view = feed.view if public else STAFF
                    chunk, cursor = await self._from_table(
                        tenant_id, cursor, view, feed.floor, feed.last_seq
                    )
                else:
                    chunk, cursor = feed.since(cursor, public)
                    if feed.rollups != rollups:
                        rollups = feed.rollups
                        chunk += ROLLUP_FRAME
                if chunk:
                    yield chunk
                    continue
                ready = feed.ready[group]
                wait = self.keepalive
                if until is not None and not public:
                    wait = min(wait, max(0.0, (until - dt.datetime.now(dt.UTC)).total_seconds()))
                try:
                    async with asyncio.timeout(wait):
                        await ready.wait()
                except TimeoutError:
                    yield KEEPALIVE_FRAME
        finally:
            self._leave(feed, group)

    async def _from_table(
        self, tenant_id: int, cursor: int, view: View, floor: int, newest: int
    ) -> tuple[bytes, int]:
        self.table_reads += 1
        self.on_table_read()
        rows = None
        if self.reads is not None:
            # The replica's copy of the issues is then as new as the feed's, so an issue made
            # private since is not shown again.
            try:
                async with self.reads.holding("stream", tenant_id, newest) as (conn, _):
                    rows = await repo.events_after(conn, tenant_id, cursor, READ_ROWS)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                rows = None  # the replica went away meanwhile (its lag check will notice)
        if rows is None:
            async with tenant_transaction(self.pool, tenant_id) as conn:
                rows = await repo.events_after(conn, tenant_id, cursor, READ_ROWS)
        if not rows:
            return b"", floor  # numbers up to the floor that were never used (gaps)
        frames = (render(row, view) for row in rows)
        return b"".join(f for f in frames if f is not None), rows[-1]["seq"]

    async def _join(self, tenant_id: int) -> tuple[Feed, int]:
        feed = self.feeds.get(tenant_id)
        if feed is None:
            async with tenant_transaction(self.pool, tenant_id) as conn:
                last = await repo.last_event_seq(conn, tenant_id)
                view, shown = await repo.public_view(conn, tenant_id)
            feed = self.feeds.get(tenant_id)  # another stream may have made it meanwhile
            if feed is None:
                feed = Feed(tenant_id, last, view, shown, capacity=self.feed_capacity)
                self.feeds[tenant_id] = feed
                # Whatever committed between those reads and now comes with the next flush,
                # settings included (a notice sent meanwhile found no feed to tell).
                self._pending.add(tenant_id)
                self._views.add(tenant_id)
                self._wake.set()
        group = feed.joined % WAKE_GROUPS
        feed.joined += 1
        feed.group_sizes[group] += 1
        feed.subscribers += 1
        self.streams += 1
        return feed, group

    def _leave(self, feed: Feed, group: int) -> None:
        feed.group_sizes[group] -= 1
        feed.subscribers -= 1
        self.streams -= 1
        if feed.subscribers == 0 and self.feeds.get(feed.tenant_id) is feed:
            del self.feeds[feed.tenant_id]
            if feed.wake_handle is not None:
                feed.wake_handle.cancel()

    def _on_auth(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.on_auth_change()
        try:
            tenant_id = int(json.loads(payload)["t"])
        except (ValueError, KeyError, TypeError):
            return
        feed = self.feeds.get(tenant_id)
        if feed is not None:
            feed.auth_version += 1
            self._wake_streams(feed)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            note = json.loads(payload)
            tenant_id = int(note["t"])
        except (ValueError, KeyError, TypeError):
            return
        feed = self.feeds.get(tenant_id)
        if feed is None:
            return
        if note.get("k") == "rollup":
            feed.rollups += 1
            self._publish(feed)
        elif note.get("k") == "view":
            self._views.add(tenant_id)
            self._pending.add(tenant_id)
            self._wake.set()
        else:
            self._pending.add(tenant_id)
            self._wake.set()

    async def _run(self) -> None:
        """Keep a LISTEN connection; after a (re)connect, read every feed up to date."""
        while not self._stopping:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, server_settings=dict(self.server_settings))
                await conn.add_listener(CHANNEL, self._on_notify)
                await conn.add_listener(AUTH_CHANNEL, self._on_auth)
                # Whatever was announced while no listener ran is unknown: start afresh.
                self.on_auth_change()
                self._views.update(self.feeds)
                self._pending.update(self.feeds)
                await self._flush()
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

    async def _flush(self) -> None:
        pending, self._pending = self._pending, set()
        for tenant_id in pending:
            feed = self.feeds.get(tenant_id)
            if feed is None:
                continue
            async with tenant_transaction(self.pool, tenant_id) as conn:
                if tenant_id in self._views:
                    self._views.discard(tenant_id)
                    view, shown = await repo.public_view(conn, tenant_id)
                    if (view, shown) != (feed.view, feed.shown):
                        feed.set_view(view, shown)
                        self._wake_streams(feed)  # public streams end now
                while True:
                    rows = await repo.events_after(conn, tenant_id, feed.last_seq, READ_ROWS)
                    feed.add(rows)
                    if len(rows) < READ_ROWS:
                        break
            self._publish(feed)

    def _publish(self, feed: Feed) -> None:
        """Wake the feed's streams now, or as soon as the pace allows."""
        if feed.wake_handle is not None:
            return  # already due
        loop = asyncio.get_running_loop()
        due = feed.woken_at + self._interval()
        if loop.time() >= due:
            self._wake_streams(feed)
        else:
            feed.wake_handle = loop.call_at(due, self._wake_streams, feed)

    def _interval(self) -> float:
        """Seconds between a feed's wake-ups: at most max_wakeups stream wake-ups a second."""
        return max(self.coalesce, self.streams / self.max_wakeups)

    def _wake_streams(self, feed: Feed) -> None:
        loop = asyncio.get_running_loop()
        feed.wake_handle = None
        feed.woken_at = loop.time()
        groups, feed.ready = feed.ready, [asyncio.Event() for _ in range(WAKE_GROUPS)]
        active = [g for g, size in zip(groups, feed.group_sizes, strict=True) if size]
        if self._stopping or len(active) <= 1:
            for g in groups:
                g.set()
            return
        spread = self._interval() / len(active)
        active[0].set()
        for k, g in enumerate(active[1:], start=1):
            loop.call_later(k * spread, g.set)
