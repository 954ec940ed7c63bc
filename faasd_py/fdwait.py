"""Waiting until file descriptors are readable, whatever their numbers.

select.select takes descriptors below FD_SETSIZE (1024) only, and raises ValueError for
others. A worker that holds many connections and instances has larger numbers, and the
processes it starts (zygotes, instances) are handed descriptors at the numbers the worker
had: a zygote's control socket at 1,0xx made its select fail after some hundreds of cold
starts. poll(2) has no such bound. Standard library only: sandboxed runtimes import this.
"""

from __future__ import annotations

import math
import select
from collections.abc import Iterable

# What select() reports as readable: data, the end of the stream, and errors alike.
_READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR | select.POLLNVAL


def wait_readable(fds: Iterable[int], timeout: float | None = None) -> set[int]:
    """The descriptors of `fds` that are readable (or at their end, or in error), waiting up to
    `timeout` seconds for one (None: until one is; 0: not at all)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN | select.POLLPRI)
    # poll counts milliseconds: round up, so that a short wait is not a busy one.
    milliseconds = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return {fd for fd, events in poller.poll(milliseconds) if events & _READABLE}
