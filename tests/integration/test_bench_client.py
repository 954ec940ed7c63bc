"""faasd_py.http1's client (the load generator's and the callback sender's) against real
servers: keep-alive, chunked bodies, servers that close connections or never answer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from faasd_py.http1 import ConnectFailed, Disconnected, Pool, Response, build_request

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A raw server's answer to a connection: the bytes to write back before closing it.
Answer = Callable[[asyncio.StreamReader], Awaitable[bytes]]


@contextlib.asynccontextmanager
async def pool_for(url: str, deadline: float = 5.0) -> AsyncIterator[Pool]:
    pool = Pool(url, deadline)
    try:
        yield pool
    finally:
        pool.close()
        await asyncio.sleep(0.01)  # let the closed transports release their sockets


async def get(pool: Pool, method: str = "GET", body: bytes = b"") -> Response:
    data = build_request(method, "/f", pool.authority, body=body, user_agent="faasd-py-bench")
    return await pool.request(method, data)


@contextlib.asynccontextmanager
async def aiohttp_server(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_server(answer: Answer) -> AsyncIterator[str]:
    """Writes what `answer` returns for each connection, then closes that connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await answer(reader))
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, list[str]]]:
    """A server that answers with the request's Host header and records each client port."""
    peers: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        transport = request.transport
        peers.append(str(transport.get_extra_info("peername") if transport else None))
        body = await request.read()
        headers = {"Server-Timing": "execution;dur=1.5"}
        return web.Response(text=f"{request.host} {len(body)}", headers=headers)

    async with aiohttp_server(answer) as url:
        yield url, peers


async def test_requests_reuse_one_kept_alive_connection(echo: tuple[str, list[str]]) -> None:
    url, peers = echo
    async with pool_for(url) as pool:
        responses = [await get(pool, "POST", b"12345") for _ in range(5)]
    host = url.removeprefix("http://")
    assert {(r.status, r.server_timing, r.body_size) for r in responses} == {
        (200, "execution;dur=1.5", len(f"{host} 5"))
    }
    assert len(set(peers)) == 1


async def test_concurrent_requests_open_as_many_connections(echo: tuple[str, list[str]]) -> None:
    url, peers = echo
    async with pool_for(url) as pool:
        await asyncio.gather(*(get(pool) for _ in range(4)))
        await get(pool)
    assert len(set(peers)) == 4  # the fifth reused one of them


async def test_a_chunked_body_is_read_to_its_end() -> None:
    async def chunks(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"a" * 10, b"b" * 5000, b"c"):
            await response.write(part)
        await response.write_eof()
        return response

    async with aiohttp_server(chunks) as url, pool_for(url) as pool:
        first, second = await get(pool), await get(pool)
    assert first.body_size == second.body_size == 5011


async def test_a_kept_alive_connection_the_server_closed_is_replaced() -> None:
    connections = 0

    async def once(reader: asyncio.StreamReader) -> bytes:
        # Says keep-alive, answers one request, then closes: as a server's idle timeout does.
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async with raw_server(once) as url, pool_for(url) as pool:
        await get(pool)
        await asyncio.sleep(0.1)  # the server has closed the idle connection by now
        response = await get(pool)
    assert response.status == 200
    assert connections == 2


async def test_a_server_that_drops_an_answer_halfway_is_a_disconnect() -> None:
    async def half(reader: asyncio.StreamReader) -> bytes:
        await reader.readuntil(b"\r\n\r\n")
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"

    async with raw_server(half) as url, pool_for(url) as pool:
        with pytest.raises(Disconnected, match="in the middle of a response"):
            await get(pool)


async def test_a_body_without_length_ends_with_the_connection() -> None:
    async def old(reader: asyncio.StreamReader) -> bytes:
        await reader.readuntil(b"\r\n\r\n")
        return b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 3000

    async with raw_server(old) as url, pool_for(url) as pool:
        response = await get(pool)
    assert (response.status, response.body_size, response.keep_alive) == (200, 3000, False)


async def test_no_answer_by_the_deadline_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader) -> bytes:
        await reader.read()  # never answers; returns when the client gives up
        return b""

    started = time.monotonic()
    async with raw_server(silent) as url, pool_for(url, deadline=0.3) as pool:
        with pytest.raises(TimeoutError):
            await get(pool)
    # Not before the deadline; the upper bound only catches a deadline that never fires.
    assert 0.25 < time.monotonic() - started < 15


async def test_a_closed_pool_fails_the_request_in_flight_and_keeps_no_connection() -> None:
    connected = asyncio.Event()

    async def silent(reader: asyncio.StreamReader) -> bytes:
        connected.set()
        await reader.read()  # never answers; returns when the client closes
        return b""

    async with raw_server(silent) as url:
        pool = Pool(url, 5.0)
        waiting = asyncio.create_task(get(pool))
        await asyncio.wait_for(connected.wait(), 5.0)
        pool.close()
        with pytest.raises(Disconnected, match="closed by this client"):
            await waiting
        # A connection made after close is closed at once, not kept where nobody closes it.
        with pytest.raises(ConnectFailed, match="was closed"):
            await get(pool)


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="expected an http:// or https:// URL"):
        Pool("ftp://example.org", timeout=1)
