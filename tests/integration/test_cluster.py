"""Several hosts for real: gateways in this namespace, workers each in a network namespace of
their own on a test bridge, Redis on the bridge, the faasd-py processes as a user starts them.

A function here answers with the address it runs at (so a test sees which worker ran it) and
the value of its secret."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration._cluster import (
    FAASD_PY,
    Cluster,
    Gateway,
    NetHost,
    NetLab,
    clean_environment,
    network,
)
from tests.integration._redis import RedisServer, free_port, need_redis_server

__all__ = ["network"]

HANDLER = """\
import json
import os
import socket
import time


def handle(event, context):
    print("where was called", flush=True)
    time.sleep(float(event.query.get("sleep", "0")))
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect((os.environ["PEER"], 9))  # no packet: only picks the route
    try:
        secret = context.secret("token")
    except KeyError:
        secret = None
    answer = {"address": probe.getsockname()[0], "secret": secret}
    return {"statusCode": 200, "body": json.dumps(answer)}
"""
STACK = """\
version: 1.0
provider:
  name: openfaas
functions:
  where:
    lang: python3-http
    handler: ./where
    image: where:latest
"""


@pytest.fixture
def cluster(network: NetLab, tmp_path: Path) -> Iterator[Cluster]:
    need_redis_server()
    redis = RedisServer(tmp_path, also_bind=network.gateway_address)
    redis.start()
    made = Cluster(tmp_path, network, redis)
    try:
        yield made
    finally:
        made.stop()
        redis.stop()


def push_function(cluster: Cluster) -> None:
    """Build the `where` function and push it to the cluster."""
    source = cluster.root / "src"
    (source / "where").mkdir(parents=True)
    (source / "where" / "handler.py").write_text(HANDLER)
    (source / "stack.yml").write_text(STACK)
    done = subprocess.run(
        [FAASD_PY, "build", "--push", "--cluster", cluster.url],
        cwd=source,
        env={**clean_environment(), "FAASD_DATA_DIR": str(cluster.root / "builder")},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()


def deploy(gateway: Gateway, name: str, peer: str, **extra: Any) -> None:
    spec = {"service": name, "image": "where:latest", "envVars": {"PEER": peer}, **extra}
    status, _, body = gateway.request("POST", "/system/functions", spec)
    assert status == 202, body


def invoke(gateway: Gateway, name: str) -> dict[str, Any]:
    status, headers, body = gateway.request("POST", f"/function/{name}", raw=b"hi")
    assert status == 200, (status, body)
    assert "network;dur=" in headers["Server-Timing"]
    answer: dict[str, Any] = json.loads(body)
    return answer


def address_of(hosts: list[NetHost]) -> dict[str, str]:
    return {h.address: h.name for h in hosts}


def start(
    cluster: Cluster, workers: int, gateways: int = 1, *worker_args: str
) -> tuple[list[Gateway], list[NetHost]]:
    first = cluster.gateway("g1", free_port())
    made = [first] + [cluster.gateway(f"g{i + 2}", free_port()) for i in range(gateways - 1)]
    hosts = [cluster.network.add_host(f"w{i + 1}") for i in range(workers)]
    for host in hosts:
        cluster.worker(host, *worker_args)
    first.wait_workers(workers)
    push_function(cluster)
    return made, hosts


def test_deploy_through_one_gateway_and_invoke_through_another(cluster: Cluster) -> None:
    (g1, g2), hosts = start(cluster, workers=1, gateways=2)
    peer = cluster.network.gateway_address
    deploy(g1, "where", peer)
    answer = invoke(g2, "where")
    assert answer["address"] == hosts[0].address  # it ran on the worker's host
    # Both gateways list it, with the worker's figures.
    for gateway in (g1, g2):
        (listed,) = gateway.json("/system/functions")
        assert listed["name"] == "where" and listed["invocationCount"] >= 1
    # Each gateway's /metrics has the workers; `faasd-py cluster` shows them.
    series = f'faasd_cluster_worker_apps{{worker="{hosts[0].name}"}} 1.0'.encode()
    wait_for("the worker's app in /metrics", lambda: series in g2.request("GET", "/metrics")[2])
    shown = subprocess.run(
        [FAASD_PY, "cluster"],
        env={**clean_environment(), "FAASD_GATEWAY": g1.url, "FAASD_DATA_DIR": str(g1.data_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    assert hosts[0].name in shown.stdout and hosts[0].address in shown.stdout
    # The second gateway wrote the cluster's credentials under its own data dir.
    assert (g2.data_dir / "credentials" / "basic-auth-password").read_text() == (
        g1.data_dir / "credentials" / "basic-auth-password"
    ).read_text()


def test_six_apps_spread_over_three_workers_each_fetching_the_package(cluster: Cluster) -> None:
    (gateway,), hosts = start(cluster, workers=3)
    peer = cluster.network.gateway_address
    for i in range(6):
        deploy(gateway, f"app{i}", peer)
    ran_at = {invoke(gateway, f"app{i}")["address"] for i in range(6)}
    # Placement by free memory spreads six equal apps over all three workers.
    assert ran_at == {h.address for h in hosts}
    placements = gateway.json("/system/cluster")["placements"]
    assert sorted(placements) == [f"app{i}" for i in range(6)]
    assert all(len(workers) == 1 for workers in placements.values())
    # Every worker fetched the package once from the cluster (no shared filesystem).
    for host in hosts:
        digest = cluster.root / host.name / "packages"
        assert list(digest.glob("*/.cluster-digest")), f"{host.name} has no fetched package"


def test_a_secret_update_reaches_every_worker(cluster: Cluster) -> None:
    (gateway,), hosts = start(cluster, workers=3)
    peer = cluster.network.gateway_address
    status, _, body = gateway.request("POST", "/system/secrets", {"name": "token", "value": "v1"})
    assert status == 201, body
    for i in range(3):
        deploy(gateway, f"s{i}", peer, secrets=["token"])
    assert {invoke(gateway, f"s{i}")["secret"] for i in range(3)} == {"v1"}
    assert {invoke(gateway, f"s{i}")["address"] for i in range(3)} == {h.address for h in hosts}
    status, _, body = gateway.request("PUT", "/system/secrets", {"name": "token", "value": "v2"})
    assert status == 200, body
    assert {invoke(gateway, f"s{i}")["secret"] for i in range(3)} == {"v2"}


def test_a_killed_worker_fails_calls_fast_and_its_apps_move(cluster: Cluster) -> None:
    (gateway,), hosts = start(cluster, workers=2)
    peer = cluster.network.gateway_address
    deploy(gateway, "where", peer)
    first = invoke(gateway, "where")["address"]
    victim = next(p for p in cluster.processes if p.name == address_of(hosts)[first])
    victim.kill()
    killed_at = time.monotonic()
    failures: list[tuple[int, bytes]] = []
    while time.monotonic() - killed_at < 60:
        status, _, body = gateway.request("POST", "/function/where", raw=b"hi")
        if status == 200:
            break
        failures.append((status, body))
        time.sleep(0.05)
    else:
        pytest.fail(f"no call succeeded within 60 s of the kill: {failures[-3:]}")
    moved = invoke(gateway, "where")["address"]
    assert moved != first
    # What failed meanwhile failed as a gateway error naming the worker, or a 503 while no
    # worker had it: never a hang, never a 500.
    for status, body in failures:
        assert status in (502, 503), (status, body)
        if status == 502:
            assert victim.name.encode() in body, body
    # Its lease runs out: it leaves the cluster's view.
    deadline = time.monotonic() + 30
    while victim.name in gateway.workers():
        assert time.monotonic() < deadline, "the killed worker is still listed after 30 s"
        time.sleep(0.2)


def wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    """check()'s first true value, polled; fails naming `what` after `timeout` (a hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout} s")


