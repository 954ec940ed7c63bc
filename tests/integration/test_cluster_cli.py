"""The cluster's commands as a user meets them: `up --cluster` on one host, and the clear errors
for what is missing or wrong (no URL, a bad URL, Redis down, a key that is not the cluster's, a
worker without a key)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration._cluster import FAASD_PY, Gateway, Process, clean_environment
from tests.integration._redis import RedisServer, free_port, need_redis_server

COMMAND_TIMEOUT = 60


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    need_redis_server()
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FAASD_PY, *args],
        env={**clean_environment(), "COLUMNS": "500", **(env or {})},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


def test_up_with_a_cluster_runs_a_gateway_and_a_worker(redis: RedisServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    stack = Path(__file__).parents[2] / "examples" / "stack.yml"
    built = run(
        "build",
        "-f",
        str(stack),
        "hello",
        "--push",
        "--cluster",
        redis.url,
        env={"FAASD_DATA_DIR": str(tmp_path / "builder")},
    )
    assert built.returncode == 0, built.stderr
    port = free_port()
    log = tmp_path / "up.log"
    args = ["up", "--cluster", redis.url, "--port", str(port), "--data-dir", str(data)]
    args += ["--name", "solo", "--advertise", "127.0.0.1:0", "--isolation", "process"]
    with log.open("wb") as sink:
        popen = subprocess.Popen(
            [FAASD_PY, *args], env=clean_environment(), stdout=sink, stderr=subprocess.STDOUT
        )
    process = Process("up", popen, log)
    try:
        gateway = Gateway(f"http://127.0.0.1:{port}", data, process)
        gateway.wait_healthy()
        gateway.wait_workers(1)
        status, _, body = gateway.request(
            "POST", "/system/functions", {"service": "hello", "image": "hello:latest"}
        )
        assert status == 202, body
        status, headers, body = gateway.request("POST", "/function/hello", raw=b"hi")
        assert status == 200 and b"Hello" in body, body
        assert "network;dur=" in headers["Server-Timing"]
        assert gateway.json("/system/info")["cluster"] == {"workers": 1, "apps": 1}
    finally:
        assert process.stop() == 0, process.output()
    assert "joined cluster" in process.output()


def test_a_cluster_command_without_a_url_says_how_to_give_one() -> None:
    done = run("worker")
    assert done.returncode == 2
    assert "--cluster redis://HOST:PORT[/DB]" in done.stderr and "FAASD_CLUSTER" in done.stderr


def test_a_bad_cluster_url_is_refused_before_anything_starts() -> None:
    done = run("gateway", "--cluster", "http://example.com")
    assert done.returncode == 2
    assert "redis+sentinel://" in done.stderr  # it lists the forms it accepts


def test_a_dead_redis_is_named(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = run("gateway", "--cluster", url, "--data-dir", str(tmp_path), "--port", "0")
    assert done.returncode == 1
    assert url in done.stderr and "unavailable" in done.stderr.lower()


def test_a_worker_needs_the_clusters_key(redis: RedisServer, tmp_path: Path) -> None:
    args = ["worker", "--cluster", redis.url, "--data-dir", str(tmp_path / "w")]
    missing = run(*args, "--advertise", "127.0.0.1:0")
    assert missing.returncode == 1
    assert "cluster.key" in missing.stderr and "copy" in missing.stderr
    # A gateway makes the cluster's key; a worker with another is refused, naming its file.
    port = free_port()
    log = tmp_path / "gw.log"
    with log.open("wb") as sink:
        popen = subprocess.Popen(
            [
                FAASD_PY,
                "gateway",
                "--cluster",
                redis.url,
                "--data-dir",
                str(tmp_path / "gw"),
                "--port",
                str(port),
            ],
            env=clean_environment(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    gateway = Process("gateway", popen, log)
    try:
        Gateway(f"http://127.0.0.1:{port}", tmp_path / "gw", gateway).wait_healthy()
    finally:
        assert gateway.stop() == 0, gateway.output()
    assert (tmp_path / "gw" / "cluster.key").exists()
    other = tmp_path / "other.key"
    other.write_text("11" * 32)
    other.chmod(0o600)
    wrong = run(*args, "--cluster-key", str(other), "--advertise", "127.0.0.1:0")
    assert wrong.returncode == 1
    assert str(other) in wrong.stderr and "not the cluster's" in wrong.stderr
