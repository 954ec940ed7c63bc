"""faasd_py.redis_connect against real servers: every URL form connects (a database, AUTH, a
Unix socket, TLS, Sentinel), a URL it cannot open is a BadRequest that says what is accepted,
and a client through Sentinel rides out a failover: its calls fail quickly while no primary is
known, then succeed on the promoted replica, and nothing acknowledged by the replica is lost.
The store and the queue open Sentinel URLs too."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool

from faasd_py.errors import BadRequest, StorageUnavailable
from faasd_py.protocol import Request
from faasd_py.queue import QueuedCall, open_queue
from faasd_py.redis_connect import connect, redact
from faasd_py.storage import open_store
from tests._ci import in_ci
from tests.integration._redis import (
    RedisServer,
    SentinelGroup,
    SentinelSetup,
    free_port,
    need_redis_server,
    redis_server,
    sentinel_setup,
)

__all__ = ["redis_server", "sentinel_setup"]  # fixtures, imported for pytest

HANG = 30.0  # deadlines only catch hangs
# Errors a client may raise while no primary answers: redis-py's (MasterNotFoundError is one).
OUTAGE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


async def round_trip(url: str) -> aioredis.Redis:
    """A client of `url` that has just written and read a key (close it)."""
    client = connect(url, timeout=5.0)
    async with asyncio.timeout(HANG):
        await client.set("probe", b"1")
        assert await client.get("probe") == b"1"
    return client


def probe_in(server: RedisServer, db: int) -> bytes | None:
    """The probe key round_trip wrote, read from `server`'s database `db` directly."""
    with server.client() as check:
        check.select(db)
        value: bytes | None = check.get("probe")
        return value


# --- every form of URL connects ------------------------------------------------------------------


async def test_a_redis_url_names_its_database(redis_server: RedisServer) -> None:
    client = await round_trip(f"redis://127.0.0.1:{redis_server.port}/3")
    await client.aclose()
    assert probe_in(redis_server, db=3) == b"1"
    assert probe_in(redis_server, db=0) is None


async def test_a_password_in_the_url_authenticates(tmp_path: Path) -> None:
    need_redis_server()
    server = RedisServer(tmp_path, password="s3cret/pw")
    server.start()
    try:
        client = await round_trip(f"redis://:s3cret%2Fpw@127.0.0.1:{server.port}/0")
        await client.aclose()
        client = await round_trip(f"redis://default:s3cret%2Fpw@127.0.0.1:{server.port}/0")
        await client.aclose()
        for url in (f"redis://127.0.0.1:{server.port}", f"redis://:wrong@127.0.0.1:{server.port}"):
            client = connect(url, timeout=5.0)
            with pytest.raises(redis.exceptions.AuthenticationError):
                async with asyncio.timeout(HANG):
                    await client.ping()
            await client.aclose()
    finally:
        server.stop()


