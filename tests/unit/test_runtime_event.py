"""How a handler's return value becomes a response, and what the event offers: the rules of
OpenFaaS's python3-http template (its index.py, with Flask underneath)."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import decimal
import json
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from faasd_py.runtime import (
    BadReturn,
    Context,
    Event,
    ImmutableMultiDict,
    MissingKey,
    to_response,
)

TEXT = ("Content-Type", "text/html; charset=utf-8")
JSON = ("Content-Type", "application/json")


# --- return values: the template's cases ------------------------------------------------------


def test_the_templates_example_handler_answers_as_on_openfaas() -> None:
    value = {"statusCode": 200, "body": "Hello from OpenFaaS!"}
    assert to_response(value) == (200, [TEXT], b"Hello from OpenFaaS!")


def test_none_and_text_get_flasks_default_content_type() -> None:
    assert to_response(None) == (200, [TEXT], b"")
    assert to_response("hi") == (200, [TEXT], b"hi")
    assert to_response(b"\x00") == (200, [TEXT], b"\x00")


def test_a_dict_body_is_json_as_jsonify_writes_it() -> None:
    status, headers, body = to_response({"statusCode": 201, "body": {"z": 1, "a": "é"}})
    assert (status, headers) == (201, [JSON])
    assert body == b'{"a":"\\u00e9","z":1}\n'  # compact, sorted, ASCII, a final newline


def test_a_dict_body_carries_what_flasks_json_provider_converts() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    body = {
        "when": datetime.datetime(2015, 10, 21, 7, 28),
        "day": datetime.date(2015, 10, 21),
        "price": decimal.Decimal("1.50"),
        "id": uuid.UUID(int=1),
        "point": Point(3),
    }
    sent = json.loads(to_response({"body": body})[2])
    assert sent == {
        "when": "Wed, 21 Oct 2015 07:28:00 GMT",
        "day": "Wed, 21 Oct 2015 00:00:00 GMT",
        "price": "1.50",
        "id": "00000000-0000-0000-0000-000000000001",
        "point": {"x": 3},
    }


def test_other_bodies_are_their_str_and_a_missing_body_is_empty() -> None:
    assert to_response({"statusCode": 200, "body": 42}) == (200, [TEXT], b"42")
    assert to_response({"body": decimal.Decimal("1.5")})[2] == b"1.5"
    assert to_response({"statusCode": 204}) == (204, [TEXT], b"")
    assert to_response({"headers": {"X-A": "1"}}) == (200, [("X-A", "1"), TEXT], b"")


def test_octet_stream_passes_bytes_through_with_the_handlers_header() -> None:
    value = {"body": b"\x89PNG\x00", "headers": {"Content-type": "application/octet-stream"}}
    assert to_response(value) == (
        200,
        [("Content-type", "application/octet-stream")],
        b"\x89PNG\x00",
    )


def test_headers_are_strings_and_the_handlers_content_type_wins() -> None:
    status, headers, body = to_response(
        {"statusCode": 201, "body": "made", "headers": {"content-type": "text/x", "X-A": 1}}
    )
    assert (status, body) == (201, b"made")
    assert headers == [("content-type", "text/x"), ("X-A", "1")]


def test_headers_may_be_a_list_of_pairs_and_repeat() -> None:
    value = {"body": "", "headers": [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]}
    assert to_response(value)[1] == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), TEXT]


def test_a_status_given_as_text_counts() -> None:
    assert to_response({"statusCode": "201"})[0] == 201
    assert to_response({"statusCode": "404 Not Here", "body": "no"})[0] == 404


def test_flask_tuples_give_status_and_headers() -> None:
    assert to_response(("made", 201)) == (201, [TEXT], b"made")
    assert to_response(("x", {"X-A": 1})) == (200, [("X-A", "1"), TEXT], b"x")
    assert to_response(({"a": 1}, 202, [("X-B", "2")])) == (202, [("X-B", "2"), JSON], b'{"a":1}\n')


def test_a_generator_is_joined() -> None:
    def chunks() -> Iterator[str | bytes]:
        yield "a"
        yield b"b"

    assert to_response(chunks()) == (200, [TEXT], b"ab")


# --- return values: what faasd-py adds where the template has no sensible answer --------------


def test_json_values_are_json() -> None:
    assert to_response([1, "a"]) == (200, [JSON], b'[1,"a"]\n')
    assert to_response(5) == (200, [JSON], b"5\n")
    assert to_response({"a": 1}) == (200, [JSON], b'{"a":1}\n')  # no statusCode/body/headers
    assert to_response({"body": ["a"]}) == (200, [JSON], b'["a"]\n')


def test_bytes_and_none_bodies_are_sent_as_they_are() -> None:
    assert to_response({"body": b"\x00\x01"}) == (200, [TEXT], b"\x00\x01")
    assert to_response({"statusCode": 200, "body": None}) == (200, [TEXT], b"")


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ({"statusCode": "two hundred"}, "statusCode"),
        ({"statusCode": 99}, "statusCode"),
        ({"statusCode": True}, "statusCode"),
        ({"statusCode": 200, "headers": ["x"]}, "headers"),
        ({"statusCode": 200, "headers": {"X-A": "1\r\nX-Evil: 1"}}, "one-line"),
        ({"body": 5, "headers": {"Content-type": "application/octet-stream"}}, "must be bytes"),
        (("a", 200, {}, "extra"), "tuple"),
        ((None, 200), "None"),
        (object(), "cannot be sent"),
        ({"body": {"k": {1, 2}}}, "cannot be sent"),
    ],
)
def test_unsendable_returns_explain_what_to_return(value: object, complaint: str) -> None:
    with pytest.raises(BadReturn, match=complaint):
        to_response(value)


# --- event.query: Flask's request.args ---------------------------------------------------------


def query(text: str) -> ImmutableMultiDict:
    return Event.from_request("GET", "/", text, [], b"").query


def test_query_gives_the_first_value_and_getlist_all() -> None:
    q = query("a=1&b=&a=2&c=x+y")
    assert q["a"] == "1" and q.get("a") == "1"
    assert q.getlist("a") == ["1", "2"] and q.getlist("none") == []
    assert q["b"] == "" and q["c"] == "x y"
    assert q.get("none") is None and q.get("none", "d") == "d"
    assert q.to_dict() == {"a": "1", "b": "", "c": "x y"}
    assert q.to_dict(flat=False) == {"a": ["1", "2"], "b": [""], "c": ["x y"]}


def test_query_converts_with_type_as_werkzeug_does() -> None:
    q = query("n=3&n=x&s=abc")
    assert q.get("n", type=int) == 3
    assert q.get("s", 0, type=int) == 0  # refused: the default
    assert q.getlist("n", type=int) == [3]


def test_query_reads_as_a_dict_of_first_values() -> None:
    q = query("a=1&a=2&b=3")
    assert isinstance(q, dict)
    assert list(q) == ["a", "b"] and len(q) == 2
    assert "a" in q and "z" not in q
    assert list(q.keys()) == ["a", "b"] and list(q.values()) == ["1", "3"]
    assert list(q.items()) == [("a", "1"), ("b", "3")]
    assert list(q.items(multi=True)) == [("a", "1"), ("a", "2"), ("b", "3")]
    assert q.lists() == [("a", ["1", "2"]), ("b", ["3"])]
    assert dict(q) == {**q} == q.copy() == {"a": "1", "b": "3"}
    assert json.loads(json.dumps(q)) == {"a": "1", "b": "3"}
    assert json.loads(json.dumps(q, indent=2)) == {"a": "1", "b": "3"}  # the pure-Python encoder
    assert q == {"a": "1", "b": "3"} and q != {"a": "2", "b": "3"}
    assert q | {"c": "4"} == {"a": "1", "b": "3", "c": "4"}


def test_query_survives_copies_and_pickling() -> None:
    q = query("a=1&a=2")
    assert pickle.loads(pickle.dumps(q)).getlist("a") == ["1", "2"]
    assert copy.copy(q) is q and copy.deepcopy(q) is q
    assert repr(q) == "ImmutableMultiDict([('a', '1'), ('a', '2')])"


def test_query_is_read_only() -> None:
    q = query("a=1")
    with pytest.raises(TypeError, match="immutable"):
        q["a"] = "2"
    with pytest.raises(TypeError, match="immutable"):
        q.update({"b": "1"})
    with pytest.raises(TypeError, match="immutable"):
        del q["a"]
    assert q.getlist("a") == ["1"]


def test_a_missing_parameter_or_header_is_the_callers_400() -> None:
    event = Event.from_request("GET", "/", "", [], b"")
    with pytest.raises(KeyError, match="no query parameter 'name'") as missing:
        event.query["name"]
    assert isinstance(missing.value, MissingKey) and missing.value.status == 400
    with pytest.raises(MissingKey, match="no header 'X-Api-Key'"):
        event.headers["X-Api-Key"]


# --- event.headers, context --------------------------------------------------------------------


def test_event_headers_ignore_case_and_read_title_cased() -> None:
    event = Event.from_request(
        "GET", "/x", "", [("content-type", "text/plain"), ("x-multi", "1"), ("X-Multi", "2")], b""
    )
    assert event.headers["Content-Type"] == "text/plain"
    assert event.headers.get("X-MULTI") == "1, 2" and event.headers.getlist("x-multi") == ["1, 2"]
    assert list(event.headers) == ["Content-Type", "X-Multi"]  # as WSGI shows them
    assert event.headers.get("X-None", "d") == "d" and "content-TYPE" in event.headers


def test_context_hostname_is_hostname_or_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "fn-1a2b3c4d")
    assert Context("fn", "call-1", Path("."), deadline=0.0).hostname == "fn-1a2b3c4d"
    monkeypatch.delenv("HOSTNAME")
    assert Context("fn", "call-1", Path("."), deadline=0.0).hostname == "localhost"


def test_context_reads_mounted_secrets_and_explains_missing_ones(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t0p")
    context = Context("fn", "call-1", tmp_path, deadline=0.0)
    assert context.secret("token") == "t0p"
    assert context.remaining_time() == 0.0
    with pytest.raises(KeyError, match="faasd-py secret create"):
        context.secret("other")
