"""pipe_reader: an instance's stdout or stderr, read by the worker, is closed at its end."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import uvloop

from faasd_py.worker._process import pipe_reader


def test_the_pipe_is_closed_at_its_end_while_the_reader_lives() -> None:
    """uvloop's read-pipe transport kept the descriptor open after the end of the stream
    (asyncio's closes it): two descriptors per cold start stayed open in the worker for as
    long as anything held the readers, past 1,024 after some hundreds of starts."""

    async def read_to_the_end() -> None:
        read, write = os.pipe()
        reader = await pipe_reader(read)
        os.write(write, b"a line\n")
        os.close(write)
        assert await reader.read() == b"a line\n"
        assert await reader.read() == b""
        # libuv closes the handle on a later turn of the loop.
        for _ in range(500):
            if not Path(f"/proc/self/fd/{read}").exists():
                break
            await asyncio.sleep(0.01)
        assert not Path(f"/proc/self/fd/{read}").exists()
        assert reader.at_eof()  # the reader itself is still here

    uvloop.run(read_to_the_end())
