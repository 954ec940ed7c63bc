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


def machine_busy_s() -> float:
    """Seconds all cores together were busy since boot (/proc/stat: everything but idle and
    iowait), a cross-check of per-process accounting that also sees what other work costs."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already inside user).
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / _TICKS


def tree(root: int) -> list[int]:
    """`root` and its live descendants' pids (sandboxed instances included: they live in pid
    namespaces of their own, but /proc of the host lists them under their parent)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parents.setdefault(stat[0], []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def threads(pid: int) -> list[int]:
    """The thread ids of a live process (none once it is gone)."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def context_switches(pids: list[int]) -> tuple[int, int]:
    """(voluntary, involuntary) context switches so far of every thread of `pids`."""
    voluntary = involuntary = 0
    for pid in pids:
        for tid in threads(pid):
            try:
                text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
    return voluntary, involuntary


def pin(root: int, cpus: set[int]) -> int:
    """Bind every thread of `root` and its descendants to `cpus` (children forked later, such
    as new instances from a pinned zygote, inherit it); how many threads were bound."""
    bound = 0
    for pid in tree(root):
        for tid in threads(pid):
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:  # gone meanwhile
                continue
            bound += 1
    return bound
