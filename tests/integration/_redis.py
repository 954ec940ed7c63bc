"""A real redis-server on a free port, for the storage and cache tests: stop it, start it again
on the same port (Redis going away and coming back), and it is killed at teardown.

Also what Redis high availability needs: a server can start with a password, a Unix socket, a
TLS port, or as a replica of another (`replica_of`); a SentinelGroup runs Sentinels that
monitor a primary, and `sentinel_setup` gives a primary, a replica and three Sentinels ready
for a failover (a client from `setup.url()` follows it)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from faasd_py.storage import ObjectStore, open_store
from tests._ci import in_ci


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """`aof`: with an append-only file synced on every write (what a durable queue needs), so
    that a stop and start keeps every acknowledged write; without it a restart comes back
    empty. `password`: AUTH required (--requirepass). `unix_socket`: also listen on
    `socket_path`. `tls`: a certificate and its key, to also listen with TLS on `tls_port`.
    `replica_of`: start as a replica of that server (with its password)."""

    def __init__(
        self,
        workdir: Path,
        aof: bool = False,
        *,
        password: str | None = None,
        unix_socket: bool = False,
        tls: tuple[Path, Path] | None = None,
        replica_of: RedisServer | None = None,
        also_bind: str | None = None,
    ) -> None:
        self.port = free_port()
        # An address beside 127.0.0.1 to listen on (a test bridge's, for hosts in namespaces).
        self.also_bind = also_bind
        self.workdir = workdir
        self.aof = aof
        self.password = password
        # Short: a Unix socket's path has a limit of about 100 bytes.
        self.socket_path = workdir / f"r{self.port}.sock" if unix_socket else None
        self.tls = tls
        self.tls_port = free_port() if tls is not None else None
        self.replica_of = replica_of
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A blocking client of this server, for the harness's own checks (close it)."""
        return redis.Redis(
            "127.0.0.1",
            self.port,
            password=self.password,
            socket_timeout=2,
            socket_connect_timeout=2,
        )

    def role(self) -> str:
        """ "master" or "slave", as INFO replication says."""
        with self.client() as client:
            return str(client.info("replication")["role"])

    def wait_replicating(self, timeout: float = 30) -> None:
        """Until this replica has synced with its primary (its link is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.client() as client:
                if client.info("replication").get("master_link_status") == "up":
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not sync with its primary")

    def _options(self) -> list[str]:
        """What the password, socket, TLS and replica settings add to the command line."""
        options = ["--repl-diskless-sync-delay", "0"]  # a replica syncs at once, not after 5 s
        if self.also_bind is not None:
            options += ["--bind", "127.0.0.1", self.also_bind]
        if self.password is not None:
            options += ["--requirepass", self.password]
        if self.socket_path is not None:
            options += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.tls is not None:
            cert, key = self.tls
            options += ["--tls-port", str(self.tls_port), "--tls-cert-file", str(cert)]
            options += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
            options += ["--tls-auth-clients", "no"]
        primary = self.replica_of
        if primary is not None:
            options += ["--replicaof", "127.0.0.1", str(primary.port)]
            if primary.password is not None:
                options += ["--masterauth", primary.password]
        return options

    def start(self) -> None:
        # Nothing is written outside the test's directory.
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.aof
            else [
                "--appendonly",
                "no",
            ]
        )
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persistence,
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "no",
                *self._options(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_answering(self.port, "redis-server")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


def _wait_answering(port: int, what: str) -> None:
    """Until the server on `port` answers PING (a server that wants AUTH answers too)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not start on port {port}")


