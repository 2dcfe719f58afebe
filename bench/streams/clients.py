"""Public-stream clients, thousands per process: one bare asyncio.Protocol per connection.

Design rule: reading a frame must cost far less than sending it, or the benchmark measures
its own clients. So there is no HTTP library and no per-frame Python code: each read is
scanned once with a regex for `id:` lines (chunked transfer encoding needs no decoding for
that: chunk-size lines sit between frames and never look like one), the ids go into a
compact array, and the read's arrival time and the id count so far go into two more. Which
frame came when, unions and lags are all worked out once, after the streams close, with
numpy (`report`). The clients run in processes of their own (`ClientGroup`), so the load
generator's event loop is not the one reading ten thousand sockets.

The parent talks to each process over a multiprocessing pipe: the process opens its streams
at its share of the opening rate and answers "opened"; then "status" (how many streams have
reached an event id) as often as asked; then "report" closes every stream and sends back the
figures. A process ends when the pipe closes. That protocol (`hold`, `StreamProcesses`) and
the stream itself serve bench/scaling/readers.py too: a subclass of `StreamClient` reads
other frames (`frames_received`) and its own `report` answers with other figures.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import re
import signal
import time
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol, TypeVar, cast

import numpy as np

from bench.streams.procs import raise_nofile

ID_LINE = re.compile(rb"\nid: (\d+)\n")
CONNECTED = b": connected\n"
MAX_HEAD = 16 * 1024
CONNECT_ATTEMPTS = 3
# Per stream, in this order, in a report's "streams" list.
STREAM_FIELDS = (
    "index",
    "connected",
    "connect_s",  # from the process's first connect to ": connected"
    "frames",  # frames with an id above the phase's first (duplicates included)
    "unique",  # distinct ids among them
    "duplicates",
    "out_of_order",  # ids lower than the one before them
    "in_window",  # frames that arrived inside the load window
    "bytes",
    "ended",  # why the stream ended before the benchmark closed it (None: it did not)
)


class Dialling(Protocol):
    """What opening a process's streams needs of its configuration."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def open_rate(self) -> float: ...  # streams this process opens per second
    @property
    def connect_timeout(self) -> float: ...


C = TypeVar("C", bound=Dialling)


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    path: str
    first: int  # global index of this process's first stream
    count: int
    open_rate: float  # streams this process opens per second
    sample: frozenset[int]  # global indices whose every (id, arrival) is sent back
    connect_timeout: float