def holders(gateway: Gateway, app: str) -> list[str]:
    """The workers whose heartbeat says they run `app`."""
    return sorted(name for name, w in gateway.workers().items() if app in w["apps"])


def test_a_worker_cut_off_is_fenced_and_rejoins_without_its_apps(cluster: Cluster) -> None:
    (gateway,), hosts = start(cluster, workers=2)
    peer = cluster.network.gateway_address
    deploy(gateway, "where", peer)
    first = address_of(hosts)[invoke(gateway, "where")["address"]]
    cut = next(h for h in hosts if h.name == first)
    cluster.network.set_link(cut, up=False)
    # Its lease runs out; the gateway stops sending it calls, and the app moves.
    wait_for("the cut-off worker leaves", lambda: first not in gateway.workers())
    moved = wait_for(
        "a call succeeds elsewhere",
        lambda: gateway.request("POST", "/function/where", raw=b"hi")[0] == 200,
    )
    assert moved
    other = address_of(hosts)[invoke(gateway, "where")["address"]]
    assert other != first
    # The link comes back: the worker joins again under a new epoch, without the app, so the
    # app runs on one worker only.
    cluster.network.set_link(cut, up=True)
    wait_for("the worker joins again", lambda: first in gateway.workers())
    wait_for("the app on one worker only", lambda: holders(gateway, "where") == [other])
    assert (
        "joined the cluster again" in next(p for p in cluster.processes if p.name == first).output()
    )
    assert {address_of(hosts)[invoke(gateway, "where")["address"]] for _ in range(5)} == {other}


