"""Runs a Plan on `plan.procs` generator processes and merges what they measured.

The processes are spawned (not forked: the parent may hold threads and a terminal), report
ready, and start together at one instant on the system-wide monotonic clock. While they run, the
coordinator folds their progress messages into a Progress for the live display. SIGINT (Ctrl-C)
sets the processes' stop flag: they stop sending, give requests in flight a moment, and still
send what they measured, so an interrupted run has a (partial) report. A second Ctrl-C gives up.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from faasd_py.errors import FaasdError
from faasd_py.loadgen._engine import LATE_GRACE, STOP_GRACE, Link, process_main
from faasd_py.loadgen._plan import Plan
from faasd_py.loadgen._progress import Progress
from faasd_py.loadgen._stats import RunStats

# Processes must say ready within this (spawning imports aiohttp and uvloop in each).
READY_TIMEOUT = 60.0
# The start instant is set this far ahead, so that every process is waiting when it comes.
START_MARGIN = 0.2
# How often the display is refreshed and dead processes are looked for.
POLL = 0.1
# Beyond the schedule, the answers' timeout and the grace times: a process that has still not
# reported by then is stopped, and after this much more the run fails.
OVERRUN = 10.0


class GeneratorFailed(FaasdError):
    """A generator process crashed or stopped answering; the message carries its traceback."""


@dataclass(frozen=True)
class Finished:
    """A run's merged measurements and how it went."""

    stats: RunStats
    interrupted: bool
    started_at: float  # wall clock (time.time()) at the start instant
    # Seconds of the recorded window that actually ran: the plan's, or less when interrupted.
    recorded_seconds: float


OnProgress = Callable[[Progress], None]


def run_plan(plan: Plan, on_progress: OnProgress | None = None) -> Finished:
    """Run `plan` to its end (or to Ctrl-C) and return what it measured."""
    ctx = multiprocessing.get_context("spawn")
    link = Link(ctx.Queue(), ctx.Event(), ctx.Event(), ctx.Value("d", 0.0))
    processes = [
        ctx.Process(target=process_main, args=(plan, i, link), name=f"faasd-bench-{i}", daemon=True)
        for i in range(plan.procs)
    ]
    interrupt = threading.Event()
    # Ctrl-C in a terminal reaches every process of the group: the generator processes ignore
    # it (inherited across spawn) and wait for the stop flag, set by this process alone.
    with _sigint(signal.SIG_IGN):
        for process in processes:
            process.start()
    try:
        with _sigint(_stop_handler(interrupt)):
            return _Run(plan, link, processes, interrupt, on_progress).wait()
    finally:
        link.stop.set()
        link.go.set()  # a process still waiting to start then finds the stop flag
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        link.messages.close()


class _Run:
    def __init__(
        self,
        plan: Plan,
        link: Link,
        processes: list[Any],
        interrupt: threading.Event,
        on_progress: OnProgress | None,
    ) -> None:
        self.plan = plan
        self.link = link
        self.processes = processes
        self.interrupt = interrupt
        self.on_progress = on_progress
        self.progress = Progress(plan.total_seconds, plan.lead_in)
        self.ready: set[int] = set()
        self.results: dict[int, RunStats] = {}
        self.start = 0.0
        self.stopped_at: float | None = None

    def wait(self) -> Finished:
        deadline = time.monotonic() + READY_TIMEOUT
        while len(self.ready) < len(self.processes):
            if self.interrupt.is_set():
                raise KeyboardInterrupt
            if time.monotonic() > deadline:
                raise GeneratorFailed(
                    f"the generator processes did not start within {READY_TIMEOUT:.0f} s"
                )
            self._receive()
        self.start = time.monotonic() + START_MARGIN
        started_at = time.time() + START_MARGIN
        self.link.start_at.value = self.start
        self.link.go.set()
        give_up = (
            self.start
            + self.plan.total_seconds
            + self.plan.request.timeout
            + LATE_GRACE
            + STOP_GRACE
            + OVERRUN
        )
        while len(self.results) < len(self.processes):
            now = time.monotonic()
            if self.interrupt.is_set() and self.stopped_at is None:
                self.stopped_at = now
                self.link.stop.set()
                self.progress.stopping = True
            if now > give_up:
                self.link.stop.set()
                if now > give_up + OVERRUN:
                    missing = sorted(set(range(len(self.processes))) - set(self.results))
                    raise GeneratorFailed(
                        f"generator processes {missing} did not finish "
                        f"{2 * OVERRUN:.0f} s after the run's end"
                    )
            self._receive()
            self._show(time.monotonic())
        merged = RunStats()
        for index in sorted(self.results):
            merged.merge(self.results[index])
        return Finished(merged, self.stopped_at is not None, started_at, self._recorded())

    def _recorded(self) -> float:
        if self.stopped_at is None:
            return self.plan.seconds
        ran = self.stopped_at - (self.start + self.plan.lead_in)
        return max(0.0, min(self.plan.seconds, ran))

    def _receive(self) -> None:
        """Take the messages that arrive within POLL seconds; fail if a process died."""
        try:
            kind, index, payload = self.link.messages.get(timeout=POLL)
        except queue.Empty:
            self._check_alive()
            return
        while True:
            self._handle(kind, index, payload)
            try:
                kind, index, payload = self.link.messages.get_nowait()
            except queue.Empty:
                return

    def _handle(self, kind: str, index: int, payload: Any) -> None:
        if kind == "ready":
            self.ready.add(index)
        elif kind == "progress":
            self.progress.update(index, payload)
        elif kind == "result":
            self.results[index] = RunStats.from_json(payload)
        elif kind == "failed":
            raise GeneratorFailed(f"generator process {index} failed:\n{payload}")

    def _check_alive(self) -> None:
        for index, process in enumerate(self.processes):
            if index not in self.results and not process.is_alive():
                raise GeneratorFailed(
                    f"generator process {index} exited with status {process.exitcode} "
                    "before reporting its results"
                )

    def _show(self, now: float) -> None:
        if self.on_progress is None:
            return
        elapsed = now - self.start
        self.progress.intended_rate = self._rate_at(elapsed)
        self.progress.tick(elapsed)
        self.on_progress(self.progress)

    def _rate_at(self, elapsed: float) -> float | None:
        if self.plan.mode != "open":
            return None
        rate = self.plan.rates[0]
        for step in self.plan.steps():
            if step.start <= elapsed:
                rate = step.rate
        return rate


def _stop_handler(interrupt: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        if interrupt.is_set():
            raise KeyboardInterrupt  # the second Ctrl-C: stop waiting for the processes
        interrupt.set()

    return handler


@contextlib.contextmanager
def _sigint(handler: Any) -> Iterator[None]:
    """SIGINT handled by `handler` for a while (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
