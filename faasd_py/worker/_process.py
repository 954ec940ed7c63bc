"""The process behind an instance, and how it is started: sandboxed or plain.

`sandbox`: the native launcher (faasd_py.isolation.sandbox): new namespaces, a root with only the
interpreter, the runtime and the function package (read-only), a private /tmp, secrets at
/var/openfaas/secrets, a cgroup with the function's memory, CPU and PID limits, seccomp.
`process`: a plain child process in its own session and folder, with an address-space rlimit:
the fallback where sandboxes cannot run (no shim, not root, no cgroup controllers).
Both give the instance the same view of paths it is told about on its command line. A
function's zygote (_zygote.py) is started here too, the same way, and forks its instances.

A sandbox is forked from the worker's base zygote (_base_zygote.py) where one runs: the same
SandboxSpec, built by the child of a process that has the interpreter and the runtime loaded,
instead of a fresh interpreter's start. Where the base cannot serve (not running, restarting,
a fork refused) the sandbox starts afresh, and the call does not notice but for the time.

Secrets are one folder per function (`SecretsFolder`), not per instance: every instance and
the zygote read the same files (a sandbox through a read-only bind mount of the folder), so
a secret's update, a rename in that folder, reaches them all at once, with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets as token
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from faasd_py.errors import NativeUnavailable
from faasd_py.isolation.cgroups import DEFAULT_PARENT, Cgroup, CgroupLimits
from faasd_py.isolation.sandbox import (
    SANDBOX_GID,
    SANDBOX_UID,
    SECRETS_PATH,
    ExitStatus,
    SandboxProcess,
    SandboxSpec,
    instance_mounts,
    prepare_secrets,
    python_layout,
    spawn,
    unavailable_reason,
    write_secret,
)
from faasd_py.worker._forkserver import ForkedChild, ZygoteFailed

if TYPE_CHECKING:
    from faasd_py.worker._base_zygote import BaseZygote

logger = logging.getLogger(__name__)

# Processes (and threads) one sandboxed instance may run: a fork bomb stops here.
PIDS_LIMIT = 256
_CGROUP_REMOVE_TRIES = 50


class InstanceProcess(Protocol):
    pid: int
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader

    async def wait(self) -> ExitStatus: ...

    def kill(self) -> None:
        """SIGKILL the instance and everything it started."""
        ...

    async def release(self) -> None:
        """After exit: give back what the process held (pidfd, cgroup). Idempotent."""
        ...

    def resume(self) -> None:
        """Let it run on, once the worker's end of its channel is open. An exec'd process
        never waits; a forked one waits for this (faasd_py.worker._zygote)."""
        ...


@dataclass(frozen=True)
class ProcessPlan:
    """What to run for one instance; the isolation decides where its paths point."""

    name: str  # the instance id
    python: str
    runtime_args: Sequence[str]  # after `-m faasd_py.runtime`, without --secrets-dir
    env: Mapping[str, str]
    workdir: Path
    function_dir: Path
    deps_dir: Path | None
    runtime_path: Path
    secrets_dir: Path  # the function's SecretsFolder
    pass_fds: Sequence[int]
    memory_bytes: int | None
    cpu: float | None
    cgroup_parent: str = DEFAULT_PARENT  # LaunchSettings.cgroup_parent


def resolve_isolation(requested: str) -> tuple[str, str | None]:
    """("sandbox" or "process", why not a sandbox) for the Config's isolation. Runs a trial
    sandbox once (cached): call it from a thread."""
    if requested == "process":
        return "process", "chosen with --isolation process"
    reason = unavailable_reason()
    if reason is None:
        return "sandbox", None
    if requested == "sandbox":
        raise NativeUnavailable(f"--isolation sandbox: sandboxes cannot run here: {reason}")
    logger.warning("instances run as plain processes: %s", reason)
    return "process", reason


class SecretsFolder:
    """The secrets of one function, as files that all its instances (and its zygote, so its
    forks and spares) read: at SECRETS_PATH, a read-only bind mount of the folder, in a
    sandbox; at the folder's own path under --isolation process. Readable by the instances'
    user only: owned by SANDBOX_UID in a sandbox, by the worker's user otherwise. Create with
    `SecretsFolder.create`; `remove` once no instance is left."""

    def __init__(self, path: Path, uid: int, gid: int) -> None:
        self.path = path
        self._uid = uid
        self._gid = gid

    @classmethod
    def create(
        cls, parent: Path, function: str, isolation: str, secrets: Mapping[str, bytes]
    ) -> SecretsFolder:
        # The parent is the worker's alone: a sandbox opens its mounts' sources as root,
        # before it takes its own id (faasd_py.modes).
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = parent / f"{function}-{token.token_hex(4)}"
        if isolation == "sandbox":
            uid, gid = SANDBOX_UID, SANDBOX_GID
        else:
            uid, gid = os.geteuid(), os.getegid()
        prepare_secrets(path, secrets, uid=uid, gid=gid)
        return cls(path, uid, gid)

    def update(self, secrets: Mapping[str, bytes]) -> None:
        """Replace these secrets' files, each atomically: a running instance reads the new
        value from its next open, and never a part-written file."""
        for name, value in secrets.items():
            write_secret(self.path, name, value, uid=self._uid, gid=self._gid)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


async def start(
    isolation: str, plan: ProcessPlan, base: BaseZygote | None = None
) -> InstanceProcess:
    """Start the process of `plan`; sandboxed, forked from `base` where it serves."""
    if isolation == "sandbox":
        return await _start_sandboxed(plan, base)
    return await _start_plain(plan)


def interpreter_env(runtime_path: Path) -> dict[str, str]:
    """What every runtime interpreter's environment holds, the base zygote's included (its
    flags, like PYTHONSAFEPATH's, are read at its start and hold in its forks)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": str(runtime_path),
        "PYTHONSAFEPATH": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _base_env(plan: ProcessPlan, home: str, secrets_dir: str) -> dict[str, str]:
    env = dict(plan.env)
    env.update(interpreter_env(plan.runtime_path))
    env.update({"HOME": home, "TMPDIR": home, "FAASD_SECRETS_DIR": secrets_dir})
    return env


# --- plain processes -------------------------------------------------------------------------


class _PlainProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None and process.stderr is not None
        self.pid = process.pid
        self.stdout = process.stdout
        self.stderr = process.stderr
        self._process = process

    async def wait(self) -> ExitStatus:
        return ExitStatus(await self._process.wait())

    def kill(self) -> None:
        # Its own session and process group: what the handler forked dies with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    async def release(self) -> None:
        pass

    def resume(self) -> None:
        pass


async def _start_plain(plan: ProcessPlan) -> InstanceProcess:
    tmp = plan.workdir / "tmp"
    plan.workdir.mkdir(mode=0o700)
    tmp.mkdir(mode=0o700)
    argv = [plan.python, "-S", "-s", "-m", "faasd_py.runtime", *plan.runtime_args]
    argv.append(f"--secrets-dir={plan.secrets_dir}")
    if plan.memory_bytes is not None:
        argv.append(f"--memory-limit={plan.memory_bytes}")
    env = _base_env(plan, str(tmp), str(plan.secrets_dir))
    # Per-thread malloc arenas reserve address space that the RLIMIT_AS would count.
    env["MALLOC_ARENA_MAX"] = "2"
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=tuple(plan.pass_fds),
        cwd=plan.workdir,
        env=env,
        start_new_session=True,
    )
    return _PlainProcess(process)