def test_an_app_scaled_beyond_one_worker_spreads_to_another(cluster: Cluster) -> None:
    budget = ["--memory-budget", "600Mi", "--instance-memory", "128Mi", "--no-zygote"]
    (gateway,), hosts = start(cluster, 2, 1, *budget)
    peer = cluster.network.gateway_address
    deploy(gateway, "where", peer)
    invoke(gateway, "where")
    assert len(gateway.json("/system/cluster")["placements"]["where"]) == 1
    # Six instances of 128 MiB do not fit in one worker's 600 MiB.
    body = {"serviceName": "where", "replicas": 6}
    status, _, answer = gateway.request("POST", "/system/scale-function/where", body)
    assert status == 202, answer
    assert len(gateway.json("/system/cluster")["placements"]["where"]) == 2
    wait_for(
        "six instances ready over the two workers",
        lambda: gateway.json("/system/function/where")["availableReplicas"] == 6,
    )
    ran_at = {invoke(gateway, "where")["address"] for _ in range(20)}
    assert ran_at == {h.address for h in hosts}


class Callbacks:
    """A receiver of async calls' callbacks on 127.0.0.1: what came, by call id."""

    def __init__(self) -> None:
        self.received: dict[str, list[tuple[int, bytes]]] = {}
        lock = threading.Lock()
        received = self.received

        class Receiver(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = int(self.headers["X-Function-Status"])
                with lock:
                    received.setdefault(self.headers["X-Call-Id"], []).append((status, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/done"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def callbacks() -> Iterator[Callbacks]:
    receiver = Callbacks()
    yield receiver
    receiver.close()


def enqueue(gateway: Gateway, callbacks: Callbacks, call_id: str, query: str = "") -> None:
    request = urllib.request.Request(
        f"{gateway.url}/async-function/where{query}",
        data=b"hi",
        method="POST",
        headers={"X-Callback-Url": callbacks.url, "X-Call-Id": call_id},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202


def test_async_calls_run_on_the_workers_and_call_back(
    cluster: Cluster, callbacks: Callbacks
) -> None:
    (gateway,), hosts = start(cluster, workers=1)
    deploy(gateway, "where", cluster.network.gateway_address)
    for i in range(5):
        enqueue(gateway, callbacks, f"call-{i}")
    wait_for("five callbacks", lambda: len(callbacks.received) == 5)
    answers = [json.loads(body) for (_, body), *_ in callbacks.received.values()]
    assert {a["address"] for a in answers} == {hosts[0].address}


def test_async_calls_on_a_killed_worker_are_run_again_elsewhere(
    cluster: Cluster, callbacks: Callbacks
) -> None:
    (gateway,), hosts = start(cluster, workers=2)
    retry = {"com.openfaas.retry.min_wait": "0.2s", "com.openfaas.retry.max_wait": "1s"}
    deploy(gateway, "where", cluster.network.gateway_address, annotations=retry)
    first = address_of(hosts)[invoke(gateway, "where")["address"]]
    calls = [f"call-{i}" for i in range(30)]
    for call_id in calls:
        enqueue(gateway, callbacks, call_id, "?sleep=0.1")
    wait_for("some calls done", lambda: len(callbacks.received) >= 3)
    next(p for p in cluster.processes if p.name == first).kill()
    wait_for("every call's callback", lambda: len(callbacks.received) == len(calls), 90)
    # Each call ended well, at least once: those the killed worker was running were retried
    # (a 502 naming the worker is a retried status) on the other worker.
    for call_id in calls:
        assert any(status == 200 for status, _ in callbacks.received[call_id]), call_id
    survivors = {h.address for h in hosts if h.name != first}
    late = [json.loads(body)["address"] for (status, body), *_ in callbacks.received.values()]
    assert survivors & set(late)


def test_logs_come_from_the_workers(cluster: Cluster) -> None:
    (gateway,), _ = start(cluster, workers=1)
    deploy(gateway, "where", cluster.network.gateway_address)
    invoke(gateway, "where")

    def logged() -> bool:
        status, _, body = gateway.request("GET", "/system/logs?name=where")
        return status == 200 and b"where was called" in body

    wait_for("the function's output in /system/logs", logged)


def test_a_namespace_made_through_one_gateway_serves_through_another(cluster: Cluster) -> None:
    (g1, g2), hosts = start(cluster, workers=1, gateways=2)
    status, _, body = g1.request("POST", "/system/namespace/team", {"name": "team"})
    assert status == 201, body
    spec: dict[str, Any] = {"service": "where", "image": "where:latest", "namespace": "team"}
    spec["envVars"] = {"PEER": cluster.network.gateway_address}
    status, _, body = g2.request("POST", "/system/functions", spec)
    assert status == 202, body
    assert invoke(g1, "where.team")["address"] == hosts[0].address
    status, _, body = g1.request("POST", "/function/where", raw=b"hi")  # not in openfaas-fn
    assert status == 404, body


KV_HANDLER = """\
import json
import os
import socket


def handle(event, context):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect((os.environ["PEER"], 9))
    if event.method == "POST":
        context.storage.put("k", event.body)
    value = context.storage.get("k")
    answer = {"address": probe.getsockname()[0], "value": None if value is None else value.decode()}
    return {"statusCode": 200, "body": json.dumps(answer)}
"""


def test_a_spread_apps_storage_reads_are_never_stale(cluster: Cluster) -> None:
    """An app over two workers shares one cache (each key has an owner): whichever worker
    wrote last, every read on either returns the latest value."""
    budget = ["--memory-budget", "400Mi", "--instance-memory", "128Mi", "--no-zygote"]
    (gateway,), hosts = start(cluster, 2, 1, *budget)
    source = cluster.root / "src" / "kv"
    source.mkdir()
    (source / "handler.py").write_text(KV_HANDLER)
    (source.parent / "stack.yml").write_text(STACK.replace("where", "kv"))
    done = subprocess.run(
        [FAASD_PY, "build", "--push", "--cluster", cluster.url],
        cwd=source.parent,
        env={**clean_environment(), "FAASD_DATA_DIR": str(cluster.root / "builder")},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    spec = {
        "service": "kv",
        "image": "kv:latest",
        "envVars": {"PEER": cluster.network.gateway_address},
    }
    status, _, body = gateway.request("POST", "/system/functions", spec)
    assert status == 202, body
    status, _, body = gateway.request(
        "POST", "/system/scale-function/kv", {"serviceName": "kv", "replicas": 4}
    )
    assert status == 202, body
    assert len(gateway.json("/system/cluster")["placements"]["kv"]) == 2
    seen_at: set[str] = set()
    for i in range(20):
        status, _, body = gateway.request("POST", "/function/kv", raw=f"v{i}".encode())
        assert status == 200, body
        for _ in range(2):  # then a read on each worker, in turn
            status, _, body = gateway.request("GET", "/function/kv")
            assert status == 200, body
            answer = json.loads(body)
            assert answer["value"] == f"v{i}", (i, answer)
            seen_at.add(answer["address"])
    assert seen_at == {h.address for h in hosts}
