"""Messages between the worker and the runtime inside a sandbox, as msgpack frames.

A frame is a 4-byte big-endian length followed by a msgpack map. `FrameDecoder` turns bytes into
messages without touching a socket (h11's way), so every channel shares it and tests can drive it
directly. Messages:

    runtime -> worker   {"op": "ready", "pid", "load_seconds"}
                        {"op": "load_failed", "error"}           then the runtime exits
                        {"op": "result", "id", "status", "headers", "body", "error", "seconds"}
    worker -> runtime   {"op": "invoke", "id", "method", "path", "query", "headers", "body",
                         "call_id", "deadline"}

    context.storage, while a handler runs (faasd_py.cache answers in the worker):
    runtime -> worker   {"op": "storage", "id", "call", "key", "data"}   call: get, put, delete,
                                                                       exists, list (key: prefix)
    worker -> runtime   {"op": "storage_reply", "id", "value", "error"}

`error` in a result is None on success, else "<ExceptionType>: <message>" and the status is 500.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
# Headroom above the body limit for the rest of a frame (headers, path, query).
FRAME_OVERHEAD = 1024 * 1024

Headers = list[tuple[str, str]]


class ProtocolError(Exception):
    """A frame that cannot be decoded, or one larger than the channel allows."""


class ChannelClosed(Exception):
    """The peer closed the channel (or died). Re-exported by faasd_py.channel."""


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request to a function, as the gateway hands it to a worker."""

    call_id: str
    method: str
    path: str
    query: str
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class Invocation:
    id: int
    call_id: str
    method: str
    path: str
    query: str
    headers: Headers
    body: bytes
    # Seconds the handler may run; the runtime tells the handler through its context.
    timeout: float

    @classmethod
    def of(cls, id: int, request: Request, timeout: float) -> Invocation:
        """The invocation that carries `request` to an instance as message `id`."""
        r = request
        return cls(id, r.call_id, r.method, r.path, r.query, r.headers, r.body, timeout)

    def to_wire(self) -> dict[str, Any]:
        return {
            "op": "invoke",
            "id": self.id,
            "call_id": self.call_id,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "timeout": self.timeout,
        }

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> Invocation:
        return cls(
            id=msg["id"],
            call_id=msg["call_id"],
            method=msg["method"],
            path=msg["path"],
            query=msg["query"],
            headers=[(k, v) for k, v in msg["headers"]],
            body=msg["body"],
            timeout=msg["timeout"],
        )


@dataclass(frozen=True, slots=True)
class Result:
    id: int
    status: int
    headers: Headers
    body: bytes
    # None on success; "<ExceptionType>: <message>" when the handler failed.
    error: str | None
    # Time the handler ran, measured inside the sandbox.
    seconds: float

    def to_wire(self) -> dict[str, Any]:
        return {
            "op": "result",
            "id": self.id,
            "status": self.status,
            "headers": self.headers,
            "body": self.body,
            "error": self.error,
            "seconds": self.seconds,
        }

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> Result:
        return cls(
            id=msg["id"],
            status=msg["status"],
            headers=[(k, v) for k, v in msg["headers"]],
            body=msg["body"],
            error=msg["error"],
            seconds=msg["seconds"],
        )


STORAGE_CALLS = ("get", "put", "delete", "exists", "list")


@dataclass(frozen=True, slots=True)
class StorageCall:
    """A handler's call on `context.storage`; its ids are the runtime's own, apart from those
    of invocations."""

    id: int
    call: str
    key: str  # the prefix, for list
    data: bytes | None = None  # for put

    def to_wire(self) -> dict[str, Any]:
        return {
            "op": "storage",
            "id": self.id,
            "call": self.call,
            "key": self.key,
            "data": self.data,
        }

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> StorageCall:
        if msg.get("call") not in STORAGE_CALLS or not isinstance(msg.get("key"), str):
            raise ProtocolError(f"not a storage call: {msg.get('call')!r}")
        return cls(id=msg["id"], call=msg["call"], key=msg["key"], data=msg.get("data"))


@dataclass(frozen=True, slots=True)
class StorageReply:
    id: int
    # get: bytes or None; put: the new version; delete, exists: bool; list: the keys.
    value: bytes | int | bool | list[str] | None
    # None on success; else {"kind": "unavailable" | "invalid" | "failed", "message",
    # and for unavailable "store" and "cause"}.
    error: dict[str, str] | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"op": "storage_reply", "id": self.id, "value": self.value, "error": self.error}

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> StorageReply:
        return cls(id=msg["id"], value=msg["value"], error=msg["error"])


def encode(message: dict[str, Any]) -> bytes:
    payload: bytes = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Accumulates bytes and yields whole messages; rejects frames above `max_frame`."""

    def __init__(self, max_frame: int) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages: list[dict[str, Any]] = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self._max_frame:
                raise ProtocolError(
                    f"frame of {length} bytes exceeds the limit of {self._max_frame}"
                )
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            try:
                message = msgpack.unpackb(bytes(self._buffer[HEADER.size : end]), raw=False)
            except (ValueError, msgpack.UnpackException) as exc:
                raise ProtocolError(f"undecodable frame: {exc}") from exc
            del self._buffer[:end]
            if not isinstance(message, dict) or "op" not in message:
                raise ProtocolError("a frame must be a map with an 'op' key")
            messages.append(message)
        return messages
