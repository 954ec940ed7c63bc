"""The lean /function/ front (gateway/_front.py) over raw sockets: pipelining, keep-alive
mixed with aiohttp's routes on one connection, chunked bodies, --max-body, malformed input,
slow heads, HTTP/1.0, Connection: close, binary and large answers, and the same headers as the
aiohttp route sends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.conftest import Platform, start_platform, stop_platform

HANG = 30.0  # only catches a hang

ECHO = """
def handle(event, context):
    return {
        "statusCode": 200,
        "body": event.body,
        "headers": {"X-Path": event.path, "X-Query": ",".join(sorted(event.query))},
    }
"""

BINARY = """
def handle(event, context):
    size = int(event.body or b"256")
    return {
        "statusCode": 200,
        "body": (bytes(range(256)) * (size // 256 + 1))[:size],
        "headers": {"Content-Type": "application/octet-stream"},
    }
"""


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    running = await start_platform(tmp_path, max_body=1024 * 1024, header_timeout=1.0)
    try:
        await running.deploy("echo", ECHO)
        await running.deploy("binary", BINARY)
        yield running
    finally:
        await stop_platform(running)


class Raw:
    """One connection, written and read as bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, platform: Platform) -> Raw:
        host, port = platform.running.gateway.runner.addresses[0][:2]
        return cls(*await asyncio.open_connection(host, port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def response(self) -> tuple[str, dict[str, str], bytes]:
        """The next response: its status line, headers (lower-case names) and body."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), HANG)
        status, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), HANG)
        return status, headers, body

    async def closed(self) -> bool:
        """Whether the gateway closed the connection (nothing more comes)."""
        try:
            return await asyncio.wait_for(self.reader.read(), HANG) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.writer.close()


def post(path: str, body: bytes = b"", extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def test_pipelined_requests_are_answered_in_order(platform: Platform) -> None:
    raw = await Raw.open(platform)
    try:
        raw.send(
            post("/function/echo", b"one")
            + b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
            + post("/function/echo/two", b"two")
            + post("/function/echo", b"three")
        )
        answers = [await raw.response() for _ in range(4)]
    finally:
        raw.close()
    assert [status for status, _, _ in answers] == ["HTTP/1.1 200 OK"] * 4
    assert [body for _, _, body in answers] == [b"one", b"OK", b"two", b"three"]
    assert answers[2][1]["x-path"] == "/two"


async def test_keep_alive_mixes_function_and_system_requests(platform: Platform) -> None:
    auth = platform.auth["Authorization"]
    raw = await Raw.open(platform)
    try:
        raw.send(post("/function/echo/a/b?x=1&y=2", b"first"))
        status, headers, body = await raw.response()
        assert status == "HTTP/1.1 200 OK" and body == b"first"
        assert (headers["x-path"], headers["x-query"]) == ("/a/b", "x,y")
        raw.send(
            f"GET /system/functions HTTP/1.1\r\nHost: gw\r\nAuthorization: {auth}\r\n\r\n".encode()
        )
        status, _, body = await raw.response()
        assert status == "HTTP/1.1 200 OK"
        assert {f["name"] for f in json.loads(body)} >= {"echo", "binary"}
        raw.send(post("/function/echo", b"again"))
        status, _, body = await raw.response()
        assert (status, body) == ("HTTP/1.1 200 OK", b"again")
    finally:
        raw.close()


async def test_a_chunked_body_reaches_the_function_whole(platform: Platform) -> None:
    raw = await Raw.open(platform)
    try:
        raw.send(
            b"POST /function/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n"
        )
        await asyncio.sleep(0.05)  # the rest in another segment
        raw.send(
            b"6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n" + post("/function/echo", b"next")
        )
        status, _, body = await raw.response()
        assert (status, body) == ("HTTP/1.1 200 OK", b"hello world")
        status, _, body = await raw.response()
        assert (status, body) == ("HTTP/1.1 200 OK", b"next")
    finally:
        raw.close()


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_max_body_is_413(platform: Platform, chunked: bool) -> None:
    size = platform.config.max_body + 1
    raw = await Raw.open(platform)
    try:
        if chunked:
            raw.send(
                b"POST /function/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
                + f"{size:x}\r\n".encode()
                + b"x" * size
                + b"\r\n0\r\n\r\n"
            )
        else:
            raw.send(post("/function/echo", b"x" * size, "X-Call-Id: big-1\r\n"))
        status, headers, body = await raw.response()
    finally:
        raw.close()
    assert status == "HTTP/1.1 413 Request Entity Too Large"
    reply = json.loads(body)
    assert reply["status"] == 413 and "--max-body" in reply["error"]
    assert headers["content-type"] == "application/json; charset=utf-8"
    if not chunked:
        assert headers["x-call-id"] == "big-1"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /function/echo HTTP/1.1 extra\r\nHost: gw\r\n\r\n",  # request line
        b"POST /function/echo HTTP/1.1\r\nHost: gw\r\nno colon here\r\n\r\n",  # header line
        b"POST /function/echo HTTP/1.1\r\nHost: gw\r\nBad Name: x\r\n\r\n",  # name not a token
        b"POST /function/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 1x\r\n\r\n",
        b"POST /function/echo HTTP/1.1\r\n\r\n",  # no Host
        b"POST /function/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_malformed_requests_are_400(platform: Platform, request_bytes: bytes) -> None:
    raw = await Raw.open(platform)
    try:
        raw.send(request_bytes)
        status, _, _ = await raw.response()
    finally:
        raw.close()
    assert status.split(" ")[1] == "400", status


async def test_a_client_that_stalls_mid_headers_gets_408(platform: Platform) -> None:
    raw = await Raw.open(platform)
    try:
        raw.send(b"POST /function/echo HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        answer = await asyncio.wait_for(raw.reader.read(), HANG)
    finally:
        raw.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert "--header-timeout" in json.loads(answer.partition(b"\r\n\r\n")[2])["error"]


async def test_http_1_0_is_answered_in_kind_and_closed(platform: Platform) -> None:
    raw = await Raw.open(platform)
    try:
        raw.send(b"POST /function/echo HTTP/1.0\r\nHost: gw\r\nContent-Length: 2\r\n\r\nhi")
        status, headers, body = await raw.response()
        assert (status, body) == ("HTTP/1.0 200 OK", b"hi")
        assert "connection" not in headers
        assert await raw.closed()
    finally:
        raw.close()
    raw = await Raw.open(platform)
    try:
        raw.send(
            post("/function/echo", b"a", "Connection: keep-alive\r\n").replace(b"1.1", b"1.0", 1)
        )
        status, headers, _ = await raw.response()
        assert status == "HTTP/1.0 200 OK" and headers["connection"] == "keep-alive"
        raw.send(
            post("/function/echo", b"b", "Connection: keep-alive\r\n").replace(b"1.1", b"1.0", 1)
        )
        assert (await raw.response())[2] == b"b"
    finally:
        raw.close()


async def test_connection_close_is_answered_then_closed(platform: Platform) -> None:
    raw = await Raw.open(platform)
    try:
        raw.send(post("/function/echo", b"bye", "Connection: close\r\n"))
        status, headers, body = await raw.response()
        assert (status, body, headers["connection"]) == ("HTTP/1.1 200 OK", b"bye", "close")
        assert await raw.closed()
    finally:
        raw.close()


@pytest.mark.parametrize("size", [256, 700 * 1024])
async def test_binary_and_large_answers_arrive_whole(platform: Platform, size: int) -> None:
    raw = await Raw.open(platform)
    try:
        raw.send(post("/function/binary", str(size).encode()) * 2)
        answers = [await raw.response() for _ in range(2)]
    finally:
        raw.close()
    expected = (bytes(range(256)) * (size // 256 + 1))[:size]
    for status, headers, body in answers:
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-type"] == "application/octet-stream"
        assert body == expected


Answer = tuple[str, list[str], bytes, dict[str, str]]


async def lean_and_aiohttp(platform: Platform, requests: list[bytes]) -> list[list[Answer]]:
    """The answers to `requests` from the lean front, then from the aiohttp routes: a
    connection that began with another route stays with aiohttp. Each answer: status line,
    sorted header names, body, headers."""
    lean = await Raw.open(platform)
    framework = await Raw.open(platform)
    try:
        framework.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        await framework.response()
        answers: list[list[Answer]] = [[], []]
        for raw, into in zip((lean, framework), answers, strict=True):
            for request in requests:
                raw.send(request)
                status, headers, body = await raw.response()
                into.append((status, sorted(headers), body, headers))
    finally:
        lean.close()
        framework.close()
    return answers


async def test_the_same_headers_as_the_aiohttp_route(platform: Platform) -> None:
    lean, framework = await lean_and_aiohttp(
        platform,
        [
            post("/function/echo", b"x", "X-Call-Id: same\r\n"),
            post("/function/echo", b"", "X-Call-Id: empty\r\n"),
            post("/function/nope", b""),
            post("/function/nope.ghost", b""),
        ],
    )
    assert [a[:3] for a in lean] == [a[:3] for a in framework]
    assert [a[3].get("content-type") for a in lean] == [a[3].get("content-type") for a in framework]
    assert lean[0][0] == "HTTP/1.1 200 OK" and lean[2][0] == "HTTP/1.1 404 Not Found"
    assert "ghost" in json.loads(lean[3][2])["error"]


async def test_async_calls_get_the_same_answers_as_from_the_aiohttp_route(
    platform: Platform,
) -> None:
    """/async-function/ is the lean front's too: the 202 and every refusal (unknown function
    or namespace, a callback that is no http URL, a body over --max-body) as aiohttp's route
    answers them."""
    big = platform.config.max_body + 1
    lean, framework = await lean_and_aiohttp(
        platform,
        [
            post("/async-function/echo/p?q=1", b"x", "X-Call-Id: queued-1\r\n"),
            post("/async-function/nope", b""),
            post("/async-function/echo.ghost", b""),
            post("/async-function/echo", b"x", "X-Callback-Url: ftp://h/x\r\n"),
            post("/async-function/echo", b"x" * big),
        ],
    )
    assert [a[:3] for a in lean] == [a[:3] for a in framework]
    statuses = [status.split(" ")[1] for status, _, _, _ in lean]
    assert statuses == ["202", "404", "404", "400", "413"]
    accepted = lean[0]
    assert accepted[3]["x-call-id"] == "queued-1" and accepted[2] == b""
    assert "content-type" not in accepted[3]
    assert "X-Callback-Url" in json.loads(lean[3][2])["error"]
    assert "--max-body" in json.loads(lean[4][2])["error"]


async def test_async_and_sync_calls_pipelined_on_one_connection(platform: Platform) -> None:
    raw = await Raw.open(platform)
    try:
        raw.send(
            post("/async-function/echo", b"a", "X-Call-Id: pipelined-a\r\n")
            + post("/function/echo", b"b")
            + b"POST /async-function/echo HTTP/1.1\r\nHost: gw\r\n"
            + b"Transfer-Encoding: chunked\r\nX-Call-Id: pipelined-c\r\n\r\n1\r\nc\r\n0\r\n\r\n"
        )
        answers = [await raw.response() for _ in range(3)]
    finally:
        raw.close()
    assert [status for status, _, _ in answers] == [
        "HTTP/1.1 202 Accepted",
        "HTTP/1.1 200 OK",
        "HTTP/1.1 202 Accepted",
    ]
    assert [headers["x-call-id"] for _, headers, _ in (answers[0], answers[2])] == [
        "pipelined-a",
        "pipelined-c",
    ]
    assert answers[1][2] == b"b"
