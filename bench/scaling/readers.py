"""Staff live-stream readers, hundreds or thousands per process, one asyncio.Protocol each.

Design rule: reading must cost far less than sending, or the benchmark measures its own
clients; so, as in bench/streams/clients.py, there is no HTTP library. Each read is searched
once with a regex for comment frames (`id: N` then `event: comment`: the only kind the
benchmark makes on purpose) and for each one the stream keeps its event id and the read's
arrival time; other frames (the grouping events of the reports posted meanwhile) are only
counted. Chunked transfer encoding needs no decoding for this: chunk-size lines sit between
frames, and an id line cut in two by a read is kept and found whole in the next one.

The driver talks to each process over a multiprocessing pipe: the process opens its streams
at its share of the opening rate and answers "opened"; then "status" (how many streams have
an event id at least N) as often as asked; then "report" closes every stream and sends back
what each one saw. A process ends when the pipe closes.
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
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

from bench.ingest.common import percentile
from bench.streams.procs import raise_nofile

COMMENT = re.compile(rb"\nid: (\d+)\nevent: comment\n")
FRAME = b"\nid: "
CONNECTED = b": connected\n"
MAX_HEAD = 16 * 1024
CONNECT_ATTEMPTS = 3


def pct(xs: list[float], p: float) -> float | None:
    """The p-quantile (0..1, linear between ranks), rounded to the microsecond; None if empty."""
    return round(percentile(xs, p), 6) if xs else None


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    path: str
    key: str
    count: int
    open_rate: float  # streams this process opens per second
    connect_timeout: float


class StaffStream(asyncio.Protocol):
    """One staff stream: the response head, then each comment frame's id and arrival."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[bool] | None = None  # True at ": connected"
        self.head = b""
        self.status = 0
        self.tail = b""
        self.ids = array("I")
        self.arrived = array("d")
        self.frames = 0
        self.bytes = 0
        self.attempts = 0
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
            self.ready.set_result(True)
        self.frames += buf.count(FRAME)
        for found in COMMENT.findall(buf):
            self.ids.append(int(found))
            self.arrived.append(now)
        # Keep what follows the last newline, with it: a line cut by the read is found whole
        # next time, and a whole frame is never counted twice.
        cut = buf.rfind(b"\n")
        self.tail = buf[cut:] if cut >= 0 else buf[-MAX_HEAD:]

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


# -- inside a reader process -----------------------------------------------------------------


async def _open_one(stream: StaffStream, cfg: Config) -> None:
    loop = asyncio.get_running_loop()
    ready = stream.ready = loop.create_future()
    reason = ""
    for attempt in range(CONNECT_ATTEMPTS):
        stream.attempts += 1
        try:
            await loop.create_connection(lambda: stream, cfg.host, cfg.port)
            break
        except OSError as exc:  # a full accept queue: try again shortly
            reason = f"connect: {exc!r}"
            await asyncio.sleep(0.5 * (attempt + 1))
    else:
        stream.fail(reason)
        return
    await asyncio.wait({ready}, timeout=cfg.connect_timeout)
    if not ready.done():
        stream.fail(f"no ': connected' within {cfg.connect_timeout:g} s")


async def _open_all(streams: list[StaffStream], cfg: Config) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.TaskGroup() as tasks:
        for i, stream in enumerate(streams):
            delay = start + i / cfg.open_rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.create_task(_open_one(stream, cfg))


def _status(streams: list[StaffStream], target: int) -> dict[str, int]:
    alive = [s for s in streams if s.alive]
    return {
        "alive": len(alive),
        "ended": sum(1 for s in streams if s.connected and s.ended is not None),
        "caught_up": sum(1 for s in alive if s.ids and s.ids[-1] >= target),
    }