class StreamClient(asyncio.Protocol):
    """One public stream: the response head, then every `id:` and when its read arrived."""

    def __init__(self, index: int, request: bytes) -> None:
        self.index = index
        self.request = request
        self.transport: asyncio.BaseTransport | None = None
        self.ready: asyncio.Future[bool] | None = None  # True at ": connected"
        self.head = b""
        self.status = 0
        self.tail = b""
        # One tenant's event numbers on a fresh database: 32 bits are plenty, and half the
        # memory of 64 (ten thousand streams keep every id they were sent).
        self.ids = array("I")
        self.read_at = array("d")  # time.monotonic() of each read that brought ids
        self.read_ids = array("I")  # len(self.ids) after that read
        self.bytes = 0
        self.attempts = 0
        self.connected_at = math.nan
        self.ended: str | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, though they have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.bytes += len(data)
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD:
                    self.fail("response head too long")
                return
            try:
                self.status = int(self.head[: self.head.find(b"\r\n")].split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.status = -1
            # Keep the head's last "\r\n": the body's first line then follows a "\n" too.
            data, self.head = self.head[end + 2 :], b""
            if self.status != 200:
                self.fail(f"HTTP {self.status}: {data.strip()[:200]!r}")
                return
        buf = self.tail + data if self.tail else data
        if self.ready is not None and not self.ready.done() and CONNECTED in buf:
            self.connected_at = now
            self.ready.set_result(True)
        self.frames_received(buf, now)
        # An id line cut in two by the read is found whole in the next one: keep what
        # follows the last newline, with that newline.
        cut = buf.rfind(b"\n")
        self.tail = buf[cut:] if cut >= 0 else buf[-MAX_HEAD:]

    def frames_received(self, buf: bytes, now: float) -> None:
        """Keep what a read brought: `buf` is the body since the last read's last newline."""
        found = ID_LINE.findall(buf)
        if found:
            self.ids.extend(map(int, found))
            self.read_at.append(now)
            self.read_ids.append(len(self.ids))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing and self.ended is None:
            self.ended = "closed by the server" if exc is None else repr(exc)
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(False)

    def fail(self, reason: str) -> None:
        self.ended = reason
        if self.transport is not None:
            self.transport.close()
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(False)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    @property
    def connected(self) -> bool:
        return self.ready is not None and self.ready.done() and self.ready.result()

    @property
    def alive(self) -> bool:
        return self.connected and self.ended is None


# -- inside a client process -----------------------------------------------------------------


async def _open_one(client: StreamClient, cfg: Dialling) -> None:
    loop = asyncio.get_running_loop()
    ready = client.ready = loop.create_future()
    reason = ""
    for attempt in range(CONNECT_ATTEMPTS):
        client.attempts += 1
        try:
            await loop.create_connection(lambda: client, cfg.host, cfg.port)
            break
        except OSError as exc:  # a full accept queue, no free port: try again shortly
            reason = f"connect: {exc!r}"
            await asyncio.sleep(0.5 * (attempt + 1))
    else:
        client.fail(reason)
        return
    await asyncio.wait({ready}, timeout=cfg.connect_timeout)
    if not ready.done():
        client.fail(f"no ': connected' within {cfg.connect_timeout:g} s")


async def _open_all(clients: Sequence[StreamClient], cfg: Dialling) -> float:
    """Open every stream at the process's pace; seconds until the last one answered."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.TaskGroup() as tasks:
        for i, client in enumerate(clients):
            delay = start + i / cfg.open_rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.create_task(_open_one(client, cfg))
    return loop.time() - start


def _opened(clients: Sequence[StreamClient], seconds: float, started: float) -> dict[str, Any]:
    connect_s = sorted(c.connected_at - started for c in clients if c.connected)
    return {
        "connected": len(connect_s),
        "failed": sum(1 for c in clients if not c.connected),
        "reasons": dict(Counter(c.ended for c in clients if c.ended).most_common(5)),
        "extra_attempts": sum(c.attempts for c in clients) - len(clients),
        "open_s": round(seconds, 2),
    }


def _status(clients: Sequence[StreamClient], target: int) -> dict[str, int]:
    alive = [c for c in clients if c.alive]
    return {
        "alive": len(alive),
        "ended": sum(1 for c in clients if c.connected and c.ended is not None),
        "caught_up": sum(1 for c in alive if c.ids and c.ids[-1] >= target),
    }


def _arrivals(c: StreamClient, seq_before: int) -> tuple[np.ndarray, np.ndarray]:
    """The stream's ids above seq_before and the arrival time of each, in arrival order."""
    ids = np.frombuffer(c.ids, dtype=np.uint32)
    per_read = np.diff(np.frombuffer(c.read_ids, dtype=np.uint32).astype(np.int64), prepend=0)
    times = np.repeat(np.frombuffer(c.read_at, dtype=np.float64), per_read)
    keep = ids > seq_before
    return ids[keep], times[keep]


def _first_arrivals(ids: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct id once, with its first arrival (a repeated id counts when first seen)."""
    unique, first = np.unique(ids, return_index=True)
    return unique, times[first]


def report(
    clients: list[StreamClient],
    cfg: Config,
    started: float,
    seq_before: int,
    t0: float,
    t1: float,
    bins: int,
) -> dict[str, Any]:
    """Figures of this process's streams for ids above seq_before; t0..t1 is the window.

    Per id of the union of the ids any stream here received: its first and last arrival
    over the streams and how many streams got it. Frames per second from t0 in `bins`
    one-second bins, plus one before t0 and one for later. Every (id, arrival) of the
    sampled streams.
    """
    streams: list[tuple[Any, ...]] = []
    hist = np.zeros(bins + 2, dtype=np.int64)
    union = np.empty(0, dtype=np.uint32)
    previous: np.ndarray | None = None
    samples: list[tuple[int, bytes, bytes]] = []
    before = 0
    for c in clients:
        before += len(c.ids)
        ids, times = _arrivals(c, seq_before)
        before -= len(ids)
        unique = np.unique(ids)
        streams.append(
            (
                c.index,
                c.connected,
                round(c.connected_at - started, 3) if c.connected else None,
                len(ids),
                len(unique),
                len(ids) - len(unique),
                int(np.count_nonzero(np.diff(ids.astype(np.int64)) < 0)),
                int(np.count_nonzero((times >= t0) & (times <= t1))),
                c.bytes,
                c.ended,
            )
        )
        slots = np.clip(np.floor(times - t0).astype(np.int64) + 1, 0, bins + 1)
        hist += np.bincount(slots, minlength=bins + 2)
        # Streams normally get the very same ids: merge only what differs from the last.
        if previous is None or not np.array_equal(unique, previous):
            union = np.union1d(union, unique)
            previous = unique
        if c.index in cfg.sample:
            samples.append((c.index, ids.tobytes(), times.tobytes()))
    first = np.full(len(union), np.inf)
    last = np.full(len(union), -np.inf)
    got = np.zeros(len(union), dtype=np.int64)
    for c in clients:
        ids, times = _first_arrivals(*_arrivals(c, seq_before))
        if not len(ids):
            continue
        pos = np.searchsorted(union, ids)
        first[pos] = np.minimum(first[pos], times)
        last[pos] = np.maximum(last[pos], times)
        got[pos] += 1
    return {
        "streams": streams,
        "union": union.tobytes(),
        "first": first.tobytes(),
        "last": last.tobytes(),
        "got": got.tobytes(),
        "hist": hist.tolist(),
        "samples": samples,
        "frames_before_window": before,
    }


async def hold(
    conn: Connection,
    clients: Sequence[StreamClient],
    cfg: Dialling,
    answer: Callable[[float, Any], Any],
) -> None:
    """Open the streams, then answer the parent until it asks for the report: that closes
    every stream and sends `answer(started, arg)` (started: time.monotonic() before the
    first connect; arg: what the parent sent with the request)."""
    started = time.monotonic()
    try:
        seconds = await _open_all(clients, cfg)
        conn.send(("opened", _opened(clients, seconds, started)))
        while True:
            command, arg = await asyncio.to_thread(conn.recv)
            if command == "status":
                conn.send(("status", _status(clients, arg)))
            elif command == "report":
                for c in clients:
                    c.close()
                await asyncio.sleep(0.2)  # let the transports finish closing
                conn.send(("report", answer(started, arg)))
                return
    except EOFError:  # the parent went away
        return
    finally:
        for c in clients:
            c.close()


async def _serve(conn: Connection, cfg: Config) -> None:
    request = (
        f"GET {cfg.path} HTTP/1.1\r\nHost: {cfg.host}:{cfg.port}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()
    clients = [StreamClient(cfg.first + i, request) for i in range(cfg.count)]
    await hold(conn, clients, cfg, lambda started, arg: report(clients, cfg, started, **arg))


def serve(
    main: Callable[[Connection, C], Coroutine[Any, Any, None]], conn: Connection, cfg: C
) -> None:
    """A stream process's body: `main(conn, cfg)` (which opens cfg.count streams, then
    answers the parent's commands) on uvloop."""
    # Ctrl-C reaches the whole process group: the parent decides when the clients end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile()
    import uvloop

    uvloop.run(main(conn, cfg))


# -- in the benchmark's process --------------------------------------------------------------


def recv(conn: Connection, timeout: float, what: str) -> Any:
    """The next message from a child process's pipe; TimeoutError naming `what` if none
    comes within `timeout` seconds."""
    if not conn.poll(timeout):
        raise TimeoutError(f"no answer from {what} within {timeout:g} s")
    return conn.recv()


def shares(n: int, processes: int) -> list[int]:
    """n streams over at most `processes` processes (at least one), as evenly as can be."""
    processes = max(1, min(processes, n))
    return [n // processes + (1 if k < n % processes else 0) for k in range(processes)]


class StreamProcesses:
    """Processes holding streams between them, each driven over a pipe (see `hold`)."""

    ROLE = "stream-client"  # names a process in a timeout's message

    def __init__(self, procs: list[tuple[mp.process.BaseProcess, Connection]]) -> None:
        self.procs = procs

    @staticmethod
    def spawn(
        main: Callable[[Connection, C], Coroutine[Any, Any, None]], cfgs: Sequence[C], name: str
    ) -> list[tuple[mp.process.BaseProcess, Connection]]:
        """A process per config running `main` (see `serve`), named `name`-k."""
        ctx = mp.get_context("spawn")  # never fork a process with a running event loop
        procs: list[tuple[mp.process.BaseProcess, Connection]] = []
        for k, cfg in enumerate(cfgs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=serve, args=(main, child, cfg), name=f"{name}-{k}")
            proc.daemon = True  # ends with the benchmark, however that ends
            proc.start()
            child.close()
            procs.append((proc, parent))
        return procs

    @property
    def pids(self) -> set[int]:
        return {p.pid for p, _ in self.procs if p.pid is not None}

    async def _answers(self, kind: str, timeout: float) -> list[Any]:
        out = []
        what = f"a {self.ROLE} process"
        for proc, conn in self.procs:
            try:
                got, body = await asyncio.to_thread(recv, conn, timeout, what)
            except EOFError:
                raise RuntimeError(
                    f"{proc.name} exited (code {proc.exitcode}) instead of answering {kind}"
                ) from None
            if got != kind:
                raise RuntimeError(f"{proc.name} answered {got!r} to {kind!r}")
            out.append(body)
        return out

    async def _ask(self, kind: str, arg: Any, timeout: float) -> list[Any]:
        for _, conn in self.procs:
            conn.send((kind, arg))
        return await self._answers(kind, timeout)

    async def opened(self, timeout: float) -> dict[str, Any]:
        """Wait until every process has opened its streams (or given up on some)."""
        parts = await self._answers("opened", timeout)
        reasons: Counter[str] = Counter()
        for p in parts:
            reasons.update(p["reasons"])
        return {
            "connected": sum(p["connected"] for p in parts),
            "failed": sum(p["failed"] for p in parts),
            "reasons": dict(reasons.most_common(5)),
            "extra_attempts": sum(p["extra_attempts"] for p in parts),
            "open_s": max(p["open_s"] for p in parts),
        }

    async def status(self, target: int) -> dict[str, int]:
        parts = await self._ask("status", target, 30.0)
        return {k: sum(p[k] for p in parts) for k in parts[0]}

    def close(self) -> None:
        for proc, conn in self.procs:
            conn.close()
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


class ClientGroup(StreamProcesses):
    """One or more client processes holding `n` public streams between them."""

    def __init__(self, n: int, procs: list[tuple[mp.process.BaseProcess, Connection]]) -> None:
        super().__init__(procs)
        self.n = n

    @classmethod
    def start(
        cls,
        n: int,
        processes: int,
        *,
        host: str,
        port: int,
        path: str,
        open_rate: float,
        sample: int,
        connect_timeout: float,
    ) -> ClientGroup:
        counts = shares(n, processes)
        picked = np.unique(np.linspace(0, n - 1, min(sample, n)).round().astype(int))
        sampled = frozenset(int(i) for i in picked)
        cfgs = []
        first = 0
        for count in counts:
            cfgs.append(
                Config(
                    host,
                    port,
                    path,
                    first,
                    count,
                    open_rate / len(counts),
                    frozenset(i for i in sampled if first <= i < first + count),
                    connect_timeout,
                )
            )
            first += count
        return cls(n, cls.spawn(_serve, cfgs, "stream-clients"))

    async def report(self, **params: Any) -> list[dict[str, Any]]:
        """Close every stream; each process's figures (see `report`)."""
        return await self._ask("report", params, 300.0)
