"""faasd_py.http1's HTTP/1.1 without I/O (the load generator's and the callback sender's):
request bytes, and responses from bytes in any pieces."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faasd_py.http1 import MAX_HEAD, ProtocolError, Response, ResponseParser, build_request

AGENT = "faasd-py-bench"


def test_a_post_carries_its_length_and_the_callers_headers() -> None:
    data = build_request(
        "POST", "/function/hello?x=1", "gw:8080", (("X-A", "1"),), b"hi", user_agent=AGENT
    )
    assert data == (
        b"POST /function/hello?x=1 HTTP/1.1\r\nHost: gw:8080\r\nUser-Agent: faasd-py-bench\r\n"
        b"X-A: 1\r\nContent-Length: 2\r\n\r\nhi"
    )


def test_a_get_without_body_has_no_length_and_framing_headers_are_the_generators() -> None:
    headers = (("Host", "other"), ("Content-Length", "99"), ("Connection", "close"))
    data = build_request("GET", "/", "gw", headers, user_agent=AGENT)
    assert data == b"GET / HTTP/1.1\r\nUser-Agent: faasd-py-bench\r\nHost: other\r\n\r\n"
    assert b"Content-Length: 0" in build_request("POST", "/", "gw", user_agent=AGENT)


def test_the_user_agent_is_the_callers_unless_a_header_names_one() -> None:
    data = build_request("POST", "/done", "rx", user_agent="faasd-py-queue-worker")
    assert b"\r\nUser-Agent: faasd-py-queue-worker\r\n" in data
    mine = build_request("GET", "/", "rx", [("user-agent", "mine")], user_agent="faasd-py-bench")
    assert mine == b"GET / HTTP/1.1\r\nHost: rx\r\nuser-agent: mine\r\n\r\n"


def test_the_head_is_utf8_and_a_lone_surrogate_cannot_be_sent() -> None:
    data = build_request("POST", "/", "rx", [("X-Name", "caf\u00e9 \u20ac")], user_agent=AGENT)
    assert b"\r\nX-Name: caf\xc3\xa9 \xe2\x82\xac\r\n" in data
    with pytest.raises(UnicodeEncodeError):
        build_request("POST", "/", "rx", [("X-Bad", "\udcff")], user_agent=AGENT)


def parse(data: bytes, method: str = "POST", pieces: int = 1) -> Response | None:
    parser = ResponseParser()
    parser.start(method)
    size = max(1, len(data) // pieces)
    found = None
    for i in range(0, len(data), size):
        found = parser.feed(data[i : i + size]) or found
    return found


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer-Timing: queue;dur=0.1\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
)


@pytest.mark.parametrize("pieces", [1, 3, len(OK)])
def test_a_response_with_a_length_in_any_pieces(pieces: int) -> None:
    assert parse(OK, pieces=pieces) == Response(200, "queue;dur=0.1", 5, keep_alive=True)


def test_a_chunked_response_ends_at_its_last_chunk_and_trailers() -> None:
    assert parse(CHUNKED) == Response(200, None, 11, keep_alive=True)


@given(st.sampled_from([OK, CHUNKED]), st.lists(st.integers(0, 200), max_size=8))
def test_where_the_bytes_are_split_does_not_matter(data: bytes, cuts: list[int]) -> None:
    parser = ResponseParser()
    parser.start("POST")
    edges = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    answers = [parser.feed(data[a:b]) for a, b in itertools.pairwise(edges)]
    found = [a for a in answers if a is not None]
    assert found == [parse(data)]
    assert answers[-1] is not None  # complete exactly with its last byte, not before


def test_several_server_timing_headers_are_joined() -> None:
    data = b"HTTP/1.1 200 OK\r\nserver-timing: a;dur=1\r\nServer-Timing: b;dur=2\r\n"
    response = parse(data + b"Content-Length: 0\r\n\r\n")
    assert response is not None
    assert response.server_timing == "a;dur=1, b;dur=2"


def test_interim_responses_are_skipped() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    assert parse(data) == Response(200, "queue;dur=0.1", 5, keep_alive=True)


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("POST", 204), ("GET", 304)])
def test_answers_without_a_body_end_with_their_head(method: str, status: int) -> None:
    data = f"HTTP/1.1 {status} X\r\nContent-Length: 100\r\n\r\n".encode()
    assert parse(data, method) == Response(status, None, 0, keep_alive=True)


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", False),
        (b"HTTP/1.0 200 OK\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: upgrade, keep-alive\r\n", True),
    ],
)
def test_whether_the_connection_stays_open(head: bytes, keep_alive: bool) -> None:
    response = parse(head + b"Content-Length: 0\r\n\r\n")
    assert response is not None
    assert response.keep_alive is keep_alive


def test_a_body_without_length_ends_when_the_connection_does() -> None:
    parser = ResponseParser()
    parser.start("GET")
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\nsome") is None
    assert parser.feed(b" more") is None
    assert parser.eof() == Response(200, None, 9, keep_alive=False)
    assert parser.eof() is None  # nothing under way any more


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"SMTP ready\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n", "a header line without a colon"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length is not a number"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "not hex"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc", "not followed by CRLF"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * MAX_HEAD, "a response head longer than"),
    ],
)
def test_bytes_that_are_not_http_are_an_error(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse(data)


def test_a_connection_closed_mid_response_or_bytes_out_of_turn_are_errors() -> None:
    parser = ResponseParser()
    parser.start("POST")
    parser.feed(OK[:-2])
    with pytest.raises(ProtocolError, match="in the middle of a response"):
        parser.eof()
    idle = ResponseParser()
    with pytest.raises(ProtocolError, match="before any request"):
        idle.feed(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