async def test_a_unix_socket_url_connects_with_its_database(tmp_path: Path) -> None:
    need_redis_server()
    server = RedisServer(tmp_path, unix_socket=True)
    server.start()
    try:
        client = await round_trip(f"unix://{server.socket_path}?db=2")
        await client.aclose()
        assert probe_in(server, db=2) == b"1"
    finally:
        server.stop()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key; skips where redis-server was built
    without TLS (or openssl is missing), and says so."""
    need_redis_server()
    if shutil.which("openssl") is None:
        _skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-keyout", str(key), "-out", str(cert)),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    if not _serves_tls(cert, key):
        _skip("redis-server here was built without TLS support (--tls-port does not listen)")
    return cert, key


def _skip(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI must prove Redis over TLS, but {reason}")
    print(f"skipped: {reason}")
    pytest.skip(reason)


def _serves_tls(cert: Path, key: Path) -> bool:
    """Whether redis-server listens on a --tls-port (a build without TLS exits instead)."""
    port = free_port()
    tls = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--save", "", "--tls-ca-cert-file", str(cert), *tls],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                time.sleep(0.02)
        return False
    finally:
        process.kill()
        process.wait()


async def test_a_rediss_url_connects_over_tls_and_checks_the_certificate(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, _ = certificate
    server = RedisServer(tmp_path, tls=certificate)
    server.start()
    try:
        base = f"rediss://127.0.0.1:{server.tls_port}/0"
        client = await round_trip(f"{base}?ssl_cert_reqs=required&ssl_ca_certs={cert}")
        await client.aclose()
        # Verified for real: without the CA that signed it, the server's certificate is refused.
        client = connect(f"{base}?ssl_cert_reqs=required", timeout=5.0)
        with pytest.raises(redis.exceptions.ConnectionError, match="certificate"):
            async with asyncio.timeout(HANG):
                await client.ping()
        await client.aclose()
    finally:
        server.stop()


async def test_a_rediss_sentinel_url_reaches_the_primary_over_tls(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    primary = RedisServer(tmp_path, tls=certificate)
    sentinels = SentinelGroup(tmp_path, primary)
    try:
        primary.start()
        sentinels.start()
        sentinels.wait_ready(replicas=0)
        client = await round_trip(sentinels.url(db=4, tls=True))
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.master_address == ("127.0.0.1", primary.tls_port)  # its TLS port
        await client.aclose()
        assert probe_in(primary, db=4) == b"1"
    finally:
        sentinels.stop()
        primary.stop()


# --- URLs it cannot open -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://:hunter2@127.0.0.1:6379", "unknown scheme 'http'"),
        ("127.0.0.1:6379", "no scheme"),
        ("redis://:hunter2@", "no host"),
        ("redis://:hunter2@127.0.0.1:port/0", "Port"),
        ("redis://127.0.0.1:6379/zero", "the database must be a number"),
        ("redis://127.0.0.1:6379/0?colour=blue", "unknown option 'colour'"),
        ("redis://127.0.0.1:6379/0?ssl_ca_certs=/ca.pem", "needs TLS"),
        ("redis://127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout"),
        ("unix://", "no socket path"),
        ("redis+sentinel://:hunter2@10.0.0.1:26379", "no service name"),
        ("redis+sentinel://10.0.0.1:26379/faasd/one", "/SERVICE or /SERVICE/db"),
        ("redis+sentinel://:hunter2@/faasd", "a Sentinel without a host"),
        ("redis+sentinel://10.0.0.1:x/faasd", "Port"),
    ],
)
def test_a_url_it_cannot_open_is_a_bad_request_that_lists_the_forms(url: str, why: str) -> None:
    with pytest.raises(BadRequest) as raised:
        connect(url, timeout=1.0)
    message = raised.value.message
    assert why in message
    assert redact(url) in message and "hunter2" not in message
    for form in ("redis://", "rediss://", "unix://", "redis+sentinel://", "sentinel_password"):
        assert form in message
    assert isinstance(raised.value, ValueError)  # as open_store and open_queue promise


def test_open_store_and_open_queue_refuse_a_bad_sentinel_url(tmp_path: Path) -> None:
    url = "redis+sentinel://:hunter2@127.0.0.1:26379"
    for opener in (open_store, open_queue):
        with pytest.raises(ValueError, match="no service name") as raised:
            opener(url, tmp_path)
        assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:pw@host:6380/1", "redis://user:***@host:6380/1"),
        ("redis://host:6379", "redis://host:6379"),
        ("rediss://:pw@host?ssl_cert_reqs=none", "rediss://:***@host?ssl_cert_reqs=none"),
        (
            "redis+sentinel://:pw@a:1,b:2/faasd/0?sentinel_password=spw&socket_keepalive=true",
            "redis+sentinel://:***@a:1,b:2/faasd/0?sentinel_password=***&socket_keepalive=true",
        ),
        ("redis://h/0?password=pw", "redis://h/0?password=***"),
        ("redis://:pw@[bad/0", "redis://:***@[bad/0"),
    ],
)
def test_redact_hides_every_password(url: str, shown: str) -> None:
    assert redact(url) == shown


# --- Sentinel ----------------------------------------------------------------------------------


async def test_a_sentinel_url_reaches_the_primary(sentinel_setup: SentinelSetup) -> None:
    client = await round_trip(sentinel_setup.url(db=1))
    await client.aclose()
    assert probe_in(sentinel_setup.primary, db=1) == b"1"


async def test_a_sentinel_client_follows_a_failover_without_losing_replicated_writes(
    sentinel_setup: SentinelSetup,
) -> None:
    setup = sentinel_setup
    client = connect(setup.url(), timeout=1.0)
    keys = [f"key-{n}" for n in range(200)]
    async with asyncio.timeout(HANG):
        for key in keys:
            await client.set(key, key)
        # Acknowledged by the replica too: what Redis's asynchronous replication keeps.
        assert await client.wait(1, 0) >= 1

    setup.primary.stop()  # SIGKILL

    outages: list[BaseException] = []
    async with asyncio.timeout(120):  # the whole window; each call has its own, shorter bound
        while True:
            try:
                async with asyncio.timeout(HANG):  # a call that hangs fails the test here
                    await client.set("after-failover", "1")
                break
            except OUTAGE as exc:
                outages.append(exc)
                await asyncio.sleep(0.05)
    assert setup.sentinels.primary_port() == setup.replica.port
    assert await client.get("after-failover") == b"1"
    async with asyncio.timeout(HANG):
        values = await client.mget(keys)
    assert values == [key.encode() for key in keys]
    await client.aclose()
    print(f"calls failed during the failover: {len(outages)}")


async def test_a_blocking_pool_through_sentinel_bounds_connections(
    sentinel_setup: SentinelSetup,
) -> None:
    url = f"{sentinel_setup.url()}?client_name=bounded"  # options pass through, as with redis://
    client = connect(url, timeout=5.0, max_connections=2, blocking=True)
    async with asyncio.timeout(HANG):
        # Ten callers at once share two connections: they wait their turn, none fails.
        await asyncio.gather(*(client.incr("counter") for _ in range(10)))
        assert await client.get("counter") == b"10"
    with sentinel_setup.primary.client() as check:
        assert 1 <= sum(1 for c in check.client_list() if c["name"] == "bounded") <= 2
    await client.aclose()


async def test_the_store_opens_a_sentinel_url_and_serves_again_after_a_failover(
    sentinel_setup: SentinelSetup, tmp_path: Path
) -> None:
    setup = sentinel_setup
    store = open_store(setup.url(), tmp_path, timeout=1.0)
    assert store.name == setup.url()  # no password to hide here
    async with asyncio.timeout(HANG):
        version = await store.put("app", "k", b"v")
        # A write of another client acknowledged by the replica: the stream is ordered, so the
        # store's write before it reached the replica too.
        marker = connect(setup.url(), timeout=5.0)
        await marker.set("marker", "1")
        assert await marker.wait(1, 0) >= 1
        await marker.aclose()

    old = setup.primary.port
    setup.primary.stop()
    await setup.sentinels.await_new_primary(old)
    async with asyncio.timeout(120):
        while True:
            try:
                got = await store.get("app", "k")
                break
            except StorageUnavailable as exc:  # the 503 window: it names the store
                assert "redis+sentinel://" in exc.message
                await asyncio.sleep(0.05)
    assert got is not None and (got.data, got.version) == (b"v", version)
    await store.close()


async def test_the_queue_opens_a_sentinel_url(
    sentinel_setup: SentinelSetup, tmp_path: Path
) -> None:
    queue = open_queue(sentinel_setup.url(db=2), tmp_path, lease=60.0, timeout=5.0)
    request = Request("call-1", "POST", "/", "", [], b"body")
    async with asyncio.timeout(HANG):
        await queue.enqueue(QueuedCall("fn", request, None, time.time()), 10)
        (delivery,) = await queue.take("c1", "fn", 10)
        assert delivery.call.call_id == "call-1" and delivery.call.request.body == b"body"
        await queue.ack(delivery)
        assert await queue.take("c1", "fn", 10) == []
    await queue.close()
