"""The zygote: a runtime that has imported the handler once and forks instances on request.

`python -m faasd_py.runtime --zygote=FD ...` (the function's usual flags, no channel) imports
the handler, then serves its control socket (FD, SOCK_SEQPACKET, one msgpack message per
packet) until the worker closes it:

    zygote -> worker  {"op": "ready", "pid"} | {"op": "load_failed", "error"}
    worker -> zygote  {"op": "fork", "id"} + SCM_RIGHTS: stdout, stderr, start socket
    zygote -> worker  {"op": "forked", "id", "pid"} | {"op": "fork_failed", "id", "error"}
    zygote -> worker  {"op": "exited", "pid", "status"}  (returncode: the code, or -signal)

Pids here are the zygote's own (in a sandbox, those of its PID namespace). The worker learns a
child's host pid from the child itself: the child's first packet on its start socket carries
its credentials (the worker's end has SO_PASSCRED), and the kernel translates the pid into the
worker's namespace. The worker moves it into a cgroup of its own; the child, a spare, waits.
When an instance is needed, the worker sends it on the start socket its flags and its
channel's fds ({"argv", "fds"} + SCM_RIGHTS), then a go-ahead once the worker's end of the
channel is open. No user code runs before its limits hold, and neither the fork nor the cgroup
move (a v1 migration can take ~10 ms) is on a cold start's clock: Android's zygote keeps such
spares (its USAP pool) for the same reason.

The zygote must stay single-threaded: fork copies only the calling thread, so a lock that
another thread held at the fork stays locked for ever in the child. The loop here uses
select and a SIGCHLD wakeup fd, no threads; a handler that starts threads at import is warned
about in the logs (see the README: do that in the first invocation instead).
"""

from __future__ import annotations

import argparse
import array
import contextlib
import gc
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import msgpack

from faasd_py.fdwait import wait_readable
from faasd_py.runtime._loader import Handler, load_handler
from faasd_py.runtime._serve import describe_error as _describe

# The runtime flags that name a descriptor: a forked child gets them renumbered, since fds
# passed by SCM_RIGHTS arrive under numbers of the zygote's choosing.
FD_OPTIONS = ("fd", "doorbell_fd", "worker_pidfd")
_MAX_PACKET = 64 * 1024
_MAX_FDS = 16  # stdout, stderr and start socket; or a channel's few fds

Parse = Callable[[list[str]], argparse.Namespace]
Loaded = tuple[Handler, bool]


def run(args: argparse.Namespace, parse: Parse) -> tuple[argparse.Namespace, Loaded]:
    """Import the handler, then fork instances until the worker is done. Returns only in a
    forked instance: its parsed flags and the handler, for the usual serve()."""
    control = socket.socket(fileno=args.zygote)
    control.setblocking(True)
    # First: what the instances import from the runtime must be the runtime's own modules
    # (msgpack for the shm channel), imported before the handler's dependencies can shadow them.
    _preload()
    try:
        loaded = load_handler(args.function_dir, args.deps_dir)
    except BaseException as exc:
        traceback.print_exc()
        send(control, {"op": "load_failed", "error": _describe(exc)})
        exit_now(1)
    if loaded[1] or args.max_inflight > 1:
        import asyncio  # noqa: F401  (the instance's loop will need it)
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        print(
            f"faasd-py: the handler started threads at import ({names}); forked instances do "
            "not inherit them, and a lock one of them held at a fork stays locked in the "
            "instance. Start threads in the first invocation instead.",
            file=sys.stderr,
        )
    # Out of the collector's reach: a collection in a forked child would otherwise write to
    # (and so copy) every page of the zygote's objects. Python's documented recipe for fork.
    gc.freeze()
    send(control, {"op": "ready", "pid": os.getpid()})
    _, fds = serve_forks(control)
    return _become_instance(control, fds, args, parse), loaded


def _preload() -> None:
    """Import now what an instance would import after the fork, on its cold start's clock:
    the shm channel's module and the native shim (~25 ms); asyncio once the handler is loaded,
    where the instance's loop will need it. (Imports only: nothing here starts a thread.)"""
    with contextlib.suppress(ImportError):
        import faasd_py.datapath.shm  # noqa: F401


