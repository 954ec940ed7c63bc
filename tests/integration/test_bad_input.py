"""Bad input gets a clear 4xx (or a 502 naming a handler's fault), never a 500, a dropped
connection or a traceback in the log; slow and idle clients are let go."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import HELLO, Platform, start_platform, stop_platform


async def raw_response(platform: Platform, head: bytes, body: bytes = b"") -> bytes:
    """Send a request's bytes as they are (no client library re-encodes them) and read the
    whole response."""
    host, port = platform.running.gateway.runner.addresses[0][:2]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        writer.write(body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()
    assert response, "the gateway closed the connection without an answer"
    return response


async def raw_exchange(platform: Platform, head: bytes, body: bytes = b"") -> tuple[int, Any]:
    """raw_response's (status, decoded JSON body or text)."""
    status_line, _, rest = (await raw_response(platform, head, body)).partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    try:
        return int(status_line.split()[1]), json.loads(payload)
    except json.JSONDecodeError:
        return int(status_line.split()[1]), payload.decode(errors="replace")


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None]


# --- item 5: credentials that are not ASCII, or not credentials at all --------------------------


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "authorization",
    [
        _basic("admin:päss".encode()),  # curl -u $'admin:p\xc3\xa4ss'
        _basic(b"\xff\xfe:\x80"),  # not UTF-8
        _basic(b"admin"),  # no colon
        "Basic %%%not-base64",
        "Basic YWRtaW46cMOkc3M=\u00e9",  # non-ASCII where base64 belongs
    ],
)
async def test_odd_credentials_are_401_without_a_traceback(
    platform: Platform, authorization: str, caplog: pytest.LogCaptureFixture
) -> None:
    head = f"GET /system/functions HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n"
    status, reply = await raw_exchange(platform, head.encode())
    assert status == 401, reply
    assert "credentials" in reply["error"]
    assert tracebacks(caplog) == []


# --- item 6: bodies and header values that are not UTF-8 ----------------------------------------

NOT_UTF8 = b"\xff\xfe{"

WRITE_ROUTES = [
    ("POST", "/system/functions"),
    ("PUT", "/system/functions"),
    ("DELETE", "/system/functions"),
    ("POST", "/system/secrets"),
    ("PUT", "/system/secrets"),
    ("DELETE", "/system/secrets"),
    ("POST", "/system/scale-function/hello"),
    ("POST", "/system/namespace/team-a"),
    ("PUT", "/system/namespace/team-a"),
]


