"""A function's life through the CLI: new, build, deploy, list, describe, invoke, logs, remove."""

from __future__ import annotations

import json
import selectors
import subprocess
import textwrap
import time
from pathlib import Path

from tests.e2e.conftest import Cli

ECHO_HANDLER = textwrap.dedent(
    """
    def handle(event, context):
        print(f"handled {event.method} {event.body.decode()!r}", flush=True)
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/json"},
            "body": {
                "method": event.method,
                "body": event.body.decode(),
                "greeting": event.headers.get("X-Greeting"),
                "query": event.query,
                "path": event.path,
            },
        }
    """
)


def new_function(faasd: Cli, name: str, handler: str | None = None) -> Path:
    faasd.ok("new", name)
    folder = faasd.cwd / name
    if handler is not None:
        (folder / "handler.py").write_text(handler)
    return folder


def test_new_build_deploy_list_describe_invoke_logs_remove(faasd: Cli) -> None:
    new_function(faasd, "lifecycle", ECHO_HANDLER)
    assert "lifecycle:latest" in faasd.ok("build", "-f", "stack.yml")
    assert "Deployed lifecycle" in faasd.ok("deploy", "-f", "stack.yml")

    listed = faasd.ok("list")
    row = next(line.split() for line in listed.splitlines() if line.startswith("lifecycle "))
    assert row[:2] == ["lifecycle", "lifecycle:latest"]

    described = faasd.ok("describe", "lifecycle")
    assert "Image:" in described and "lifecycle:latest" in described
    assert "Namespace:" in described and "openfaas-fn" in described

    answer = faasd.ok(
        "invoke", "lifecycle", "-H", "X-Greeting=hi", "-q", "lang=en", "-q", "x=1", input=b"Ada"
    )
    assert json.loads(answer) == {
        "method": "POST",
        "body": "Ada",
        "greeting": "hi",
        "query": {"lang": "en", "x": "1"},
        "path": "/",
    }

    verbose = faasd("invoke", "lifecycle", "-m", "GET", "--path", "/items/1", "-v")
    assert verbose.returncode == 0, verbose.stderr
    assert json.loads(verbose.stdout)["path"] == "/items/1"
    assert "HTTP 200" in verbose.stderr and "X-Call-Id:" in verbose.stderr
    assert "X-Duration-Seconds:" in verbose.stderr and "Server-Timing:" in verbose.stderr

    status = json.loads(faasd.ok("describe", "lifecycle", "--json"))
    assert status["name"] == "lifecycle" and status["invocationCount"] >= 2

    logs = wait_for_logs(faasd, "lifecycle", "'Ada'")
    line = next(line for line in logs.splitlines() if "handled POST 'Ada'" in line)
    timestamp, instance, *_ = line.split()
    assert timestamp.endswith("Z") and instance != "-"
    assert "handled GET" in faasd.ok("logs", "lifecycle", "--tail", "1")
    assert "handled" in faasd.ok("logs", "lifecycle", "--since", "5m")

    assert "Removed lifecycle" in faasd.ok("remove", "lifecycle")
    assert "lifecycle" not in faasd.ok("list")
    gone = faasd("invoke", "lifecycle")
    assert gone.returncode == 1 and "404" in gone.stderr


def wait_for_logs(faasd: Cli, name: str, text: str, seconds: float = 5.0) -> str:
    """Log lines reach the gateway shortly after the invocation that wrote them."""
    deadline = time.monotonic() + seconds
    while True:
        logs = faasd.ok("logs", name, "--tail", "10")
        if text in logs or time.monotonic() > deadline:
            return logs
        time.sleep(0.1)


def test_requirements_are_installed_into_the_package(faasd: Cli) -> None:
    handler = 'import tinydep\n\ndef handle(event, context):\n    return f"value {tinydep.VALUE}"\n'
    folder = new_function(faasd, "withdeps", handler)
    (folder / "tinydep").mkdir()
    (folder / "tinydep" / "tinydep.py").write_text("VALUE = 7\n")
    (folder / "tinydep" / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tinydep"\nversion = "1.0"\n'
        '[tool.setuptools]\npy-modules = ["tinydep"]\n'
    )
    (folder / "requirements.txt").write_text("./tinydep\n")

    faasd.ok("build", "withdeps")
    faasd.ok("deploy", "withdeps")

    assert faasd.ok("invoke", "withdeps") == "value 7"
    faasd.ok("remove", "withdeps")


def test_deploy_by_flags_then_update(faasd: Cli) -> None:
    new_function(faasd, "flags")
    faasd.ok("build")

    first = faasd.ok(
        "deploy",
        "--name",
        "flags",
        "--image",
        "flags",
        "--env",
        "mode=test",
        "--label",
        "team=core",
        "--annotation",
        "note=x=y",
        "--memory",
        "128Mi",
        "--cpu",
        "500m",
    )
    assert "HTTP 202" in first  # new: PUT said 404, POST created it
    status = json.loads(faasd.ok("describe", "flags", "--json"))
    assert status["envVars"] == {"mode": "test"}
    assert status["labels"]["team"] == "core"
    assert status["annotations"]["note"] == "x=y"
    assert status["limits"] == {"memory": "128Mi", "cpu": "500m"}

    second = faasd.ok("deploy", "--name", "flags", "--image", "flags", "--env", "mode=prod")
    assert "HTTP 200" in second  # an update: PUT
    assert json.loads(faasd.ok("describe", "flags", "--json"))["envVars"] == {"mode": "prod"}
    assert faasd.ok("invoke", "flags", input=b"Bo") == "Hello, Bo!\n"
    faasd.ok("remove", "flags")


def test_logs_follow_prints_new_lines_as_they_come(faasd: Cli) -> None:
    new_function(faasd, "follow", ECHO_HANDLER)
    faasd.ok("build")
    faasd.ok("deploy")
    with faasd.popen("logs", "follow", "--follow") as follower:
        try:
            time.sleep(0.5)  # let the follower subscribe before the line is written
            faasd.ok("invoke", "follow", input=b"live")
            assert "handled POST 'live'" in read_line_within(follower, seconds=10)
        finally:
            follower.terminate()
    faasd.ok("remove", "follow")


def read_line_within(process: subprocess.Popen[bytes], seconds: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=seconds):
            raise AssertionError(f"no log line within {seconds}s")
    return process.stdout.readline().decode()