class SentinelGroup:
    """`count` Sentinels (redis-server --sentinel) on free ports that monitor `primary` as
    `service` with a quorum of `quorum`: the primary is down for them after `down_after`
    seconds without an answer, and a failover that stalls is tried again after
    `failover_timeout`. Their config files (which Sentinel rewrites) live in `workdir`. With a
    primary that serves TLS, they also listen with TLS (`tls_ports`), watch the primary on its
    TLS port, and `url(tls=True)` is the rediss+sentinel:// URL of them."""

    def __init__(
        self,
        workdir: Path,
        primary: RedisServer,
        *,
        service: str = "faasd",
        count: int = 3,
        quorum: int = 2,
        down_after: float = 1.0,
        failover_timeout: float = 5.0,
    ) -> None:
        self.workdir = workdir
        self.primary = primary
        self.service = service
        self.quorum = quorum
        self.down_after = down_after
        self.failover_timeout = failover_timeout
        self.ports = [free_port() for _ in range(count)]
        self.tls_ports = [free_port() for _ in range(count)] if primary.tls else []
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    def url(self, db: int = 0, *, password: str | None = None, tls: bool = False) -> str:
        """The redis+sentinel:// URL of the service (the primary's password by default);
        `tls`: rediss+sentinel:// to the TLS ports, trusting the primary's certificate."""
        password = self.primary.password if password is None else password
        auth = f":{password}@" if password else ""
        hosts = ",".join(f"127.0.0.1:{port}" for port in (self.tls_ports if tls else self.ports))
        if not tls or self.primary.tls is None:
            return f"redis+sentinel://{auth}{hosts}/{self.service}/{db}"
        query = f"ssl_cert_reqs=required&ssl_ca_certs={self.primary.tls[0]}"
        return f"rediss+sentinel://{auth}{hosts}/{self.service}/{db}?{query}"

    def start(self) -> None:
        for n, port in enumerate(self.ports):
            self._start(port, self.tls_ports[n] if self.tls_ports else None)

    def _start(self, port: int, tls_port: int | None) -> None:
        conf = self.workdir / f"sentinel-{port}.conf"
        service, primary = self.service, self.primary
        watched = primary.port
        lines = [f"port {port}", "bind 127.0.0.1", "protected-mode no", f"dir {self.workdir}"]
        if primary.tls is not None and primary.tls_port is not None:
            cert, key = primary.tls
            watched = primary.tls_port
            lines += [f"tls-port {tls_port}", f"tls-cert-file {cert}", f"tls-key-file {key}"]
            lines += [f"tls-ca-cert-file {cert}", "tls-auth-clients no", "tls-replication yes"]
        lines += [
            f"sentinel monitor {service} 127.0.0.1 {watched} {self.quorum}",
            f"sentinel down-after-milliseconds {service} {round(self.down_after * 1000)}",
            f"sentinel failover-timeout {service} {round(self.failover_timeout * 1000)}",
            f"sentinel parallel-syncs {service} 1",
        ]
        if primary.password is not None:
            lines.append(f"sentinel auth-pass {service} {primary.password}")
        conf.write_text("\n".join(lines) + "\n")
        self._processes[port] = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_answering(port, "redis-sentinel")

    def stop(self) -> None:
        """Kills every Sentinel (SIGKILL), and waits for them."""
        for process in self._processes.values():
            process.kill()
            process.wait()
        self._processes.clear()

    def kill(self, port: int) -> None:
        """Kills one Sentinel (a failover still needs `quorum` of them, and a majority)."""
        process = self._processes.pop(port)
        process.kill()
        process.wait()

    def _masters(self) -> list[dict[str, object]]:
        """What each running Sentinel answers for the service (SENTINEL MASTER), where it
        answers."""
        states = []
        for port in self._processes:
            try:
                with redis.Redis("127.0.0.1", port, socket_timeout=1) as sentinel:
                    states.append(sentinel.sentinel_master(self.service))
            except redis.RedisError:
                continue
        return states

    def wait_ready(self, replicas: int = 1, timeout: float = 30) -> None:
        """Until every Sentinel knows the others and `replicas` healthy replicas: only then can
        they agree on a failover and have a replica to promote."""
        others = len(self._processes) - 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self._masters()
            if len(states) == len(self._processes) and all(
                int(str(s["num-other-sentinels"])) >= others
                and int(str(s["num-slaves"])) >= replicas
                for s in states
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Sentinels did not see each other and {replicas} replica(s)")

    def primary_port(self) -> int | None:
        """The primary's port that a majority of the running Sentinels name, if they agree."""
        ports = [int(str(s["port"])) for s in self._masters()]
        best = max(set(ports), key=ports.count, default=None)
        return best if best is not None and ports.count(best) > len(self.ports) // 2 else None

    def wait_for_new_primary(self, old_port: int, timeout: float = 60) -> int:
        """Until a majority of the Sentinels name a primary other than `old_port`, and that
        server says it is one; its port. (From async code: `await_new_primary`.)"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.primary_port()
            if port is not None and port != old_port:
                try:
                    with redis.Redis(
                        "127.0.0.1", port, password=self.primary.password, socket_timeout=1
                    ) as client:
                        if client.info("replication")["role"] == "master":
                            return port
                except redis.RedisError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"no new primary for {self.service} within {timeout} s")

    async def await_new_primary(self, old_port: int, seconds: float = 60) -> int:
        """wait_for_new_primary without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for_new_primary, old_port, seconds)


@dataclass
class SentinelSetup:
    """A primary, its replica (synced), and Sentinels that watch them, ready for a failover."""

    primary: RedisServer
    replica: RedisServer
    sentinels: SentinelGroup

    def url(self, db: int = 0) -> str:
        return self.sentinels.url(db)

    def stop(self) -> None:
        self.sentinels.stop()
        self.replica.stop()
        self.primary.stop()


def start_sentinel_setup(
    workdir: Path, *, password: str | None = None, service: str = "faasd"
) -> SentinelSetup:
    """A primary, a replica and three Sentinels (quorum 2), all started and ready (stop them)."""
    primary = RedisServer(workdir, password=password)
    replica = RedisServer(workdir, password=password, replica_of=primary)
    sentinels = SentinelGroup(workdir, primary, service=service)
    setup = SentinelSetup(primary, replica, sentinels)
    try:
        primary.start()
        replica.start()
        replica.wait_replicating()
        sentinels.start()
        sentinels.wait_ready(replicas=1)
    except BaseException:
        setup.stop()
        raise
    return setup


def need_redis_server() -> None:
    """Skips the test where redis-server is missing (fails it in CI, which must prove Redis)."""
    if shutil.which("redis-server") is None:
        if in_ci():
            pytest.fail("CI must prove the Redis store, but redis-server is not installed")
        pytest.skip("redis-server is not installed")


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    """A primary, a replica and three Sentinels on free ports, ready for a failover; every
    process is killed at teardown."""
    need_redis_server()
    setup = start_sentinel_setup(tmp_path)
    yield setup
    setup.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    need_redis_server()
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


StoreFactory = Callable[[], ObjectStore]


@pytest.fixture(params=["redis", "sqlite"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens stores over one backing (Redis, or one SQLite file); closes them at teardown."""
    opened: list[ObjectStore] = []
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url: str | None = server.url
    else:
        url = f"sqlite://{tmp_path / 'objects.sqlite3'}"

    def make() -> ObjectStore:
        store = open_store(url, tmp_path)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
