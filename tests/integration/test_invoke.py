"""Invocations through the real gateway into real instance processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.integration.conftest import HELLO, Platform, start_platform, stop_platform


async def logs_until(
    platform: Platform, name: str, seen: Callable[[str], bool]
) -> list[dict[str, Any]]:
    """The function's log lines, once one of them is `seen` (output reaches the log through a
    pipe: a moment later, longer on a busy machine; 30 s at most, which only catches a loss)."""
    lines = await platform.logs(name)
    for _ in range(600):
        if any(seen(line["text"]) for line in lines):
            break
        await asyncio.sleep(0.05)
        lines = await platform.logs(name)
    return lines


async def test_hello_answers_with_tracing_headers(platform: Platform) -> None:
    await platform.deploy("hello", HELLO)
    status, body, headers = await platform.invoke("hello", b"there")
    assert (status, body) == (200, b"hello there")
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["X-Call-Id"])
    assert float(headers["X-Duration-Seconds"]) > 0
    stages = dict(re.findall(r"([a-z-]+);dur=([0-9.]+)", headers["Server-Timing"]))
    assert set(stages) == {"queue", "cold-start", "execution", "total"}
    assert float(stages["execution"]) <= float(stages["total"])


async def test_caller_call_id_is_kept(platform: Platform) -> None:
    await platform.deploy("hello", HELLO)
    _, _, headers = await platform.invoke("hello", headers={"X-Call-Id": "abc-123"})
    assert headers["X-Call-Id"] == "abc-123"


async def test_event_carries_method_path_query_headers(platform: Platform) -> None:
    await platform.deploy(
        "echo",
        """
        import json
        def handle(event, context):
            return {"statusCode": 201, "headers": {"X-Seen": event.headers["x-custom"]},
                    "body": {"method": event.method, "path": event.path, "query": event.query,
                             "function": context.function_name, "call": context.call_id}}
        """,
    )
    status, body, headers = await platform.invoke(
        "echo", method="PUT", path="/a/b", params={"k": "v"}, headers={"X-Custom": "yes"}
    )
    assert status == 201
    assert headers["X-Seen"] == "yes"
    assert headers["Content-Type"] == "application/json"
    seen = json.loads(body)
    assert seen["method"] == "PUT" and seen["path"] == "/a/b" and seen["query"] == {"k": "v"}
    assert seen["function"] == "echo" and seen["call"] == headers["X-Call-Id"]


async def test_async_handlers_and_plain_return_values(platform: Platform) -> None:
    await platform.deploy(
        "kinds",
        """
        import asyncio
        async def handle(event, context):
            await asyncio.sleep(0)
            kind = event.query.get("kind")
            return {"bytes": b"\\x00\\x01", "none": None, "list": [1, 2]}[kind]
        """,
    )
    assert (await platform.invoke("kinds", params={"kind": "bytes"}))[1] == b"\x00\x01"
    assert (await platform.invoke("kinds", params={"kind": "none"}))[:2] == (200, b"")
    assert json.loads((await platform.invoke("kinds", params={"kind": "list"}))[1]) == [1, 2]


async def test_handler_exception_is_500_with_type_and_message_and_logged(
    platform: Platform,
) -> None:
    await platform.deploy("boom", "def handle(event, context):\n    raise ValueError('bad x')\n")
    status, body, _ = await platform.invoke("boom")
    assert status == 500
    assert "ValueError: bad x" in json.loads(body)["error"]
    lines = await logs_until(platform, "boom", lambda text: "ValueError: bad x" in text)
    text = "\n".join(line["text"] for line in lines)
    assert "Traceback" in text and "ValueError: bad x" in text


async def test_non_serializable_return_is_a_clear_500(platform: Platform) -> None:
    await platform.deploy("odd", "def handle(event, context):\n    return object()\n")
    status, body, _ = await platform.invoke("odd")
    assert status == 500
    assert "cannot be sent" in json.loads(body)["error"]


def pids_named(name: str) -> set[int]:
    """Host pids of the processes with a thread called `name` (its comm, as ps shows it)."""
    found = set()
    for comm in Path("/proc").glob("[0-9]*/task/*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == name:
                found.add(int(comm.parts[2]))
    return found


@contextlib.contextmanager
def process_exit(pid: int) -> Iterator[asyncio.Event]:
    """An event set when process `pid` exits (its pidfd turns readable)."""
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    pidfd = os.pidfd_open(pid)
    loop.add_reader(pidfd, exited.set)
    try:
        yield exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def test_hanging_handler_times_out_with_504_and_instance_is_replaced(
    platform: Platform,
) -> None:
    # "mark:NAME" names the handler's thread, so that the test finds the instance's process
    # from the host (a sandboxed one sees other pids); "hang" never answers.
    await platform.deploy(
        "slow",
        """
        import ctypes, time
        def handle(event, context):
            if event.body.startswith(b"mark:"):
                ctypes.CDLL(None).prctl(15, event.body[5:], 0, 0, 0)  # PR_SET_NAME
            if event.body == b"hang":
                time.sleep(60)
            return "ok"
        """,
        labels={"com.openfaas.scale.max": "1"},
        env={"exec_timeout": "1s"},
    )
    name = f"hung-{random.getrandbits(32):08x}"
    assert (await platform.invoke("slow", f"mark:{name}".encode()))[:2] == (200, b"ok")
    (hung,) = pids_named(name)  # the one instance, which the next call will hang
    with process_exit(hung) as exited:
        status, body, _ = await platform.invoke("slow", b"hang")
        assert status == 504
        assert "did not answer within 1s" in json.loads(body)["error"]
        # The hung instance is killed, not just left out of the pool with its handler running.
        await asyncio.wait_for(exited.wait(), 20)  # a deadline that only catches one left alive
    status, body, _ = await platform.invoke("slow", b"fine")
    assert (status, body) == (200, b"ok")


async def test_crashing_instance_is_502_and_a_new_one_serves(platform: Platform) -> None:
    await platform.deploy(
        "crash",
        """
        import os
        def handle(event, context):
            if event.body == b"die":
                os._exit(3)
            return "alive"
        """,
    )
    status, body, _ = await platform.invoke("crash", b"die")
    assert status == 502
    assert "exited with code 3" in json.loads(body)["error"]
    status, body, _ = await platform.invoke("crash", b"again")
    assert (status, body) == (200, b"alive")


async def test_printing_megabytes_is_captured_within_bounds(platform: Platform) -> None:
    await platform.deploy(
        "noisy",
        """
        import sys
        def handle(event, context):
            sys.stdout.write("x" * 3_000_000)
            print("\\nline-after")
            return "done"
        """,
    )
    status, body, _ = await platform.invoke("noisy")
    assert (status, body) == (200, b"done")
    lines = await logs_until(platform, "noisy", lambda text: text == "line-after")
    assert any(line["text"] == "line-after" for line in lines)
    assert max(len(line["text"]) for line in lines) <= 16 * 1024


async def test_memory_limit_is_enforced_and_instance_recovers(platform: Platform) -> None:
    await platform.deploy(
        "hog",
        """
        def handle(event, context):
            if event.body == b"hog":
                block = bytearray(512 * 1024 * 1024)
                return str(len(block))
            return "small"
        """,
        memory="128Mi",
    )
    status, body, _ = await platform.invoke("hog", b"hog")
    if platform.worker.isolation == "sandbox":
        # The cgroup's limit: the OOM killer ends the instance, the caller is told why.
        assert status == 502
        assert "ran out of memory" in json.loads(body)["error"]
    else:
        # The plain process's address-space rlimit: the allocation fails in the handler.
        assert status == 500
        assert "MemoryError" in json.loads(body)["error"]
    assert (await platform.invoke("hog", b"x"))[:2] == (200, b"small")


async def test_handler_sees_only_its_package_env_and_secrets(platform: Platform) -> None:
    assert (await platform.system("POST", "/system/secrets", {"name": "api-key", "value": "s3"}))[
        0
    ] == 201
    await platform.deploy(
        "env",
        """
        import os, json
        def handle(event, context):
            try:
                import aiohttp  # installed for the platform, not for functions
                leaked = True
            except ImportError:
                leaked = False
            path = os.path.join(os.environ["FAASD_SECRETS_DIR"], "api-key")
            return {"body": {"greeting": os.environ.get("GREETING"), "leaked": leaked,
                             "secret": context.secret("api-key"), "file": open(path).read(),
                             "tmp_writable": os.access(os.environ["TMPDIR"], os.W_OK)}}
        """,
        env={"GREETING": "hi"},
        secrets=("api-key",),
    )
    status, body, _ = await platform.invoke("env")
    assert status == 200, body
    assert json.loads(body) == {
        "greeting": "hi",
        "leaked": False,
        "secret": "s3",
        "file": "s3",
        "tmp_writable": True,
    }


async def test_requirements_are_importable_at_run_time(platform: Platform) -> None:
    lib = platform.tmp / "greetlib"
    (lib / "greetlib").mkdir(parents=True)
    (lib / "greetlib" / "__init__.py").write_text("WORD = 'from-a-dependency'\n")
    (lib / "pyproject.toml").write_text(
        '[project]\nname = "greetlib"\nversion = "1.0"\n'
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    platform.build(
        "dep:latest",
        "import greetlib\ndef handle(event, context):\n    return greetlib.WORD\n",
        requirements=f"{lib}\n",
    )
    await platform.deploy("dep")
    assert (await platform.invoke("dep"))[:2] == (200, b"from-a-dependency")


async def test_handler_that_fails_to_import_reports_why(platform: Platform) -> None:
    await platform.deploy("broken", "def handle(event, context)\n    return 1\n")
    status, body, _ = await platform.invoke("broken")
    assert status == 500
    message = json.loads(body)["error"]
    assert "failed to load its handler" in message and "SyntaxError" in message


async def test_unknown_function_is_404_json(platform: Platform) -> None:
    status, body, _ = await platform.invoke("nope")
    assert status == 404
    assert json.loads(body) == {
        "error": "function 'nope' not found in namespace 'openfaas-fn'; deploy it with "
        "`faasd-py deploy` (or faas-cli deploy)",
        "status": 404,
    }


async def test_oversized_body_is_413(tmp_path: Path) -> None:
    platform = await start_platform(tmp_path, max_body=1024)
    try:
        await platform.deploy(
            "size", "def handle(event, context):\n    return str(len(event.body))\n"
        )
        assert (await platform.invoke("size", b"x" * 1024))[:2] == (200, b"1024")
        status, body, _ = await platform.invoke("size", b"x" * 1025)
        assert status == 413
        assert "--max-body" in json.loads(body)["error"]
    finally:
        await stop_platform(platform)


SLEEPY = """
import time
def handle(event, context):
    time.sleep(float(event.body or 0))
    return "slept"
