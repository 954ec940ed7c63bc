"""How a handler's return value becomes a response, and what the event offers."""

from __future__ import annotations

from pathlib import Path

import pytest

from faasd_py.runtime import BadReturn, Context, Event, to_response


def test_plain_values_become_bodies() -> None:
    assert to_response("hi") == (200, [("Content-Type", "text/plain; charset=utf-8")], b"hi")
    assert to_response(b"\x00") == (200, [], b"\x00")
    assert to_response(None) == (200, [], b"")
    assert to_response([1, "a"]) == (200, [("Content-Type", "application/json")], b'[1, "a"]')


def test_dict_without_response_keys_is_a_json_body() -> None:
    assert to_response({"a": 1}) == (200, [("Content-Type", "application/json")], b'{"a": 1}')


def test_python3_http_response_shape() -> None:
    status, headers, body = to_response(
        {"statusCode": 201, "body": "made", "headers": {"Content-Type": "text/x", "X-A": 1}}
    )
    assert (status, body) == (201, b"made")
    assert headers == [("Content-Type", "text/x"), ("X-A", "1")]  # the handler's type wins


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ({"statusCode": "200"}, "statusCode"),
        ({"statusCode": 99}, "statusCode"),
        ({"statusCode": True}, "statusCode"),
        ({"statusCode": 200, "headers": ["x"]}, "headers"),
        (object(), "cannot be sent"),
        ({"body": {1, 2}}, "cannot be sent"),
    ],
)
def test_unsendable_returns_explain_what_to_return(value: object, complaint: str) -> None:
    with pytest.raises(BadReturn, match=complaint):
        to_response(value)


def test_event_headers_ignore_case_and_query_is_parsed() -> None:
    event = Event.from_request(
        "GET", "/x", "a=1&b=&a=2", [("Content-Type", "text/plain"), ("X-Multi", "1")], b""
    )
    assert event.headers["content-type"] == "text/plain"
    assert event.headers.get("X-MULTI") == "1"
    assert list(event.headers) == ["Content-Type", "X-Multi"]
    assert event.query == {"a": "2", "b": ""}


def test_context_reads_mounted_secrets_and_explains_missing_ones(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t0p")
    context = Context("fn", "call-1", tmp_path, deadline=0.0)
    assert context.secret("token") == "t0p"
    assert context.remaining_time() == 0.0
    with pytest.raises(KeyError, match="faasd-py secret create"):
        context.secret("other")
