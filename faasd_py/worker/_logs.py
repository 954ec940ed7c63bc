"""Captured stdout/stderr of a function's instances: buffers bounded in bytes, with live followers.

Three bounds keep a function's output from costing the platform (each an estimate of memory:
a line costs its text plus ENTRY_OVERHEAD, so a flood of empty lines counts too):
- per function, its buffer holds at most `max_bytes`; the oldest lines go first;
- per process, every buffer together holds at most the budget's `limit` (LogBudget): when it
  is over, the oldest lines of the largest buffers go first;
- per function, output is taken at most at `rate` bytes a second (a token bucket with a burst
  of BURST_BUFFERS buffers: a one-off dump of a few MB is kept whole). Lines beyond it are
  dropped without being decoded, only counted (a search for newlines per chunk), and a marker
  line says how many went: a function that prints without end costs the worker's loop a little
  per chunk, not per line, and other functions' invocations go on.
A removed function's buffer is closed: its lines are freed at once, and output that its
instances still write on their way out is dropped.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

# Longest line kept as one entry; longer output is split into entries of this size, so a handler
# that prints megabytes without a newline cannot grow memory beyond the buffer's bound.
MAX_LINE = 16 * 1024
# What an entry costs beyond its text's bytes: the LogEntry and the deque's slot.
ENTRY_OVERHEAD = 96
DEFAULT_FUNCTION_BYTES = 1024 * 1024
DEFAULT_TOTAL_BYTES = 64 * 1024 * 1024
# The output a function may print at once before the rate applies, in buffers' worth.
BURST_BUFFERS = 4
# Bytes read from an instance's stdout or stderr at a time.
_CHUNK = 64 * 1024


# Where a line came from: a process's two output streams, or the worker itself (a start that
# failed, a zygote that died: notes about the function rather than its output).
STREAMS = ("stdout", "stderr", "worker")


@dataclass(frozen=True, slots=True)
class LogEntry:
    timestamp: float  # seconds since the epoch
    instance: str
    text: str
    stream: str = "stdout"  # one of STREAMS


def entry_cost(entry: LogEntry) -> int:
    """The bytes an entry is counted as: its text as Python holds it, plus the entry."""
    return sys.getsizeof(entry.text) + ENTRY_OVERHEAD


@dataclass(frozen=True, slots=True)
class LogStatistics:
    entries: int
    bytes: int  # as entry_cost counts them
    dropped_lines: int  # over the rate: never kept
    evicted_lines: int  # kept, then pushed out by newer lines (of this or another function)


@dataclass(frozen=True, slots=True)
class LogBudgetStatistics:
    buffers: int
    bytes: int
    limit: int


class LogBudget:
    """The bound on every function's logs in one process: when the buffers together hold more
    than `limit` bytes, the oldest lines of the largest buffer go first."""

    def __init__(self, limit: int = DEFAULT_TOTAL_BYTES) -> None:
        self.limit = limit
        self.bytes = 0
        self._buffers: set[LogBuffer] = set()

    def add(self, buffer: LogBuffer) -> None:
        self._buffers.add(buffer)

    def discard(self, buffer: LogBuffer) -> None:
        self._buffers.discard(buffer)

    def enforce(self) -> None:
        while self.bytes > self.limit and self._buffers:
            largest = max(self._buffers, key=lambda b: b.bytes)
            if not largest.evict_oldest():
                return

    def statistics(self) -> LogBudgetStatistics:
        return LogBudgetStatistics(len(self._buffers), self.bytes, self.limit)


class LogBuffer:
    """The newest log lines of one function, up to `max_bytes`; `follow` streams new ones as
    they come. Output beyond `rate` bytes a second (default: `max_bytes` a second) is dropped by
    its capture (`admits`), counted, and marked."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_FUNCTION_BYTES,
        budget: LogBudget | None = None,
        rate: float | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._budget = budget if budget is not None else LogBudget(max_bytes)
        self._budget.add(self)
        self._entries: deque[tuple[LogEntry, int]] = deque()
        self._followers: dict[asyncio.Queue[LogEntry | None], int] = {}  # queued bytes each
        self._rate = float(max_bytes) if rate is None else rate
        self._burst = float(BURST_BUFFERS * max_bytes)
        self._tokens = self._burst
        self._refilled_at: float | None = None
        self._dropped = 0
        self._evicted = 0
        self._closed = False

    # --- taking lines in -----------------------------------------------------------------------

    def admits(self, now: float) -> bool:
        """Whether output written at `now` is within the rate (lines are charged as appended)."""
        if self._refilled_at is not None:
            elapsed = min(max(now - self._refilled_at, 0.0), self._burst / self._rate)
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._refilled_at = now
        return self._tokens > 0 and not self._closed

    def admitted_in(self, now: float) -> float:
        """Seconds from `now` until output is within the rate again (0: it is now)."""
        return 0.0 if self.admits(now) else -self._tokens / self._rate

    def append(self, entry: LogEntry) -> None:
        if self._closed:
            return  # removed: its instances' last words go nowhere
        cost = entry_cost(entry)
        self._tokens -= cost
        self._entries.append((entry, cost))
        self.bytes += cost
        self._budget.bytes += cost
        while self.bytes > self.max_bytes and self.evict_oldest():
            pass
        self._budget.enforce()
        for queue, queued in list(self._followers.items()):
            if queued + cost > self.max_bytes:
                # A follower that cannot keep up is cut off rather than buffered without bound.
                del self._followers[queue]
                queue.put_nowait(None)
            else:
                self._followers[queue] = queued + cost
                queue.put_nowait(entry)

    def dropped(self, lines: int) -> None:
        """Count lines a capture dropped over the rate (it appends the marker)."""
        self._dropped += lines

    def evict_oldest(self) -> bool:
        """Drop the oldest entry; False when there is none."""
        if not self._entries:
            return False
        _, cost = self._entries.popleft()
        self.bytes -= cost
        self._budget.bytes -= cost
        self._evicted += 1
        return True

    # --- reading -------------------------------------------------------------------------------

    def recent(
        self, tail: int | None = None, since: float | None = None, instance: str | None = None
    ) -> list[LogEntry]:
        """The last `tail` entries (all with None) from `since` on, of one instance or all."""
        entries = [
            e
            for e, _ in self._entries
            if (since is None or e.timestamp >= since) and instance in (None, e.instance)
        ]
        return entries if tail is None else entries[-tail:] if tail > 0 else []

    def follow(self) -> AsyncIterator[LogEntry]:
        """New entries from this call on, until `close` (or the follower falls too far behind:
        more than the buffer's bytes waiting for it).

        The follower is registered before this returns, so nothing appended between taking
        `recent()` and iterating is lost.
        """
        queue: asyncio.Queue[LogEntry | None] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(None)
        else:
            self._followers[queue] = 0

        async def entries() -> AsyncIterator[LogEntry]:
            try:
                while (entry := await queue.get()) is not None:
                    if queue in self._followers:
                        self._followers[queue] -= entry_cost(entry)
                    yield entry
            finally:
                self._followers.pop(queue, None)

        return entries()

    def statistics(self) -> LogStatistics:
        return LogStatistics(len(self._entries), self.bytes, self._dropped, self._evicted)

    def close(self) -> None:
        """The function is gone: free its lines, end its followers, take nothing more."""
        self._closed = True
        self._budget.bytes -= self.bytes
        self.bytes = 0
        self._entries.clear()
        self._budget.discard(self)
        for queue in self._followers:
            queue.put_nowait(None)
        self._followers.clear()


