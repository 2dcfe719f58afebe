"""CPU split from /proc: the service, its worker processes, PostgreSQL, the load generator.

Every group is read from /proc/<pid>/stat (utime + stime) of each live process and compared
pid by pid, so a process that exits between two samples adds nothing (its CPU since the
first sample is not seen) and one that starts adds all of its CPU; the service, its pool
and the PostgreSQL backends of its pool live for the whole run. "postgres" is every postgres
process, as asked; "postgres_other_db" is the part of it spent by backends of other
databases (other users of a shared server), so that it can be left out of the service's
cost. "other" is what the whole machine (/proc/stat) spent beyond the groups.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK")
GROUPS = ("service", "workers", "postgres", "loadgen")
EXTRA = ("postgres_other_db",)  # part of "postgres", not a group of its own


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.monotonic()
    machine_busy: float  # CPU seconds, all cores, since boot
    # pid -> (group, CPU seconds so far, a backend of another database?)
    procs: dict[int, tuple[str, float, bool]] = field(default_factory=dict)


def proc_stat(pid: str) -> tuple[str, int, float, int] | None:
    """(comm, process group, CPU seconds, resident pages) of one process; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    return comm, int(rest[2]), (int(rest[11]) + int(rest[12])) / TICK, int(rest[21])


def processes() -> Iterator[tuple[int, str, int, float]]:
    """(pid, comm, process group, CPU seconds) of every live process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = proc_stat(entry)
        if stat is None:
            continue
        comm, pgrp, seconds, _ = stat
        yield int(entry), comm, pgrp, seconds


def machine_busy() -> float:
    """CPU seconds the whole machine (all cores) has been busy since boot."""
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICK  # all but idle and iowait


def other_db_backend(pid: int, db: str) -> bool:
    """A backend connected to another database than `db` (its title names the database)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            title = fh.read().decode(errors="replace")
    except OSError:
        return False
    # "postgres: USER DB HOST(PORT) STATE" for backends; background processes have no client.
    backend = "(" in title or "[local]" in title
    return backend and f" {db} " not in title


def sample(at: float, service_pid: int | None, db: str, clients: Collection[int] = ()) -> CpuSample:
    """CPU seconds so far of every process in a group.

    service: the server process itself; workers: the rest of its process group (it runs in a
    session of its own, so that is its ProcessPoolExecutor and the pool's forkserver);
    postgres: every process named postgres (the server's background processes and all
    backends, whichever database); loadgen: this process; clients: the given pids (other
    load-generating processes, bench/streams).
    """
    procs: dict[int, tuple[str, float, bool]] = {}
    me = os.getpid()
    for pid, comm, pgrp, seconds in processes():
        if pid == me:
            procs[pid] = ("loadgen", seconds, False)
        elif pid in clients:
            procs[pid] = ("clients", seconds, False)
        elif service_pid is not None and pid == service_pid:
            procs[pid] = ("service", seconds, False)
        elif service_pid is not None and pgrp == service_pid:
            procs[pid] = ("workers", seconds, False)
        elif comm == "postgres":
            procs[pid] = ("postgres", seconds, other_db_backend(pid, db))
    return CpuSample(at=at, machine_busy=machine_busy(), procs=procs)


def seconds_used(a: CpuSample, b: CpuSample, groups: tuple[str, ...] = GROUPS) -> dict[str, float]:
    """CPU seconds each group (and postgres_other_db) used between two samples."""
    out = dict.fromkeys(groups + EXTRA, 0.0)
    for pid, (group, seconds, other_db) in b.procs.items():
        before = a.procs.get(pid)
        # A pid seen in another group before was reused by a new process: count it whole.
        spent = seconds - before[1] if before and before[0] == group else seconds
        out[group] += spent
        if other_db:
            out["postgres_other_db"] += spent
    return out


def cores_used(
    a: CpuSample, b: CpuSample, groups: tuple[str, ...] = GROUPS, other_db_is_other: bool = False
) -> dict[str, float]:
    """Cores each group used between two samples (CPU seconds / wall seconds), plus the
    whole machine and `other` (everything outside the groups, and with `other_db_is_other`
    other databases' backends too)."""
    wall = b.at - a.at
    if wall <= 0:
        return {}
    out = {k: round(v / wall, 3) for k, v in seconds_used(a, b, groups).items()}
    machine = (b.machine_busy - a.machine_busy) / wall
    out["machine"] = round(machine, 3)
    other = max(0.0, machine - sum(out[k] for k in groups))
    if other_db_is_other:
        other += out["postgres_other_db"]
    out["other"] = round(other, 3)
    return out
