"""How a handler's return value becomes an HTTP response: (status, headers, body).

The rules are those of OpenFaaS's python3-http template (its `index.py`: `format_response`,
`format_status_code`, `format_body`, `format_headers`, `get_content_type`, then Flask's
`make_response`), so that a handler written for it answers the same here:

- None: 200, empty body.
- a dict with `statusCode`, `body` or `headers` (the template's response shape): the status
  (default 200; an int, or a string such as "201"), the headers (a dict, or a list of pairs),
  and the body: a dict as JSON; a str as it is; no `body` key as empty; with the header
  `Content-type: application/octet-stream` (the template's opt-in for binary) bytes as they
  are; any other value as `str(value)` (a number reads "42").
- a (body, status), (body, headers) or (body, status, headers) tuple, as Flask takes it.
- a str or bytes: the body; an iterator of them (a generator): their concatenation.
- a list: JSON.
- Text and empty bodies get Flask's default `Content-Type: text/html; charset=utf-8`; JSON gets
  `application/json`, in Flask's `jsonify` form (compact, keys sorted, a final newline, dates
  as HTTP dates, Decimal and UUID as strings, dataclasses as objects). A Content-Type the
  handler sets wins.

Where the template has no sensible answer, faasd-py gives one (no template handler relies on
the template's, and no handler can tell the difference from inside):

- a dict without those three keys is sent as JSON (the template sends an empty body);
- numbers, booleans and dataclasses returned as the whole value are JSON (the template fails);
- a list `body` is JSON (the template sends its Python repr, "['a']");
- a bytes `body` without the octet-stream header is sent as it is (the template sends its repr,
  "b'...'"), and a `body` of None as empty (the template sends "None").
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime

__all__ = ["BadReturn", "jsonify", "to_response"]

TEXT = "text/html; charset=utf-8"  # what Flask gives a str (or bytes) body
JSON = "application/json"
# The template's get_content_type: this exact header key, this exact value.
_BINARY_KEY, _BINARY = "Content-type", "application/octet-stream"
_SHAPE_KEYS = frozenset({"statusCode", "body", "headers"})

Response = tuple[int, list[tuple[str, str]], bytes]


class BadReturn(Exception):
    """The handler returned something that cannot become an HTTP response."""


def to_response(value: object) -> Response:
    """(status, headers, body) from a handler's return value (the rules above)."""
    if isinstance(value, dict) and _SHAPE_KEYS & value.keys():
        return _shaped(value)
    if isinstance(value, tuple):
        return _flask_tuple(value)
    body, content_type = _plain_body(value)
    return 200, [("Content-Type", content_type)], body


def _shaped(value: dict[Any, Any]) -> Response:
    """The template's response shape: format_status_code, format_body, format_headers."""
    status = _status(value.get("statusCode", 200))
    headers = _headers(value.get("headers"))
    if "body" not in value:
        return status, _with_type(headers, TEXT), b""
    body = value["body"]
    raw = value.get("headers")
    binary = isinstance(raw, dict) and raw.get(_BINARY_KEY) == _BINARY
    if isinstance(body, dict | list):  # a list: the template's repr is of no use to anyone
        payload, content_type = jsonify(body), JSON
    elif isinstance(body, bytes | bytearray | memoryview):
        payload, content_type = bytes(body), TEXT
    elif body is None:
        payload, content_type = b"", TEXT
    elif binary and not isinstance(body, str):
        raise BadReturn(
            f"a body sent as application/octet-stream must be bytes, got {type(body).__name__}"
        )
    else:
        payload, content_type = str(body).encode(), TEXT
    return status, _with_type(headers, content_type), payload