async def _serve(pipe: Connection, cfg: Config) -> None:
    request = (
        f"GET {cfg.path} HTTP/1.1\r\nHost: {cfg.host}:{cfg.port}\r\n"
        f"Authorization: Bearer {cfg.key}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()
    streams = [StaffStream(request) for _ in range(cfg.count)]
    started = time.monotonic()
    try:
        await _open_all(streams, cfg)
        pipe.send(
            (
                "opened",
                {
                    "connected": sum(1 for s in streams if s.connected),
                    "failed": sum(1 for s in streams if not s.connected),
                    "reasons": dict(Counter(s.ended for s in streams if s.ended).most_common(5)),
                    "extra_attempts": sum(s.attempts for s in streams) - len(streams),
                    "open_s": round(time.monotonic() - started, 2),
                },
            )
        )
        while True:
            command, arg = await asyncio.to_thread(pipe.recv)
            if command == "status":
                pipe.send(("status", _status(streams, arg)))
            elif command == "report":
                for s in streams:
                    s.close()
                await asyncio.sleep(0.2)  # let the transports finish closing
                pipe.send(
                    (
                        "report",
                        [
                            (
                                s.connected,
                                s.ended,
                                s.frames,
                                s.bytes,
                                s.ids.tobytes(),
                                s.arrived.tobytes(),
                            )
                            for s in streams
                        ],
                    )
                )
                return
    except EOFError:  # the driver went away
        return
    finally:
        for s in streams:
            s.close()


def serve(pipe: Connection, cfg: Config) -> None:
    """A reader process's body (multiprocessing target)."""
    # Ctrl-C reaches the whole process group: the driver decides when the readers end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile()
    import uvloop

    uvloop.run(_serve(pipe, cfg))


# -- in the driver ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What one stream saw: comment event id -> first arrival (time.monotonic())."""

    connected: bool
    ended: str | None
    frames: int
    bytes: int
    arrivals: dict[int, float]


def _recv(conn: Connection, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"no answer from a stream-reader process within {timeout:g} s")
    return conn.recv()


class Readers:
    """Reader processes holding `n` staff streams between them."""

    def __init__(self, procs: list[tuple[mp.process.BaseProcess, Connection]]) -> None:
        self.procs = procs

    @classmethod
    def start(cls, n: int, processes: int, cfg: Config) -> Readers:
        ctx = mp.get_context("spawn")  # never fork a process with a running event loop
        processes = max(1, min(processes, n))
        procs: list[tuple[mp.process.BaseProcess, Connection]] = []
        for k in range(processes):
            count = n // processes + (1 if k < n % processes else 0)
            part = Config(
                cfg.host,
                cfg.port,
                cfg.path,
                cfg.key,
                count,
                cfg.open_rate / processes,
                cfg.connect_timeout,
            )
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=serve, args=(child, part), name=f"stream-readers-{k}")
            proc.daemon = True  # ends with the benchmark, however that ends
            proc.start()
            child.close()
            procs.append((proc, parent))
        return cls(procs)

    @property
    def pids(self) -> frozenset[int]:
        return frozenset(p.pid for p, _ in self.procs if p.pid is not None)

    async def _answers(self, kind: str, timeout: float) -> list[Any]:
        out = []
        for proc, conn in self.procs:
            try:
                got, body = await asyncio.to_thread(_recv, conn, timeout)
            except EOFError:
                raise RuntimeError(
                    f"{proc.name} exited (code {proc.exitcode}) instead of answering {kind}"
                ) from None
            if got != kind:
                raise RuntimeError(f"{proc.name} answered {got!r} to {kind!r}")
            out.append(body)
        return out

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
        for _, conn in self.procs:
            conn.send(("status", target))
        parts = await self._answers("status", 30.0)
        return {k: sum(p[k] for p in parts) for k in parts[0]}

    async def report(self) -> list[Seen]:
        """Close every stream; what each one saw."""
        for _, conn in self.procs:
            conn.send(("report", None))
        seen = []
        for part in await self._answers("report", 120.0):
            for connected, ended, frames, nbytes, raw_ids, raw_at in part:
                ids, at = array("I"), array("d")
                ids.frombytes(raw_ids)
                at.frombytes(raw_at)
                arrivals: dict[int, float] = {}
                for i, t in zip(ids, at, strict=True):
                    arrivals.setdefault(i, t)
                seen.append(Seen(connected, ended, frames, nbytes, arrivals))
        return seen

    def close(self) -> None:
        for proc, conn in self.procs:
            conn.close()
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def deliveries(seen: list[Seen], started: dict[int, float]) -> dict[str, Any]:
    """Per comment (event id -> its request's start): the delay to each stream that was
    connected, percentiles over every delivery, and per comment the delay to the last
    stream. A comment a connected stream never got is a miss."""
    delays: list[float] = []
    last: list[float] = []
    misses = 0
    live = [s for s in seen if s.connected]
    for seq, t0 in started.items():
        latest = -math.inf
        for s in live:
            at = s.arrivals.get(seq)
            if at is None:
                misses += 1
                continue
            delays.append(at - t0)
            latest = max(latest, at - t0)
        if latest > -math.inf:
            last.append(latest)
    delays.sort()
    last.sort()
    return {
        "comments": len(started),
        "streams": len(live),
        "deliveries": len(delays),
        "missed": misses,
        "p50_s": pct(delays, 0.5),
        "p95_s": pct(delays, 0.95),
        "p99_s": pct(delays, 0.99),
        "max_s": round(delays[-1], 6) if delays else None,
        "to_last_stream_p50_s": pct(last, 0.5),
        "to_last_stream_max_s": round(last[-1], 6) if last else None,
        "ended_early": sum(1 for s in live if s.ended is not None),
        "frames": sum(s.frames for s in live),
        "bytes": sum(s.bytes for s in live),
    }
