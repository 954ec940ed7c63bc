"""A cluster through Redis Sentinel loses its primary: a primary, a replica and three
Sentinels; a gateway and a worker (both in this namespace, on 127.0.0.1) joined through
redis+sentinel://. The primary is killed (SIGKILL) while a client invokes a function in a loop
and async calls wait in the queue.

What must hold: a bounded window of errors, each a 503 that names what is unavailable (never a
500, never a hang), then normal service through the promoted replica (invocations, deploys,
secrets), the worker still registered, and every async call accepted before the kill (and
replicated) completed. The error window is printed (`pytest -s`) so that it can be quoted."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from tests.integration._cluster import Cluster, Gateway, Processes
from tests.integration._redis import (
    SentinelSetup,
    free_port,
    need_redis_server,
    start_sentinel_setup,
)
from tests.integration.test_cluster import deploy, invoke, push_function

REQUEST_DEADLINE = 15.0  # seconds one request may take: longer counts as a hang
RECOVERY_DEADLINE = 90.0  # seconds from the kill to steady service: longer fails the test
STEADY = 20  # successful invocations in a row that count as service being back
CALLBACK_HOLD = 8.0  # seconds at most the receiver holds a callback until it is let go
ASYNC_CALLS = 12
PEER = "127.0.0.1"
# What a 503 of the failover window must name: the cluster store, the registry or the queue;
# or, while a worker whose lease ran out during the failover joins again, that it lost its
# lease (its own answer) or that no worker holds a live lease (the gateway's).
STORE_WORDS = ("cluster store unavailable", "registry redis", "queue redis")
FENCED = ("cannot reach the cluster's Redis and has lost its lease", "no worker holds a live lease")


@dataclass
class Receiver:
    """An HTTP server that holds each callback until `gate` opens: the consumer acknowledges
    a call only once its callback was delivered, so the calls are still in the queue at the
    kill."""

    port: int
    gate: threading.Event = field(default_factory=threading.Event)
    statuses: dict[str, list[str]] = field(default_factory=dict)  # call id -> X-Function-Status
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/done"

    def completed(self) -> set[str]:
        with self.lock:
            return {call for call, statuses in self.statuses.items() if "200" in statuses}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(free_port())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            made.gate.wait(CALLBACK_HOLD)
            with made.lock:
                call = self.headers.get("X-Call-Id", "")
                made.statuses.setdefault(call, []).append(self.headers["X-Function-Status"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", made.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield made
    made.gate.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> Iterator[tuple[Processes, SentinelSetup]]:
    need_redis_server()
    setup = start_sentinel_setup(tmp_path)
    processes = Processes(tmp_path, setup.url())
    try:
        yield processes, setup
    finally:
        processes.stop()
        setup.stop()


@dataclass
class Attempt:
    started: float  # monotonic
    ended: float
    status: int  # 0: no answer within REQUEST_DEADLINE
    body: bytes
    ok: bool  # the status the request answers when all is well


Call = tuple[str, str, Any, int]  # method, path, JSON body (None: "hi"), the status when well


class Invoker:
    """Sends `calls` in turn in a loop in a thread, each one bounded by REQUEST_DEADLINE."""

    def __init__(self, gateway: Gateway, calls: list[Call]) -> None:
        self.gateway = gateway
        self.calls = calls
        self.attempts: list[Attempt] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(REQUEST_DEADLINE + 5)

    def _run(self) -> None:
        for method, path, json_body, ok in itertools.cycle(self.calls):
            if self._stop.is_set():
                return
            started = time.monotonic()
            raw = b"hi" if json_body is None else None
            try:
                status, _, body = self.gateway.request(
                    method, path, json_body, raw=raw, timeout=REQUEST_DEADLINE
                )
            except OSError as exc:  # a timeout, or a connection the gateway dropped
                status, body = 0, repr(exc).encode()
            self.attempts.append(Attempt(started, time.monotonic(), status, body, status == ok))
            time.sleep(0.02)

    def steady_since(self, moment: float) -> bool:
        """Whether the last STEADY calls, all started after `moment`, succeeded."""
        last = [a for a in self.attempts if a.started > moment][-STEADY:]
        return len(last) == STEADY and all(a.ok for a in last)


def replication_offset(setup: SentinelSetup) -> tuple[int, int]:
    """(the primary's replication offset, the replica's acknowledged one)."""
    with setup.primary.client() as client:
        info = client.info("replication")
    return int(info["master_repl_offset"]), int(info["slave0"]["offset"])


def wait_replicated(setup: SentinelSetup, timeout: float = 30) -> None:
    """Until the replica holds every write the primary had when this was called."""
    target = replication_offset(setup)[0]
    deadline = time.monotonic() + timeout
    while replication_offset(setup)[1] < target:
        assert time.monotonic() < deadline, "the replica did not catch up with the primary"
        time.sleep(0.02)


def enqueue(gateway: Gateway, name: str, receiver: Receiver) -> str:
    headers = {"X-Callback-Url": receiver.url()}
    status, answer, body = gateway.request(
        "POST", f"/async-function/{name}", raw=b"later", headers=headers
    )
    assert status == 202, (status, body)
    return answer["X-Call-Id"]


def wait_for(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not callable(check) or not check():
        assert time.monotonic() < deadline, f"{what} within {timeout:g}s"
        time.sleep(0.1)


# A worker's lease shorter than a failover (it is fenced, then joins again with a new epoch)
# and the default one, which outlasts a failover that goes as planned (renewals resume).
@pytest.mark.parametrize("lease", ["2s", "6s"])
def test_a_cluster_survives_the_loss_of_its_redis_primary(
    sentinel_cluster: tuple[Processes, SentinelSetup], receiver: Receiver, lease: str
) -> None:
    processes, setup = sentinel_cluster
    # A short queue lease: a call whose acknowledgement the failover lost comes back soon.
    gateway = processes.gateway("g1", free_port(), "--queue-lease", "5s")
    worker = processes.worker_at("w1", f"127.0.0.1:{free_port()}", "--lease", lease)
    gateway.wait_workers(1)
    push_function(cast(Cluster, processes))  # it reads only `root` and `url`
    status, _, body = gateway.request("POST", "/system/secrets", {"name": "token", "value": "v1"})
    assert status == 201, body
    queued = {"com.faasd-py.queue.concurrency": "1"}  # one call at a time: they queue up
    deploy(gateway, "where", PEER, secrets=["token"], annotations=queued)
    assert invoke(gateway, "where")["secret"] == "v1"
    epoch_before = gateway.workers()["w1"]["epoch"]

    invoker = Invoker(gateway, [("POST", "/function/where", None, 200)])
    # The registry through the gateway meanwhile: reads, and writes of a secret.
    probe = {"name": "probe", "value": "x"}
    status, _, body = gateway.request("POST", "/system/secrets", probe)
    assert status == 201, body
    control = Invoker(gateway, [("GET", "/system/functions", {}, 200)])
    control.calls.append(("PUT", "/system/secrets", probe, 200))
    invoker.start()
    control.start()
    accepted = [enqueue(gateway, "where", receiver) for _ in range(ASYNC_CALLS)]
    wait_replicated(setup)  # what was acknowledged before the kill is on the replica too
    old_port = setup.primary.port
    setup.primary.stop()  # SIGKILL
    killed_at = time.monotonic()
    try:
        new_port = setup.sentinels.wait_for_new_primary(old_port)
        promoted_at = time.monotonic()
        wait_for(
            "steady service after the failover",
            lambda: invoker.steady_since(promoted_at),
            RECOVERY_DEADLINE,
        )
    finally:
        invoker.stop()
        control.stop()
    assert new_port == setup.replica.port
    receiver.gate.set()

    after = [a for a in invoker.attempts if a.started >= killed_at]
    failures = [a for a in after if not a.ok]
    control_failures = [a for a in control.attempts if a.started >= killed_at and not a.ok]
    hangs = [a for a in failures if a.status == 0]
    assert not hangs, f"requests without an answer within {REQUEST_DEADLINE:g}s: {hangs[:3]}"
    # The worker is still a member: its renewals resumed on the new primary (same epoch), or,
    # fenced when its lease ran out before the promotion, it joined again (a new epoch).
    assert worker.process.poll() is None, worker.output()
    epoch_after = gateway.workers()["w1"]["epoch"]
    rejoined = epoch_after != epoch_before
    assert epoch_after >= epoch_before
    for failure in failures + control_failures:
        message = json.loads(failure.body)["error"]
        if rejoined and failure.status == 502:
            # Its lease gone, the worker is lost to the gateway as a killed one is: 502 naming it.
            assert "worker w1" in message, message
            continue
        assert failure.status == 503, (failure.status, failure.body)
        assert any(word in message for word in STORE_WORDS) or (
            rejoined and any(word in message for word in FENCED)
        ), message
    errors = sorted(failures + control_failures, key=lambda a: a.started)
    window = (max(a.ended for a in errors) - errors[0].started) if errors else 0.0
    recovered = next(a.ended for a in after if a.ok and a.started > promoted_at)
    print(
        f"\nRedis failover: Sentinels named the replica primary {promoted_at - killed_at:.2f}s "
        f"after the kill; error window {window:.2f}s: {len(failures)} of {len(after)} "
        f"invocations and {len(control_failures)} registry calls failed; first invocation "
        f"after the promotion answered {recovered - killed_at:.2f}s after the kill; messages: "
        f"{sorted({json.loads(a.body)['error'][:90] for a in errors})}"
    )

    # Everything works again through the promoted replica: invocations, deploys, secrets.
    status, _, body = gateway.request("PUT", "/system/secrets", {"name": "token", "value": "v2"})
    assert status == 200, body
    assert invoke(gateway, "where")["secret"] == "v2"
    deploy(gateway, "fresh", PEER)
    assert invoke(gateway, "fresh")["address"] == PEER
    # It renews its lease on the new primary.
    with redis.Redis("127.0.0.1", new_port, socket_timeout=2) as client:
        first_beat = gateway.workers()["w1"]["heartbeat_at"]
        wait_for(
            "the worker's heartbeat on the new primary",
            lambda: gateway.workers().get("w1", {}).get("heartbeat_at", 0) > first_beat,
            10,
        )
        assert client.exists("faasd:cluster:worker:w1")
    how = "was fenced and joined again" if rejoined else "kept its lease"
    print(f"worker w1 (lease {lease}) {how}: epoch {epoch_before} before the kill, {epoch_after}")

    # No async call accepted before the kill is lost: each one's result reaches its callback.
    wait_for(
        "every async call accepted before the kill completed",
        lambda: set(accepted) <= receiver.completed(),
        RECOVERY_DEADLINE,
    )
