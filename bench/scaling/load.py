"""Intake load in a process of its own: keep-alive connections POSTing reports.

Design rule: the generator must cost little next to what it measures, and what it costs must
show on its own line. So it runs in a process the driver accounts by pid, speaks bare
HTTP/1.1 over asyncio protocols with each request built as bytes (no HTTP library), and keeps
one row per request in arrays, summarised once at the end.

Closed loop (rate 0): each connection sends its next request as soon as the last one was
answered, so the figure is what the service acknowledges flat out; requests answered inside
the measured window count, and latency is from send to answer. Paced (rate > 0): request i
is due at start + i / rate and goes out on connection i mod C; its latency runs from the
moment it was due (a slow answer delays that connection's next requests, and the delay
counts), and the requests due inside the window count.

The driver talks over a multiprocessing pipe: the process opens its connections and answers
"ready"; the driver sends ("go", start, measure_from, measure_to) in time.monotonic() (one
clock for every process on Linux); the process answers with its figures.
"""

from __future__ import annotations

import asyncio
import re
import resource
import signal
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

import numpy as np

OK = frozenset({200, 201, 202, 207})
MAX_HEAD = 16 * 1024
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
_ACCEPTED = re.compile(rb'"accepted":\s*(\d+)')


@dataclass(frozen=True)
class Spec:
    """One run of load: where, what, how many connections, closed loop or paced."""

    host: str
    port: int
    path: str  # .../reports (one report per body) or .../reports/batch
    key: str
    bodies: tuple[bytes, ...]
    items_per_body: int  # reports in each body: 1, or the batch size
    connections: int
    rate: float  # requests per second; 0: closed loop
    key_prefix: str  # Idempotency-Keys are unique across the whole benchmark
    timeout: float = 30.0  # per request
    drain: float = 15.0  # after the window, how long requests in flight may take


class ProtocolError(Exception):
    """The answer was not HTTP/1.1 this client understands (e.g. chunked)."""


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = False
        self.closing = False  # the server said Connection: close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, though they have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self._fail(ProtocolError("response head too long"))
            return
        head = bytes(self.buf[:end])
        length = _LENGTH.search(head)
        if length is None:
            self._fail(ProtocolError(f"no Content-Length: {head[:200]!r}"))
            return
        stop = end + 4 + int(length.group(1))
        if len(self.buf) < stop:
            return
        body = bytes(self.buf[end + 4 : stop])
        del self.buf[:stop]
        self.closing = _CLOSE.search(head) is not None
        try:
            status = int(head[9:12])
        except ValueError:
            self._fail(ProtocolError(f"bad status line: {head[:100]!r}"))
            return
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(exc or ConnectionResetError("closed by the server"))

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()
        self.lost = True

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter

    @property
    def usable(self) -> bool:
        return not self.lost and not self.closing

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Rows:
    """One entry per request: when it counted from, when answered, status, reports acked."""

    t0: array[float]
    done: array[float]
    status: array[int]  # 0: no answer (see errors)
    items: array[int]

    @classmethod
    def empty(cls) -> Rows:
        return cls(array("d"), array("d"), array("H"), array("I"))

    def add(self, t0: float, done: float, status: int, items: int) -> None:
        self.t0.append(t0)
        self.done.append(done)
        self.status.append(status)
        self.items.append(items)