class LineSplitter:
    """Turns chunks of a byte stream into whole lines (at most MAX_LINE bytes each).

    `feed` emits every complete line; a capture under a rate instead `add`s bytes, takes lines
    with `next_line` while it may, and `discard`s the rest.
    """

    def __init__(self, emit: Callable[[str], None] | None = None) -> None:
        self._partial = bytearray()
        self._emit = emit
        self._skip_to_newline = False  # a discard cut a line: its rest is dropped as it comes

    def feed(self, chunk: bytes) -> None:
        assert self._emit is not None
        self.add(chunk)
        while (line := self.next_line()) is not None:
            self._emit(line)

    def add(self, chunk: bytes) -> None:
        self._partial += chunk

    def next_line(self) -> str | None:
        if self._skip_to_newline:
            newline = self._partial.find(b"\n")
            if newline < 0:
                self._partial.clear()
                return None
            del self._partial[: newline + 1]
            self._skip_to_newline = False
        newline = self._partial.find(b"\n", 0, MAX_LINE + 1)
        if newline >= 0:
            line, cut = self._partial[:newline], newline + 1
        elif len(self._partial) > MAX_LINE:
            line, cut = self._partial[:MAX_LINE], MAX_LINE
        else:
            return None
        del self._partial[:cut]
        return line.decode(errors="replace").rstrip("\r")

    def discard(self) -> int:
        """Drop what is buffered, and the rest of a line it cuts; the number of lines dropped
        (counted by their newlines, a cut line once)."""
        data = self._partial
        lines = data.count(b"\n")
        if self._skip_to_newline and lines:  # the first newline ends a line already counted
            lines -= 1
            self._skip_to_newline = False
        if data and not data.endswith(b"\n") and not self._skip_to_newline:
            lines += 1
            self._skip_to_newline = True
        data.clear()
        return lines

    def flush(self) -> None:
        """The end of the stream: emit a last line that has no newline."""
        assert self._emit is not None
        if (rest := self.rest()) is not None:
            self._emit(rest)

    def rest(self) -> str | None:
        """What is left at the end of the stream, if anything (a last line without newline)."""
        data, self._partial = self._partial, bytearray()
        return None if self._skip_to_newline or not data else data.decode(errors="replace")


