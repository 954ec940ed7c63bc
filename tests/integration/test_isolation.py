"""Sandboxed instances, deployed through the API: what a function must not be able to do.

Every test runs over the three ways an instance comes to be: `base`, forked from the worker's
base zygote with the app unloaded (the child builds the sandbox around itself, then imports
the handler); `zygote`, forked from the function's own zygote (itself forked from the base);
`exec`, a fresh interpreter in a new sandbox (--no-zygote). Each must hold the same line.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests._ci import in_ci
from tests.integration._poll import until as _until
from tests.integration.conftest import HELLO, Platform, start_platform, stop_platform

LAUNCHES = ("base", "zygote", "exec")

# What module-level code sees, recorded at import: it must already be inside the sandbox.
AT_IMPORT = """
import os
def _at_import():
    try:
        host_files = sorted(os.listdir("/home")) or "empty"
    except OSError as exc:
        host_files = type(exc).__name__
    return {
        "pid": os.getpid(),
        "visible_pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "cgroup": sorted({line.split(":", 2)[2] for line in open("/proc/self/cgroup").read().split()
                          if line.split(":", 2)[1] in ("memory", "pids", "")}),
        "home": host_files,
        "seccomp": [line.split()[1] for line in open("/proc/self/status")
                    if line.startswith("Seccomp:")],
        "namespaces": {ns: os.readlink(f"/proc/self/ns/{ns}")
                       for ns in ("pid", "mnt", "net", "ipc", "uts", "user")},
    }
AT_IMPORT = _at_import()
"""

PROBE = (
    AT_IMPORT
    + """
import ctypes, json, socket

def attempt(action):
    try:
        action()
        return "allowed"
    except Exception as exc:
        return type(exc).__name__

