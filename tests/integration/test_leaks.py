"""Nothing leaks, nothing is world-readable (issue 11, items 13-15), on a real platform:

- the data dir after functions ran with storage and secrets: every file and folder is its
  owner's alone, but for what sandboxes read (faasd_py.modes states the rule);
- cgroups: a run's start removes what dead runs left, however young (a `kill -9` of `up` then
  an immediate restart), and never a live run's (two runs at once);
- run folders: nothing of a function stays in run/ after its removal, nothing of the run after
  a clean stop.

The cgroup tests need sandboxes (skipped where they cannot run, a failure under CI=true).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from faasd_py.isolation.cgroups import (
    CONTROLLERS,
    DEFAULT_PARENT,
    Cgroup,
    CgroupLimits,
    Hierarchy,
    detect,
    run_parent,
)
from faasd_py.isolation.sandbox import unavailable_reason
from faasd_py.packages import PackageStore
from faasd_py.runs import RUN_LOCKS
from faasd_py.spec import FunctionSpec, StackFunction
from tests._ci import in_ci
from tests.integration.conftest import Platform, start_platform, stop_platform

# Keeps the caller's secret in the app's storage and reads it back: the store's WAL and
# shared-memory files exist from the first call on.
KEEPER = """
def handle(event, context):
    key = "notes/" + event.body.decode()
    context.storage.put(key, context.secret("api-key"))
    return {"body": context.storage.get(key).decode()}
"""

# Names the instance that answered (its id: unique, forked or exec'd).
WHO = """
def handle(event, context):
    return {"body": context.hostname}
