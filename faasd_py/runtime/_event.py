"""What a handler sees: the event and context of the python3-http template, and how its return
value becomes a response. Pure code: no I/O but reading a secret's file on request."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from faasd_py.runtime._storage import Storage


class CaseInsensitiveHeaders(Mapping[str, str]):
    """Request headers, looked up without regard to case (`event.headers["content-type"]`)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for key, value in pairs:
            lower = key.lower()
            if lower in self._items:
                value = f"{self._items[lower][1]}, {value}"
            self._items[lower] = (key, value)

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True)
class Event:
    """An HTTP request, as OpenFaaS's python3-http template hands it to `handle`."""

    body: bytes
    headers: CaseInsensitiveHeaders
    method: str
    query: dict[str, str]
    path: str

    @classmethod
    def from_request(
        cls, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes
    ) -> Event:
        return cls(
            body=body,
            headers=CaseInsensitiveHeaders(headers),
            method=method,
            query=dict(parse_qsl(query, keep_blank_values=True)),
            path=path,
        )


@dataclass(frozen=True)
class Context:
    """What the platform tells a handler about its invocation."""

    function_name: str
    call_id: str
    secrets_dir: Path
    deadline: float = field(repr=False)
    # The app's objects (`get`/`put`/`delete`/`exists`/`list`, see faasd_py.runtime._storage),
    # through the worker and its cache; None only where no worker is at the other end.
    storage: Storage | None = field(default=None, repr=False)

    def remaining_time(self) -> float:
        """Seconds until the invocation times out."""
        return max(0.0, self.deadline - time.monotonic())

    def secret(self, name: str) -> str:
        """The value of a secret named in the function's `secrets` list."""
        try:
            return (self.secrets_dir / name).read_text()
        except FileNotFoundError:
            raise KeyError(
                f"secret {name!r} is not mounted: add it to the function's secrets "
                "and create it with `faasd-py secret create`"
            ) from None


class BadReturn(Exception):
    """The handler returned something that cannot become an HTTP response."""


def to_response(value: object) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) from a handler's return value.

    A dict with statusCode/body/headers is the python3-http response shape; any other value is
    the body: str and bytes as they are, None as empty, JSON values (dict, list, numbers) as JSON.
    """
    status, headers, body = 200, {}, value
    if isinstance(value, dict) and ({"statusCode", "body", "headers"} & value.keys()):
        status = value.get("statusCode", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise BadReturn(f"statusCode must be an integer from 100 to 599, got {status!r}")
        raw_headers = value.get("headers") or {}
        if not isinstance(raw_headers, dict):
            raise BadReturn(f"headers must be a dict, got {type(raw_headers).__name__}")
        headers = {str(k): str(v) for k, v in raw_headers.items()}
        body = value.get("body")
    payload, content_type = _encode_body(body)
    if content_type and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = content_type
    return status, list(headers.items()), payload


def _encode_body(body: object) -> tuple[bytes, str | None]:
    if body is None:
        return b"", None
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), None
    if isinstance(body, str):
        return body.encode(), "text/plain; charset=utf-8"
    try:
        return json.dumps(body).encode(), "application/json"
    except (TypeError, ValueError) as exc:
        raise BadReturn(
            f"the handler returned a {type(body).__name__} that cannot be sent ({exc}); return "
            "str, bytes, a JSON-serializable value, or {statusCode, body, headers}"
        ) from None
