"""faasd_py.isolation.cgroups against a fake hierarchy in a temporary folder: which files get which
values on v2 and v1, and how the statistics are read. (tests/native/test_sandbox.py runs the real
hierarchy of the machine, which has only one of the two.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faasd_py.isolation import cgroups
from faasd_py.isolation.cgroups import (
    Cgroup,
    CgroupLimits,
    Hierarchy,
    detect,
    remove_dead_runs,
    remove_tree,
)
from faasd_py.runs import RunLock, dead_run, is_run_id, lock_file_ids


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> dict[Path, list[str]]:
    """Record writes instead of making them: a fake hierarchy has no kernel behind it."""
    written: dict[Path, list[str]] = {}

    def write(path: Path, value: str) -> None:
        written.setdefault(path, []).append(value)

    monkeypatch.setattr(cgroups, "_write", write)
    monkeypatch.setattr(cgroups, "_write_if_present", write)
    return written


def test_v2_enables_controllers_and_writes_limits(
    tmp_path: Path, writes: dict[Path, list[str]]
) -> None:
    (tmp_path / "cgroup.subtree_control").write_text("memory\n")
    (tmp_path / "faasd-py").mkdir()
    (tmp_path / "faasd-py" / "cgroup.subtree_control").write_text("")
    hierarchy = Hierarchy(2, dict.fromkeys(cgroups.CONTROLLERS, tmp_path))
    limits = CgroupLimits(memory_bytes=64 << 20, cpu=1.5, pids=32)
    cgroup = Cgroup.create("fn-1", limits, hierarchy=hierarchy)
    here = tmp_path / "faasd-py" / "fn-1"
    assert cgroup.directories == (here,) and here.is_dir()
    assert cgroup.procs_files() == (here / "cgroup.procs",)
    assert writes == {
        tmp_path / "cgroup.subtree_control": ["+cpu +pids"],
        tmp_path / "faasd-py" / "cgroup.subtree_control": ["+memory +cpu +pids"],
        here / "memory.max": [str(64 << 20)],
        here / "memory.swap.max": ["0"],
        here / "memory.oom.group": ["1"],
        here / "cpu.max": ["150000 100000"],
        here / "pids.max": ["32"],
    }
    writes.clear()
    cgroup.set_limits(CgroupLimits())
    assert writes[here / "memory.max"] == ["max"]
    assert writes[here / "memory.swap.max"] == ["max"]
    assert writes[here / "cpu.max"] == ["max 100000"]
    assert writes[here / "pids.max"] == ["max"]


def test_v1_writes_each_controller_in_its_hierarchy(
    tmp_path: Path, writes: dict[Path, list[str]]
) -> None:
    roots = {c: tmp_path / c for c in cgroups.CONTROLLERS}
    cgroup = Cgroup.create(
        "fn-1", CgroupLimits(memory_bytes=64 << 20, cpu=0.25, pids=8), hierarchy=Hierarchy(1, roots)
    )
    memory, cpu, pids = (roots[c] / "faasd-py" / "fn-1" for c in cgroups.CONTROLLERS)
    assert cgroup.directories == (memory, cpu, pids)
    assert writes == {
        memory / "memory.limit_in_bytes": [str(64 << 20)],
        memory / "memory.memsw.limit_in_bytes": [str(64 << 20)],  # after memory: memsw >= memory
        cpu / "cpu.cfs_period_us": ["100000"],
        cpu / "cpu.cfs_quota_us": ["25000"],
        pids / "pids.max": ["8"],
    }


def test_statistics_v2(tmp_path: Path) -> None:
    cgroup = Cgroup(
        Hierarchy(2, dict.fromkeys(cgroups.CONTROLLERS, tmp_path)),
        {c: tmp_path for c in cgroups.CONTROLLERS},
    )
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n")
    (tmp_path / "memory.current").write_text("4096\n")
    (tmp_path / "memory.peak").write_text("8192\n")
    (tmp_path / "pids.current").write_text("3\n")
    (tmp_path / "pids.events").write_text("max 7\n")
    stats = cgroup.statistics()
    assert stats == cgroups.CgroupStatistics(
        memory_bytes=4096,
        memory_peak_bytes=8192,
        memory_limit_hits=5,
        oom_kills=1,
        pids=3,
        pids_limit_hits=7,
    )
    assert cgroup.oom_kills() == 1


def test_statistics_v1(tmp_path: Path) -> None:
    cgroup = Cgroup(Hierarchy(1, {}), {c: tmp_path for c in cgroups.CONTROLLERS})
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (tmp_path / "memory.failcnt").write_text("0\n")
    (tmp_path / "memory.memsw.failcnt").write_text("4\n")
    (tmp_path / "memory.usage_in_bytes").write_text("1024\n")
    (tmp_path / "memory.max_usage_in_bytes").write_text("2048\n")
    stats = cgroup.statistics()
    assert (stats.oom_kills, stats.memory_limit_hits, stats.memory_bytes) == (2, 4, 1024)
    assert (stats.memory_peak_bytes, stats.pids, stats.pids_limit_hits) == (2048, 0, 0)
    # Before Linux 4.13 there is no oom_kill count: a hit limit stands in for it.
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    assert cgroup.oom_kills() == 1


def test_remove_reports_a_busy_cgroup(tmp_path: Path) -> None:
    directory = tmp_path / "cg"
    directory.mkdir()
    (directory / "cgroup.procs").write_text("")  # a plain folder with a file: rmdir fails
    cgroup = Cgroup(Hierarchy(2, {}), dict.fromkeys(cgroups.CONTROLLERS, directory))
    with pytest.raises(OSError):
        cgroup.remove()
    (directory / "cgroup.procs").unlink()
    cgroup.remove()
    cgroup.remove()  # already gone: fine
    assert not directory.exists()


def test_cgroup_names_are_checked() -> None:
    for bad in ("", "..", "a/b", "x" * 300):
        with pytest.raises(ValueError):
            Cgroup.create(bad, CgroupLimits())
    with pytest.raises(ValueError):
        CgroupLimits(memory_bytes=10)
    with pytest.raises(ValueError):
        CgroupLimits(cpu=0)


def test_detect_prefers_v2_with_controllers_and_falls_back_to_v1(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("hugetlb\n")
    mountinfo = "\n".join(
        [
            f"41 31 0:38 / {unified} rw,relatime - cgroup2 cgroup2 rw",
            "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu",
            "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
            "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids",
            "50 31 0:36 /sub /elsewhere rw - cgroup cgroup rw,pids",
        ]
    )
    found = detect(mountinfo)
    assert found is not None and found.version == 1
    assert found.roots["memory"] == Path("/sys/fs/cgroup/memory")
    assert found.roots["pids"] == Path("/sys/fs/cgroup/pids")
    (unified / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    found = detect(mountinfo)
    assert found is not None and found.version == 2
    assert set(found.roots.values()) == {unified}
    assert detect("22 27 0:21 / /proc rw - proc proc rw") is None


# --- runs: whose cgroups are whose (faasd_py.runs) -----------------------------------------------


def _fake_v1(tmp_path: Path) -> Hierarchy:
    return Hierarchy(1, {c: tmp_path / "cgroup" / c for c in cgroups.CONTROLLERS})


def _make(hierarchy: Hierarchy, parent: str, age: float = 0.0) -> list[Path]:
    made = []
    for root in hierarchy.roots.values():
        (root / parent).mkdir(parents=True)
        made.append(root / parent)
    if age:
        then = time.time() - age
        for directory in made:
            os.utime(directory, (then, then))
    return made


def _run_that_exits(locks: Path) -> str:
    """The id of a run that took its lock in another process, which then exited."""
    code = "import sys; from pathlib import Path; from faasd_py.runs import RunLock; "
    code += "print(RunLock.acquire(Path(sys.argv[1])).id)"
    done = subprocess.run(
        [sys.executable, "-c", code, str(locks)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_run_holds_its_lock_until_it_releases_it(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    first, second = RunLock.acquire(locks), RunLock.acquire(locks)
    assert first.id != second.id and is_run_id(first.id)
    assert first.path.read_text() == f"{os.getpid()}\n"  # for an operator to read
    assert lock_file_ids(locks) == sorted([first.id, second.id])
    with dead_run(first.id, locks) as dead:
        assert not dead  # another descriptor cannot take it, in this process or another
    assert first.path.exists()
    first.release()
    first.release()
    assert not first.path.exists()
    with dead_run(first.id, locks) as dead:
        assert dead  # no lock file: no live run has this id
    second.path.unlink()  # as if swept: still held, since its holder never let go
    with dead_run(second.id, locks) as dead:
        assert dead
    second.release()


def test_dead_runs_go_whatever_their_age_and_live_ones_stay(tmp_path: Path) -> None:
    hierarchy, locks = _fake_v1(tmp_path), tmp_path / "locks"
    live = RunLock.acquire(locks)
    # A run that ended without a word (as under `kill -9`): its lock file stays, free.
    killed = _run_that_exits(locks)
    killed_lock = locks / f"{killed}.lock"
    assert killed_lock.exists()
    lost = "run-0123456789ab"  # cgroups, but no lock file at all
    kept = _make(hierarchy, f"faasd-py/{live.id}/fn-1", age=3600)
    gone = _make(hierarchy, f"faasd-py/{killed}/fn-1")  # made a moment ago
    gone += _make(hierarchy, f"faasd-py/{lost}/fn-2/nested")
    # Not a run's, from a faasd-py before run ids: removed only when a minute old.
    old = _make(hierarchy, "faasd-py/fn-old", age=120)
    young = _make(hierarchy, "faasd-py/fn-young")

    assert remove_dead_runs(locks=locks, hierarchy=hierarchy) == 2
    assert all(d.is_dir() for d in kept + young)
    assert not any(d.exists() for d in old)
    for run_id in (killed, lost):
        assert not any((root / "faasd-py" / run_id).exists() for root in hierarchy.roots.values())
    assert not killed_lock.exists() and live.path.exists()
    assert lock_file_ids(locks) == [live.id]
    live.release()
    assert remove_dead_runs(locks=locks, hierarchy=hierarchy) == 1  # released: dead now
    assert not any(d.exists() for d in kept)


def test_a_run_removes_its_own_tree(tmp_path: Path) -> None:
    hierarchy = _fake_v1(tmp_path)
    made = _make(hierarchy, "faasd-py/run-0123456789ab/fn-1/sub")
    assert remove_tree("faasd-py/run-0123456789ab", hierarchy)
    assert not any(
        (root / "faasd-py" / "run-0123456789ab").exists() for root in hierarchy.roots.values()
    )
    assert all(d.parent.parent.parent.is_dir() for d in made)  # faasd-py itself stays
    assert remove_tree("faasd-py/run-0123456789ab", hierarchy)  # nothing left: fine