"""

_DEADLINE = 60.0  # only to catch a hang: the machine may be busy with other tests


def _sandboxes() -> Hierarchy:
    reason = unavailable_reason()
    if reason is not None:
        if in_ci():
            pytest.fail(f"CI must prove what runs leave behind, but: {reason}")
        pytest.skip(f"sandboxes cannot run here: {reason}")
    hierarchy = detect()
    assert hierarchy is not None
    return hierarchy


@pytest.fixture(params=["sandbox", "process"])
def isolation(request: pytest.FixtureRequest) -> str:
    if request.param == "sandbox":
        _sandboxes()
    return str(request.param)


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {_DEADLINE:g} s")
        await asyncio.sleep(0.05)


async def _answer(platform: Platform, name: str, body: bytes = b"") -> str:
    status, data, _ = await platform.invoke(name, body)
    assert status == 200, data
    return data.decode()


# --- item 13: modes ------------------------------------------------------------------------------


def _read_by_sandboxes(relative: Path) -> bool:
    """The trees that faasd_py.modes makes readable by all: sandboxes read them as "other"."""
    parts = relative.parts
    package_tree = len(parts) >= 3 and parts[0] == "packages" and parts[2] in ("function", "deps")
    pip_cache = len(parts) >= 4 and parts[:2] == ("packages", ".deps") and parts[3] == "site"
    return (package_tree and parts[1] != ".deps") or pip_cache or parts[:2] == ("run", "lib")


def _mode_errors(data_dir: Path) -> list[str]:
    """Every path under `data_dir` whose mode breaks the rule of faasd_py.modes."""
    errors = []
    for path in [data_dir, *data_dir.rglob("*")]:
        try:
            st = path.lstat()
        except FileNotFoundError:  # an instance's folder, gone meanwhile
            continue
        if stat.S_ISLNK(st.st_mode):
            continue
        mode, relative = stat.S_IMODE(st.st_mode), path.relative_to(data_dir)
        if _read_by_sandboxes(relative):
            readable = 0o005 if stat.S_ISDIR(st.st_mode) else 0o004
            if mode & 0o022 or mode & readable != readable:
                errors.append(f"{relative}: {mode:04o}, but sandboxes read it: 0755 or 0644")
        elif mode & 0o077:
            errors.append(f"{relative or '.'}: {mode:04o}, readable by others than its owner")
    return errors


async def test_the_data_dir_is_its_owners_alone_but_for_what_sandboxes_read(
    tmp_path: Path, isolation: str
) -> None:
    # A data dir from before the rule: open to all, with a store that any user could read.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.chmod(data_dir, 0o755)
    store = data_dir / "storage.sqlite3"
    store.touch()
    os.chmod(store, 0o644)
    platform = await start_platform(tmp_path, isolation=isolation)
    try:
        status, reply = await platform.system(
            "POST", "/system/secrets", {"name": "api-key", "value": "s3cr3t"}
        )
        assert status in (200, 201), reply
        # A handler saved readable by its owner only: sandboxes must read it all the same.
        source = tmp_path / "src" / "keeper"
        source.mkdir(parents=True)
        (source / "handler.py").write_text(textwrap.dedent(KEEPER))
        os.chmod(source / "handler.py", 0o600)
        function = StackFunction(FunctionSpec("keeper", "keeper:latest"), "python3-http", source)
        PackageStore(platform.config.packages_dir).build(function)
        await platform.deploy("keeper", secrets=("api-key",))
        assert await _answer(platform, "keeper", b"a") == "s3cr3t"
        for suffix in ("", "-wal", "-shm"):  # the rule covers them: they exist while it runs
            assert (data_dir / f"storage.sqlite3{suffix}").is_file()
        assert (data_dir / "registry.sqlite3").is_file()
        assert _mode_errors(data_dir) == []
    finally:
        await stop_platform(platform)
    assert _mode_errors(data_dir) == []


# --- item 15: run folders ------------------------------------------------------------------------


def _folders_of(run_dir: Path, function: str) -> list[str]:
    """What run/ holds for `function`: its zygote's and instances' folders, its secrets."""
    found = []
    for folder in (run_dir, run_dir / "secrets"):
        if folder.is_dir():
            found += [p.name for p in folder.iterdir() if p.name.startswith(f"{function}-")]
    return found


async def test_no_folder_outlives_its_function_nor_the_run(tmp_path: Path, isolation: str) -> None:
    platform = await start_platform(tmp_path, isolation=isolation)
    run_dir = platform.config.run_dir
    try:
        status, reply = await platform.system(
            "POST", "/system/secrets", {"name": "api-key", "value": "s3cr3t"}
        )
        assert status in (200, 201), reply
        for name in ("gone", "kept"):
            await platform.deploy(name, KEEPER, secrets=("api-key",))
            assert await _answer(platform, name, b"x") == "s3cr3t"
        # (Sandboxed, the zygote starts just after a first start from the base zygote.)
        await _until(
            lambda: any("-zygote-" in folder for folder in _folders_of(run_dir, "gone")),
            "gone's zygote folder",
        )
        assert _folders_of(run_dir, "gone") and _folders_of(run_dir, "kept")

        status, reply = await platform.system(
            "DELETE", "/system/functions", {"functionName": "gone"}
        )
        assert status in (200, 202), reply
        # The removal answers at once; its instances and zygote stop in the background.
        await _until(lambda: not _folders_of(run_dir, "gone"), "gone's folders removed")
        assert _folders_of(run_dir, "kept")
        assert await _answer(platform, "kept", b"y") == "s3cr3t"
    finally:
        await stop_platform(platform)
    assert not run_dir.exists(), sorted(p.name for p in run_dir.rglob("*"))


# --- item 14: cgroups of runs --------------------------------------------------------------------


def _tree(hierarchy: Hierarchy, parent: str) -> list[Path]:
    """Every cgroup folder under `parent` (and `parent` itself), in every hierarchy."""
    found = []
    for root in set(hierarchy.roots.values()):
        top = root / parent
        if top.is_dir():
            found += [top, *(p for p in top.rglob("*") if p.is_dir())]
    return found


def _age(directories: list[Path], seconds: float) -> None:
    then = time.time() - seconds
    for directory in directories:
        os.utime(directory, (then, then))


async def test_a_second_run_leaves_the_first_runs_cgroups_alone(tmp_path: Path) -> None:
    hierarchy = _sandboxes()
    first = await start_platform(tmp_path / "first", isolation="sandbox")
    try:
        run_id = first.worker.run_id
        await first.deploy("who", WHO)
        instance = await _answer(first, "who")
        # One cgroup made a moment ago for a sandbox about to start, still empty: the kind the
        # old sweep took from a live run once it was a minute old.
        waiting = Cgroup.create("about-to-start", CgroupLimits(), parent=first.worker.cgroup_parent)
        # (The base zygote's spare cgroups are renamed for the sandbox that takes them.)
        theirs = [
            d
            for d in _tree(hierarchy, first.worker.cgroup_parent)
            if not d.name.startswith("spare-")
        ]
        assert len(theirs) > len(waiting.directories)  # the instance's and zygote's too
        _age(theirs, 600)

        second = await start_platform(tmp_path / "second", isolation="sandbox")
        try:
            assert second.worker.run_id not in (None, run_id)
            assert [d for d in theirs if not d.is_dir()] == []
            assert await _answer(first, "who") == instance  # the same instance, still there
        finally:
            await stop_platform(second)
        assert [d for d in theirs if not d.is_dir()] == []  # nor does its stop touch them
        waiting.remove()
    finally:
        await stop_platform(first)
    # Its own clean stop removes the run's cgroups, and its lock with them.
    assert [d for d in theirs if d.exists()] == []
    assert not (RUN_LOCKS / f"{run_id}.lock").exists()


async def test_a_dead_runs_cgroups_go_at_the_next_start_however_young(tmp_path: Path) -> None:
    hierarchy = _sandboxes()
    # A run killed a moment ago: its lock file is there, but free; one of its sandboxes
    # outlived it (nothing told it to die). And a run whose lock file is gone altogether.
    killed, lost = (f"run-{secrets.token_hex(6)}" for _ in range(2))
    RUN_LOCKS.mkdir(parents=True, exist_ok=True)
    (RUN_LOCKS / f"{killed}.lock").write_text("4242\n")
    leftover = await asyncio.create_subprocess_exec("sleep", "600")
    try:
        busy = Cgroup.create("fn-busy", CgroupLimits(), parent=run_parent(killed))
        for procs in busy.procs_files():
            procs.write_text(str(leftover.pid))
        Cgroup.create("fn-idle", CgroupLimits(), parent=run_parent(killed))
        Cgroup.create("fn-idle", CgroupLimits(), parent=run_parent(lost))
        left = _tree(hierarchy, run_parent(killed)) + _tree(hierarchy, run_parent(lost))

        platform = await start_platform(tmp_path, isolation="sandbox")
        await stop_platform(platform)
        assert [d for d in left if d.exists()] == []
        async with asyncio.timeout(_DEADLINE):
            assert await leftover.wait() == -signal.SIGKILL
        assert not (RUN_LOCKS / f"{killed}.lock").exists()
    finally:
        if leftover.returncode is None:
            leftover.kill()
            await leftover.wait()
        for parent in (run_parent(killed), run_parent(lost)):
            for directory in sorted(_tree(hierarchy, parent), key=lambda p: -len(p.parts)):
                directory.rmdir()


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat_line.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _cgroups_of(pid: int, hierarchy: Hierarchy) -> set[Path]:
    """The cgroup folders under faasd-py/ that `pid` is in, from /proc/<pid>/cgroup."""
    found = set()
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if not path.startswith(f"/{DEFAULT_PARENT}/"):
            continue  # not a sandbox: a helper process of `up`'s
        names = CONTROLLERS if hierarchy.version == 2 else controllers.split(",")
        for name in names:
            if name in hierarchy.roots and (controllers == "" or hierarchy.version == 1):
                found.add(hierarchy.roots[name] / path.lstrip("/"))
    return found


async def test_after_kill_9_of_up_a_restart_removes_what_it_left(tmp_path: Path) -> None:
    hierarchy = _sandboxes()
    handler = tmp_path / "who"
    handler.mkdir()
    (handler / "handler.py").write_text(textwrap.dedent(WHO))
    stack = tmp_path / "stack.yml"
    stack.write_text(
        "provider: {name: openfaas}\n"
        "functions:\n  who: {lang: python3-http, handler: ./who, image: who:latest}\n"
    )
    port = _free_port()
    faasd_py = str(Path(sys.executable).with_name("faasd-py"))
    data_dir = tmp_path / "data"
    with (tmp_path / "up.log").open("wb") as log:
        up = await asyncio.create_subprocess_exec(
            *(faasd_py, "up", "--port", str(port), "--data-dir", str(data_dir)),
            *("--deploy", str(stack)),
            env={k: v for k, v in os.environ.items() if not k.startswith("FAASD_")},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await _until_answers(f"http://127.0.0.1:{port}/function/who", up, tmp_path / "up.log")
        sandboxes = _descendants(up.pid)
        left = {d for pid in sandboxes for d in _cgroups_of(pid, hierarchy)}
        assert left, "the function's sandboxes are in cgroups of their own"
    finally:
        up.kill()
        await up.wait()
    assert {d for d in left if d.exists()} == left  # nothing removed them: the run was killed

    platform = await start_platform(tmp_path / "restart", isolation="sandbox")
    try:
        assert sorted(d for d in left if d.exists()) == []
        await _until(lambda: not any(map(_running, sandboxes)), "its sandboxes killed")
    finally:
        await stop_platform(platform)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie that its new parent has yet to reap does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def _until_answers(url: str, up: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + _DEADLINE
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while time.monotonic() < deadline:
            if up.returncode is not None:
                pytest.fail(f"faasd-py up exited with {up.returncode}:\n{log.read_text()}")
            try:
                async with session.post(url, data=b"") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail(f"{url} did not answer 200 within {_DEADLINE:g} s:\n{log.read_text()}")
