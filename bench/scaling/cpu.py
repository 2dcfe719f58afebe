"""CPU by role from /proc: service processes, their pools, HAProxy, PostgreSQL, the clients.

Design rule: every role is a set of pids known before a window opens, and two samples are
compared pid by pid (a process that starts in between adds all of its CPU, one that exits
adds nothing), so the figures say where the machine's cores went and nothing is guessed.
"service" is the service processes themselves, "workers" the rest of their process groups
(each runs in a session of its own: that is its process pool), "postgres" every postgres
process except backends of other databases (other users of a shared server count as
"other"), "loadgen" and "readers" the client processes, "driver" this process (it makes the
changes the streams carry), and "other" whatever else the whole machine spent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bench.pipeline.cpu import machine_busy, other_db_backend, processes

GROUPS = ("service", "workers", "haproxy", "postgres", "loadgen", "readers", "driver")


@dataclass(frozen=True)
class Roles:
    """The pids of each role during one window."""

    apps: frozenset[int]
    haproxy: int | None = None
    loadgen: frozenset[int] = frozenset()
    readers: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    machine_busy: float  # CPU seconds, all cores, since boot
    # pid -> (group, CPU seconds so far)
    procs: dict[int, tuple[str, float]] = field(default_factory=dict)


def sample(at: float, roles: Roles, db: str) -> Sample:
    """CPU seconds so far of every process that has a role."""
    procs: dict[int, tuple[str, float]] = {}
    me = os.getpid()
    for pid, comm, pgrp, seconds in processes():
        if pid in roles.apps:
            group = "service"
        elif pgrp in roles.apps:
            group = "workers"
        elif pid == roles.haproxy:
            group = "haproxy"
        elif pid in roles.loadgen:
            group = "loadgen"
        elif pid in roles.readers:
            group = "readers"
        elif pid == me:
            group = "driver"
        elif comm == "postgres" and not other_db_backend(pid, db):
            group = "postgres"
        else:
            continue
        procs[pid] = (group, seconds)
    return Sample(at=at, machine_busy=machine_busy(), procs=procs)


def cores(a: Sample, b: Sample) -> dict[str, float]:
    """Cores each role used between two samples (CPU seconds / wall seconds), the whole
    machine, `other` (the machine less the roles), and each service process on its own
    (`app:<pid>`, to show how evenly the load spread)."""
    wall = b.at - a.at
    if wall <= 0:
        return {}
    spent = dict.fromkeys(GROUPS, 0.0)
    apps: dict[int, float] = {}
    for pid, (group, seconds) in b.procs.items():
        before = a.procs.get(pid)
        # A pid seen in another role before was reused by a new process: count it whole.
        used = seconds - before[1] if before and before[0] == group else seconds
        spent[group] += used
        if group == "service":
            apps[pid] = used
    out = {k: round(v / wall, 3) for k, v in spent.items()}
    machine = (b.machine_busy - a.machine_busy) / wall
    out["machine"] = round(machine, 3)
    out["other"] = round(max(0.0, machine - sum(out[k] for k in GROUPS)), 3)
    for pid, used in sorted(apps.items()):
        out[f"app:{pid}"] = round(used / wall, 3)
    return out
