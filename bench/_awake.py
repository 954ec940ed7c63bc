"""Cores kept awake: one busy loop per core at SCHED_IDLE priority, for the span of a `with`.

On a virtual machine, a vCPU with nothing to run halts, and the host may run other guests'
work on its core meanwhile; the next wake-up on it then pays for the exit to the host, the
interrupt that brings it back, and caches that the other work cooled. At low load, where each
request crosses processes that sleep between requests, that cost dominates: measured here with
wrk at one connection against bench/_bare_server.py, 8.5k req/s and p50 106 µs on an idle
machine, 17k req/s and p50 52 µs with one busy loop beside it. A spinner at SCHED_IDLE keeps
its vCPU from halting yet gives way at once to any normal task that wakes (it is never
preferred to one), so the processes under test get the same CPU as on an idle machine, on a
core that stays warm: the condition of a runtime that polls on cores of its own, as Junction
and Caladan do, or of a busy host. Its CPU is its own: per-process accounting leaves it out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_SPIN = """
import os, sys
os.sched_setaffinity(0, {int(sys.argv[1])})
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
while True:
    pass
"""


@contextmanager
def cores_kept_awake(enabled: bool = True) -> Iterator[list[int]]:
    """One SCHED_IDLE busy loop on each core this process may run on; yields their pids."""
    if not enabled:
        yield []
        return
    spinners = [
        subprocess.Popen([sys.executable, "-c", _SPIN, str(cpu)], stdin=subprocess.DEVNULL)
        for cpu in sorted(os.sched_getaffinity(0))
    ]
    try:
        yield [s.pid for s in spinners]
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()
