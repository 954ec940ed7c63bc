"""`context.storage`: the function author's object store, reached through the worker.

Every call becomes a `storage` message on the instance's channel; the worker answers from the
app's cache (faasd_py.cache) or its backing store. The author sees none of that:

    blob = context.storage.get("models/weights.bin")   # bytes, or None if absent
    context.storage.put("results/42", out)               # bytes (str is stored as UTF-8)
    context.storage.delete("tmp/x"); context.storage.exists("k"); context.storage.list("results/")

Calls block the calling thread until the reply (an async handler's loop too, for that long).
A store that cannot be reached (or does not answer within --storage-timeout) raises
faasd_py.errors.StorageUnavailable; left unhandled, the invocation answers 503 naming the store.
A put that would take the app over its quota raises faasd_py.errors.StorageQuotaExceeded, naming
the quota and how to raise it; left unhandled, 507.

Two transports, one per loop of _serve.py: `InlineTransport` for the loop with no asyncio (the
caller itself reads the channel until its reply comes, keeping anything else for the loop) and
`ThreadedTransport` for the concurrent loop (the receiving thread completes the caller's future).
"""

from __future__ import annotations

import collections
import itertools
import threading
from concurrent.futures import Future
from typing import Any, Protocol

from faasd_py.errors import StorageQuotaExceeded, StorageUnavailable
from faasd_py.protocol import ChannelClosed, StorageCall, StorageReply
from faasd_py.runtime._channel import BlockingChannel


class Transport(Protocol):
    def request(self, call: StorageCall) -> StorageReply: ...


class Storage:
    """The handler's `context.storage`."""

    def __init__(self, transport: Transport, max_value: int | None = None) -> None:
        self._transport = transport
        # The largest object a frame of the channel carries (the worker's --max-body): a larger
        # put is refused here, since the worker would take an oversized frame for a broken
        # channel and replace the instance.
        self._max_value = max_value
        self._ids = itertools.count(1)

    def get(self, key: str) -> bytes | None:
        value = self._call("get", key)
        return None if value is None else bytes(value)

    def put(self, key: str, data: bytes | bytearray | memoryview | str) -> None:
        payload = data.encode() if isinstance(data, str) else bytes(data)
        if self._max_value is not None and len(payload) > self._max_value:
            raise ValueError(
                f"object {key!r} of {len(payload)} bytes is larger than an instance's channel "
                f"carries ({self._max_value} bytes; raise --max-body)"
            )
        self._call("put", key, payload)

    def delete(self, key: str) -> bool:
        return bool(self._call("delete", key))

    def exists(self, key: str) -> bool:
        return bool(self._call("exists", key))

    def list(self, prefix: str = "") -> list[str]:
        value = self._call("list", prefix)
        return [str(k) for k in value] if isinstance(value, list) else []

    def _call(self, call: str, key: str, data: bytes | None = None) -> Any:
        if not isinstance(key, str):
            raise TypeError(f"a storage key is a str, got {type(key).__name__}")
        reply = self._transport.request(StorageCall(next(self._ids), call, key, data))
        error = reply.error
        if error is None:
            return reply.value
        if error.get("kind") == "unavailable":
            raise StorageUnavailable(error.get("store", "storage"), error.get("cause", ""))
        if error.get("kind") == "quota":
            limit = error.get("limit", "0")
            quota, message = error.get("quota", ""), error.get("message", "")
            raise StorageQuotaExceeded(message, quota, int(limit) if limit.isdigit() else 0)
        if error.get("kind") == "invalid":
            raise ValueError(error.get("message", "invalid storage call"))
        raise RuntimeError(f"storage {call} failed in the worker: {error.get('message')}")


class NoTransport:
    """Where no worker answers storage calls: every call raises StorageUnavailable."""

    def __init__(self, why: str) -> None:
        self._why = why

    def request(self, call: StorageCall) -> StorageReply:
        raise StorageUnavailable("context.storage", f"not available over {self._why}")


class InlineTransport:
    """For the loop with no asyncio: one handler at a time, on the thread that reads the channel.
    Messages other than the awaited reply wait in `pending` for the loop."""

    def __init__(self, channel: BlockingChannel) -> None:
        self._channel = channel
        self.pending: collections.deque[dict[str, Any]] = collections.deque()

    def receive(self) -> dict[str, Any]:
        """The loop's next message: one kept aside first."""
        return self.pending.popleft() if self.pending else self._channel.receive()

    def request(self, call: StorageCall) -> StorageReply:
        self._channel.send(call.to_wire())
        while True:
            message = self._channel.receive()
            if message.get("op") == "storage_reply" and message.get("id") == call.id:
                return StorageReply.from_wire(message)
            self.pending.append(message)


class ThreadedTransport:
    """For the concurrent loop: handlers in threads (or on the loop) wait on a future that the
    channel's receiving thread completes. Sends are serialized: several threads send at once."""

    def __init__(self, channel: BlockingChannel) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._waiting: dict[int, Future[StorageReply]] = {}
        self._closed = False

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._channel.send(message)

    def request(self, call: StorageCall) -> StorageReply:
        future: Future[StorageReply] = Future()
        with self._lock:
            if self._closed:
                raise ChannelClosed("the worker closed the channel")
            self._waiting[call.id] = future
            self._channel.send(call.to_wire())
        return future.result()

    def deliver(self, message: dict[str, Any]) -> bool:
        """Called by the receiving thread; True when the message was a storage reply."""
        if message.get("op") != "storage_reply":
            return False
        with self._lock:
            future = self._waiting.pop(message.get("id", -1), None)
        if future is not None:
            future.set_result(StorageReply.from_wire(message))
        return True

    def close(self) -> None:
        """The channel ended: no reply will come for calls still waiting."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            future.set_exception(ChannelClosed("the worker closed the channel"))
