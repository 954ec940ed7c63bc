"""Per-instance cgroups: memory, CPU and PID limits, out-of-memory detection, removal.

A sandbox's processes are charged to a cgroup of their own (native/sandbox.c writes the child
into it before it runs anything). cgroup v2 is used where the unified hierarchy offers the
memory, cpu and pids controllers (its root's `cgroup.controllers` lists them); otherwise the v1
hierarchies, one per controller, e.g. /sys/fs/cgroup/{memory,cpu,pids}.

| what           | v2                                 | v1                                    |
|----------------|------------------------------------|---------------------------------------|
| memory limit   | memory.max, memory.swap.max = 0    | memory.limit_in_bytes, memory.memsw.* |
| CPU            | cpu.max "quota period"             | cpu.cfs_quota_us, cpu.cfs_period_us   |
| PIDs           | pids.max                           | pids.max                              |
| OOM kills      | memory.events oom_kill             | memory.oom_control oom_kill           |
| limit hits     | memory.events max, pids.events max | memory.failcnt, pids.events max       |

Swap is limited along with memory (memsw, swap.max), so that a function over its limit is
killed rather than slowed down by swapping. On v2, memory.oom.group makes the kernel kill the
whole sandbox on OOM, as a unit. Everything here is plain file I/O and needs root (or a
delegated subtree); nothing needs the native shim.

Names: a worker's cgroups are `faasd-py/<run id>/<instance id>`, the run id being its `up`
run's (faasd_py.runs), which holds a lock for as long as it runs. At start a worker removes
what dead runs left (`remove_dead_runs`: a run whose lock can be taken is dead, whatever the
age of its cgroups), and never a live run's; at a clean stop it removes its own run's folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from faasd_py.runs import RUN_LOCKS, dead_run, is_run_id, lock_file_ids

__all__ = [
    "CONTROLLERS",
    "Cgroup",
    "CgroupLimits",
    "CgroupStatistics",
    "Hierarchy",
    "detect",
    "remove_dead_runs",
    "remove_tree",
    "run_parent",
]

CONTROLLERS = ("memory", "cpu", "pids")
DEFAULT_PARENT = "faasd-py"
_CPU_PERIOD_US = 100_000
_KILL_ROUNDS = 100
# How long a dead run's cgroup may stay busy after its processes were killed: 50 x 20 ms.
_REMOVE_TRIES = 50
_REMOVE_PAUSE = 0.02
_NAME = re.compile(r"[A-Za-z0-9_.@:-]{1,200}")


@dataclass(frozen=True)
class CgroupLimits:
    """Limits of one cgroup; None leaves a resource unlimited."""

    memory_bytes: int | None = None
    cpu: float | None = None  # CPUs: 0.5 is half of one core's time, 2 is two cores
    pids: int | None = None

    def __post_init__(self) -> None:
        if self.memory_bytes is not None and self.memory_bytes < 1024 * 1024:
            raise ValueError(f"memory limit {self.memory_bytes} B is below 1 MiB")
        if self.cpu is not None and not (0.001 <= self.cpu <= 1024):
            raise ValueError(f"cpu limit {self.cpu} is not between 0.001 and 1024 CPUs")
        if self.pids is not None and self.pids < 1:
            raise ValueError(f"pids limit {self.pids} is below 1")


@dataclass(frozen=True)
class CgroupStatistics:
    """What a cgroup has used and run into, read from its files."""

    memory_bytes: int
    memory_peak_bytes: int | None  # None where the kernel does not track it
    memory_limit_hits: int  # times usage hit the limit (reclaim, or an OOM kill)
    oom_kills: int  # processes the OOM killer killed in this cgroup
    pids: int
    pids_limit_hits: int  # fork/clone calls refused by pids.max


@dataclass(frozen=True)
class Hierarchy:
    """Where the controllers are: one v2 mount, or one v1 mount per controller."""

    version: Literal[1, 2]
    roots: Mapping[str, Path]  # controller -> mount point (the same one for all on v2)


def detect(mountinfo: str | None = None) -> Hierarchy | None:
    """The hierarchy to use on this machine, from /proc/self/mountinfo (or the text given):
    v2 if a cgroup2 mount offers memory, cpu and pids, else v1 if each is mounted, else None."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    v1: dict[str, Path] = {}
    v2: list[Path] = []
    for line in mountinfo.splitlines():
        # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or fields[3] != "/":
            continue  # a bind of a subtree is not a hierarchy's root
        mount_point = Path(_unescape(fields[4]))
        if tail[0] == "cgroup2":
            v2.append(mount_point)
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in CONTROLLERS:
                    v1.setdefault(option, mount_point)
    for mount_point in v2:
        try:
            offered = (mount_point / "cgroup.controllers").read_text().split()
        except OSError:
            continue
        if all(c in offered for c in CONTROLLERS):
            return Hierarchy(2, dict.fromkeys(CONTROLLERS, mount_point))
    if all(c in v1 for c in CONTROLLERS):
        return Hierarchy(1, v1)
    return None


