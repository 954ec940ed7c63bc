"""The bound on an instance's storage calls in the worker (pure: no asyncio, no clock).

A handler need not wait for one storage call's reply before it sends the next (threads, an async
handler, frames written to its channel by hand), and the worker answers each call in a task of
its own. Unbounded, one function could make the worker hold any number of calls and their
payloads. So, per instance: at most `max_calls` calls in flight, and `max_bytes` of their
payloads (a put's data from the moment it is read until its reply is sent; a get's reply while
it is sent). The worker reads the instance's next message only while both are below their bound
(`open`); past it, unread calls wait in the instance's channel (its ring, or its socket buffer)
and the instance blocks on its next send, not the worker.

A message's size is known only once it is read, so an instance can make the worker hold at most
`max_bytes` plus one frame (up to --max-body), and a single call larger than `max_bytes` still
goes through, alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faasd_py.protocol import StorageCall


@dataclass(frozen=True)
class InflightStatistics:
    """One instance's storage calls: now, at their highest, and in all."""

    calls: int
    bytes: int
    peak_calls: int
    peak_bytes: int
    calls_total: int
    # Times the worker stopped reading the instance's channel because the bound was reached.
    pauses: int


class InflightBound:
    def __init__(self, max_calls: int, max_bytes: int) -> None:
        if max_calls < 1 or max_bytes < 1:
            raise ValueError(
                f"storage calls in flight per instance must be bounded by at least 1 call and "
                f"1 byte, got {max_calls} calls and {max_bytes} bytes"
            )
        self.max_calls = max_calls
        self.max_bytes = max_bytes
        self._calls = self._bytes = 0
        self._peak_calls = self._peak_bytes = 0
        self._total = self._pauses = 0

    @property
    def open(self) -> bool:
        """Whether the worker may read the instance's next message."""
        return self._calls < self.max_calls and self._bytes < self.max_bytes

    def take(self, nbytes: int) -> None:
        """A call was read, holding `nbytes` of payload."""
        self._calls += 1
        self._total += 1
        self._peak_calls = max(self._peak_calls, self._calls)
        self.hold(nbytes)

    def hold(self, nbytes: int) -> None:
        """More bytes held for a call in flight (a reply being sent)."""
        self._bytes += nbytes
        self._peak_bytes = max(self._peak_bytes, self._bytes)

    def release(self, nbytes: int) -> None:
        self._bytes -= nbytes

    def finish(self, nbytes: int) -> None:
        """A call's reply was sent (or it was given up): its `nbytes` are no longer held."""
        self._calls -= 1
        self.release(nbytes)

    def paused(self) -> None:
        self._pauses += 1

    def statistics(self) -> InflightStatistics:
        return InflightStatistics(
            calls=self._calls,
            bytes=self._bytes,
            peak_calls=self._peak_calls,
            peak_bytes=self._peak_bytes,
            calls_total=self._total,
            pauses=self._pauses,
        )


def payload_size(message: StorageCall | dict[str, Any]) -> int:
    """The bytes a storage message carries that the worker holds: its data and key, or value."""
    if isinstance(message, StorageCall):
        return len(message.data or b"") + len(message.key)
    size = 0
    for field in ("data", "value", "key"):
        value = message.get(field)
        if isinstance(value, bytes | bytearray | memoryview | str):
            size += len(value)
    return size
