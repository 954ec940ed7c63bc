"""The base zygote: one per worker, never sandboxed, never running any function's code.

`python -S -s -m faasd_py.runtime._base --control=FD` imports the interpreter's and faasd-py's
runtime modules and the standard library modules that functions commonly use, once, freezes
them out of the collector's reach (`gc.freeze()`: a forked child's collections then copy none
of their pages), and forks on request. Each child builds a function's whole sandbox around
itself before it imports anything of the function (SOCK, ATC'18):

    base (host, root) --fork--> intermediate --sandbox_fork--> instance (pid 1 of its sandbox)

The intermediate exists because the base must stay single-threaded and untouched by what a
child does, and because a PID namespace has to start at a new process: it forks the instance
with the native launcher (faasd_py.isolation.sandbox.fork_sandboxed: new user, PID, mount, IPC,
UTS and network namespaces; the function's private root with its package and secrets; its
cgroup joined by the launcher before the child runs; rlimits, no capabilities, no_new_privs,
the seccomp filter last), announces the instance's pid and exits. The base, a subreaper, adopts
the instance and reports its exit. Only once all of that holds does the instance set its
environment, wait for the worker's go-ahead and run the runtime's main with its flags, which
imports the handler: module-level code of a function never runs outside its sandbox.

The control protocol is faasd_py/runtime/_zygote.py's, with these requests and answers:

    base -> worker          {"op": "ready", "pid"}
    worker -> base          {"op": "spare", "id"} + SCM_RIGHTS: the intermediate's socket
    intermediate -> worker  {"op": "forked", "id", "pid": its own}, then, on its socket:
    worker -> intermediate  {"op": "fork", "id", "spec", "fds", "runtime_args"} + SCM_RIGHTS:
                            the start socket, then one fd per entry of "fds" (the number it
                            takes in the sandbox); "spec": isolation.sandbox.spec_to_wire
    intermediate -> worker  {"op": "forked", "id", "pid"} | {"op": "fork_failed", "id", "error"}
    base -> worker          {"op": "exited", "pid", "status"}

The base itself never receives a function's spec (its environment and paths): what it once
held would linger in its memory, and so in every later fork of it, another function's
sandbox. An intermediate is usually forked ahead, a spare, and moved into a cgroup meanwhile,
where the instance it forks is then born: neither the base's fork nor the cgroup move
(milliseconds on cgroup v1) is on the cold start's clock.

Pids are host pids: the base runs in the worker's PID namespace. A function's own zygote
(`runtime_args` with --zygote) is started this way too, and forks that function's instances
inside its sandbox as before.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import msgpack

from faasd_py.isolation.sandbox import become_subreaper, fork_sandboxed, spec_from_wire
from faasd_py.runtime._loader import load_handler
from faasd_py.runtime._serve import describe_error
from faasd_py.runtime._zygote import exit_now, receive, send, serve_forks

# Imported once here so that no cold start pays for them: the runtime (its channel, the
# native shim, the loader) and what handlers commonly import. Missing ones are skipped.
PRELOAD = (
    "faasd_py.runtime",
    "faasd_py.runtime.__main__",
    "faasd_py.runtime._serve",
    "faasd_py.runtime._zygote",
    "faasd_py.datapath.shm",
    "asyncio",
    "base64",
    "collections",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "email.utils",
    "enum",
    "functools",
    "gzip",
    "hashlib",
    "hmac",
    "html",
    "http",
    "io",
    "itertools",
    "json",
    "logging",
    "math",
    "pathlib",
    "random",
    "re",
    "secrets",
    "statistics",
    "string",
    "struct",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "traceback",
    "typing",
    "urllib.parse",
    "uuid",
    "zlib",
)


# Flags of the runtime's kind, parsed once in the base before it forks.
_REHEARSAL = [
    "--channel=shm",
    "--fd=3",
    "--function-name=base",
    "--function-dir=/",
    "--secrets-dir=/",
    "--max-frame=1",
    "--max-body=1",
]


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="faasd_py.runtime._base")
    parser.add_argument("--control", type=int, required=True, metavar="FD")
    # Its value is only room: each fork writes its own command line over this process's.
    parser.add_argument("--room", default="")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    control = socket.socket(fileno=args.control)
    control.setblocking(True)
    for module in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    from faasd_py.runtime import __main__ as runtime_main

    runtime_main.parse(_REHEARSAL)  # its parser built, and what parsing first builds
    become_subreaper()
    gc.freeze()
    send(control, {"op": "ready", "pid": os.getpid()})
    request, fds = serve_forks(control, base=True)
    request, fds = _intermediate(control, request, fds)
    _sandbox(control, request, fds)


def _intermediate(
    control: socket.socket, request: dict[str, Any], fds: list[int]
) -> tuple[dict[str, Any], list[int]]:
    """In an intermediate: announce itself (the worker may move it into a cgroup, the slow
    part of a start on cgroup v1), then wait on its own socket for its request."""
    with socket.socket(fileno=fds[0]) as spare:
        send(control, {"op": "forked", "id": request.get("id"), "pid": os.getpid()})
        assigned, assigned_fds = receive(spare)
    if assigned is None or not assigned_fds:  # dropped: the worker has no use for it
        exit_now(0)
    return assigned, assigned_fds


def _sandbox(control: socket.socket, request: dict[str, Any], fds: list[int]) -> NoReturn:
    """In the intermediate: fork the instance into its sandbox; announce it, or the failure."""
    forked_at = time.monotonic_ns()
    start, passed = fds[0], fds[1:]
    try:
        targets = [int(fd) for fd in request["fds"]]
        if len(targets) != len(passed):
            raise ValueError(f"{len(passed)} descriptors came for {len(targets)} numbers")
        # The start socket goes above every number the runtime is told about.
        start_target = max([2, *targets]) + 1
        spec = spec_from_wire(
            request["spec"], [(start, start_target), *zip(passed, targets, strict=True)]
        )
        runtime_args = [str(arg) for arg in request["runtime_args"]]
        forked = fork_sandboxed(spec)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        send(control, {"op": "fork_failed", "id": request.get("id"), "error": describe_error(exc)})
        exit_now(0)
    if forked.pid:
        os.close(forked.pidfd)
        send(control, {"op": "forked", "id": request["id"], "pid": forked.pid})
        exit_now(0)
    # The instance, in its sandbox: the launcher closed the control socket's descriptor.
    control.detach()
    timeline = {"forked": forked_at, **forked.stamps, "returned": time.monotonic_ns()}
    _run_function(spec.env, runtime_args, start_target, timeline)


def _run_function(
    env: Mapping[str, str], runtime_args: list[str], start_fd: int, timeline: dict[str, int]
) -> NoReturn:
    """Become what `python -m faasd_py.runtime RUNTIME_ARGS` with `env` would be, once the
    worker says go (its end of the channel is open). An instance imports its handler first
    and tells the worker when each step was done (`timeline`, a cold start's breakdown)."""
    os.environ.clear()
    os.environ.update(env)
    name = next((a.split("=", 1)[1] for a in runtime_args if a.startswith("--function-name=")), "")
    if name:
        # What `ps` and /proc/PID/comm show for it: the function, not the base.
        with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
            comm.write(name[:15])
    with contextlib.suppress(OSError, ValueError, IndexError):
        _retitle([sys.executable, "-m", "faasd_py.runtime", *runtime_args])
    from faasd_py.runtime import __main__ as runtime_main

    sys.argv = [runtime_main.__file__ or "faasd_py.runtime", *runtime_args]
    args = runtime_main.parse(runtime_args)
    with socket.socket(fileno=start_fd) as start:
        timeline["waiting"] = time.monotonic_ns()
        if start.recv(1) != b"g":  # the worker gave up on this instance
            exit_now(0)
        timeline["resumed"] = time.monotonic_ns()
        loaded = None
        if args.zygote is None:
            # As serve() would, but timed; a failure is left to serve(), which reports it.
            with contextlib.suppress(BaseException):
                loaded = load_handler(args.function_dir, args.deps_dir)
            timeline["imported"] = time.monotonic_ns()
        with contextlib.suppress(OSError):
            start.send(msgpack.packb(timeline))
    runtime_main.main(runtime_args, loaded)
    exit_now(0)


def _retitle(argv: list[str]) -> None:
    """Show `argv` as this process's command line (/proc/PID/cmdline, `ps`), as an exec'd
    instance's would read, in the room the base's own left (--room): the kernel shows what
    the memory between the process's arg_start and arg_end holds, which the process may
    rewrite through /proc/self/mem (setproctitle's way; prctl's takes CAP_SYS_RESOURCE)."""
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()  # from field 3, the state, on
    start, end = int(fields[45]), int(fields[46])  # fields 48 and 49: arg_start, arg_end
    title = b"\0".join(os.fsencode(arg) for arg in argv)[: end - start - 1]
    with open("/proc/self/mem", "r+b", buffering=0) as memory:
        memory.seek(start)
        memory.write(title.ljust(end - start, b"\0"))


if __name__ == "__main__":
    main()
