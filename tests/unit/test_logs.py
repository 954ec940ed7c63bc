"""The log buffer and line splitting behind /system/logs."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from faasd_py.worker._logs import MAX_LINE, LineSplitter, LogBuffer, LogEntry


def _entry(text: str, at: float = 0.0) -> LogEntry:
    return LogEntry(timestamp=at, instance="fn-1", text=text)


def test_buffer_keeps_only_the_newest_entries() -> None:
    buffer = LogBuffer(capacity=3)
    for i in range(5):
        buffer.append(_entry(str(i), at=i))
    assert [e.text for e in buffer.recent()] == ["2", "3", "4"]
    assert [e.text for e in buffer.recent(tail=2)] == ["3", "4"]
    assert buffer.recent(tail=0) == []
    assert [e.text for e in buffer.recent(since=3.5)] == ["4"]


async def test_followers_get_entries_appended_after_they_subscribe() -> None:
    buffer = LogBuffer(capacity=10)
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
