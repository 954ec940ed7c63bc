"""The doorbell engines (faasd_py.datapath.doorbells): each test runs against epoll and io_uring
(ids `epoll` / `io_uring`), as the channel tests run against each channel kind. io_uring needs the
native shim and a kernel that lets this process set up a ring: without them its tests skip and
say why, except under CI=true, where they run and fail."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from faasd_py.config import Config
from faasd_py.datapath import doorbells
from faasd_py.datapath.doorbells import DoorbellEngine, EpollDoorbells, UringDoorbells
from tests.native._engines import needs_uring

ROOT = Path(__file__).resolve().parents[2]
ENGINES = [pytest.param("epoll", id="epoll"), pytest.param("io_uring", marks=needs_uring)]


@pytest.fixture(params=ENGINES)
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[DoorbellEngine]:
    loop = asyncio.get_running_loop()
    made: DoorbellEngine = (
        UringDoorbells(loop) if request.param == "io_uring" else EpollDoorbells(loop)
    )
    yield made
    made.close()


@pytest.fixture
def eventfds() -> Iterator[Callable[[], int]]:
    """A factory of non-blocking eventfds (as shm regions make them), closed at teardown."""
    fds: list[int] = []

    def make() -> int:
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        fds.append(fd)
        return fd

    yield make
    for fd in fds:
        with contextlib.suppress(OSError):  # a test closed it
            os.close(fd)


def counter() -> tuple[dict[int, int], Callable[[int], Callable[[], None]]]:
    calls: dict[int, int] = {}

    def on(key: int) -> Callable[[], None]:
        def callback() -> None:
            calls[key] = calls.get(key, 0) + 1

        return callback

    return calls, on


async def settle(rounds: int = 5, pause: float = 0.01) -> None:
    """Let the loop run what the kernel has for it."""
    for _ in range(rounds):
        await asyncio.sleep(pause)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (up to 5 s) until `condition()` holds; the callbacks under test set no event."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def pending(fd: int) -> int:
    """The eventfd's count, consumed (0 if there was none)."""
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


async def test_many_doorbells_at_once(engine: DoorbellEngine, eventfds: Callable[[], int]) -> None:
    """Of 64 doorbells, the 40 rung get one callback each, their counts consumed; rung again,
    they are called again (the engine re-armed them). (Two rings in a row may make one
    callback or two: io_uring consumes the first as soon as the ringing thread leaves the
    kernel. Doorbells only say "look at your ring", so either is right.)"""
    calls, on = counter()
    fds = [eventfds() for _ in range(64)]
    for i, fd in enumerate(fds):
        engine.watch(fd, on(i))
    await settle(1)
    rung = list(range(0, 64, 3))[:40] + list(range(1, 64, 3))[:19]
    for i in rung:
        os.eventfd_write(fds[i], 2)
    await until(lambda: len(calls) == len(rung))
    await settle()
    assert calls == {i: 1 for i in rung}
    assert all(pending(fds[i]) == 0 for i in rung), "the engine consumes what it reports"
    for i in rung[:10]:
        os.eventfd_write(fds[i], 1)
    await until(lambda: sum(calls.values()) == len(rung) + 10)
    stats = engine.statistics()
    assert stats.engine == engine.name
    assert stats.watched == 64 and stats.doorbells == len(rung) + 10 and stats.errors == 0
    assert 1 <= stats.wakeups <= stats.doorbells


async def test_a_doorbell_rung_while_unwatched(
    engine: DoorbellEngine, eventfds: Callable[[], int]
) -> None:
    """An unwatched doorbell is left alone (its count stays); watched again, a ring from
    before the watch is reported at once."""
    calls, on = counter()
    fd = eventfds()
    engine.watch(fd, on(1))
    await settle(1)
    assert engine.unwatch(fd) is True
    assert engine.unwatch(fd) is False
    os.eventfd_write(fd, 5)
    await settle()
    assert calls == {}
    assert pending(fd) == 5
    os.eventfd_write(fd, 7)
    engine.watch(fd, on(2))
    await until(lambda: calls == {2: 1})
    assert pending(fd) == 0


