"""What each process-pool worker runs when it starts (kept apart from the app's modules, so
that a worker imports only the engine, not the web stack)."""

from __future__ import annotations

import os


def lower_priority(increment: int) -> None:
    """Let intake (the service process and the database) have the cores first when they are
    short; the pipeline's batches wait a little instead."""
    if increment > 0:
        os.nice(increment)


def ready() -> bool:
    """A no-op: submitted once at start-up so the pool's processes are up (and have imported
    the engine) before the first report needs them."""
    return True
