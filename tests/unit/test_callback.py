"""Where a callback goes and what it carries, without a network: the URL read into an origin, a
Host header and a request target; the request's bytes; and the bounded set of pools, one per
receiver. The POSTs themselves are tested against real receivers in
tests/integration/test_callbacks.py."""

from __future__ import annotations

import base64
import time

import pytest

from faasd_py.http1 import Pool
from faasd_py.protocol import Request
from faasd_py.queue import CallResult, QueuedCall
from faasd_py.queue._callback import (
    DEFAULT_CONTENT_TYPE,
    Destination,
    Origin,
    Pools,
    _prepare,
    destination,
)


@pytest.mark.parametrize(
    ("url", "origin", "authority", "target"),
    [
        ("http://rx.example/done", ("http", "rx.example", 80), "rx.example", "/done"),
        ("https://rx.example", ("https", "rx.example", 443), "rx.example", "/"),
        ("http://rx.example?x=1", ("http", "rx.example", 80), "rx.example", "/?x=1"),
        ("HTTP://RX.Example:8000/a", ("http", "rx.example", 8000), "rx.example:8000", "/a"),
        ("http://[::1]:9000/d", ("http", "::1", 9000), "[::1]:9000", "/d"),
        # The path and query as the URL spells them: no normalising, no re-quoting...
        ("http://h/a/../b%2Fc?q=%20&r", ("http", "h", 80), "h", "/a/../b%2Fc?q=%20&r"),
        # ...but what cannot go on a request line is percent-encoded, as aiohttp did.
        ("http://h/a b/\u00e9?\u20ac", ("http", "h", 80), "h", "/a%20b/%C3%A9?%E2%82%AC"),
        ("http://h/x#fragment", ("http", "h", 80), "h", "/x"),
        ("http://b\u00fccher.example/", ("http", "xn--bcher-kva.example", 80), None, "/"),
    ],
)
def test_a_callback_url_gives_its_origin_host_header_and_target(
    url: str, origin: Origin, authority: str | None, target: str
) -> None:
    where = destination(url)
    assert where is not None
    assert (where.origin, where.authority, where.target) == (origin, authority or origin[1], target)
    assert where.authorization is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://rx.example/done",
        "rx.example/done",
        "/done",
        "http:///done",
        "http://rx.example:99999/",
        "http://rx.example:port/",
        "http://[::1/",
        "",
    ],
)
def test_a_url_that_cannot_be_posted_to_has_no_destination(url: str) -> None:
    assert destination(url) is None


def test_credentials_in_the_url_become_basic_authorization() -> None:
    where = destination("https://us%20er:p%40ss:w@rx.example/done")
    assert where is not None and where.authorization is not None
    scheme, token = where.authorization.split(" ")
    assert (scheme, base64.b64decode(token)) == ("Basic", b"us er:p@ss:w")
    assert where.authority == "rx.example"  # never the credentials


def queued(url: str) -> QueuedCall:
    request = Request("call-1", "POST", "/", "", [("X-Start-Time", "17")], b"in")
    return QueuedCall("fn", request, url, time.time())


def sent(url: str, headers: list[tuple[str, str]], body: bytes = b"out") -> bytes:
    prepared = _prepare(url, queued(url), CallResult(200, headers, body, 0.5, time.time()))
    assert not isinstance(prepared, str), prepared
    return prepared[1]


def test_the_post_carries_the_functions_headers_and_its_own_framing() -> None:
    headers = [
        ("Content-Type", "text/csv"),
        ("Content-Length", "999"),
        ("Connection", "close"),
        ("Host", "forged"),
        ("X-Bad", "a\r\nX-Forged: 1"),
        ("X-Ok", "yes"),
    ]
    data = sent("http://rx.example:8000/done?k=v", headers)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /done?k=v HTTP/1.1"
    fields = [tuple(line.split(": ", 1)) for line in lines[1:]]
    assert ("Host", "rx.example:8000") in fields
    assert ("User-Agent", "faasd-py-queue-worker") in fields
    assert ("Content-Type", "text/csv") in fields and ("X-Ok", "yes") in fields
    assert ("Content-Length", "3") in fields and body == b"out"
    names = [name.lower() for name, *_ in fields]
    assert names.count("content-length") == 1 and names.count("host") == 1
    assert "connection" not in names and "x-bad" not in names and "x-forged" not in names


def test_a_body_without_a_content_type_is_octet_stream() -> None:
    assert f"\r\nContent-Type: {DEFAULT_CONTENT_TYPE}\r\n".encode() in sent("http://h/", [])


def test_the_urls_credentials_replace_an_authorization_of_the_function() -> None:
    data = sent("http://u:p@h/", [("Authorization", "Bearer the-functions")])
    assert b"\r\nAuthorization: Basic dTpw\r\n" in data and b"Bearer" not in data


def test_a_bad_url_or_header_is_a_reason_not_a_request() -> None:
    call = queued("ftp://h/")
    result = CallResult(200, [], b"", 0.1, time.time())
    assert _prepare("ftp://h/", call, result) == "not a URL that can be POSTed to"
    lone = CallResult(200, [("X-Lone", "\udcff")], b"", 0.1, time.time())
    assert _prepare("http://h/", call, lone) == "a header that cannot be encoded"


# --- the pools, one per receiver ---------------------------------------------------------------


def to(port: int) -> Destination:
    where = destination(f"http://127.0.0.1:{port}/done")
    assert where is not None
    return where


class Made:
    """Makes real Pools (which connect only when asked to send) and remembers which it closed."""

    def __init__(self) -> None:
        self.closed: list[int] = []

    def __call__(self, where: Destination) -> Pool:
        made = self
        port = where.origin[2]

        class Recorded(Pool):
            def close(self) -> None:
                made.closed.append(port)
                super().close()

        return Recorded(f"http://{where.authority}", timeout=1.0)


def use(pools: Pools, port: int) -> Pool:
    """A callback to `port` that came and went."""
    pool = pools.take(to(port))
    pools.give_back(to(port).origin)
    return pool


def test_a_new_receiver_beyond_the_bound_closes_the_least_recently_used() -> None:
    made = Made()
    pools = Pools(3, made)
    first, *_ = [use(pools, port) for port in (1, 2, 3)]
    use(pools, 1)  # 1 is now the most recently used
    use(pools, 4)
    assert made.closed == [2]
    assert [origin[2] for origin in pools.origins()] == [3, 1, 4]
    assert use(pools, 1) is first  # kept, not made again


def test_a_pool_in_use_is_not_closed_until_it_is_given_back() -> None:
    made = Made()
    pools = Pools(2, made)
    pools.take(to(1))
    pools.take(to(2))
    pools.take(to(3))  # all three in use: none is closed, the bound waits
    assert made.closed == [] and len(pools.origins()) == 3
    pools.give_back(to(2).origin)
    assert made.closed == [2]
    pools.give_back(to(1).origin)
    pools.give_back(to(3).origin)
    assert made.closed == [2] and [origin[2] for origin in pools.origins()] == [1, 3]
    pools.close()
    assert sorted(made.closed) == [1, 2, 3] and pools.origins() == []