def serve_forks(control: socket.socket, *, base: bool = False) -> tuple[dict[str, Any], list[int]]:
    """The zygote's loop; returns only in a forked child, with its request and the fds that
    came with it. A function's zygote forks on requests with exactly three fds, announces each
    child ("forked") and reports its exit; at the end of its control socket it kills them.
    The base zygote (`base`, faasd_py.runtime._base) forks an intermediate on each "spare"
    request (one fd: its socket), which announces itself, takes its one request there and
    exits once it has forked a sandbox, leaving the sandbox to the base (a subreaper), which
    reports the exits of those adopted processes; they outlive it."""
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    # A Python-level handler, so that SIGCHLD writes to the wakeup fd (and is not ignored).
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()  # its own children (base: the intermediates, not reported)
    while True:
        readable = wait_readable([control.fileno(), wake_read])
        if wake_read in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_read, 512):
                    pass
        # Reap on every turn: as pid 1 of a sandbox, the zygote also inherits the orphans of
        # its instances (a handler's own children) and must reap those too.
        _reap(control, children, base)
        if control.fileno() not in readable:
            continue
        request, fds = receive(control)
        if request is None:  # the worker closed the socket: the function is gone
            for pid in () if base else children:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            exit_now(0)
        op, count = ("spare", 1) if base else ("fork", 3)
        if request.get("op") != op or len(fds) != count:
            close_all(fds)
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            close_all(fds)
            send(control, {"op": "fork_failed", "id": request["id"], "error": _describe(exc)})
            continue
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(wake_read)
            os.close(wake_write)
            return request, fds
        children.add(pid)
        close_all(fds)
        if not base:
            send(control, {"op": "forked", "id": request["id"], "pid": pid})


def _reap(control: socket.socket, children: set[int], base: bool) -> None:
    """Reap what exited; report a function zygote's children, or what the base adopted."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ours = pid in children
        children.discard(pid)
        if ours != base:
            send(control, {"op": "exited", "pid": pid, "status": os.waitstatus_to_exitcode(status)})


def _become_instance(
    control: socket.socket,
    fds: list[int],
    zygote_args: argparse.Namespace,
    parse: Parse,
) -> argparse.Namespace:
    """In the forked child: say hello, wait as a spare for an instance's flags and channel,
    then for the go-ahead; the instance's parsed flags."""
    control.close()
    os.setsid()  # its own process group: the worker kills it and what it forks as one
    stdout, stderr, start_fd = fds
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.close(stdout)
    os.close(stderr)
    with socket.socket(fileno=start_fd) as start:
        # Its credentials travel with this packet: the worker reads the host pid from them.
        start.send(b"hello")
        assignment, channel_fds = receive(start)
        if assignment is None:  # the worker dropped this spare: the function is gone
            exit_now(0)
        argv = [*assignment["argv"], f"--secrets-dir={zygote_args.secrets_dir}"]
        args = parse(argv)
        # Its own flags, as an exec'd instance has them (/proc/self/cmdline keeps showing the
        # zygote's: rewriting it takes CAP_SYS_RESOURCE, which a sandbox does not have).
        sys.argv[1:] = argv
        renumber = dict(zip(assignment["fds"], channel_fds, strict=True))
        for option in FD_OPTIONS:
            value = getattr(args, option, None)
            if value is not None:
                setattr(args, option, renumber[value])
        if start.recv(1) != b"g":  # the worker gave up on this instance
            exit_now(0)
    return args


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the fds that came with it; None at end of stream."""
    fds = array.array("i")
    try:
        data, ancillary, _, _ = sock.recvmsg(
            _MAX_PACKET, socket.CMSG_SPACE(_MAX_FDS * fds.itemsize)
        )
    except ConnectionError:
        return None, []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        close_all(list(fds))
        return None, []
    message = msgpack.unpackb(data)
    return (message if isinstance(message, dict) else {}), list(fds)


def send(control: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the worker is gone; its EOF ends the loop
        control.send(msgpack.packb(message))


def close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def exit_now(code: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