class Load:
    """The connections and the schedule of one run."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.conns: list[HttpConnection] = []
        self.rows = Rows.empty()
        self.errors: Counter[str] = Counter()
        self.reconnects = 0
        head = (
            f"POST {spec.path} HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\n"
            f"Authorization: Bearer {spec.key}\r\nContent-Type: application/json\r\n"
        )
        self.head = head.encode()

    def build(self, i: int) -> bytes:
        body = self.spec.bodies[i % len(self.spec.bodies)]
        return (
            self.head
            + b"Idempotency-Key: %s-%d\r\nContent-Length: %d\r\n\r\n"
            % (self.spec.key_prefix.encode(), i, len(body))
            + body
        )

    async def connect(self) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(HttpConnection, self.spec.host, self.spec.port)
        return conn

    async def open(self) -> None:
        self.conns = list(
            await asyncio.gather(*(self.connect() for _ in range(self.spec.connections)))
        )

    def acked(self, status: int, body: bytes) -> int:
        if status == 207:  # a batch with rejected items: count the accepted ones
            found = _ACCEPTED.search(body)
            return int(found.group(1)) if found else 0
        return self.spec.items_per_body if status in OK else 0

    async def _one(self, w: int, i: int, t0: float) -> None:
        spec = self.spec
        conn = self.conns[w]
        try:
            if not conn.usable:
                self.reconnects += 1
                conn = self.conns[w] = await asyncio.wait_for(self.connect(), spec.timeout)
            status, body = await asyncio.wait_for(conn.request(self.build(i)), spec.timeout)
        except (OSError, TimeoutError, ProtocolError) as exc:
            self.errors[type(exc).__name__] += 1
            conn.close()
            conn.lost = True
            self.rows.add(t0, time.monotonic(), 0, 0)
            return
        self.rows.add(t0, time.monotonic(), status, self.acked(status, body))

    async def closed_loop(self, w: int, start: float, stop: float) -> None:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        i = w
        while (now := time.monotonic()) < stop:
            await self._one(w, i, now)
            i += self.spec.connections

    async def paced(self, w: int, start: float, stop: float) -> None:
        rate = self.spec.rate
        i = w
        while (due := start + i / rate) < stop:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self._one(w, i, due)
            i += self.spec.connections

    async def run(self, start: float, stop: float) -> None:
        worker = self.paced if self.spec.rate > 0 else self.closed_loop
        tasks = [asyncio.create_task(worker(w, start, stop)) for w in range(self.spec.connections)]
        # Requests in flight at the window's end get `drain` seconds to be answered.
        done, pending = await asyncio.wait(tasks, timeout=stop - time.monotonic() + self.spec.drain)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()


def figures(load: Load, measure_from: float, measure_to: float) -> dict[str, Any]:
    """Throughput and latency of the window: answers inside it (closed loop), or requests
    due inside it (paced)."""
    rows = load.rows
    t0 = np.frombuffer(rows.t0, dtype=np.float64)
    done = np.frombuffer(rows.done, dtype=np.float64)
    status = np.frombuffer(rows.status, dtype=np.uint16)
    items = np.frombuffer(rows.items, dtype=np.uint32)
    if load.spec.rate > 0:
        keep = (t0 >= measure_from) & (t0 < measure_to)
    else:
        keep = (done >= measure_from) & (done <= measure_to)
    seconds = measure_to - measure_from
    lat = np.sort(done[keep] - t0[keep])
    ok = np.isin(status[keep], list(OK))

    def pct(p: float) -> float | None:
        return round(float(np.percentile(lat, p)), 6) if len(lat) else None

    codes = Counter(int(s) for s in status[keep])
    return {
        "requests": int(keep.sum()),
        "requests_per_s": round(float(keep.sum()) / seconds, 1),
        "acked_requests": int(ok.sum()),
        "acked_per_s": round(float(items[keep].sum()) / seconds, 1),
        "acked_items": int(items[keep].sum()),
        "non_2xx": int((~ok).sum()),
        "status": {str(k): v for k, v in sorted(codes.items())},
        "errors": dict(load.errors),
        "reconnects": load.reconnects,
        "p50_s": pct(50),
        "p90_s": pct(90),
        "p99_s": pct(99),
        "max_s": round(float(lat[-1]), 6) if len(lat) else None,
        "sent_in_all": len(rows.t0),
    }


async def _serve(pipe: Connection, spec: Spec) -> None:
    load = Load(spec)
    await load.open()
    pipe.send(("ready", None))
    command, (start, measure_from, measure_to) = await asyncio.to_thread(pipe.recv)
    assert command == "go", command
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    await load.run(start, measure_to)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for conn in load.conns:
        conn.close()
    out = figures(load, measure_from, measure_to)
    out["own_cpu_s"] = round(
        cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime, 3
    )
    pipe.send(("figures", out))


def serve(pipe: Connection, spec: Spec) -> None:
    """A load process's body (multiprocessing target)."""
    # Ctrl-C reaches the whole process group: the driver decides when the load ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import uvloop

    uvloop.run(_serve(pipe, spec))
