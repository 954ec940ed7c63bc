"""The log buffer and line splitting behind /system/logs."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from faasd_py.cluster._wire import entries_of, entries_reply
from faasd_py.worker._logs import (
    MAX_LINE,
    LineSplitter,
    LogBudget,
    LogBuffer,
    LogEntry,
    OutputCapture,
    entry_cost,
)

KIB = 1024


def _entry(text: str, at: float = 0.0) -> LogEntry:
    return LogEntry(timestamp=at, instance="fn-1", text=text)


def test_buffer_keeps_only_the_newest_entries_within_its_bytes() -> None:
    one = entry_cost(_entry("0"))
    buffer = LogBuffer(max_bytes=3 * one)
    for i in range(5):
        buffer.append(_entry(str(i), at=i))
    assert [e.text for e in buffer.recent()] == ["2", "3", "4"]
    assert [e.text for e in buffer.recent(tail=2)] == ["3", "4"]
    assert buffer.recent(tail=0) == []
    assert [e.text for e in buffer.recent(since=3.5)] == ["4"]
    assert buffer.statistics().evicted_lines == 2


def test_a_buffer_holds_its_bytes_whatever_the_lines_length() -> None:
    # 10,000 lines of 16 KiB used to be kept: 165 MB for one function.
    buffer = LogBuffer(max_bytes=256 * KIB)
    for i in range(2000):
        buffer.append(_entry("x" * MAX_LINE if i % 2 else ""))
    assert buffer.bytes <= 256 * KIB
    assert buffer.bytes == sum(entry_cost(e) for e in buffer.recent())


def test_the_process_budget_takes_the_oldest_lines_of_the_largest_buffer() -> None:
    budget = LogBudget(limit=300 * KIB)
    quiet, loud = LogBuffer(256 * KIB, budget), LogBuffer(256 * KIB, budget)
    for i in range(10):
        quiet.append(_entry(f"quiet {i}" + "q" * KIB))
    for i in range(400):
        loud.append(_entry(f"loud {i}" + "l" * KIB))
    assert budget.bytes == quiet.bytes + loud.bytes <= 300 * KIB
    assert len(quiet.recent()) == 10  # the smaller buffer kept everything
    assert loud.recent()[-1].text.startswith("loud 399")
    assert not any(e.text.startswith("loud 0") for e in loud.recent())


async def test_closing_a_buffer_frees_its_lines_and_takes_nothing_more() -> None:
    budget = LogBudget(limit=1024 * KIB)
    buffer, other = LogBuffer(256 * KIB, budget), LogBuffer(256 * KIB, budget)
    buffer.append(_entry("a" * KIB))
    other.append(_entry("b"))
    followed = buffer.follow()
    buffer.close()
    assert [e async for e in followed] == []
    buffer.append(_entry("late output of an instance on its way out"))
    assert buffer.recent() == []
    assert budget.statistics().buffers == 1
    assert budget.bytes == other.bytes


async def test_a_follower_that_falls_behind_by_more_than_the_buffer_is_cut_off() -> None:
    buffer = LogBuffer(max_bytes=64 * KIB)
    followed = buffer.follow()
    for _ in range(100):
        buffer.append(_entry("y" * KIB))
    received = [e async for e in followed]  # ends: the follower was cut off
    assert 0 < len(received) < 100


def test_output_over_the_rate_is_dropped_counted_and_marked() -> None:
    buffer = LogBuffer(max_bytes=64 * KIB)  # 64 KiB a second, in bursts of 64 KiB
    capture = OutputCapture(buffer, "fn-1")
    flood = b"".join(b"line %d\n" % i for i in range(200_000))
    for start in range(0, len(flood), 64 * KIB):
        capture.feed(flood[start : start + 64 * KIB], now=100.0)  # all within one instant
    kept = buffer.recent()
    assert buffer.bytes <= 64 * KIB
    dropped = buffer.statistics().dropped_lines
    assert dropped > 190_000
    capture.feed(b"after a second\n", now=101.0)  # the rate allows output again
    marker, line = [e.text for e in buffer.recent()[-2:]]
    assert marker.startswith(f"[faasd-py] {dropped} lines of output dropped")
    assert line == "after a second"
    # Every line is either kept, pushed out by newer ones, or counted as dropped.
    stats = buffer.statistics()
    assert len(kept) > 0
    assert stats.entries + stats.evicted_lines == 200_000 - dropped + 2


def test_a_dropped_line_is_not_resumed_halfway() -> None:
    buffer = LogBuffer(max_bytes=64 * KIB)
    capture = OutputCapture(buffer, "fn-1")
    capture.feed(b"z" * (400 * KIB), now=0.0)  # a long line beyond the burst of 4 buffers
    capture.feed(b"z" * KIB + b"\nnext\n", now=10.0)
    texts = [e.text for e in buffer.recent()]
    marker = "[faasd-py] 1 line of output dropped: over the function's log rate of 64 KiB a second"
    assert texts[-2:] == [marker, "next"]


async def test_followers_get_entries_appended_after_they_subscribe() -> None:
    buffer = LogBuffer(max_bytes=64 * KIB)
    buffer.append(_entry("before"))
    followed = buffer.follow()
    buffer.append(_entry("after"))  # before the first iteration: must not be lost
    first = await asyncio.wait_for(anext(followed), 1)
    assert first.text == "after"
    buffer.close()
    assert [e async for e in followed] == []


@given(st.lists(st.binary(max_size=300), max_size=30))
def test_splitting_in_any_chunks_gives_the_same_lines(chunks: list[bytes]) -> None:
    data = b"".join(chunks)
    whole: list[str] = []
    splitter = LineSplitter(whole.append)
    splitter.feed(data)
    splitter.flush()
    pieces: list[str] = []
    split = LineSplitter(pieces.append)
    for chunk in chunks:
        split.feed(chunk)
    split.flush()
    assert pieces == whole


def test_overlong_output_is_cut_into_bounded_entries() -> None:
    lines: list[str] = []
    splitter = LineSplitter(lines.append)
    splitter.feed(b"x" * (MAX_LINE * 2 + 10) + b"\nend\n")
    assert [len(line) for line in lines] == [MAX_LINE, MAX_LINE, 10, 3]
    assert lines[-1] == "end"


def test_captured_lines_and_markers_carry_their_stream() -> None:
    buffer = LogBuffer(max_bytes=64 * KIB)
    OutputCapture(buffer, "fn-1", "stderr").feed(b"oops\n", now=0.0)
    OutputCapture(buffer, "fn-1").feed(b"fine\n", now=0.0)
    assert [(e.text, e.stream) for e in buffer.recent()] == [("oops", "stderr"), ("fine", "stdout")]


def test_log_entries_cross_the_cluster_wire_with_their_stream() -> None:
    entries = [LogEntry(1.0, "fn-1", "oops", "stderr"), LogEntry(2.0, "worker", "gone", "worker")]
    assert entries_of(entries_reply(entries)) == entries
    # A worker of an earlier faasd-py sends three fields: its lines read as stdout.
    assert entries_of({"entries": [[1.0, "fn-1", "old"]]}) == [LogEntry(1.0, "fn-1", "old")]
