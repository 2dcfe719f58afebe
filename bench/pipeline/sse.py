"""A staff live-stream client that timestamps every frame as it arrives.

It keeps the raw facts (each frame's arrival time, `id:` and, for the two grouping events,
the report it names) and judges nothing while reading: matching frames to posted reports,
duplicates and id order are worked out afterwards (metrics.py), so the reader stays cheap
and cannot fall behind because of its own bookkeeping. When the server ends the stream
(a subscriber too slow for its bounded queue is dropped; see civicpulse/live.py) it
reconnects with Last-Event-ID, as a browser would, and counts the reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import aiohttp
import msgspec

# The events that say a report was grouped; their data names it in a top-level report_id.
REPORT_EVENTS = frozenset({"issue_created", "report_attached"})


class _ReportFrame(msgspec.Struct):
    report_id: str | None = None


_decode = msgspec.json.Decoder(_ReportFrame).decode


@dataclass
class StreamLog:
    """What one stream client saw."""

    # (arrival time.monotonic(), event id or None, report id) per grouping frame, in order.
    report_frames: list[tuple[float, int | None, str]] = field(default_factory=list)
    # Every `id:` value in arrival order (grouping frames and others alike).
    ids: list[int] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    bad_frames: int = 0  # a grouping frame without a readable report_id
    connects: int = 0  # 1 + reconnections
    disconnect_reasons: list[str] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def last_id(self) -> int:
        return max(self.ids, default=0)


async def follow(
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    log: StreamLog,
    stop: asyncio.Event,
) -> None:
    """Read the stream into `log` until `stop` is set, reconnecting when it ends."""
    while not stop.is_set():
        headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
        if log.ids:
            headers["Last-Event-ID"] = str(log.last_id)
        reason = "ended by the server"
        try:
            async with session.get(url, headers=headers) as resp:
                if resp.status != 200:
                    body = (await resp.read())[:300].decode(errors="replace")
                    raise RuntimeError(f"stream answered {resp.status}: {body}")
                log.connects += 1
                reader = asyncio.create_task(_read(resp, log))
                stopper = asyncio.create_task(stop.wait())
                try:
                    await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (reader, stopper):
                        task.cancel()
                        # A reader that failed re-raises here (a cut stream: reconnect below).
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = repr(exc)
        if not stop.is_set():
            log.disconnect_reasons.append(reason)
            await asyncio.sleep(0.2)


async def _read(resp: aiohttp.ClientResponse, log: StreamLog) -> None:
    event_id: int | None = None
    kind = "message"
    data: list[bytes] = []
    async for raw in resp.content:
        line = raw.rstrip(b"\r\n")
        if not line:  # a blank line ends a frame
            if data or event_id is not None:
                _frame(log, time.monotonic(), event_id, kind, b"\n".join(data))
            event_id, kind, data = None, "message", []
            continue
        if line.startswith(b":"):
            if line.startswith(b": connected"):
                log.connected.set()
            continue
        name, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if name == b"id":
            event_id = int(value)
        elif name == b"event":
            kind = value.decode()
        elif name == b"data":
            data.append(value)


def _frame(log: StreamLog, at: float, event_id: int | None, kind: str, data: bytes) -> None:
    log.frames += 1
    log.kinds[kind] = log.kinds.get(kind, 0) + 1
    if event_id is not None:
        log.ids.append(event_id)
    if kind in REPORT_EVENTS:
        try:
            report_id = _decode(data).report_id
        except msgspec.DecodeError:
            report_id = None
        if report_id is None:
            log.bad_frames += 1
        else:
            log.report_frames.append((at, event_id, report_id))