def _flask_tuple(value: tuple[Any, ...]) -> Response:
    """(body, status, headers), (body, status) or (body, headers): Flask's make_response."""
    status: object = 200
    headers: object = None
    if len(value) == 3:
        body, status, headers = value
    elif len(value) == 2 and isinstance(value[1], dict | list | tuple):
        body, headers = value
    elif len(value) == 2:
        body, status = value
    else:
        raise BadReturn(
            f"a returned tuple must be (body, status, headers), (body, status) or "
            f"(body, headers); got {len(value)} items"
        )
    if body is None:
        raise BadReturn("a returned tuple's body is None: return '' for an empty body")
    payload, content_type = _plain_body(body)
    return _status(status), _with_type(_headers(headers), content_type), payload


def _plain_body(body: object) -> tuple[bytes, str]:
    """A whole return value that is the body, and its Content-Type."""
    if body is None:
        return b"", TEXT
    if isinstance(body, str):
        return body.encode(), TEXT
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), TEXT
    if isinstance(body, Iterator):
        chunks = [c.encode() if isinstance(c, str) else c for c in body]
        if not all(isinstance(c, bytes | bytearray) for c in chunks):
            raise BadReturn("a returned iterator must yield str or bytes")
        return b"".join(chunks), TEXT
    return jsonify(body), JSON


def jsonify(value: object) -> bytes:
    """JSON as Flask's `jsonify` writes it: compact, keys sorted, ASCII, a final newline."""
    try:
        text = json.dumps(
            value, default=_flask_default, ensure_ascii=True, sort_keys=True, separators=(",", ":")
        )
    except (TypeError, ValueError) as exc:
        raise BadReturn(
            f"the handler returned a {type(value).__name__} that cannot be sent ({exc}); return "
            "str, bytes, a JSON-serializable value, or {statusCode, body, headers}"
        ) from None
    return (text + "\n").encode()


def _flask_default(value: object) -> object:
    """What Flask's JSON provider makes of the values json cannot write. (Imports here: they
    would cost every cold start, and are rarely needed.)"""
    import datetime
    import decimal
    import uuid

    if isinstance(value, datetime.date):
        return _http_date(value)
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    html = getattr(value, "__html__", None)
    if callable(html):
        return str(html())
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _http_date(value: datetime.date) -> str:
    """werkzeug's http_date: a date is its midnight, a naive datetime is UTC."""
    import datetime
    import email.utils

    if not isinstance(value, datetime.datetime):
        value = datetime.datetime.combine(value, datetime.time(), datetime.UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    else:
        value = value.astimezone(datetime.UTC)
    return email.utils.format_datetime(value, usegmt=True)


def _status(value: object) -> int:
    """An int, or a str/bytes that starts with one ("201", "201 Created"), from 100 to 599.
    (A custom reason phrase is not kept: the worker sends the standard one.)"""
    status: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        status = value
    elif isinstance(value, str | bytes):
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        first = text.strip().split(" ", 1)[0]
        status = int(first) if first.isdigit() else None
    if status is None or not 100 <= status <= 599:
        raise BadReturn(f"statusCode must be an integer from 100 to 599, got {value!r}")
    return status


def _headers(value: object) -> list[tuple[str, str]]:
    """A dict, or a list of (name, value) pairs, as the template's format_headers passes them
    on; values as str (werkzeug's rule)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list | tuple) and all(
        isinstance(p, list | tuple) and len(p) == 2 for p in value
    ):
        pairs = [(p[0], p[1]) for p in value]
    else:
        raise BadReturn(
            f"headers must be a dict or a list of (name, value) pairs, got {value!r:.100}"
        )
    headers = [(str(name), str(v)) for name, v in pairs]
    for name, v in headers:
        if any(c in name or c in v for c in "\r\n") or not name:
            raise BadReturn(f"header {name!r} must be a non-empty name and a one-line value")
    return headers


def _with_type(headers: list[tuple[str, str]], content_type: str) -> list[tuple[str, str]]:
    if any(name.lower() == "content-type" for name, _ in headers):
        return headers
    return [*headers, ("Content-Type", content_type)]
