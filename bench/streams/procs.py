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
from dataclasses import dataclass

from bench.pipeline import cpu

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
GROUPS = (*cpu.GROUPS, "clients")


def raise_nofile() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns it.

    Children inherit it: the service needs a socket per stream, and so do the clients.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


CpuSample = cpu.CpuSample


def cpu_sample(at: float, service_pid: int | None, clients: Collection[int], db: str) -> CpuSample:
    """CPU seconds so far of every process in a group (bench/pipeline/cpu.py)."""
    return cpu.sample(at, service_pid, db, clients)


def seconds_used(a: CpuSample, b: CpuSample) -> dict[str, float]:
    """CPU seconds each group (and postgres_other_db) used between two samples."""
    return cpu.seconds_used(a, b, GROUPS)


def cores_used(a: CpuSample, b: CpuSample) -> dict[str, float]:
    """Cores each group used between two samples (CPU seconds / wall seconds), the whole
    machine, and `other`: everything outside the groups plus other databases' backends."""
    return cpu.cores_used(a, b, GROUPS, other_db_is_other=True)


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
        stat = cpu.proc_stat(entry)
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
        stat = cpu.proc_stat(str(pid))
        if stat is not None:
            pages += stat[3]
    return round(pages * PAGE_KIB / 1024, 1)
