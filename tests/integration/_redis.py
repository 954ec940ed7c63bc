"""A real redis-server on a free port, for the storage and cache tests: stop it, start it again
on the same port (Redis going away and coming back), and it is killed at teardown."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

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
    empty."""

    def __init__(self, workdir: Path, aof: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.aof = aof
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

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
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if in_ci():
            pytest.fail("CI must prove the Redis store, but redis-server is not installed")
        pytest.skip("redis-server is not installed")
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
