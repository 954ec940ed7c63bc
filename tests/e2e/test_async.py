"""Async invocations through the CLI: `invoke --async [--callback]`, `queue`, `queue dead-letters`,
`queue replay`, and `queue-worker` consuming a shared Redis queue for an `up` that runs none
itself. Callbacks reach a real HTTP server in the test."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    FAASD_PY,
    STOP_TIMEOUT,
    Cli,
    clean_environment,
    free_port,
    terminate,
    wait_healthy,
)
from tests.integration._redis import RedisServer

# Deadlines only catch hangs.
HANG = 30.0

FAILING = "def handle(event, context):\n    return {'statusCode': 503, 'body': 'down'}\n"
FIXED = "def handle(event, context):\n    return 'done: ' + event.body.decode()\n"
FAST_RETRIES = (
    "--annotation",
    "com.openfaas.retry.attempts=2",
    "--annotation",
    "com.openfaas.retry.min_wait=50ms",
    "--annotation",
    "com.openfaas.retry.max_wait=50ms",
)


@dataclass(frozen=True)
class Callback:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server in a thread that keeps every POST it gets."""

    def __init__(self) -> None:
        received: queue.Queue[Callback] = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.put(Callback(self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._received = received
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def next(self) -> Callback:
        return self._received.get(timeout=HANG)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    try:
        yield found
    finally:
        found.close()


def build(faasd: Cli, name: str, handler: str) -> None:
    faasd.ok("new", name)
    (faasd.cwd / name / "handler.py").write_text(handler)
    faasd.ok("build", name)


def table_row(text: str, first: str) -> list[str]:
    return next(line.split() for line in text.splitlines() if line.split()[:1] == [first])


def test_invoke_async_with_a_callback(faasd: Cli, receiver: Receiver) -> None:
    build(faasd, "asyncok", FIXED)
    faasd.ok("deploy", "asyncok")
    done = faasd("invoke", "asyncok", "--async", "--callback", receiver.url + "/hook", input=b"A")
    assert done.returncode == 0, done.stderr
    call_id = done.stdout.strip()
    uuid.UUID(call_id)  # the gateway's new id, alone on stdout
    assert "submitted asynchronously" in done.stderr

    callback = receiver.next()
    assert callback.path == "/hook"
    assert callback.headers["X-Call-Id"] == call_id
    assert callback.headers["X-Function-Status"] == "200"
    assert callback.body == b"done: A"

    assert table_row(faasd.ok("queue"), "asyncok")[1] == "0"  # DEPTH: nothing waits
    faasd.ok("remove", "asyncok")


def test_dead_letters_listed_then_replayed(faasd: Cli, receiver: Receiver) -> None:
    build(faasd, "asyncdead", FAILING)
    faasd.ok("deploy", "--name", "asyncdead", "--image", "asyncdead", *FAST_RETRIES)
    call_id = faasd.ok(
        "invoke", "asyncdead", "--async", "--callback", receiver.url, input=b"B"
    ).strip()
    assert receiver.next().headers["X-Function-Status"] == "503"

    listed = wait_for(lambda: faasd.ok("queue", "dead-letters", "asyncdead"), call_id)
    head, reason = listed.splitlines()
    _, function, _, shown_id, attempts, *_ = head.split()
    assert (function, shown_id, attempts) == ("asyncdead", call_id, "2")
    assert "status 503 after 2 attempts" in reason
    assert table_row(faasd.ok("queue"), "asyncdead")[-1] == "1"  # DEAD LETTERS

    # Fixed, then replayed: the same call runs again and succeeds.
    (faasd.cwd / "asyncdead" / "handler.py").write_text(FIXED)
    faasd.ok("build", "asyncdead")
    faasd.ok("deploy", "--name", "asyncdead", "--image", "asyncdead", *FAST_RETRIES)
    assert "Replayed 1 dead letter" in faasd.ok("queue", "replay", "asyncdead")
    callback = receiver.next()
    assert (callback.headers["X-Call-Id"], callback.body) == (call_id, b"done: B")
    assert call_id not in faasd.ok("queue", "dead-letters", "asyncdead")
    faasd.ok("remove", "asyncdead")


def wait_for(read: Callable[[], str], text: str) -> str:
    """read() until its output holds `text` (a dead letter lands just after its callback)."""
    deadline = time.monotonic() + HANG
    while True:
        output = read()
        if text in output:
            return output
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared in:\n{output}")
        time.sleep(0.1)


def test_async_options_that_do_not_go_together(offline_cli: Cli) -> None:
    done = offline_cli("invoke", "hello", "--callback", "http://127.0.0.1:9/")
    assert done.returncode == 2 and "--callback goes with --async" in done.stderr


def test_queue_worker_refuses_a_queue_it_cannot_share(offline_cli: Cli) -> None:
    done = offline_cli("queue-worker", "--queue", "sqlite:///tmp/queue.sqlite3")
    assert done.returncode == 2
    assert "embedded queue" in done.stderr and "redis://" in done.stderr


@pytest.mark.parametrize("command", [("queue",), ("queue", "dead-letters"), ("queue", "replay")])
def test_help(offline_cli: Cli, command: tuple[str, ...]) -> None:
    text = offline_cli.ok(*command, "--help")
    assert text.startswith("Usage: faasd-py") and "Example" in text


def test_queue_worker_runs_the_calls_of_an_up_without_a_consumer(
    tmp_path: Path, receiver: Receiver
) -> None:
    redis = RedisServer(tmp_path, aof=True)
    redis.start()
    try:
        with running_up(tmp_path, redis.url) as faasd:
            build(faasd, "shared", FIXED)
            faasd.ok("deploy", "shared")
            call_id = faasd.ok(
                "invoke", "shared", "--async", "--callback", receiver.url, input=b"C"
            ).strip()
            # Nobody consumes it yet: it waits in Redis.
            assert table_row(faasd.ok("queue"), "shared")[1] == "1"
            with faasd.popen("queue-worker", "--queue", redis.url) as worker:
                try:
                    callback = receiver.next()
                finally:
                    worker.send_signal(signal.SIGTERM)  # stops as Ctrl-C does
                    _, stderr = worker.communicate(timeout=STOP_TIMEOUT)
            assert (callback.headers["X-Call-Id"], callback.body) == (call_id, b"done: C")
            assert worker.returncode == 0, stderr.decode()
            assert "queue-worker: stopped" in stderr.decode()
    finally:
        redis.stop()


class running_up:
    """`faasd-py up --queue URL --no-queue-consumer` on a free port; the CLI pointed at it."""

    def __init__(self, root: Path, queue_url: str) -> None:
        self.port = free_port()
        self.data_dir, self.log = root / "data", root / "up.log"
        self.queue_url = queue_url
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Cli:
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [
                    FAASD_PY,
                    "up",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--queue",
                    self.queue_url,
                    "--no-queue-consumer",
                ],
                env=clean_environment(),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{self.port}"
        wait_healthy(url, self.process, self.log)
        env = {**clean_environment(), "FAASD_GATEWAY": url, "FAASD_DATA_DIR": str(self.data_dir)}
        work = self.data_dir.parent / "work"
        work.mkdir()
        return Cli(cwd=work, env=env)

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        terminate(self.process)