# --- sandboxes -------------------------------------------------------------------------------


class _SandboxedProcess:
    """pid 1 of a sandbox: exec'd (SandboxProcess) or forked from the base (ForkedChild)."""

    def __init__(
        self,
        process: SandboxProcess | ForkedChild,
        cgroup: Cgroup,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
    ) -> None:
        self.pid = process.pid
        self.stdout = stdout
        self.stderr = stderr
        self._process = process
        self._cgroup: Cgroup | None = cgroup

    async def wait(self) -> ExitStatus:
        return await self._process.wait()

    def kill(self) -> None:
        # pid 1 of its PID namespace: the kernel kills every other process in it too.
        self._process.kill()

    def resume(self) -> None:
        if isinstance(self._process, ForkedChild):  # it waits for this to run its runtime
            self._process.resume()

    async def release(self) -> None:
        self._process.close()
        if self._cgroup is not None:
            cgroup, self._cgroup = self._cgroup, None
            await remove_cgroup(cgroup)


async def _start_sandboxed(plan: ProcessPlan, base: BaseZygote | None) -> InstanceProcess:
    layout = python_layout(plan.python)
    plan.workdir.mkdir(mode=0o700)
    root = plan.workdir.parent / ".root"  # empty: each sandbox mounts its own root over it
    root.mkdir(mode=0o700, exist_ok=True)
    limits = CgroupLimits(memory_bytes=plan.memory_bytes, cpu=plan.cpu, pids=PIDS_LIMIT)
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    args = [*plan.runtime_args, f"--secrets-dir={SECRETS_PATH}"]
    spec = SandboxSpec(
        argv=[layout.executable, "-S", "-s", "-m", "faasd_py.runtime", *args],
        root_dir=root,
        mounts=instance_mounts(
            layout, plan.runtime_path, plan.function_dir, plan.deps_dir, plan.secrets_dir
        ),
        symlinks=layout.symlinks,
        env=_base_env(plan, "/tmp", SECRETS_PATH),
        stdout=out_write,
        stderr=err_write,
        pass_fds=tuple(plan.pass_fds),
        hostname=plan.name[:63],
    )
    cgroup: Cgroup | None = None
    try:
        process: SandboxProcess | ForkedChild | None = None
        if base is not None:
            with contextlib.suppress(ZygoteFailed):  # base.fork logs why
                process, cgroup = await base.fork(spec, args, plan.name, limits)
        if process is None:
            cgroup = Cgroup.create(plan.name, limits, parent=plan.cgroup_parent)
            # The launcher blocks for the few milliseconds the child needs to build its root.
            process = await _spawn_in_thread(replace(spec, cgroup=cgroup))
    except BaseException:
        for fd in (out_read, err_read):
            os.close(fd)
        if cgroup is not None:
            await remove_cgroup(cgroup)
        raise
    finally:
        os.close(out_write)
        os.close(err_write)
    assert cgroup is not None  # made, or given by the base with its sandbox
    return _SandboxedProcess(
        process, cgroup, await pipe_reader(out_read), await pipe_reader(err_read)
    )


