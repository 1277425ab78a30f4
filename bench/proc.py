"""CPU time of processes on this machine, read from /proc: how the benchmarks say where the CPU went.

Each process's own time is user + system; `reaped` is what the children it has waited for used (a PostgreSQL
postmaster reaps its short-lived workers). Over a window, a tree's CPU is its live members' own time plus
what they reaped: a child counted live at the start and reaped by the end is then counted once, in full.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    name: str  # the command name /proc/<pid>/stat gives (e.g. "tansu", "postgres", "python")
    cpu: float  # seconds, user + system, of the process itself
    reaped: float  # seconds, user + system, of the children it has waited for


def process(pid: int) -> Process | None:
    """One process; None once it is gone."""
    try:
        head, _, tail = Path(f"/proc/{pid}/stat").read_text().rpartition(")")
    except OSError:
        return None
    fields = tail.split()
    return Process(pid, int(fields[1]), head.partition("(")[2], (int(fields[11]) + int(fields[12])) / _TICK,
                   (int(fields[13]) + int(fields[14])) / _TICK)


def snapshot() -> dict[int, Process]:
    """Every process on the machine, now."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (p := process(int(entry.name))) is not None:
            found[p.pid] = p
    return found


def descendants(root: int, processes: Mapping[int, Process]) -> list[int]:
    """`root` and every live process below it."""
    children: dict[int, list[int]] = {}
    for p in processes.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu(root: int, processes: Mapping[int, Process] | None = None) -> float:
    """CPU seconds of `root` and its live descendants, with what they reaped (a fresh snapshot if none given)."""
    processes = snapshot() if processes is None else processes
    return sum(p.cpu + p.reaped for pid in descendants(root, processes) if (p := processes.get(pid)) is not None)


def below_cpu(root: int, processes: Mapping[int, Process] | None = None, *, name: str | None = None) -> float:
    """CPU seconds of the live processes below `root` (not `root` itself), with what they reaped; only those
    whose command name is `name` when given."""
    processes = snapshot() if processes is None else processes
    below = (processes.get(pid) for pid in descendants(root, processes)[1:])
    return sum(p.cpu + p.reaped for p in below if p is not None and (name is None or p.name == name))


def argv(pid: int) -> list[str]:
    """A process's command line; empty once it is gone."""
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def load_average() -> str:
    return Path("/proc/loadavg").read_text().strip()