class OutputCapture:
    """One stream of an instance's output into its function's LogBuffer, within the buffer's
    rate: lines over it are dropped and counted, and a marker line says how many when output is
    taken again (or the stream ends)."""

    def __init__(self, logs: LogBuffer, source: str, stream: str = "stdout") -> None:
        self._logs = logs
        self._source = source
        self._stream = stream
        self._splitter = LineSplitter()
        self._dropped = 0

    def feed(self, chunk: bytes, now: float) -> None:
        self._splitter.add(chunk)
        if not self._logs.admits(now):
            self._drop()
            return
        self._mark(now)
        while (line := self._splitter.next_line()) is not None:
            self._logs.append(LogEntry(now, self._source, line, self._stream))
            if not self._logs.admits(now):
                self._drop()
                return

    def finish(self, now: float) -> None:
        if self._logs.admits(now):
            self._mark(now)
            rest = self._splitter.rest()
            if rest is not None:
                self._logs.append(LogEntry(now, self._source, rest, self._stream))
        else:
            self._drop()
        self._mark(now)

    def marker_due_in(self, now: float) -> float | None:
        """Seconds until the marker of dropped lines may be written (None: nothing dropped), so
        that it comes even when the output stopped with the flood."""
        return None if not self._dropped else self._logs.admitted_in(now)

    def write_marker(self, now: float) -> None:
        if self._logs.admits(now):
            self._mark(now)

    def _drop(self) -> None:
        lines = self._splitter.discard()
        self._dropped += lines
        self._logs.dropped(lines)

    def _mark(self, now: float) -> None:
        if self._dropped:
            lines = f"{self._dropped} line" + ("s" if self._dropped > 1 else "")
            text = (
                f"[faasd-py] {lines} of output dropped: over the function's log rate of "
                f"{self._logs.max_bytes // 1024} KiB a second"
            )
            self._dropped = 0
            self._logs.append(LogEntry(now, self._source, text, self._stream))


async def pump_output(
    stream: asyncio.StreamReader, logs: LogBuffer, source: str, name: str = "stdout"
) -> None:
    """Copy a process's output stream (`name`: stdout or stderr) into the function's logs,
    line by line, until end of stream."""
    capture = OutputCapture(logs, source, name)
    while True:
        try:
            async with asyncio.timeout(capture.marker_due_in(time.time())):
                chunk = await stream.read(_CHUNK)
        except TimeoutError:  # quiet since lines were dropped: say so now
            capture.write_marker(time.time())
            continue
        if not chunk:
            break
        capture.feed(chunk, time.time())
        await asyncio.sleep(0)  # one chunk at a time: other work of the loop goes between
    capture.finish(time.time())