async def _spawn_in_thread(spec: SandboxSpec) -> SandboxProcess:
    """spawn(spec) in a thread, safe to cancel: the launcher goes on using the spec's fds (by
    number) until it returns, so a cancelled caller waits for it, kills what it started, and only
    then lets its fds be closed; closing them earlier could hand their numbers to another launch."""
    spawning = asyncio.ensure_future(asyncio.to_thread(spawn, spec))
    try:
        return await asyncio.shield(spawning)
    except asyncio.CancelledError:
        try:
            late = await spawning
        except BaseException:  # the launch failed (or was cancelled again): nothing started
            raise asyncio.CancelledError from None
        late.close()  # kills the sandbox and reaps it
        raise


class _PipeReaderProtocol(asyncio.StreamReaderProtocol):
    """Closes the pipe at its end. uvloop's read-pipe transport keeps the descriptor open after
    the end of the stream (asyncio's closes it), so each instance's stdout and stderr stayed
    open in the worker for good: two descriptors per cold start, past 1,024 after some
    hundreds, and on to EMFILE."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._pipe = transport
        super().connection_made(transport)

    def eof_received(self) -> bool:
        super().eof_received()
        self._pipe.close()
        return False


async def pipe_reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1024 * 1024)
    await loop.connect_read_pipe(
        lambda: _PipeReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader


async def remove_cgroup(cgroup: Cgroup) -> None:
    # After pid 1 dies the kernel reaps the rest of the namespace; that can take a moment.
    for _ in range(_CGROUP_REMOVE_TRIES):
        try:
            cgroup.remove()
            return
        except OSError:
            cgroup.kill()
            await asyncio.sleep(0.01)
    logger.warning("cgroup %s still busy after its sandbox exited; left in place", cgroup)
