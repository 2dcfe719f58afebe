"""Staff live-stream readers, hundreds or thousands per process, one asyncio.Protocol each.

Design rule: reading must cost far less than sending, or the benchmark measures its own
clients; so the streams are bench/streams/clients.py's (no HTTP library; the same opening,
processes and pipe protocol), and only what a read keeps differs. Each read is searched
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

import dataclasses
import math
import re
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.ingest.common import percentile
from bench.streams.clients import StreamClient, StreamProcesses, hold, shares

COMMENT = re.compile(rb"\nid: (\d+)\nevent: comment\n")
FRAME = b"\nid: "


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


class StaffStream(StreamClient):
    """One staff stream: each comment frame's id (in `ids`) and arrival; frames counted."""

    def __init__(self, index: int, request: bytes) -> None:
        super().__init__(index, request)
        self.arrived = array("d")
        self.frames = 0

    def frames_received(self, buf: bytes, now: float) -> None:
        self.frames += buf.count(FRAME)
        for found in COMMENT.findall(buf):
            self.ids.append(int(found))
            self.arrived.append(now)


# -- inside a reader process -----------------------------------------------------------------


def _seen(streams: list[StaffStream]) -> list[tuple[Any, ...]]:
    return [
        (s.connected, s.ended, s.frames, s.bytes, s.ids.tobytes(), s.arrived.tobytes())
        for s in streams
    ]


async def _serve(pipe: Connection, cfg: Config) -> None:
    request = (
        f"GET {cfg.path} HTTP/1.1\r\nHost: {cfg.host}:{cfg.port}\r\n"
        f"Authorization: Bearer {cfg.key}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()
    streams = [StaffStream(i, request) for i in range(cfg.count)]
    await hold(pipe, streams, cfg, lambda started, arg: _seen(streams))


# -- in the driver ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What one stream saw: comment event id -> first arrival (time.monotonic())."""

    connected: bool
    ended: str | None
    frames: int
    bytes: int
    arrivals: dict[int, float]


class Readers(StreamProcesses):
    """Reader processes holding `n` staff streams between them."""

    ROLE = "stream-reader"

    @classmethod
    def start(cls, n: int, processes: int, cfg: Config) -> Readers:
        counts = shares(n, processes)
        rate = cfg.open_rate / len(counts)
        parts = [dataclasses.replace(cfg, count=c, open_rate=rate) for c in counts]
        return cls(cls.spawn(_serve, parts, "stream-readers"))

    async def report(self) -> list[Seen]:
        """Close every stream; what each one saw."""
        seen = []
        for part in await self._ask("report", None, 120.0):
            for connected, ended, frames, nbytes, raw_ids, raw_at in part:
                ids, at = array("I"), array("d")
                ids.frombytes(raw_ids)
                at.frombytes(raw_at)
                arrivals: dict[int, float] = {}
                for i, t in zip(ids, at, strict=True):
                    arrivals.setdefault(i, t)
                seen.append(Seen(connected, ended, frames, nbytes, arrivals))
        return seen


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