class Cgroup:
    """One cgroup (v2), or one directory per controller (v1). Create with `Cgroup.create`."""

    def __init__(self, hierarchy: Hierarchy, paths: Mapping[str, Path]) -> None:
        self.hierarchy = hierarchy
        self.paths = dict(paths)  # controller -> directory

    @property
    def version(self) -> int:
        return self.hierarchy.version

    @property
    def directories(self) -> tuple[Path, ...]:
        """Each distinct directory once (v2: one; v1: one per hierarchy)."""
        return tuple(dict.fromkeys(self.paths.values()))

    def __repr__(self) -> str:
        return f"Cgroup(v{self.version}, {[str(p) for p in self.directories]})"

    @classmethod
    def create(
        cls,
        name: str,
        limits: CgroupLimits,
        *,
        parent: str = DEFAULT_PARENT,
        hierarchy: Hierarchy | None = None,
    ) -> Cgroup:
        """Make `parent/name` under each hierarchy root and apply `limits`.

        FileExistsError if it exists already (names must be unique, e.g. the instance id);
        RuntimeError if no usable hierarchy exists. On any failure nothing is left behind but
        the shared parent.
        """
        if not _NAME.fullmatch(name) or name in (".", ".."):
            raise ValueError(f"bad cgroup name {name!r}")
        if not all(_NAME.fullmatch(part) for part in parent.split("/")):
            raise ValueError(f"bad cgroup parent {parent!r}")
        hierarchy = hierarchy or detect()
        if hierarchy is None:
            raise RuntimeError("no cgroup hierarchy offers the memory, cpu and pids controllers")
        paths = {c: hierarchy.roots[c] / parent / name for c in CONTROLLERS}
        if hierarchy.version == 2:
            _enable_controllers(hierarchy.roots["memory"], parent)
        cgroup = cls(hierarchy, paths)
        made: list[Path] = []
        try:
            for directory in cgroup.directories:
                directory.parent.mkdir(parents=True, exist_ok=True)
                directory.mkdir()
                made.append(directory)
            cgroup.set_limits(limits)
        except BaseException:
            for directory in made:
                with contextlib.suppress(OSError):
                    directory.rmdir()
            raise
        return cgroup

    def renamed(self, name: str) -> Cgroup:
        """This cgroup under another name beside it, with its processes (a spare made ahead
        and given to an instance). OSError if refused: cgroup v2 does not rename (EPERM)."""
        if not _NAME.fullmatch(name) or name in (".", ".."):
            raise ValueError(f"bad cgroup name {name!r}")
        moved: list[tuple[Path, Path]] = []
        try:
            for directory in self.directories:
                target = directory.with_name(name)
                os.rename(directory, target)
                moved.append((directory, target))
        except OSError:
            for old, new in reversed(moved):
                with contextlib.suppress(OSError):
                    os.rename(new, old)
            raise
        return Cgroup(self.hierarchy, {c: p.with_name(name) for c, p in self.paths.items()})

    # --- limits ----------------------------------------------------------------------------

    def set_limits(self, limits: CgroupLimits) -> None:
        """Apply `limits`; unlimited (None) resources are set back to "max"."""
        memory, cpu, pids = self.paths["memory"], self.paths["cpu"], self.paths["pids"]
        quota = None if limits.cpu is None else max(1000, round(limits.cpu * _CPU_PERIOD_US))
        if self.version == 2:
            _write(memory / "memory.max", _or_max(limits.memory_bytes))
            _write_if_present(memory / "memory.swap.max", "0" if limits.memory_bytes else "max")
            _write_if_present(memory / "memory.oom.group", "1")
            _write(cpu / "cpu.max", f"{_or_max(quota)} {_CPU_PERIOD_US}")
        else:
            self._set_v1_memory(memory, limits.memory_bytes)
            _write(cpu / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(-1 if quota is None else quota))
        _write(pids / "pids.max", _or_max(limits.pids))

    @staticmethod
    def _set_v1_memory(directory: Path, limit: int | None) -> None:
        # The kernel keeps memsw >= memory: raise memory first when lifting, memsw first when
        # lowering. A fresh cgroup has both unlimited, so setting memory first works.
        value = str(-1 if limit is None else limit)
        memsw = directory / "memory.memsw.limit_in_bytes"
        if limit is None:
            _write_if_present(memsw, value)
            _write(directory / "memory.limit_in_bytes", value)
            return
        try:
            _write(directory / "memory.limit_in_bytes", value)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            _write_if_present(memsw, value)  # lowering below the current memsw limit
            _write(directory / "memory.limit_in_bytes", value)
        _write_if_present(memsw, value)

    # --- what the worker reads ---------------------------------------------------------------

    def procs_files(self) -> tuple[Path, ...]:
        """The cgroup.procs files a process is written to, to join this cgroup."""
        return tuple(d / "cgroup.procs" for d in self.directories)

    def pids(self) -> set[int]:
        """Processes in this cgroup (as seen from the caller's PID namespace)."""
        found: set[int] = set()
        for path in self.procs_files():
            with contextlib.suppress(FileNotFoundError):
                found.update(int(line) for line in path.read_text().split())
        return found

    def oom_kills(self) -> int:
        """How many processes the OOM killer killed here: the worker's "out of memory"."""
        return self.statistics().oom_kills

    def statistics(self) -> CgroupStatistics:
        memory, pids = self.paths["memory"], self.paths["pids"]
        pids_events = _keyed(pids / "pids.events")
        if self.version == 2:
            events = _keyed(memory / "memory.events")
            peak = _read_int(memory / "memory.peak")
            return CgroupStatistics(
                memory_bytes=_read_int(memory / "memory.current") or 0,
                memory_peak_bytes=peak,
                memory_limit_hits=events.get("max", 0),
                oom_kills=events.get("oom_kill", 0),
                pids=_read_int(pids / "pids.current") or 0,
                pids_limit_hits=pids_events.get("max", 0),
            )
        oom = _keyed(memory / "memory.oom_control")
        failcnt = max(
            _read_int(memory / "memory.failcnt") or 0,
            _read_int(memory / "memory.memsw.failcnt") or 0,
        )
        # Kernels before 4.13 have no oom_kill count: a hit limit is the best evidence.
        oom_kills = oom["oom_kill"] if "oom_kill" in oom else int(failcnt > 0)
        return CgroupStatistics(
            memory_bytes=_read_int(memory / "memory.usage_in_bytes") or 0,
            memory_peak_bytes=_read_int(memory / "memory.max_usage_in_bytes"),
            memory_limit_hits=failcnt,
            oom_kills=oom_kills,
            pids=_read_int(pids / "pids.current") or 0,
            pids_limit_hits=pids_events.get("max", 0),
        )

    # --- the end -------------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL everything in the cgroup: cgroup.kill on v2 (Linux 5.14+), else rounds of
        kill(2) until the list is empty (a process may fork between reading and killing)."""
        kill_file = self.paths["pids"] / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            _write(kill_file, "1")
            return
        for _ in range(_KILL_ROUNDS):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        """Remove the cgroup's directories. OSError(EBUSY) while processes remain in it: wait
        for the sandbox (or `kill` it) first."""
        busy: OSError | None = None
        for directory in self.directories:
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                busy = busy or exc
        if busy is not None:
            raise busy


def _enable_controllers(root: Path, parent: str) -> None:
    """On v2, controllers must be enabled in every ancestor's cgroup.subtree_control."""
    directory = root
    for part in [*parent.split("/"), None]:
        enabled = (directory / "cgroup.subtree_control").read_text().split()
        missing = [c for c in CONTROLLERS if c not in enabled]
        if missing:
            _write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
        if part is None:
            return
        directory = directory / part
        directory.mkdir(exist_ok=True)