async def test_unwatch_during_dispatch(engine: DoorbellEngine, eventfds: Callable[[], int]) -> None:
    """Two doorbells ready at once, whose callbacks unwatch each other: only the first runs.
    A callback may unwatch itself and watch again."""
    order: list[str] = []
    a, b = eventfds(), eventfds()

    def on_a() -> None:
        order.append("a")
        engine.unwatch(b)

    def on_b() -> None:
        order.append("b")
        engine.unwatch(a)

    engine.watch(a, on_a)
    engine.watch(b, on_b)
    await settle(1)
    os.eventfd_write(a, 1)
    os.eventfd_write(b, 1)
    await until(lambda: bool(order))
    await settle()
    assert order in (["a"], ["b"])
    assert engine.statistics().watched == 1

    again: list[int] = []
    c = eventfds()

    def on_c() -> None:
        again.append(1)
        engine.unwatch(c)
        engine.watch(c, on_c)

    engine.watch(c, on_c)
    for n in range(1, 4):
        os.eventfd_write(c, 1)
        await until(lambda n=n: len(again) == n)  # type: ignore[misc]


async def test_a_failing_callback_is_reported_and_others_still_run(
    engine: DoorbellEngine, eventfds: Callable[[], int]
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[BaseException | None] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context.get("exception")))
    calls, on = counter()
    bad, good = eventfds(), eventfds()

    def explode() -> None:
        raise ValueError("boom")

    engine.watch(bad, explode)
    engine.watch(good, on(1))
    await settle(1)
    os.eventfd_write(bad, 1)
    os.eventfd_write(good, 1)
    await until(lambda: calls == {1: 1} and bool(reported))
    assert isinstance(reported[0], ValueError)
    os.eventfd_write(bad, 1)  # still watched
    await until(lambda: len(reported) == 2)
    loop.set_exception_handler(None)


async def test_closed_fds(engine: DoorbellEngine, eventfds: Callable[[], int]) -> None:
    """A closed fd cannot be watched; one closed while watched can still be unwatched; a new
    fd that gets the old number is a new doorbell, and the old watch does not fire for it."""
    calls, on = counter()
    fd = eventfds()
    os.close(fd)
    with pytest.raises(OSError) as info:
        engine.watch(fd, on(0))
    assert info.value.errno == errno.EBADF

    old = eventfds()
    engine.watch(old, on(1))
    await settle(1)
    os.close(old)  # closed under its watch
    await settle()
    assert engine.unwatch(old) is True
    new = eventfds()
    assert new == old, "the kernel hands out the lowest free number"
    engine.watch(new, on(2))
    await settle(1)
    os.eventfd_write(new, 1)
    await until(lambda: 2 in calls)
    await settle()
    assert calls == {2: 1}


async def test_close_with_watches_pending(
    engine: DoorbellEngine, eventfds: Callable[[], int]
) -> None:
    """Closing the engine drops every watch without a callback and leaves the fds and their
    counts to their owners; closing again is harmless; a closed engine takes no watches."""
    calls, on = counter()
    fds = [eventfds() for _ in range(5)]
    for i, fd in enumerate(fds):
        engine.watch(fd, on(i))
    await settle(1)
    os.eventfd_write(fds[0], 3)  # rung just before the close, not yet dispatched
    engine.close()
    engine.close()
    for fd in fds[1:]:
        os.eventfd_write(fd, 1)
    await settle()
    assert calls == {}
    assert [pending(fd) for fd in fds[1:]] == [1, 1, 1, 1]
    assert engine.statistics().watched == 0
    with pytest.raises(RuntimeError):
        engine.watch(fds[0], on(9))