"""


async def test_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    platform = await start_platform(tmp_path, max_queue=2)
    try:
        await platform.deploy("sleepy", SLEEPY, labels={"com.openfaas.scale.max": "1"})
        assert (await platform.invoke("sleepy", b"0"))[0] == 200  # the one instance is up
        results = await asyncio.gather(*(platform.invoke("sleepy", b"0.5") for _ in range(6)))
        statuses = sorted(status for status, _, _ in results)
        # One runs, two wait, three are turned away.
        assert statuses == [200, 200, 200, 429, 429, 429]
        rejected = next(headers for status, _, headers in results if status == 429)
        assert rejected["Retry-After"] == "1"
    finally:
        await stop_platform(platform)


async def test_scales_up_under_load_and_down_when_idle(tmp_path: Path) -> None:
    platform = await start_platform(tmp_path, scale_down_after=0.5)
    try:
        await platform.deploy("sleepy", SLEEPY, labels={"com.openfaas.scale.max": "3"})
        # Six calls of a second each: one instance alone would take six seconds, time enough
        # for two more to start on a busy machine and take the calls still waiting.
        results = await asyncio.gather(*(platform.invoke("sleepy", b"1") for _ in range(6)))
        assert all(status == 200 for status, _, _ in results)
        assert any("cold-start;dur=0.000" not in h["Server-Timing"] for _, _, h in results)
        stats = platform.worker.statistics("sleepy")
        assert stats is not None and stats.available == 3 and stats.cold_starts >= 2
        for _ in range(300):  # 30 s: a deadline that only catches instances never stopped
            await asyncio.sleep(0.1)
            stats = platform.worker.statistics("sleepy")
            if stats is not None and stats.available == 1:
                break
        assert stats is not None and stats.available == 1  # back to com.openfaas.scale.min
    finally:
        await stop_platform(platform)


async def test_max_inflight_runs_invocations_concurrently_in_one_instance(
    platform: Platform,
) -> None:
    await platform.deploy(
        "conc",
        """
        import asyncio, os
        running = peak = 0
        async def handle(event, context):
            global running, peak
            if event.body == b"warm":
                return "ready"
            running += 1
            peak = max(peak, running)
            # Wait until all four run at once (20 s at most: one after another, the first
            # would wait alone, and say so).
            for _ in range(2000):
                if peak >= 4:
                    break
                await asyncio.sleep(0.01)
            running -= 1
            return {"body": {"pid": os.getpid(), "together": peak}}
        """,
        labels={"com.openfaas.scale.max": "1"},
        env={"max_inflight": "4"},
    )
    assert (await platform.invoke("conc", b"warm"))[:2] == (200, b"ready")
    results = await asyncio.gather(*(platform.invoke("conc") for _ in range(4)))
    answers = [json.loads(body) for _, body, _ in results]
    assert [a["together"] for a in answers] == [4, 4, 4, 4]  # four at once, in one instance
    assert len({a["pid"] for a in answers}) == 1


async def test_200_concurrent_invocations_across_3_functions(platform: Platform) -> None:
    for name in ("alpha", "beta", "gamma"):
        await platform.deploy(
            name, f"def handle(event, context):\n    return '{name}:' + event.body.decode()\n"
        )
    calls = [(("alpha", "beta", "gamma")[i % 3], str(i)) for i in range(200)]
    results = await asyncio.gather(*(platform.invoke(n, body.encode()) for n, body in calls))
    for (name, body), (status, reply, _) in zip(calls, results, strict=True):
        assert (status, reply) == (200, f"{name}:{body}".encode())


async def test_delete_with_invocations_in_flight_lets_them_finish(platform: Platform) -> None:
    await platform.deploy("sleepy", SLEEPY)
    await platform.invoke("sleepy", b"0")
    in_flight = asyncio.create_task(platform.invoke("sleepy", b"1"))
    for _ in range(600):  # until the call runs in the instance (30 s: only catches a hang)
        stats = platform.worker.statistics("sleepy")
        if stats is not None and stats.inflight == 1:
            break
        await asyncio.sleep(0.05)
    status, _ = await platform.system("DELETE", "/system/functions", {"functionName": "sleepy"})
    assert status == 200
    assert (await platform.invoke("sleepy"))[0] == 404
    assert (await in_flight)[:2] == (200, b"slept")


async def test_functions_come_back_after_a_restart(tmp_path: Path) -> None:
    first = await start_platform(tmp_path)
    try:
        await first.deploy("hello", HELLO, env={"A": "1"})
    finally:
        await stop_platform(first)
    second = await start_platform(tmp_path)
    try:
        status, listed = await second.system("GET", "/system/functions")
        assert status == 200
        assert [f["name"] for f in listed] == ["hello"] and listed[0]["envVars"] == {"A": "1"}
        assert (await second.invoke("hello", b"again"))[:2] == (200, b"hello again")
    finally:
        await stop_platform(second)
