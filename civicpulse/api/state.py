"""What the lifespan hands to request handlers (request.state.app)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg

from civicpulse.accounts import PasswordWork
from civicpulse.api.auth import Authenticator
from civicpulse.config import Settings
from civicpulse.db.replica import Reads
from civicpulse.live import Broker
from civicpulse.metrics import Metrics
from civicpulse.pipeline.pressure import Backlog
from civicpulse.pipeline.writer import Intake


@dataclass(slots=True)
class AppState:
    settings: Settings
    pool: asyncpg.Pool
    intake: Intake
    auth: Authenticator
    metrics: Metrics
    tasks: dict[str, asyncio.Task[None]]
    queues: dict[str, asyncio.Queue[Any]]
    broker: Broker
    reads: Reads  # where the read-only surfaces read: the replica while it keeps up
    backlog: Backlog
    passwords: PasswordWork
    accepting: bool = True
