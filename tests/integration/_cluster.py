"""Test hosts for the cluster tests: a bridge in this namespace and, per worker host, a network
namespace with a veth on that bridge and an address of its own, so that the traffic between
gateways, workers and Redis really crosses interfaces; and the faasd-py processes of a cluster
(gateways here, workers in their namespaces), with their logs.

Only addresses the test made are used: a /24 of 10.201.0.0/16 that no interface of this machine
holds yet. Everything is removed at the end, whatever happened."""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration._redis import RedisServer

FAASD_PY = str(Path(sys.executable).with_name("faasd-py"))
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
_names = itertools.count()


def _ip(*args: str, ns: str | None = None, check: bool = True) -> None:
    command = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    subprocess.run(command, check=check, capture_output=True, timeout=10)


def _free_subnet() -> ipaddress.IPv4Network:
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    for third in range(10, 250):
        if f" 10.201.{third}." not in used:
            return ipaddress.IPv4Network(f"10.201.{third}.0/24")
    raise RuntimeError("no free /24 in 10.201.0.0/16 for the test hosts")


@dataclass
class NetHost:
    name: str
    namespace: str
    address: str
    veth: str  # its end in this namespace


class NetLab:
    """The bridge and the hosts; `close` removes them."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 10000}{next(_names)}"
        self.bridge = f"fpcb{tag}"
        self.subnet = _free_subnet()
        self.gateway_address = str(self.subnet.network_address + 1)
        self.hosts: list[NetHost] = []
        self._tag = tag
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> NetHost:
        index = len(self.hosts)
        namespace = f"fpc{self._tag}-{name}"
        outside, inside = f"fpcv{self._tag}{index}", f"fpci{self._tag}{index}"
        address = str(self.subnet.network_address + 10 + index)
        subprocess.run(["ip", "netns", "add", namespace], check=True, timeout=10)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        _ip("addr", "add", f"{address}/24", "dev", inside, ns=namespace)
        _ip("link", "set", inside, "name", "eth0", ns=namespace)
        _ip("link", "set", "eth0", "up", ns=namespace)
        _ip("link", "set", "lo", "up", ns=namespace)
        host = NetHost(name, namespace, address, outside)
        self.hosts.append(host)
        return host

    def set_link(self, host: NetHost, up: bool) -> None:
        """The host's cable, plugged in or pulled (its end on the bridge)."""
        _ip("link", "set", host.veth, "up" if up else "down")

    def close(self) -> None:
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True, timeout=10)
            _ip("link", "del", host.veth, check=False)
        _ip("link", "del", self.bridge, check=False)


def can_make_namespaces() -> bool:
    probe = f"fpcprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=10)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return made.returncode == 0


@pytest.fixture
def network() -> Iterator[NetLab]:
    if os.geteuid() != 0 or not can_make_namespaces():
        pytest.skip("the cluster tests need root to make network namespaces")
    net = NetLab()
    try:
        yield net
    finally:
        net.close()


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FAASD_")}


@dataclass
class Process:
    """A faasd-py process of the cluster, its output in `log`."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"{self.name} did not stop within {STOP_TIMEOUT}s of SIGTERM")
        return self.process.returncode


@dataclass
class Processes:
    """faasd-py processes of the cluster whose Redis is at `url`, started on demand: gateways
    here, workers here or in a test host's namespace."""

    root: Path
    url: str
    processes: list[Process] = field(default_factory=list)

    @property
    def key_file(self) -> Path:
        return self.root / "cluster.key"

    def _start(self, name: str, args: list[str], namespace: str | None = None) -> Process:
        log = self.root / f"{name}.log"
        prefix = [] if namespace is None else ["ip", "netns", "exec", namespace]
        env = {**clean_environment(), "FAASD_CLUSTER": self.url}
        env["FAASD_CLUSTER_KEY_FILE"] = str(self.key_file)
        env["COLUMNS"] = "500"  # log lines unwrapped, for the tests that read them
        with log.open("wb") as sink:
            popen = subprocess.Popen(
                [*prefix, FAASD_PY, *args], env=env, stdout=sink, stderr=subprocess.STDOUT
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def gateway(self, name: str, port: int, *extra: str) -> Gateway:
        data_dir = self.root / name
        args = ["gateway", "--port", str(port), "--data-dir", str(data_dir), *extra]
        process = self._start(name, args)
        gateway = Gateway(f"http://127.0.0.1:{port}", data_dir, process)
        gateway.wait_healthy()
        return gateway

    def worker_at(
        self,
        name: str,
        advertise: str,
        *extra: str,
        isolation: str = "process",
        namespace: str | None = None,
    ) -> Process:
        """A worker advertised at `advertise` ("host:port"), in `namespace` or this one."""
        args = ["worker", "--name", name, "--advertise", advertise]
        args += ["--data-dir", str(self.root / name), "--isolation", isolation]
        args += ["--lease", "2s", "--policy", "none", *extra]
        return self._start(name, args, namespace)

    def stop(self) -> None:
        """Stop every process (SIGTERM, SIGKILL after STOP_TIMEOUT), then fail for those that
        did not stop in time: one that hangs must not leave the others running."""
        failures = []
        for process in reversed(self.processes):
            try:
                process.stop()
            except pytest.fail.Exception as exc:
                failures.append(str(exc))
        if failures:
            pytest.fail("; ".join(failures))


class Cluster(Processes):
    """A Redis on the bridge, and gateways and workers started on demand."""

    def __init__(self, root: Path, network: NetLab, redis: RedisServer) -> None:
        super().__init__(root, f"redis://{network.gateway_address}:{redis.port}/0")
        self.network = network
        self.redis = redis

    def worker(self, host: NetHost, *extra: str, isolation: str = "process") -> Process:
        advertise = f"{host.address}:7070"
        return self.worker_at(
            host.name, advertise, *extra, isolation=isolation, namespace=host.namespace
        )


@dataclass
class Gateway:
    url: str
    data_dir: Path
    process: Process

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.process.poll() is not None:
                pytest.fail(f"{self.process.name} exited:\n{self.process.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        pytest.fail(f"{self.process.name} did not answer /healthz:\n{self.process.output()}")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of a request with the gateway's credentials; `timeout`
        bounds each socket operation."""
        credentials = self.data_dir / "credentials"
        user = (credentials / "basic-auth-user").read_text().strip()
        password = (credentials / "basic-auth-password").read_text().strip()
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={**(headers or {}), "Authorization": f"Basic {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, path: str) -> Any:
        status, _, body = self.request("GET", path)
        assert status == 200, f"GET {path}: {status} {body!r}"
        return json.loads(body)

    def workers(self) -> dict[str, dict[str, Any]]:
        """The live workers, by name, as /system/cluster shows them."""
        return {w["name"]: w for w in self.json("/system/cluster")["workers"]}

    def wait_workers(self, count: int, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.workers()) == count:
                return
            time.sleep(0.1)
        raise AssertionError(f"{count} workers expected, live now: {sorted(self.workers())}")
