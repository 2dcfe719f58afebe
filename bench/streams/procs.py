"""What the processes of a run use, from /proc: CPU by group, resident memory, open files.

The groups are the service process, its workers (the rest of its process group: it runs in
a session of its own), every postgres process (with the part spent by backends of other
databases kept apart, so that other users of a shared server can be left out), this load
generator, and the stream-client processes. CPU is compared pid by pid between two samples,
so a process that starts in between adds all of its CPU and one that exits adds nothing.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Collection
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
GROUPS = ("service", "workers", "postgres", "loadgen", "clients")
EXTRA = ("postgres_other_db",)  # part of "postgres", not a group of its own


def raise_nofile() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns it.

    Children inherit it: the service needs a socket per stream, and so do the clients.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.monotonic()
    machine_busy: float  # CPU seconds, all cores, since boot
    # pid -> (group, CPU seconds so far, a backend of another database?)
    procs: dict[int, tuple[str, float, bool]] = field(default_factory=dict)


def _stat(pid: str) -> tuple[str, int, float, int] | None:
    """(comm, process group, CPU seconds, resident pages) of one process; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    return comm, int(rest[2]), (int(rest[11]) + int(rest[12])) / TICK, int(rest[21])


def _machine_busy() -> float:
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICK  # all but idle and iowait


def _other_db_backend(pid: str, db: str) -> bool:
    """A backend connected to another database than `db` (its title names the database)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            title = fh.read().decode(errors="replace")
    except OSError:
        return False
    backend = "(" in title or "[local]" in title  # background processes have no client
    return backend and f" {db} " not in title


def cpu_sample(at: float, service_pid: int | None, clients: Collection[int], db: str) -> CpuSample:
    """CPU seconds so far of every process in a group."""
    procs: dict[int, tuple[str, float, bool]] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(entry)
        if stat is None:
            continue
        comm, pgrp, seconds, _ = stat
        pid = int(entry)
        if pid == me:
            procs[pid] = ("loadgen", seconds, False)
        elif pid in clients:
            procs[pid] = ("clients", seconds, False)
        elif service_pid is not None and pid == service_pid:
            procs[pid] = ("service", seconds, False)
        elif service_pid is not None and pgrp == service_pid:
            procs[pid] = ("workers", seconds, False)
        elif comm == "postgres":
            procs[pid] = ("postgres", seconds, _other_db_backend(entry, db))
    return CpuSample(at=at, machine_busy=_machine_busy(), procs=procs)


def seconds_used(a: CpuSample, b: CpuSample) -> dict[str, float]:
    """CPU seconds each group (and postgres_other_db) used between two samples."""
    out = dict.fromkeys(GROUPS + EXTRA, 0.0)
    for pid, (group, seconds, other_db) in b.procs.items():
        before = a.procs.get(pid)
        # A pid seen in another group before was reused by a new process: count it whole.
        spent = seconds - before[1] if before and before[0] == group else seconds
        out[group] += spent
        if other_db:
            out["postgres_other_db"] += spent
    return out


def cores_used(a: CpuSample, b: CpuSample) -> dict[str, float]:
    """Cores each group used between two samples (CPU seconds / wall seconds), the whole
    machine, and `other`: everything outside the groups plus other databases' backends."""
    wall = b.at - a.at
    if wall <= 0:
        return {}
    out = {k: round(v / wall, 3) for k, v in seconds_used(a, b).items()}
    machine = (b.machine_busy - a.machine_busy) / wall
    out["machine"] = round(machine, 3)
    out["other"] = round(
        max(0.0, machine - sum(out[k] for k in GROUPS)) + out["postgres_other_db"], 3
    )
    return out


@dataclass(frozen=True)
class Memory:
    """Resident memory (MiB) and open files of the service, at one moment."""

    service_mib: float
    workers_mib: float  # the rest of its process group (the process pool)
    service_fds: int


def memory(service_pid: int) -> Memory:
    service = workers = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(entry)
        if stat is None:
            continue
        _, pgrp, _, pages = stat
        if int(entry) == service_pid:
            service = pages
        elif pgrp == service_pid:
            workers += pages
    try:
        fds = len(os.listdir(f"/proc/{service_pid}/fd"))
    except OSError:
        fds = -1
    return Memory(
        service_mib=round(service * PAGE_KIB / 1024, 1),
        workers_mib=round(workers * PAGE_KIB / 1024, 1),
        service_fds=fds,
    )


def rss_mib(pids: Collection[int]) -> float:
    """Resident memory of these processes together (MiB)."""
    pages = 0
    for pid in pids:
        stat = _stat(str(pid))
        if stat is not None:
            pages += stat[3]
    return round(pages * PAGE_KIB / 1024, 1)