def _write(path: Path, value: str) -> None:
    # One write(2) per value: cgroup files parse each write on its own.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _write_if_present(path: Path, value: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _write(path, value)


def _or_max(value: int | None) -> str:
    return "max" if value is None else str(value)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _keyed(path: Path) -> dict[str, int]:
    """A flat keyed file ("key value" lines), or nothing if the file is absent."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def run_parent(run_id: str, parent: str = DEFAULT_PARENT) -> str:
    """Where the cgroups of run `run_id` go: `parent/run_id/<instance>` (faasd_py.runs)."""
    return f"{parent}/{run_id}"


def remove_dead_runs(
    parent: str = DEFAULT_PARENT,
    *,
    locks: Path = RUN_LOCKS,
    hierarchy: Hierarchy | None = None,
    now: float | None = None,
) -> int:
    """Remove what runs of `faasd-py up` that no longer run left under `parent` (a `kill -9`
    gives a run's instances no chance to remove theirs): every cgroup of a dead run, whatever
    its age, after killing whatever still runs in it, and the run's lock file. A live run's
    cgroups are never touched: its lock is held (faasd_py.runs). Folders under `parent` that
    are not a run's (left by a faasd-py from before run ids) keep the old rule: removed when
    empty and older than a minute. Returns how many dead runs were removed."""
    hierarchy = hierarchy or detect()
    roots = set() if hierarchy is None else set(hierarchy.roots.values())
    children: dict[str, list[Path]] = {run_id: [] for run_id in lock_file_ids(locks)}
    for root in roots:
        with contextlib.suppress(OSError):
            for child in (root / parent).iterdir():
                if child.is_dir():
                    children.setdefault(child.name, []).append(child)
    now = time.time() if now is None else now
    removed = 0
    for name, directories in sorted(children.items()):
        if not is_run_id(name):
            _remove_old_and_empty(directories, now)
            continue
        with dead_run(name, locks) as dead:
            if dead:
                if hierarchy is not None:
                    remove_tree(run_parent(name, parent), hierarchy)
                removed += 1
    return removed


def remove_tree(parent: str, hierarchy: Hierarchy | None = None) -> bool:
    """Kill everything in the cgroups under `parent` and remove them, then `parent` itself (in
    every hierarchy). False if some are still busy after a few tries (a process that cannot be
    killed, e.g. stuck in the kernel), which stay."""
    hierarchy = hierarchy or detect()
    if hierarchy is None:
        return True
    complete = True
    for root in set(hierarchy.roots.values()):
        top = root / parent
        if not top.is_dir():
            continue
        # Deepest first: a cgroup with children cannot be removed.
        for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            complete = (
                _kill_and_remove(Cgroup(hierarchy, dict.fromkeys(CONTROLLERS, Path(directory))))
                and complete
            )
    return complete


def _kill_and_remove(cgroup: Cgroup) -> bool:
    for _ in range(_REMOVE_TRIES):
        cgroup.kill()
        try:
            cgroup.remove()
            return True
        except OSError:
            time.sleep(_REMOVE_PAUSE)  # killed processes take a moment to leave
    return False


def _remove_old_and_empty(directories: list[Path], now: float, older_than: float = 60.0) -> None:
    # Not a run's: nothing says whether it is in use, so only an empty one that nobody has
    # touched for a minute goes (rmdir refuses a cgroup that holds a process).
    for directory in directories:
        with contextlib.suppress(OSError):  # in use, or gone meanwhile
            if now - directory.stat().st_mtime >= older_than:
                directory.rmdir()