async def test_each_loop_has_its_own_engine_of_the_chosen_kind() -> None:
    previous = doorbells.selection()
    try:
        doorbells.configure("epoll")
        loop = asyncio.get_running_loop()
        engine = doorbells.for_loop()
        assert isinstance(engine, EpollDoorbells)
        assert doorbells.for_loop(loop) is engine
        other = asyncio.new_event_loop()
        try:
            assert doorbells.for_loop(other) is not engine
        finally:
            doorbells.close_for(other)
            other.close()
        doorbells.close_for(loop)
        assert doorbells.for_loop(loop) is not engine
        doorbells.close_for(loop)
    finally:
        doorbells.configure(previous.requested)


# --- choosing the engine -----------------------------------------------------------------------


def test_epoll_is_taken_when_asked_for() -> None:
    chosen = doorbells.select("epoll")
    assert (chosen.engine, chosen.reason) == ("epoll", "")
    with pytest.raises(ValueError):
        doorbells.select("kqueue")
    with pytest.raises(ValueError):
        Config(io_engine="kqueue")


@needs_uring
def test_io_uring_is_taken_when_asked_for_and_available() -> None:
    assert doorbells.select("io_uring").engine == "io_uring"
    auto = doorbells.select("auto")
    assert auto.engine == doorbells.AUTO_PREFERS and auto.reason == doorbells.AUTO_REASON


# A child that cannot set up an io_uring, as under a container runtime's seccomp profile: a
# filter makes io_uring_setup fail with EPERM before the child imports faasd_py.
SECCOMPED = textwrap.dedent(
    """
    import ctypes, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)
    NR_IO_URING_SETUP = 425  # the same number on x86_64 and aarch64
    def stmt(code, k, jt=0, jf=0):
        return struct.pack("HBBI", code, jt, jf, k)
    prog = b"".join([
        stmt(0x20, 0),                                # ld [0]: the syscall number
        stmt(0x15, NR_IO_URING_SETUP, 0, 1),          # jeq io_uring_setup
        stmt(0x06, 0x00050000 | 1),                   # ret ERRNO(EPERM)
        stmt(0x06, 0x7FFF0000),                       # ret ALLOW
    ])
    buf = ctypes.create_string_buffer(prog)
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = Fprog(len(prog) // 8, ctypes.addressof(buf))
    assert libc.prctl(38, 1, 0, 0, 0) == 0                       # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0     # SECCOMP_MODE_FILTER
    from faasd_py.datapath import doorbells
    from faasd_py.errors import NativeUnavailable
    chosen = doorbells.select("auto")
    print(chosen.engine)
    print(chosen.reason)
    try:
        doorbells.select("io_uring")
    except NativeUnavailable as exc:
        print("refused:", exc)
    """
)


def run_child(code: str, **env: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


@pytest.mark.skipif(
    sys.platform != "linux" or os.uname().machine not in ("x86_64", "aarch64"),
    reason="the filter in this test knows x86_64 and aarch64 numbers",
)
def test_auto_falls_back_to_epoll_when_seccomp_denies_io_uring() -> None:
    engine, reason, refused = run_child(SECCOMPED)
    assert engine == "epoll"
    assert "io_uring unavailable" in reason and "Operation not permitted" in reason
    assert refused.startswith("refused: --io-engine io_uring: io_uring_setup failed")


def test_auto_falls_back_to_epoll_without_the_native_shim() -> None:
    code = (
        "from faasd_py.datapath import doorbells; c = doorbells.select('auto'); "
        "print(c.engine, c.reason)"
    )
    (line,) = run_child(code, FAASD_NO_NATIVE="1")
    assert line == "epoll io_uring unavailable: the native shim is disabled by FAASD_NO_NATIVE"


def test_up_takes_the_engine_from_a_flag_or_the_environment() -> None:
    from faasd_py.cli._local import up

    (option,) = [p for p in up.params if p.name == "io_engine"]
    assert option.envvar == "FAASD_IO_ENGINE"
    assert option.default == "auto"
