"""Sandboxed instances, deployed through the API: what a function must not be able to do."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests._ci import in_ci
from tests.integration.conftest import HELLO, Platform, start_platform, stop_platform

PROBE = """
import ctypes, json, os, socket

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

    return {"body": {
        "credentials": attempt(lambda: open(target["credentials"]).read()),
        "write_outside_tmp": attempt(write_outside),
        "write_tmp": attempt(lambda: open("/tmp/ok", "w").write("x")),
        "connect_gateway": attempt(connect),
        "secret": open("/var/openfaas/secrets/token").read(),
        "pid": os.getpid(),
        "visible_pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        # A zygote's forks share its sandbox: every process seen must be this function's.
        "all_of_this_function": all(
            open(f"/proc/{p}/cmdline", "rb").read() == open("/proc/1/cmdline", "rb").read()
            for p in os.listdir("/proc") if p.isdigit()
        ),
        "mount": syscall_denied(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
        "ptrace": syscall_denied(libc.ptrace(0, 0, None, None)),
    }}
"""

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


@pytest.fixture
async def sandboxed(tmp_path: Path) -> AsyncIterator[Platform]:
    running = await start_platform(tmp_path, isolation="auto")
    try:
        if running.worker.isolation != "sandbox":
            note = running.worker.isolation_note
            if in_ci():
                pytest.fail(f"CI must prove the sandbox, but instances are plain: {note}")
            pytest.skip(f"sandboxes cannot run here: {note}")
        yield running
    finally:
        await stop_platform(running)


async def test_a_sandboxed_function_sees_and_reaches_only_what_it_should(
    sandboxed: Platform,
) -> None:
    platform = sandboxed
    status, _ = await platform.system("POST", "/system/secrets", {"name": "token", "value": "t"})
    assert status == 201
    await platform.deploy("probe", PROBE, secrets=("token",))
    port = int(platform.url.rsplit(":", 1)[1])
    target = {
        "credentials": str(platform.config.credentials_dir / "basic-auth-password"),
        # The function's own package: bound read-only into the sandbox.
        "function_dir": str(next(platform.config.packages_dir.glob("probe*")) / "function"),
        "port": port,
    }
    status, body, _ = await platform.invoke("probe", json.dumps(target).encode())
    assert status == 200, body
    seen = json.loads(body)
    assert seen["credentials"] in ("FileNotFoundError", "PermissionError")
    assert seen["write_outside_tmp"] in ("FileNotFoundError", "PermissionError", "OSError")
    assert not Path(str(target["function_dir"]), "planted").exists()
    assert seen["write_tmp"] == "allowed"
    assert seen["connect_gateway"] != "allowed"
    assert seen["secret"] == "t"  # at OpenFaaS's path
    # No other sandbox and nothing of the host: pid 1 is the instance or its function's zygote.
    assert seen["visible_pids"][0] == 1 and seen["pid"] in seen["visible_pids"]
    assert seen["all_of_this_function"]
    assert seen["mount"] == "denied" and seen["ptrace"] == "denied"


async def test_a_fork_bomb_hits_the_pid_limit_and_others_keep_answering(
    sandboxed: Platform,
) -> None:
    platform = sandboxed
    await platform.deploy("hello", HELLO)
    await platform.deploy("bomb", FORK_BOMB, env={"exec_timeout": "20s"})
    status, body, _ = await platform.invoke("bomb")
    assert status == 200, body
    outcome = json.loads(body)
    assert outcome["error"] in ("BlockingIOError", "OSError") and outcome["children"] < 300
    assert (await platform.invoke("hello", b"still here"))[:2] == (200, b"hello still here")