def handle(event, context):
    target = json.loads(event.body)
    libc = ctypes.CDLL(None, use_errno=True)

    def syscall_denied(result):
        return "denied" if result != 0 else "allowed"

    def connect():
        with socket.create_connection(("127.0.0.1", target["port"]), timeout=1):
            pass

    def write_outside():
        with open(target["function_dir"] + "/planted", "w") as f:
            f.write("x")

    def name(pid):
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()

    return {"body": {
        "credentials": attempt(lambda: open(target["credentials"]).read()),
        # Only the way to what is bound from it (package, runtime) may show: mount points.
        "data_dir": sorted(os.listdir(target["data_dir"])),
        "write_outside_tmp": attempt(write_outside),
        "write_tmp": attempt(lambda: open("/tmp/ok", "w").write("x")),
        "connect_gateway": attempt(connect),
        "secret": open("/var/openfaas/secrets/token").read(),
        "pid": os.getpid(),
        "visible_pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        # A zygote's forks share its sandbox: every process seen must be this function's.
        "names": sorted({name(p) for p in os.listdir("/proc") if p.isdigit()}),
        "mount": syscall_denied(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
        "ptrace": syscall_denied(libc.ptrace(0, 0, None, None)),
        "at_import": AT_IMPORT,
    }}
"""
)

FORK_BOMB = """
import os
def handle(event, context):
    children = 0
    try:
        while True:
            if os.fork() == 0:
                import time
                time.sleep(30)
                os._exit(0)
            children += 1
    except OSError as exc:
        return {"body": {"children": children, "error": type(exc).__name__}}
"""

ALLOCATE = """
def handle(event, context):
    hoard = [bytearray(16 * 1024 * 1024) for _ in range(int(event.body or b"0"))]
    return {"body": {"allocated_mb": 16 * len(hoard)}}
"""


@dataclass
class Sandboxed(Platform):
    launch: str = "base"  # how its instances start: one of LAUNCHES


@pytest.fixture(params=LAUNCHES)
async def sandboxed(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sandboxed]:
    # No keep-alive policy: a function scaled to zero keeps its zygote (the `zygote` path).
    running = await start_platform(
        tmp_path, isolation="auto", policy="none", zygote=request.param != "exec"
    )
    try:
        if running.worker.isolation != "sandbox":
            note = running.worker.isolation_note
            if in_ci():
                pytest.fail(f"CI must prove the sandbox, but instances are plain: {note}")
            pytest.skip(f"sandboxes cannot run here: {note}")
        yield Sandboxed(running.running, running.session, running.tmp, request.param)
    finally:
        await stop_platform(running)


async def deploy(platform: Sandboxed, name: str, source: str, **options: Any) -> None:
    """Deploy with no instance, ready for a first call that starts one by the platform's
    launch path (for `zygote`: once the function's zygote runs, forked from it)."""
    labels = {"com.openfaas.scale.min": "0"}
    await platform.deploy(name, source, labels=labels, **options)
    worker = platform.worker
    if platform.launch == "zygote":
        # An instance (from the base; the function's zygote starts after it), then none.
        worker.scale(name, 1)
        await _until(lambda: worker.launcher_statistics(name).zygote_pid is not None)
        worker.scale(name, 0)
        await _until(lambda: getattr(worker.statistics(name), "available", 1) == 0)


def launched_as(platform: Sandboxed, name: str, forks_before: int) -> None:
    """The last cold start took the platform's launch path."""
    stats = platform.worker.launcher_statistics(name)
    base = platform.worker.base_zygote_statistics()
    if platform.launch == "zygote":
        assert stats.forks >= 1 and stats.fallbacks == 0, stats
    elif platform.launch == "base":
        assert base is not None and base.forks > forks_before and stats.forks == 0, (base, stats)
    else:
        assert base is None and stats.forks == 0, (base, stats)


def base_forks(platform: Sandboxed) -> int:
    base = platform.worker.base_zygote_statistics()
    return 0 if base is None else base.forks


async def probe(platform: Sandboxed, name: str) -> dict[str, Any]:
    port = int(platform.url.rsplit(":", 1)[1])
    target = {
        "credentials": str(platform.config.credentials_dir / "basic-auth-password"),
        "data_dir": str(platform.config.data_dir),
        # The function's own package: bound read-only into the sandbox.
        "function_dir": str(next(platform.config.packages_dir.glob(f"{name}*")) / "function"),
        "port": port,
    }
    status, body, _ = await platform.invoke(name, json.dumps(target).encode())
    assert status == 200, body
    seen: dict[str, Any] = json.loads(body)
    assert not Path(str(target["function_dir"]), "planted").exists()
    return seen


async def test_a_sandboxed_function_sees_and_reaches_only_what_it_should(
    sandboxed: Sandboxed,
) -> None:
    platform = sandboxed
    status, _ = await platform.system("POST", "/system/secrets", {"name": "token", "value": "t"})
    assert status == 201
    await deploy(platform, "probe", PROBE, secrets=("token",))
    before = base_forks(platform)
    seen = await probe(platform, "probe")
    launched_as(platform, "probe", before)
    assert seen["credentials"] in ("FileNotFoundError", "PermissionError")
    data = platform.config.data_dir
    assert set(seen["data_dir"]) <= {"packages", platform.config.run_dir.relative_to(data).parts[0]}
    assert seen["write_outside_tmp"] in ("FileNotFoundError", "PermissionError", "OSError")
    assert seen["write_tmp"] == "allowed"
    assert seen["connect_gateway"] != "allowed"
    assert seen["secret"] == "t"  # at OpenFaaS's path
    # No other sandbox and nothing of the host: pid 1 is the instance or its function's zygote.
    assert seen["visible_pids"][0] == 1 and seen["pid"] in seen["visible_pids"]
    assert len(seen["names"]) == 1, seen["names"]
    assert seen["mount"] == "denied" and seen["ptrace"] == "denied"


async def test_module_level_code_runs_inside_the_sandbox(sandboxed: Sandboxed) -> None:
    """Import-time code is the function's too: by then the sandbox is whole (namespaces, root,
    its own cgroup, the seccomp filter)."""
    platform = sandboxed
    status, _ = await platform.system("POST", "/system/secrets", {"name": "token", "value": "t"})
    assert status == 201
    await deploy(platform, "probe", PROBE, secrets=("token",))
    seen = (await probe(platform, "probe"))["at_import"]
    assert seen["visible_pids"][0] == 1 and len(seen["visible_pids"]) <= 3, seen  # not the host's
    assert seen["home"] == "FileNotFoundError", seen
    assert seen["seccomp"] == ["2"], seen
    # Its cgroup (memory, pids) is one of this worker's run, made for this instance or its
    # zygote (named after it; on cgroup v2 a spare's keeps its own name): not the worker's,
    # not the base zygote's.
    parent = platform.worker.cgroup_parent
    own = [path for path in seen["cgroup"] if path != "/"]
    assert len(own) == 1 and own[0].startswith(f"/{parent}/"), seen


async def test_two_functions_share_no_namespace_or_cgroup(sandboxed: Sandboxed) -> None:
    platform = sandboxed
    status, _ = await platform.system("POST", "/system/secrets", {"name": "token", "value": "t"})
    assert status == 201
    await deploy(platform, "one", PROBE, secrets=("token",))
    await deploy(platform, "two", PROBE, secrets=("token",))
    one, two = [(await probe(platform, name))["at_import"] for name in ("one", "two")]
    shared = {ns for ns, inode in one["namespaces"].items() if two["namespaces"][ns] == inode}
    assert not shared, (one["namespaces"], two["namespaces"])
    own = [path for path in one["cgroup"] + two["cgroup"] if path != "/"]
    assert len(own) == len(set(own)) == 2, (one["cgroup"], two["cgroup"])


async def test_a_fork_bomb_hits_the_pid_limit_and_others_keep_answering(
    sandboxed: Sandboxed,
) -> None:
    platform = sandboxed
    await platform.deploy("hello", HELLO)
    await deploy(platform, "bomb", FORK_BOMB, env={"exec_timeout": "20s"})
    status, body, _ = await platform.invoke("bomb")
    assert status == 200, body
    outcome = json.loads(body)
    assert outcome["error"] in ("BlockingIOError", "OSError") and outcome["children"] < 300
    assert (await platform.invoke("hello", b"still here"))[:2] == (200, b"hello still here")


async def test_the_memory_limit_holds_and_says_out_of_memory(sandboxed: Sandboxed) -> None:
    platform = sandboxed
    await deploy(platform, "allocate", ALLOCATE, memory="128Mi", env={"exec_timeout": "20s"})
    status, body, _ = await platform.invoke("allocate", b"40")
    assert status in (500, 502), body
    assert "ran out of memory" in json.loads(body)["error"]
    status, body, _ = await platform.invoke("allocate", b"1")
    assert status == 200 and json.loads(body)["allocated_mb"] == 16, body
