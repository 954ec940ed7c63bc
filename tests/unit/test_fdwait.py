"""wait_readable: select's meaning of readable, at descriptor numbers select cannot take."""

from __future__ import annotations

import contextlib
import os
import resource
import select
from collections.abc import Iterator

import pytest

from faasd_py.fdwait import wait_readable

HIGH = 1500  # above FD_SETSIZE (1024), as a busy worker's descriptors are


@pytest.fixture
def high_pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose read end is descriptor HIGH."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= HIGH:
        pytest.skip(f"RLIMIT_NOFILE's hard limit {hard} is below {HIGH}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HIGH + 1), hard))
    read, write = os.pipe()
    os.dup2(read, HIGH)
    os.close(read)
    try:
        yield HIGH, write
    finally:
        os.close(HIGH)
        with contextlib.suppress(OSError):  # the test may have closed it
            os.close(write)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_descriptor_above_fd_setsize_is_waited_for(high_pipe: tuple[int, int]) -> None:
    read, write = high_pipe
    with pytest.raises(ValueError):
        select.select([read], [], [], 0)  # what the zygote's loop did, and failed on
    assert wait_readable([read], 0) == set()
    assert wait_readable([read], 0.01) == set()
    os.write(write, b"x")
    assert wait_readable([read], None) == {read}
    os.read(read, 1)
    os.close(write)
    assert wait_readable([read], 1) == {read}  # the end of the stream reads as readable


def test_only_the_readable_ones_are_returned() -> None:
    first, first_w = os.pipe()
    second, second_w = os.pipe()
    try:
        os.write(second_w, b"x")
        assert wait_readable([first, second], 0) == {second}
    finally:
        for fd in (first, first_w, second, second_w):
            os.close(fd)
