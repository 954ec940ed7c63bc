"""CallbackSender against real receivers on free ports of 127.0.0.1: aiohttp servers (over TLS
with a certificate of the test's making, too) and raw asyncio servers that misbehave on purpose.
The consumer's use of the sender is tested in test_queue_consumer.py; what the URL and headers
become, without a network, in tests/unit/test_callback.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from faasd_py.protocol import Request
from faasd_py.queue import CallbackSender, CallResult, QueuedCall
from faasd_py.queue._callback import MAX_ORIGINS, USER_AGENT
from tests._ci import in_ci
from tests.integration._redis import free_port
from tests.integration.test_bench_client import aiohttp_server, raw_server

# Deadlines only catch hangs.
HANG = 30.0


def sender(attempts: int = 3, timeout: float = 5.0) -> CallbackSender:
    return CallbackSender(attempts, min_wait=0.01, max_wait=0.02, timeout=timeout)


def call(url: str, n: int = 0) -> QueuedCall:
    request = Request(f"call-{n}", "POST", "/", "", [("X-Start-Time", "1700000000")], b"in")
    return QueuedCall("fn", request, url, time.time())


def result(body: bytes = b"out", headers: list[tuple[str, str]] | None = None) -> CallResult:
    headers = [("Content-Type", "text/plain")] if headers is None else headers
    return CallResult(200, headers, body, 0.25, time.time())


@contextlib.asynccontextmanager
async def closing(callbacks: CallbackSender) -> AsyncIterator[CallbackSender]:
    try:
        yield callbacks
    finally:
        await callbacks.close()
        await asyncio.sleep(0.01)  # let the closed transports release their sockets


@dataclass
class Seen:
    """One POST as the receiver got it, and the connection it came on."""

    path_qs: str
    headers: dict[str, str]
    body: bytes
    transport: asyncio.BaseTransport | None


@dataclass
class Receiver:
    """Records every callback; answers `status`."""

    status: int = 200
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        # Read from the stream: request.read() would refuse a body above client_max_size (1 MB).
        body = await request.content.read()
        headers = dict(request.headers)
        self.seen.append(Seen(request.raw_path, headers, body, request.transport))
        return web.Response(status=self.status, headers={"Location": "/elsewhere"})

    def connections(self) -> set[asyncio.BaseTransport | None]:
        return {s.transport for s in self.seen}


def counts(callbacks: CallbackSender) -> tuple[int, int, int]:
    """Delivered, failed, retried."""
    stats = callbacks.statistics()
    return stats.delivered, stats.failed, stats.retried


async def eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


# --- delivery over one kept-alive connection ---------------------------------------------------


async def test_sequential_callbacks_to_one_receiver_share_one_connection() -> None:
    receiver = Receiver()
    async with aiohttp_server(receiver.handle) as url, closing(sender()) as callbacks:
        for n in range(5):
            assert await callbacks.send(call(f"{url}/done?n={n}", n), result(f"r{n}".encode()))
    assert [s.path_qs for s in receiver.seen] == [f"/done?n={n}" for n in range(5)]
    assert [s.body for s in receiver.seen] == [f"r{n}".encode() for n in range(5)]
    assert len(receiver.connections()) == 1
    first = receiver.seen[0].headers
    assert first["User-Agent"] == USER_AGENT
    assert first["X-Call-Id"] == "call-0" and first["X-Function-Name"] == "fn.openfaas-fn"
    assert first["Host"] == url.removeprefix("http://")
    assert counts(callbacks) == (5, 0, 0)


async def test_a_body_of_several_megabytes_arrives_intact_with_its_content_type() -> None:
    receiver = Receiver()
    body = bytes(range(256)) * (24 * 1024 + 7)  # 6 MB and some, every byte value
    headers = [("Content-Type", "application/x-parquet"), ("Content-Length", "1")]
    async with aiohttp_server(receiver.handle) as url, closing(sender()) as callbacks:
        assert await callbacks.send(call(url + "/big"), result(body, headers))
        assert await callbacks.send(call(url + "/plain", 1), result(b"", []))
    big, plain = receiver.seen
    assert hashlib.sha256(big.body).digest() == hashlib.sha256(body).digest()
    assert big.headers["Content-Type"] == "application/x-parquet"
    assert big.headers["Content-Length"] == str(len(body))
    # Without the function's, the type aiohttp's client gave bytes, and an explicit length of 0.
    assert plain.headers["Content-Type"] == "application/octet-stream"
    assert (plain.headers["Content-Length"], plain.body) == ("0", b"")


async def test_the_target_is_sent_as_spelled_with_the_urls_credentials_as_basic_auth() -> None:
    receiver = Receiver()
    async with aiohttp_server(receiver.handle) as url, closing(sender()) as callbacks:
        spelled = url.replace("http://", "http://qw:s%3Acret@") + "/a%2Fb/../c?x=%20y&z"
        assert await callbacks.send(call(spelled), result())
    (seen,) = receiver.seen
    assert seen.path_qs == "/a%2Fb/../c?x=%20y&z"
    assert seen.headers["Authorization"] == "Basic cXc6czpjcmV0"  # qw:s:cret


@pytest.mark.parametrize("status", [301, 302, 303, 307])
async def test_a_redirect_counts_as_delivered_and_is_not_followed(status: int) -> None:
    receiver = Receiver(status)
    async with aiohttp_server(receiver.handle) as url, closing(sender()) as callbacks:
        assert await callbacks.send(call(url + "/done"), result())
    assert [s.path_qs for s in receiver.seen] == ["/done"]
    assert counts(callbacks) == (1, 0, 0)


# --- failures: retried, then given up; never raised -------------------------------------------


def request_reader() -> Callable[[asyncio.StreamReader], Awaitable[bytes]]:
    """Reads one request, its body by Content-Length; returns its head."""

    async def read(reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        return head

    return read


async def test_a_receiver_that_closes_the_connection_mid_answer_is_tried_again() -> None:
    read = request_reader()
    heads: list[bytes] = []

    async def flaky(reader: asyncio.StreamReader) -> bytes:
        heads.append(await read(reader))
        if len(heads) == 1:  # half of an answer, then the connection closes
            return b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nnot all"
        return b"HTTP/1.1 204 No Content\r\n\r\n"

    async with raw_server(flaky) as url, closing(sender()) as callbacks:
        assert await callbacks.send(call(url + "/done"), result())
    assert len(heads) == 2 and all(b"\r\nX-Call-Id: call-0\r\n" in h for h in heads)
    assert counts(callbacks) == (1, 0, 1)


async def test_bytes_that_are_not_http_are_tried_again_then_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    read = request_reader()
    posts = 0

    async def garbage(reader: asyncio.StreamReader) -> bytes:
        nonlocal posts
        await read(reader)
        posts += 1
        return b"SSH-2.0-OpenSSH_9.6\r\n\r\n"

    async with raw_server(garbage) as url, closing(sender(attempts=3)) as callbacks:
        assert not await callbacks.send(call(url + "/done"), result())
    assert posts == 3 and counts(callbacks) == (0, 1, 2)
    assert "not an HTTP/1.x status line" in caplog.text and "after 3 attempts" in caplog.text


async def test_a_receiver_that_never_answers_is_a_timeout_each_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def silent(reader: asyncio.StreamReader) -> bytes:
        await reader.read()  # returns when the sender gives up on the connection
        return b""

    async with raw_server(silent) as url, closing(sender(2, timeout=0.2)) as callbacks:
        assert not await callbacks.send(call(url + "/done"), result())
    assert counts(callbacks) == (0, 1, 1)
    assert "no answer within 0.2s, after 2 attempts" in caplog.text


async def test_a_url_that_cannot_be_posted_to_is_final_and_logged_without_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "faasd_py.queue._callback")
    async with closing(sender(attempts=5)) as callbacks:
        assert not await callbacks.send(call("ftp://user:hunter2@rx.example/done"), result())
        down = f"http://user:hunter2@127.0.0.1:{free_port()}/done"
        assert not await callbacks.send(call(down, 1), result())
    assert counts(callbacks) == (0, 2, 4)  # the bad URL once, the closed port 5 times
    invalid, refused = (r.getMessage() for r in caplog.records)
    assert "call call-0 of fn" in invalid and "not a URL that can be POSTed to" in invalid
    assert "after 1 attempt)" in invalid
    assert "call call-1 of fn" in refused and "cannot connect to 127.0.0.1:" in refused
    assert "user@127.0.0.1" in refused and "after 5 attempts" in refused
    assert "hunter2" not in caplog.text


# --- https -------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    if shutil.which("openssl") is None:
        if in_ci():
            pytest.fail("CI must prove callbacks over TLS, but openssl is not installed")
        pytest.skip("openssl is not installed")
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
    return cert, key


@contextlib.asynccontextmanager
async def receivers(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    count: int = 1,
    certificate: tuple[Path, Path] | None = None,
) -> AsyncIterator[list[str]]:
    """One aiohttp app behind `count` ports of its own (as many origins), over TLS with
    `certificate` (and its key) when one is given; their base URLs."""
    context = None
    if certificate is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for _ in range(count):
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    scheme = "http" if context is None else "https"
    try:
        yield [f"{scheme}://127.0.0.1:{address[1]}" for address in runner.addresses]
    finally:
        await runner.cleanup()


async def test_a_receiver_with_an_untrusted_certificate_fails_as_a_retryable_error(
    certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver()
    async with (
        receivers(receiver.handle, certificate=certificate) as (url,),
        closing(sender(attempts=3)) as callbacks,
    ):
        assert not await callbacks.send(call(url + "/done"), result())
    assert receiver.seen == []
    assert counts(callbacks) == (0, 1, 2)
    assert "certificate verify failed" in caplog.text and "after 3 attempts" in caplog.text


async def test_a_receiver_with_a_trusted_certificate_gets_its_callbacks_over_tls(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The system's trust store, as OpenSSL reads it when the sender first needs it, is this
    # certificate alone.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    receiver = Receiver()
    body = b"x" * (3 * 1024 * 1024)
    async with (
        receivers(receiver.handle, certificate=certificate) as (url,),
        closing(sender()) as callbacks,
    ):
        for n in range(3):
            assert await callbacks.send(call(f"{url}/done", n), result(body))
    assert [s.body == body for s in receiver.seen] == [True] * 3
    assert len(receiver.connections()) == 1
    assert counts(callbacks) == (3, 0, 0)


# --- receivers beyond the bound ----------------------------------------------------------------


async def test_a_receiver_beyond_the_bound_closes_the_least_recently_used_ones_connection() -> None:
    receiver = Receiver()
    async with (
        receivers(receiver.handle, MAX_ORIGINS + 2) as urls,
        closing(sender()) as callbacks,
    ):
        for n, url in enumerate(urls[:MAX_ORIGINS]):
            assert await callbacks.send(call(url, n), result())
        kept = [s.transport for s in receiver.seen]
        assert len(set(kept)) == MAX_ORIGINS
        assert await callbacks.send(call(urls[0], 100), result())  # now the most recently used
        assert receiver.seen[-1].transport is kept[0]
        assert await callbacks.send(call(urls[MAX_ORIGINS], 101), result())
        # The least recently used receiver, the second, lost its connection; no other did.
        await eventually(lambda: kept[1] is not None and kept[1].is_closing())
        assert [t for t in kept if t is None or t.is_closing()] == [kept[1]]
        assert await callbacks.send(call(urls[1], 102), result())  # on a new connection
        assert receiver.seen[-1].transport is not kept[1]
        await eventually(lambda: kept[2] is not None and kept[2].is_closing())
    assert counts(callbacks) == (MAX_ORIGINS + 3, 0, 0)


async def test_close_closes_every_receivers_connections_and_later_callbacks_open_new_ones() -> None:
    receiver = Receiver()
    async with aiohttp_server(receiver.handle) as url, closing(sender()) as callbacks:
        assert await callbacks.send(call(url), result())
        (first,) = receiver.connections()
        await callbacks.close()
        await eventually(lambda: first is not None and first.is_closing())
        assert await callbacks.send(call(url, 1), result())
        assert len(receiver.connections()) == 2
