"""How the worker's event loop waits on many doorbells (one eventfd per shm instance).

Two engines, one interface (`DoorbellEngine`): `watch(fd, callback)`, `unwatch(fd)`,
`statistics()`, `close()`. Either engine consumes the doorbell (reads the eventfd's count)
before it calls the callback, so that the callback only has to look at its ring.

- `epoll`: `loop.add_reader` per doorbell (uvloop's epoll), then one read() per wake-up.
- `io_uring`: one ring per event loop (native/uring.c). Each doorbell has an IORING_OP_READ
  queued on it, so its completion already consumed the count; after a batch of completions
  the reads are queued again and go to the kernel in one io_uring_enter. The loop sees the
  ring through its one fd, which polls readable while completions wait.

Which one runs is decided once per process (`configure`, from `Config.io_engine`): `epoll`,
`io_uring` (an error if it is unavailable), or `auto`. io_uring can be missing from the kernel,
disabled by sysctl (kernel.io_uring_disabled) or denied by a seccomp filter: `probe` sets up
a real ring and a waiting read, and `Selection.reason` says why it fell back.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from faasd_py import native
from faasd_py.errors import NativeUnavailable

__all__ = [
    "AUTO_PREFERS",
    "ENGINES",
    "DoorbellEngine",
    "DoorbellStatistics",
    "EpollDoorbells",
    "Selection",
    "UringDoorbells",
    "configure",
    "for_loop",
    "probe",
    "select",
    "selection",
]

log = logging.getLogger(__name__)

ENGINES = ("auto", "io_uring", "epoll")
# What `auto` runs where io_uring works. bench/channel.py measures both (bench/results/channel.md,
# 2 cores): io_uring's p50 is no better with one instance (worse when every reply comes by its
# doorbell: 36 vs 26 us, the completion's task_work interrupts the loop's epoll_wait once more),
# within the noise at 16; SQPOLL is faster per round trip but its polling thread triples the
# worker's CPU time, which a 2-core machine cannot spare.
AUTO_PREFERS = "epoll"
AUTO_REASON = (
    "auto: epoll, as fast as io_uring or faster for shm doorbells here (bench/results/channel.md)"
)

Callback = Callable[[], None]


@dataclass(frozen=True)
class DoorbellStatistics:
    engine: str
    watched: int
    wakeups: int  # times the loop woke for this engine's fds
    doorbells: int  # callbacks run
    errors: int  # doorbells dropped because their read failed (e.g. the fd was closed)
    enters: int = 0  # io_uring_enter calls (io_uring only)
    submitted: int = 0  # reads handed to the kernel (io_uring only)


class DoorbellEngine(Protocol):
    name: str

    def watch(self, fd: int, callback: Callback) -> None:
        """Call `callback()` in the loop each time `fd` (an eventfd) is rung, after consuming
        its count. Watching a watched fd replaces its callback."""
        ...

    def unwatch(self, fd: int) -> bool:
        """Stop watching `fd` (no callback for it runs after this returns); False if it was not
        watched. The fd may be closed right after."""
        ...

    def statistics(self) -> DoorbellStatistics: ...

    def close(self) -> None:
        """Stop watching everything; idempotent. The fds stay open (they are their owners')."""
        ...


class _LoopBound:
    """An engine belongs to one loop but holds it weakly: `for_loop`'s table is keyed weakly
    by loop, and a strong reference from its value would keep every loop alive."""

    _loop_ref: weakref.ref[asyncio.AbstractEventLoop]

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop_ref()
        if loop is None:
            raise RuntimeError("the event loop of this doorbell engine is gone")
        return loop


def _consume(fd: int) -> bool:
    """Read an eventfd's count; False if there was none (a spurious wake-up)."""
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        return False
    return True


class EpollDoorbells(_LoopBound):
    """Each doorbell is an `add_reader` of the loop (its epoll); one read() per wake-up."""

    name = "epoll"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_ref = weakref.ref(loop)
        self._watched: dict[int, Callback] = {}
        self._wakeups = 0
        self._doorbells = 0
        self._errors = 0
        self._closed = False

    def watch(self, fd: int, callback: Callback) -> None:
        if self._closed:
            raise RuntimeError("the doorbell engine is closed")
        os.fstat(fd)  # EBADF now rather than a silent watch of nothing
        self._watched[fd] = callback
        self._loop.add_reader(fd, self._on_ready, fd)

    def unwatch(self, fd: int) -> bool:
        if self._watched.pop(fd, None) is None:
            return False
        self._loop.remove_reader(fd)
        return True

    def _on_ready(self, fd: int) -> None:
        self._wakeups += 1
        callback = self._watched.get(fd)
        if callback is None:
            return
        try:
            _consume(fd)
        except OSError:
            # As the io_uring engine: the watch ends, and its owner finds out from its callback.
            self._errors += 1
            self.unwatch(fd)
        self._doorbells += 1
        callback()

    def statistics(self) -> DoorbellStatistics:
        return DoorbellStatistics(
            self.name, len(self._watched), self._wakeups, self._doorbells, self._errors
        )

    def close(self) -> None:
        for fd in list(self._watched):
            self.unwatch(fd)
        self._closed = True


@dataclass(eq=False)
class _Watch:
    """One doorbell in the ring: `db` (C memory, the read's user_data and buffer) must live
    until the kernel is done with it."""

    fd: int
    callback: Callback
    db: Any  # struct uring_doorbell *


class UringDoorbells(_LoopBound):
    """One io_uring per loop; a read queued on every watched eventfd (see the module doc)."""

    name = "io_uring"
    # Completions taken from the ring per uring_doorbell_reap call.
    BATCH = 64
    # With SQPOLL, how long the kernel's SQ thread polls without work before it sleeps.
    SQ_IDLE_MS = 10

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, entries: int = 256, sqpoll: bool = False
    ) -> None:
        lib = native.lib
        if lib is None:
            raise NativeUnavailable(f"io_uring needs the native shim, which is {native.REASON}")
        self._lib, self._ffi = lib, native.ffi
        out = self._ffi.new("struct uring **")
        flags = lib.URING_SQPOLL if sqpoll else 0
        native.check(lib.uring_open(entries, flags, self.SQ_IDLE_MS, out))
        # Closed by the garbage collector too, should the loop go away without close().
        self._ring: Any = self._ffi.gc(out[0], lib.uring_close)
        self._fd = lib.uring_fd(self._ring)
        self._loop_ref = weakref.ref(loop)
        self._ready = self._ffi.new("struct uring_doorbell *[]", self.BATCH)
        self._watched: dict[int, _Watch] = {}  # fd -> its watch
        self._in_kernel: dict[int, _Watch] = {}  # id -> watch whose read the kernel may hold
        self._next_id = 1
        self._flush_scheduled = False
        self._wakeups = 0
        self._doorbells = 0
        self._errors = 0
        self._closed = False
        loop.add_reader(self._fd, self._on_ring)

    def watch(self, fd: int, callback: Callback) -> None:
        if self._closed:
            raise RuntimeError("the doorbell engine is closed")
        os.fstat(fd)  # EBADF now, not in a completion later
        current = self._watched.get(fd)
        if current is not None:
            current.callback = callback
            return
        db = self._ffi.new("struct uring_doorbell *")
        db.fd, db.id = fd, self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF or 1
        watch = _Watch(fd, callback, db)
        native.check(self._lib.uring_doorbell_arm(self._ring, db))
        self._watched[fd] = self._in_kernel[db.id] = watch
        # Everything armed in this loop iteration goes to the kernel in one io_uring_enter.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def unwatch(self, fd: int) -> bool:
        watch = self._watched.pop(fd, None)
        if watch is None:
            return False
        if watch.db.armed:
            # Cancelled now, not at the next flush: the read must not take a ring that comes
            # after this returns. If it had already completed, the count it consumed goes back
            # to the eventfd (still open: the caller has not closed it yet), so that whoever
            # watches the doorbell next sees it. The watch stays in _in_kernel, its memory
            # alive, until its last completion is reaped.
            rc = self._lib.uring_doorbell_disarm(self._ring, watch.db)
            if rc == -errno.ENOENT and watch.db.count:
                os.eventfd_write(fd, watch.db.count)
            elif rc != -errno.ENOENT:
                native.check(rc)
        return True

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._closed:
            native.check(self._lib.uring_submit(self._ring))

    def _on_ring(self) -> None:
        """The loop's one callback for every doorbell: one C call reaps, re-arms and
        resubmits; then the callbacks of the doorbells that rang."""
        self._wakeups += 1
        ready, batch = self._ready, self.BATCH
        while True:
            count = native.check(self._lib.uring_doorbell_reap(self._ring, ready, batch))
            for i in range(count):
                self._complete(ready[i])
            if count < batch or self._closed:
                break

    def _complete(self, db: Any) -> None:
        watch = self._in_kernel.get(db.id)
        if watch is None:
            return
        if not db.armed:
            del self._in_kernel[db.id]  # its last completion: the kernel is done with it
        if self._watched.get(watch.fd) is not watch:
            return  # unwatched after this completion came
        if db.res < 0:
            # The fd went bad under its read: the watch ends, and the callback runs once so
            # that its owner finds out from its fd.
            self._errors += 1
            del self._watched[watch.fd]
            log.debug("doorbell fd %d failed: %s", watch.fd, os.strerror(-db.res))
        self._doorbells += 1
        try:
            watch.callback()
        except Exception as exc:  # as asyncio.Handle does: report it, and go on
            self._loop.call_exception_handler(
                {"message": "exception in a doorbell callback", "exception": exc}
            )

    def statistics(self) -> DoorbellStatistics:
        stats = self._ffi.new("struct uring_stats *")
        if not self._closed:
            self._lib.uring_get_stats(self._ring, stats)
        return DoorbellStatistics(
            self.name,
            len(self._watched),
            self._wakeups,
            self._doorbells,
            self._errors,
            enters=stats.enters,
            submitted=stats.submitted,
        )

    def close(self) -> None:
        """Cancel every read, wait (briefly) until the kernel is done with their memory, and
        tear the ring down."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self._watched.clear()
        lib, ring = self._lib, self._ring
        for watch in self._in_kernel.values():
            watch.db.armed = 0  # reaping must not queue them again
        if self._in_kernel and lib.uring_queue_cancel(ring, 0, 1) == 0:
            for _ in range(100):
                if not self._in_kernel:
                    break
                lib.uring_wait(ring, 1, 10_000_000)
                count = lib.uring_doorbell_reap(ring, self._ready, self.BATCH)
                for i in range(max(count, 0)):
                    self._in_kernel.pop(self._ready[i].id, None)
        self._in_kernel.clear()
        self._ffi.release(ring)  # uring_close now


# --- which engine runs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The engine this process runs, what was asked for, and why (shown by `up` and
    /system/info)."""

    requested: str
    engine: str
    reason: str
    # io_uring with a kernel thread polling its SQ (IORING_SETUP_SQPOLL): for benchmarks only,
    # it did not pay on 2 cores (bench/results/channel.md).
    sqpoll: bool = False

    def describe(self) -> str:
        name = f"{self.engine}+sqpoll" if self.sqpoll else self.engine
        return f"{name} ({self.reason})" if self.reason else name


