"""What one request's outcome counts as: Server-Timing stages and error kinds."""

from __future__ import annotations

import asyncio

import pytest

from faasd_py.http1 import ConnectFailed, Disconnected, Pool, ProtocolError, build_request
from faasd_py.loadgen._outcome import describe, exception_kind, parse_server_timing, status_error
from tests.unit.test_cli_options import closed_port


def test_server_timing_of_faasd_py_gives_every_stage_in_ms() -> None:
    header = "queue;dur=0.120, cold-start;dur=0.000, execution;dur=1.500, total;dur=2.250"
    assert parse_server_timing(header) == {
        "queue": 0.12,
        "cold-start": 0.0,
        "execution": 1.5,
        "total": 2.25,
    }


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('db;desc="Database";dur=53.2', {"db": 53.2}),  # dur after another parameter
        ('cache;dur="2.5"', {"cache": 2.5}),  # quoted value
        ("miss, app;dur=4", {"app": 4.0}),  # a metric without dur is left out, not zero
        ("x;dur=abc, y;dur=1", {"y": 1.0}),  # an unreadable dur likewise
        ("x;dur=-1, y;dur=inf, z;dur=nan", {}),  # negative and non-finite durations
        ("", {}),
        (" , ;dur=3", {}),  # no name
        ("A;DUR=7", {"A": 7.0}),  # parameter names are case-insensitive
    ],
)
def test_server_timing_keeps_only_metrics_with_a_usable_duration(
    header: str, expected: dict[str, float]
) -> None:
    assert parse_server_timing(header) == expected


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        *((status, None) for status in (200, 204, 301)),
        *((status, "4xx") for status in (400, 404, 429)),
        *((status, "5xx") for status in (500, 503, 504)),
    ],
)
def test_status_errors(status: int, kind: str | None) -> None:
    assert status_error(status) == kind


def test_a_refused_connection_is_a_connect_error() -> None:
    async def attempt() -> BaseException:
        pool = Pool(f"http://127.0.0.1:{closed_port()}", timeout=5.0)
        try:
            await pool.request("GET", build_request("GET", "/", "x", user_agent="test"))
        except Exception as exc:
            return exc
        raise AssertionError("the request to a closed port succeeded")

    exc = asyncio.run(attempt())
    assert exception_kind(exc) == "connect"
    assert describe(exc).startswith("ConnectFailed: cannot connect to 127.0.0.1:")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError("no complete answer within the timeout"), "timeout"),
        (ConnectFailed("cannot connect"), "connect"),
        (Disconnected("the server closed it"), "other"),
        (ProtocolError("not HTTP"), "other"),
        (ValueError("bad"), "other"),
    ],
)
def test_exception_kinds(exc: BaseException, kind: str) -> None:
    assert exception_kind(exc) == kind


def test_descriptions_are_one_short_line() -> None:
    assert describe(TimeoutError()) == "TimeoutError"
    text = describe(ValueError("first line\nsecond line " + "x" * 1000))
    assert text == "ValueError: first line"
    assert len(describe(ValueError("y" * 1000))) == 300
