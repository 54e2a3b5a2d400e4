"""What the processes of a system cost, from /proc: CPU seconds and PSS memory of a component's
process together with every live process it forked (a monolith with workers is one component pid
and N children; PostgreSQL's server forks a backend per connection)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# How the fork server (forkserver.py) is named beside the components in figures per process.
FORK_SERVER = "fork-server"


def children(pid: int) -> list[int]:
    """The live children of ``pid`` (every thread's), or none once it is gone."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                found.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:  # the thread ended meanwhile
                continue
    except OSError:
        return []
    return found


def tree(pid: int, exclude: Iterable[int] = ()) -> list[int]:
    """``pid`` and its live descendants, but not the subtrees of ``exclude`` (other components
    that happen to be its descendants are counted as themselves)."""
    skip = set(exclude) - {pid}
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        if current in skip or current in found:
            continue
        found.append(current)
        pending.extend(children(current))
    return found


def cpu_seconds(pid: int, reaped_children: bool = True) -> float:
    """CPU ``pid`` has used so far (user + system), with that of the children it already waited for
    (so a worker that exited and was reaped still counts) unless not ``reaped_children``; 0 once
    it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = fields[11:15] if reaped_children else fields[11:13]  # utime stime (cutime cstime)
    return sum(int(value) for value in ticks) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` alone in MB (shared pages counted in full); 0 once it is gone."""
    return _proc_kb_field(f"/proc/{pid}/status", "VmRSS:") / 1024


def pss_mb(pid: int) -> float:
    """Proportional set size of ``pid`` in MB (shared pages split among the processes sharing them)."""
    return _proc_kb_field(f"/proc/{pid}/smaps_rollup", "Pss:") / 1024


def _proc_kb_field(path: str, field: str) -> int:
    """The kB figure of the line starting with ``field`` in a /proc file; 0 when the process is gone."""
    try:
        with open(path) as lines:
            return next(int(line.split()[1]) for line in lines if line.startswith(field))
    except (OSError, StopIteration):
        return 0


class ProcessTrees:
    """CPU used by each component's process tree between ``start()`` and ``cpu_used()``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before: dict[str, dict[int, float]] = {}

    def _trees(self) -> dict[str, list[int]]:
        listed = set(self.pids.values())
        return {name: tree(pid, exclude=listed) for name, pid in self.pids.items()}

    def start(self) -> None:
        self._before = {name: {pid: cpu_seconds(pid) for pid in pids} for name, pids in self._trees().items()}

    def cpu_used(self) -> dict[str, float]:
        """Per component: CPU seconds of the processes alive now, less what each had used at
        ``start()`` (a process forked since counts entirely)."""
        used = {}
        for name, pids in self._trees().items():
            before = self._before.get(name, {})
            used[name] = sum(max(0.0, cpu_seconds(pid) - before.get(pid, 0.0)) for pid in pids)
        return used

    def pss_mb(self) -> dict[str, float]:
        return {name: sum(pss_mb(pid) for pid in pids) for name, pids in self._trees().items()}
