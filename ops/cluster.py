"""Run N CivicPulse processes on one machine behind HAProxy, all on one PostgreSQL.

    .venv/bin/python ops/cluster.py --processes 3 --port 8080

The database is CIVICPULSE_DATABASE_URL, or the embedded server when it is unset (as for
`civicpulse serve`). Migrations run once, first; then each process starts with `serve
--no-demo` on its own port, and HAProxy (Debian's `haproxy`) listens on --port with
ops/haproxy/haproxy.cfg and a backend of one server line per process. Everything the
processes print goes to --run-dir (app1.log, ...), with their pids in cluster.json. Ctrl-C or SIGTERM stops
the processes gracefully (they drain), then HAProxy. A process that dies is reported, not
restarted: the others carry on, and HAProxy's health checks take it out of the rotation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "ops" / "haproxy" / "haproxy.cfg"


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(url: str, procs: list[subprocess.Popen[bytes]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not ready(url):
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"a process exited before {url} was ready: see its log")
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} was not ready after {seconds:.0f} s")
        time.sleep(0.1)


def free_run(host: str, n: int) -> int:
    """The first of n consecutive ports free on `host` now."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((host, 0))
            first = probe.getsockname()[1]
        if first + n > 65536:
            continue
        taken = []
        try:
            for port in range(first, first + n):
                taken.append(socket.socket())
                taken[-1].bind((host, port))
            return first
        except OSError:
            continue
        finally:
            for s in taken:
                s.close()
    raise SystemExit(f"no {n} consecutive free ports on {host}")


def servers_config(ports: list[int]) -> str:
    """The backend ops/haproxy/haproxy.cfg leaves to a second file: one line per process."""
    lines = "".join(f"    server app{i} 127.0.0.1:{p} check\n" for i, p in enumerate(ports, 1))
    return "backend processes\n" + lines


def database_url() -> str:
    """The configured URL, or the embedded server's (started once, here)."""
    from civicpulse.cli import resolve_dsn
    from civicpulse.config import Settings

    return resolve_dsn(Settings.from_env())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=3, help="service processes (3)")
    parser.add_argument("--host", default="127.0.0.1", help="HAProxy's address (127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8080, help="HAProxy's port (8080; 0: a free one)"
    )
    parser.add_argument(
        "--first-port",
        type=int,
        default=8101,
        help="the first process's port; the rest follow (0: a free run of them)",
    )
    parser.add_argument(
        "--run-dir", type=Path, default=Path(".civicpulse/cluster"), help="logs and pids"
    )
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if not Path(args.haproxy).exists():
        parser.error(f"haproxy not found at {args.haproxy}: install Debian's haproxy package")

    run_dir: Path = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    dsn = database_url()
    env = {**os.environ, "CIVICPULSE_DATABASE_URL": dsn}
    subprocess.run([sys.executable, "-m", "civicpulse.cli", "migrate"], env=env, check=True)

    if args.port == 0:
        args.port = free_run(args.host, 1)
    first = args.first_port or free_run("127.0.0.1", args.processes)
    ports = [first + i for i in range(args.processes)]
    apps: list[subprocess.Popen[bytes]] = []
    haproxy: subprocess.Popen[bytes] | None = None

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    def describe(ready: bool) -> None:
        """cluster.json: where it listens and every pid (each leads its process group)."""
        info = {
            "ready": ready,
            "url": f"http://{args.host}:{args.port}",
            "haproxy": None if haproxy is None else haproxy.pid,
            "processes": [
                {"pid": p.pid, "port": port} for p, port in zip(apps, ports, strict=False)
            ],
        }
        (run_dir / "cluster.json").write_text(json.dumps(info, indent=2))

    signal.signal(signal.SIGTERM, stop)
    try:
        for i, port in enumerate(ports, 1):
            with (run_dir / f"app{i}.log").open("ab") as log:
                apps.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "civicpulse.cli",
                            "serve",
                            "--no-demo",
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(port),
                        ],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        # Its own group (with its pool workers): a Ctrl-C reaches this script
                        # only, which stops the processes in order.
                        start_new_session=True,
                    )
                )
        describe(ready=False)  # the pids, before anything can go wrong
        for port in ports:
            wait_ready(f"http://127.0.0.1:{port}/readyz", apps, 60)

        servers = run_dir / "servers.cfg"
        servers.write_text(servers_config(ports))
        command = [args.haproxy, "-f", str(TEMPLATE), "-f", str(servers)]
        lb_env = {**os.environ, "CIVICPULSE_LB_BIND": f"{args.host}:{args.port}"}
        subprocess.run([*command, "-c", "-q"], env=lb_env, check=True)
        with (run_dir / "haproxy.log").open("ab") as log:
            haproxy = subprocess.Popen(
                [*command, "-db"],
                env=lb_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        describe(ready=False)
        wait_ready(f"http://{args.host}:{args.port}/readyz", [haproxy], 30)
        describe(ready=True)
        print(
            f"ready: http://{args.host}:{args.port} -> {args.processes} processes on ports "
            f"{', '.join(map(str, ports))} (logs in {run_dir})",
            flush=True,
        )
        reported: set[int] = set()
        while haproxy.poll() is None:
            for i, p in enumerate(apps, 1):
                if p.poll() is not None and i not in reported:
                    reported.add(i)
                    print(f"app{i} (pid {p.pid}) exited with {p.returncode}", flush=True)
            if len(reported) == len(apps):
                print("every process has exited", flush=True)
                return 1
            time.sleep(0.2)
        print(f"haproxy exited with {haproxy.returncode}", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for p in apps:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in apps:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)  # with its pool workers
        if haproxy is not None and haproxy.poll() is None:
            haproxy.terminate()
            haproxy.wait(10)


if __name__ == "__main__":
    sys.exit(main())
