"""Open-loop load: report i of a run is due at start + i / rate, whatever the server does.

A closed loop (the next request when the last one answered) slows down with the server and
hides its stalls; here the schedule is fixed, every POST is timed from the moment it was due
(so time spent waiting for a free connection in the client's pool counts), and a request is
never skipped. `lag` (started - due) shows whether this generator itself kept the schedule.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass

import aiohttp
import msgspec

from bench.ingest import data


@dataclass(slots=True)
class Post:
    """One scheduled report and what became of it (times are time.monotonic())."""

    due: float
    started: float = math.nan
    done: float = math.nan
    status: int = 0  # 0: no HTTP answer (see error)
    report_id: str | None = None
    error: str | None = None


class _Accepted(msgspec.Struct):
    id: str


_accepted = msgspec.json.Decoder(_Accepted).decode


def build_bodies(records: list[data.Record], count: int, seed: int) -> list[bytes]:
    """`count` report bodies from LA311 records: real places, addresses and request types,
    text from the per-type templates of bench/ingest/data.py. No submitted_at: the service
    stamps each report with its arrival, as for a resident reporting now (LA's 2020 dates
    would make every issue start far past its SLA and flood the stream with breaches)."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        body = data.report_body(rng, rng.choice(records))
        body.pop("submitted_at", None)
        bodies.append(msgspec.json.encode(body))
    return bodies


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: bytes,
    post: Post,
) -> None:
    post.started = time.monotonic()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            payload = await resp.read()
            post.done = time.monotonic()
            post.status = resp.status
            if resp.status == 202:
                post.report_id = _accepted(payload).id
    except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError) as exc:
        post.done = time.monotonic()
        post.error = type(exc).__name__


async def run_open_loop(
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    bodies: list[bytes],
    rate: float,
    start: float,
) -> list[Post]:
    """POST every body on the schedule start + i / rate; returns when all have answered."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    posts = [Post(due=start + i / rate) for i in range(len(bodies))]
    async with asyncio.TaskGroup() as tasks:
        sent = 0
        while sent < len(posts):
            # Everything due by now goes out at once: a late wake-up is caught up, not dropped.
            due = min(len(posts), math.floor((time.monotonic() - start) * rate) + 1)
            while sent < due:
                tasks.create_task(_post(session, url, headers, bodies[sent], posts[sent]))
                sent += 1
            if sent < len(posts):
                await asyncio.sleep(max(0.0, posts[sent].due - time.monotonic()))
    return posts