@pytest.mark.parametrize(("method", "path"), WRITE_ROUTES)
async def test_a_body_that_is_not_utf8_is_400_on_every_write_route(
    platform: Platform, method: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with platform.session.request(
        method, platform.url + path, data=NOT_UTF8, headers=platform.auth
    ) as response:
        reply = await response.json()
    assert response.status == 400, reply
    assert "not UTF-8 JSON" in reply["error"] and "0xff" in reply["error"]
    assert tracebacks(caplog) == []


async def test_a_body_in_an_unknown_charset_is_read_as_utf8_json(platform: Platform) -> None:
    headers = {**platform.auth, "Content-Type": "application/json; charset=no-such-charset"}
    body = json.dumps({"name": "s1", "value": "v"})
    async with platform.session.post(
        platform.url + "/system/secrets", data=body, headers=headers
    ) as response:
        assert response.status == 201, await response.text()


ECHO_HEADER = """
def handle(event, context):
    value = event.headers["X-Odd"]
    return {"statusCode": 200, "body": value.encode("latin-1")}
"""


async def test_a_header_value_that_is_not_utf8_reaches_the_function_as_latin1(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    """The bytes pass through: decoded as Latin-1 (what WSGI gives a template's handler), so
    the function can recover them exactly."""
    await platform.deploy("echo", ECHO_HEADER)
    head = (
        b"POST /function/echo HTTP/1.1\r\nHost: h\xff\r\nX-Call-Id: id-\xfe\r\n"
        b"X-Odd: caf\xe9 \xff\xfe\r\n"
    )
    response = await raw_response(platform, head)
    assert response.startswith(b"HTTP/1.1 200"), response
    assert response.endswith(b"\r\n\r\ncaf\xe9 \xff\xfe")
    assert tracebacks(caplog) == []


# --- item 7: a handler's headers that cannot be sent --------------------------------------------

# The runtime refuses a line break in a header itself, but a function's code shares its process
# with the runtime and can send what it likes: the gateway must not trust what arrives.
BAD_HEADERS = """
from faasd_py.runtime import _response

_response._headers = lambda value: [(str(k), str(v)) for k, v in (value or {}).items()]


def handle(event, context):
    bad = {
        "/crlf": ("X-Split", "a\\r\\nSet-Cookie: stolen=1"),
        "/lf": ("X-Split", "a\\nb"),
        "/nul": ("X-Nul", "a\\x00b"),
        "/name": ("Bad Name", "v"),
        "/colon": ("X-A:b", "v"),
    }.get(event.path)
    headers = dict([bad]) if bad else {"X-Fine": "yes"}
    return {"statusCode": 200, "body": "ok", "headers": headers}
"""


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/crlf", "'X-Split'"),
        ("/lf", "'X-Split'"),
        ("/nul", "'X-Nul'"),
        ("/name", "'Bad Name'"),
        ("/colon", "'X-A:b'"),
    ],
)
async def test_a_header_that_cannot_be_sent_is_502_naming_it_and_the_next_call_works(
    platform: Platform, path: str, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    await platform.deploy("headers", BAD_HEADERS)
    status, body, headers = await platform.invoke("headers", path=path)
    assert status == 502, body
    reply = json.loads(body)
    assert reply["status"] == 502 and named in reply["error"] and "cannot be sent" in reply["error"]
    assert headers["X-Call-Id"] and "Set-Cookie" not in headers
    # The same connection pool, the same instance: the next call is answered.
    status, body, headers = await platform.invoke("headers", path="/fine")
    assert (status, body, headers["X-Fine"]) == (200, b"ok", "yes")
    assert tracebacks(caplog) == []


# --- item 8: an exception that no handler expected ----------------------------------------------


class Bug(Exception):
    """Stands for a bug in the gateway: nothing expects it."""


async def _raise_bug(*args: object, **kwargs: object) -> object:
    raise Bug("an injected bug")


async def test_a_client_that_closes_mid_body_leaves_no_traceback(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    await platform.deploy("hello", HELLO)
    host, port = platform.running.gateway.runner.addresses[0][:2]
    for _ in range(3):
        _, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /function/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        writer.write(b"only part of it")
        await writer.drain()
        writer.close()
    # The gateway counts each such call (499, as nginx does) once it has seen it end.
    async with asyncio.timeout(HANG):
        while True:
            if await invocations_with_code(platform, 499) == 3:
                break
            await asyncio.sleep(0.05)
    assert tracebacks(caplog) == []


async def invocations_with_code(platform: Platform, code: int) -> float:
    async with platform.session.get(platform.url + "/metrics", headers=platform.auth) as r:
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_function_invocation_total{") and f'code="{code}"' in line
    )


def injected_bug_tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in tracebacks(caplog) if r.exc_info and isinstance(r.exc_info[1], Bug)]


async def test_a_bug_in_an_invocation_is_a_json_500_with_the_call_id_logged_once(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await platform.deploy("hello", HELLO)
    monkeypatch.setattr(platform.worker, "invoke", _raise_bug)
    status, body, headers = await platform.invoke("hello", headers={"X-Call-Id": "call-7"})
    assert status == 500 and headers["Content-Type"].startswith("application/json")
    reply = json.loads(body)
    assert reply["status"] == 500 and "internal error" in reply["error"]
    assert "call-7" in reply["error"] and headers["X-Call-Id"] == "call-7"
    [logged] = injected_bug_tracebacks(caplog)
    assert "call-7" in logged.getMessage()


async def test_a_bug_in_a_system_route_is_a_json_500_logged_once(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(platform.running.registry, "list_functions", _raise_bug)
    async with platform.session.get(
        platform.url + "/system/functions", headers=platform.auth
    ) as response:
        assert response.status == 500
        assert response.headers["Content-Type"].startswith("application/json")
        reply = await response.json()
    assert reply["status"] == 500 and "GET /system/functions" in reply["error"]
    assert "Server got itself in trouble" not in reply["error"]
    assert len(injected_bug_tracebacks(caplog)) == 1
    # The gateway goes on answering.
    monkeypatch.undo()
    assert (await platform.system("GET", "/system/functions"))[0] == 200


# --- item 9: slow, idle and too many clients ----------------------------------------------------

# Deadlines in these tests only catch hangs: the limits under test are a second or two.
HANG = 30.0


async def open_raw(platform: Platform) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = platform.running.gateway.runner.addresses[0][:2]
    return await asyncio.open_connection(host, port)


async def slow_client(platform: Platform) -> bytes:
    """A slow-loris client: a request head that never ends, a byte every 0.2 s; returns what
    the gateway sent before it closed the connection."""
    reader, writer = await open_raw(platform)

    async def trickle() -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while True:
            await asyncio.sleep(0.2)
            writer.write(b"a")

    trickling = asyncio.create_task(trickle())
    try:
        return await asyncio.wait_for(reader.read(), HANG)
    except ConnectionResetError:  # closed while a byte was on its way: nothing more to read
        return b""
    finally:
        trickling.cancel()
        writer.close()


async def test_slow_clients_get_408_and_are_closed_while_others_are_served(
    tmp_path: Path,
) -> None:
    platform = await start_platform(tmp_path, header_timeout=1.0, max_connections=100)
    try:
        slow = [asyncio.create_task(slow_client(platform)) for _ in range(50)]
        served = 0
        while not all(task.done() for task in slow):
            async with platform.session.get(platform.url + "/healthz") as response:
                assert response.status == 200
                served += 1
            await asyncio.sleep(0.05)
        answers = [await task for task in slow]
        timeouts = await platform.metric("faasd_connections_header_timeouts_total")
    finally:
        await stop_platform(platform)
    assert served > 0
    assert timeouts is not None and timeouts >= 1
    timed_out = [a for a in answers if a.startswith(b"HTTP/1.1 408 ")]
    # Every one closed; each with a 408, unless a byte it sent as the gateway closed turned
    # the close into a reset (rare: the client reads all along).
    assert timed_out and all(a == b"" or a.startswith(b"HTTP/1.1 408 ") for a in answers), answers
    reply = json.loads(timed_out[0].partition(b"\r\n\r\n")[2])
    assert reply["status"] == 408 and "--header-timeout" in reply["error"]


async def test_idle_connections_are_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    platform = await start_platform(tmp_path, idle_timeout=1.0)
    try:
        # Connected, never a byte sent.
        reader, writer = await open_raw(platform)
        assert await asyncio.wait_for(reader.read(), HANG) == b""
        writer.close()
        # Kept alive after a request: closed once idle for the timeout.
        reader, writer = await open_raw(platform)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), HANG)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nOK")
    finally:
        await stop_platform(platform)


async def test_a_connection_beyond_the_cap_gets_503_and_is_closed(tmp_path: Path) -> None:
    platform = await start_platform(tmp_path, max_connections=5)
    held = [await open_raw(platform) for _ in range(5)]
    try:
        reader, writer = await open_raw(platform)
        answer = await asyncio.wait_for(reader.read(), HANG)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer
        reply = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert reply["status"] == 503 and "--max-connections" in reply["error"]
        # Once one closes, a new connection is served (as soon as the gateway has seen it go).
        held.pop()[1].close()
        async with asyncio.timeout(HANG):
            while True:
                reader, writer = await open_raw(platform)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = await reader.read()
                writer.close()
                if not answer.startswith(b"HTTP/1.1 503 "):
                    break
                await asyncio.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert (await platform.metric("faasd_connections_refused_total") or 0) >= 1
        assert (await platform.metric("faasd_connections_open") or 0) >= 1
    finally:
        for _, held_writer in held:
            held_writer.close()
        await stop_platform(platform)
