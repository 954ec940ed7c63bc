"""CPU time of the platform under test, split by who spent it: the `up` process (gateway and
worker) and its descendants (sandboxes, zygotes, instances), read from /proc; and the load
generator's, from the rusage of waited-for children.

Where the cores go per request says more about a throughput ceiling than latency does: on a
2-core machine the generator, the gateway and the instances share them.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    platform_s: float  # the `up` process, all its threads
    descendants_s: float  # every live process below it
    generator_s: float  # children of this process that were waited for (the bench runs)

    def minus(self, earlier: CpuSample) -> CpuSample:
        return CpuSample(
            self.platform_s - earlier.platform_s,
            self.descendants_s - earlier.descendants_s,
            self.generator_s - earlier.generator_s,
        )


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, its own user + system seconds, those of its children it waited for) of a
    live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = text.rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / _TICKS
    return int(fields[1]), own, (int(fields[13]) + int(fields[14])) / _TICKS


def sample(root: int) -> CpuSample:
    """CPU seconds so far of `root`, of its live descendants, and of this process's children."""
    stats: dict[int, tuple[int, float, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            stats[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    # What an exited process spent moves to the parent that waited for it: counting waited-for
    # children too keeps the sum from going back when an instance exits.
    _, own, waited = stats.get(root, (0, 0.0, 0.0))
    below = waited
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        below += stats[pid][1] + stats[pid][2]
        todo.extend(children.get(pid, []))
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSample(own, below, usage.ru_utime + usage.ru_stime)