def probe() -> str:
    """'' if io_uring can serve doorbells in this process; else why not."""
    if native.lib is None:
        return f"the native shim is {native.REASON}"
    rc = native.lib.uring_probe(0)
    if rc == 0:
        return ""
    if rc == -errno.EOPNOTSUPP:
        return "this kernel cannot wait on a non-blocking eventfd with io_uring"
    return f"io_uring_setup failed: {os.strerror(-rc)} (kernel.io_uring_disabled or seccomp?)"


def select(requested: str) -> Selection:
    """Decide which engine `requested` (auto, io_uring, epoll) means here."""
    if requested not in ENGINES:
        raise ValueError(f"io engine must be one of {', '.join(ENGINES)}, got {requested!r}")
    if requested == "epoll":
        return Selection(requested, "epoll", "")
    why_not = probe()
    if requested == "io_uring":
        if why_not:
            raise NativeUnavailable(f"--io-engine io_uring: {why_not}")
        return Selection(requested, "io_uring", "")
    if why_not:
        return Selection(requested, "epoll", f"io_uring unavailable: {why_not}")
    return Selection(requested, AUTO_PREFERS, AUTO_REASON)


_selection: Selection | None = None
_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DoorbellEngine] = (
    weakref.WeakKeyDictionary()
)


def configure(requested: str, *, sqpoll: bool = False) -> Selection:
    """Choose this process's engine (the worker does, from Config.io_engine). Loops that
    already have an engine keep it; new ones get the new choice."""
    global _selection
    chosen = select(requested)
    _selection = replace(chosen, sqpoll=sqpoll and chosen.engine == "io_uring")
    return _selection


def selection() -> Selection:
    """The engine chosen by `configure`, or what `auto` gives if nobody configured one."""
    return _selection if _selection is not None else configure("auto")


def for_loop(loop: asyncio.AbstractEventLoop | None = None) -> DoorbellEngine:
    """The doorbell engine of `loop` (the running one by default), made on first use."""
    loop = loop or asyncio.get_running_loop()
    engine = _engines.get(loop)
    if engine is None:
        chosen = selection()
        uring = chosen.engine == "io_uring"
        engine = UringDoorbells(loop, sqpoll=chosen.sqpoll) if uring else EpollDoorbells(loop)
        _engines[loop] = engine
    return engine


def close_for(loop: asyncio.AbstractEventLoop) -> None:
    """Close `loop`'s engine, if it has one (at worker shutdown)."""
    engine = _engines.pop(loop, None)
    if engine is not None:
        engine.close()
