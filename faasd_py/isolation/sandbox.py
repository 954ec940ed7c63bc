"""Sandboxes: a process in its own namespaces, root, cgroup and seccomp filter.

`spawn(SandboxSpec) -> SandboxProcess` calls the C launcher (native/sandbox.c; C because
nothing Python may run between fork and exec in a threaded parent). The child gets new user,
PID, mount, IPC, UTS and network namespaces; a root of its own in which only the `mounts` are
visible (read-only unless said otherwise), a private /tmp and /dev/shm, a minimal /dev and its
own /proc; rlimits, no capabilities, no_new_privs and a seccomp filter (see native/sandbox.h
for the list of what it denies); only the descriptors it is given. The worker waits for it
with `await process.wait()`, which also says whether it was killed for running out of memory.

Identity. uid and gid 0 inside map to one unprivileged host id, SANDBOX_UID / SANDBOX_GID
(100000: outside the range of system and login users, like the first subordinate id range),
never to host root. A process that broke out of its namespaces would be that nobody on the
host, and inside, host files owned by root keep their "other" permissions only (root's
CAP_DAC_OVERRIDE in the namespace does not reach files whose owner it cannot map). So the files
a sandbox reads must be world-readable (the default umask makes them so), and its secrets must
belong to SANDBOX_UID: `prepare_secrets` writes them that way, and `write_secret` replaces one
while sandboxes read the folder (a rename, which their bind mount of the folder shows at once).

The worker's layout, with host paths mirrored so that no argument needs rewriting:

    layout = python_layout(settings.python)             # once per worker: runs the interpreter
    cgroup = Cgroup.create(instance_id, CgroupLimits(memory_bytes=..., cpu=..., pids=...))
    prepare_secrets(secrets_dir, secrets)               # once per function; write_secret updates
    process = spawn(SandboxSpec(
        argv=[layout.executable, "-S", "-s", "-m", "faasd_py.runtime", f"--fd={fd}", ...,
              f"--secrets-dir={SECRETS_PATH}"],
        root_dir=workdir / "root",                      # an empty directory: stays empty
        mounts=instance_mounts(layout, runtime_path, function_dir, deps_dir, secrets_dir),
        symlinks=layout.symlinks,
        env={..., "HOME": "/tmp", "TMPDIR": "/tmp", "PYTHONPATH": str(runtime_path)},
        stdout=out_w, stderr=err_w, pass_fds=[fd], cgroup=cgroup,
    ))
    status = await process.wait()                       # status.oom_killed: "out of memory"
    process.close(); cgroup.remove()

`spawn` blocks for the few milliseconds the child needs to build its root (the C call
releases the GIL): call it from a thread (`asyncio.to_thread`) where that matters.

`fork_sandboxed(spec)` builds the same sandbox by a fork: it returns the child's pid in the
caller and 0 in the child, which goes on running the caller's Python in its finished sandbox
(seccomp installed, every descriptor it was not given closed), and never executes anything.
The base zygote (faasd_py.runtime._base) uses it, from a single-threaded process, so that a
cold start costs a fork rather than an interpreter's start; a spec travels there as
`spec_to_wire(spec)` and comes back with `spec_from_wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import resource
import secrets as secrets_token
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from faasd_py import native
from faasd_py.errors import NativeUnavailable
from faasd_py.fdwait import wait_readable
from faasd_py.isolation.cgroups import Cgroup, Hierarchy, detect

__all__ = [
    "DEFAULT_TMP_SIZE",
    "SANDBOX_GID",
    "SANDBOX_UID",
    "SECRETS_PATH",
    "ExitStatus",
    "Forked",
    "Mount",
    "PythonLayout",
    "SandboxProcess",
    "SandboxSpec",
    "Symlink",
    "become_subreaper",
    "fd_pairs",
    "fork_sandboxed",
    "instance_mounts",
    "prepare_secrets",
    "python_layout",
    "runtime_mounts",
    "spawn",
    "spec_from_wire",
    "spec_to_wire",
    "unavailable_reason",
    "write_secret",
]

SANDBOX_UID = 100_000
SANDBOX_GID = 100_000
SECRETS_PATH = "/var/openfaas/secrets"  # where OpenFaaS functions find their secrets
DEFAULT_TMP_SIZE = 64 * 1024 * 1024

# Library directories the interpreter and its extension modules load from, mirrored as they
# are on the host (on merged-/usr systems /lib and /lib64 are symlinks into /usr).
_LIBRARY_DIRS = (
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
    "/usr/libx32",
)
_LD_CACHE = "/etc/ld.so.cache"


@dataclass(frozen=True)
class Mount:
    """`source` (a host path; None for an empty directory) at `target` in the sandbox."""

    target: str
    source: Path | None = None
    writable: bool = False

    @classmethod
    def bind(
        cls, source: Path | str, target: str | None = None, *, writable: bool = False
    ) -> Mount:
        """Bind `source` at `target`, by default at its own path (mirrored)."""
        return cls(str(target or source), Path(source), writable)

    @classmethod
    def empty(cls, target: str) -> Mount:
        """An empty read-only directory at `target`: hides what an earlier mount put there."""
        return cls(str(target))


@dataclass(frozen=True)
class Symlink:
    """A symlink at `path` in the sandbox, pointing to `target`."""

    path: str
    target: str


def _default_rlimits() -> dict[int, tuple[int, int]]:
    return {resource.RLIMIT_CORE: (0, 0)}  # no core files: they could hold secrets


@dataclass(frozen=True)
class SandboxSpec:
    """What to run in a sandbox and what it may see and use.

    `argv[0]` (or `executable`) is a path inside the sandbox. `root_dir` is an empty host
    directory: the sandbox mounts its root tmpfs on it in its own mount namespace, so nothing
    is ever written there and one directory may serve many sandboxes. `stdin`, `stdout` and
    `stderr` are the caller's descriptors for 0-2 (None: /dev/null); `pass_fds` keep their
    numbers. `netns_fd` joins an existing network namespace (the `net` channel mode) instead
    of a new empty one. `die_with_parent` kills the sandbox when the *thread* that spawned it
    exits: use it only from a thread that lives as long as the worker. `moved_fds` are
    (caller's fd, fd in the sandbox) pairs, for descriptors that take another number inside.
    """

    argv: Sequence[str]
    root_dir: Path
    mounts: Sequence[Mount] = ()
    symlinks: Sequence[Symlink] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    executable: str | None = None
    cwd: str = "/tmp"
    hostname: str = "sandbox"
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    pass_fds: Sequence[int] = ()
    rlimits: Mapping[int, tuple[int, int]] = field(default_factory=_default_rlimits)
    tmp_size: int = DEFAULT_TMP_SIZE
    cgroup: Cgroup | None = None
    netns_fd: int | None = None
    uid: int = SANDBOX_UID
    gid: int = SANDBOX_GID
    die_with_parent: bool = False
    moved_fds: Sequence[tuple[int, int]] = ()


@dataclass(frozen=True)
class ExitStatus:
    """How a sandbox ended. `returncode` as subprocess has it: the exit code, or -signal."""

    returncode: int
    oom_killed: bool = False  # the OOM killer killed a process of its cgroup
    # False when no parent was left to tell the status (a base zygote's child whose zygote
    # died first): `returncode` is then a stand-in.
    known: bool = True

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None

    def describe(self) -> str:
        """Words for logs and errors: "ran out of memory", "was killed by SIGKILL", ..."""
        if self.oom_killed:
            return "ran out of memory (killed at its memory limit)"
        if not self.known:
            return "exited (how is unknown: its base zygote was gone)"
        if self.signal is not None:
            try:
                return f"was killed by {signal.Signals(self.signal).name}"
            except ValueError:
                return f"was killed by signal {self.signal}"
        return f"exited with code {self.returncode}"


class SandboxProcess:
    """A started sandbox: its pid 1 as seen from the caller, and a pidfd to wait on."""

    def __init__(self, pid: int, pidfd: int, cgroup: Cgroup | None) -> None:
        self.pid = pid
        self.cgroup = cgroup
        self._pidfd = pidfd
        self._status: ExitStatus | None = None
        self._waiter: asyncio.Future[ExitStatus] | None = None

    def __repr__(self) -> str:
        return f"SandboxProcess(pid={self.pid}, status={self._status})"

    @property
    def pidfd(self) -> int:
        """A pidfd of the process: readable once it has exited. -1 once closed."""
        return self._pidfd

    @property
    def returncode(self) -> int | None:
        return None if self._status is None else self._status.returncode

    def poll(self) -> ExitStatus | None:
        """Reap the process if it has exited; its status, or None while it runs."""
        if self._status is not None:
            return self._status
        result = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
        if result is None or result.si_pid == 0:
            return None
        code = result.si_status if result.si_code == os.CLD_EXITED else -result.si_status
        oom = False
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                oom = self.cgroup.oom_kills() > 0
        self._status = ExitStatus(code, oom)
        return self._status

    async def wait(self) -> ExitStatus:
        """Wait for the process to exit, in the running event loop (on its pidfd)."""
        status = self.poll()
        if status is not None:
            return status
        if self._waiter is None:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[ExitStatus] = loop.create_future()
            pidfd = self._pidfd

            def exited() -> None:
                status = self.poll()
                if status is not None:
                    loop.remove_reader(pidfd)
                    if not waiter.done():
                        waiter.set_result(status)

            loop.add_reader(pidfd, exited)
            self._waiter = waiter
        # shield: one cancelled waiter must not cancel the others' future.
        return await asyncio.shield(self._waiter)

    def wait_blocking(self, timeout: float | None = None) -> ExitStatus:
        """Wait without an event loop; TimeoutError after `timeout` seconds."""
        status = self.poll()
        if status is None:
            readable = wait_readable([self._pidfd], timeout)
            status = self.poll() if readable else None
        if status is None:
            raise TimeoutError(f"sandbox {self.pid} still running after {timeout}s")
        return status

    def send_signal(self, sig: int) -> None:
        """Signal pid 1 of the sandbox. Note: as pid 1 of its namespace it ignores signals it
        has no handler for, except SIGKILL (and SIGSTOP)."""
        if self._status is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def kill(self) -> None:
        """SIGKILL pid 1: the kernel then kills every process of its PID namespace."""
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Kill the sandbox if it still runs, reap it and close the pidfd."""
        if self._pidfd < 0:
            return
        if self.poll() is None:
            self.kill()
            self.wait_blocking()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            # The loop never saw the exit: stop watching the descriptor before it closes.
            with contextlib.suppress(RuntimeError):  # a closed loop
                waiter.get_loop().remove_reader(self._pidfd)
            waiter.set_result(self.poll() or ExitStatus(-signal.SIGKILL))
        os.close(self._pidfd)
        self._pidfd = -1

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def spawn(spec: SandboxSpec) -> SandboxProcess:
    """Start `spec` in a new sandbox; returns once the program has been executed.

    ValueError for a spec that cannot work; OSError(errno, strerror, step) if the kernel
    refused a step (e.g. `[Errno 2] No such file or directory: 'open /missing'`);
    NativeUnavailable without the compiled shim.
    """
    pid, pidfd, _ = _launch(spec, fork=False)
    return SandboxProcess(pid, pidfd, spec.cgroup)


class Forked(NamedTuple):
    """What `fork_sandboxed` returns: in the caller the child's pid and a pidfd; in the child
    pid 0, pidfd -1 and `stamps`, CLOCK_MONOTONIC (time.monotonic_ns) at each launcher step:
    "clone" (the caller, before it), "child" (after it), "go" (ids mapped, cgroups joined),
    "root" (root built and entered), "sealed" (limits, capabilities, seccomp done)."""

    pid: int
    pidfd: int
    stamps: dict[str, int]


_STAMPS = ("clone", "child", "go", "root", "sealed")  # sandbox.h's SANDBOX_STAMP_* order


def fork_sandboxed(spec: SandboxSpec) -> Forked:
    """Fork into a new sandbox: (pid, pidfd) of the child in the caller, once its sandbox is
    complete; pid 0 in the child, which runs on from here inside it. `spec.argv`, `env` and
    `executable` are not used: the child sets what it needs. Only from a single-threaded
    process. Errors as `spawn`'s, raised in the caller."""
    return _launch(spec, fork=True)


def become_subreaper() -> None:
    """Adopt the orphans of this process's descendants (the sandboxes its forks fork)."""
    lib, _ = _native()
    rc = lib.sandbox_become_subreaper()
    if rc < 0:
        raise OSError(-rc, os.strerror(-rc), "PR_SET_CHILD_SUBREAPER")


def _launch(spec: SandboxSpec, *, fork: bool) -> Forked:
    """What `spawn` and `fork_sandboxed` share: the spec as C structs, the cgroups opened,
    the launcher called; (pid, pidfd)."""
    lib, ffi = _native()
    _validate(spec, lib)
    keep: list[Any] = []  # cffi owners: alive until the call returns

    def cstr(text: str) -> Any:
        owner = ffi.new("char[]", os.fsencode(text))
        keep.append(owner)
        return owner

    def cstrs(items: Iterable[str]) -> Any:
        array = ffi.new("char *[]", [cstr(item) for item in items] + [ffi.NULL])
        keep.append(array)
        return array

    c = ffi.new("struct sandbox_spec *")
    c.path = cstr(spec.executable or spec.argv[0])
    c.argv = cstrs(spec.argv)
    c.envp = cstrs(f"{key}={value}" for key, value in spec.env.items())
    c.root = cstr(str(spec.root_dir))
    c.cwd = cstr(spec.cwd)
    c.hostname = cstr(spec.hostname)

    mounts = ffi.new("struct sandbox_mount[]", max(1, len(spec.mounts)))
    for i, mount in enumerate(spec.mounts):
        mounts[i].source = ffi.NULL if mount.source is None else cstr(str(mount.source))
        mounts[i].target = cstr(mount.target)
        mounts[i].flags = lib.SANDBOX_MOUNT_WRITABLE if mount.writable else 0
    c.mounts, c.n_mounts = mounts, len(spec.mounts)

    links = ffi.new("struct sandbox_symlink[]", max(1, len(spec.symlinks)))
    for i, link in enumerate(spec.symlinks):
        links[i].path = cstr(link.path)
        links[i].target = cstr(link.target)
    c.symlinks, c.n_symlinks = links, len(spec.symlinks)

    pairs = fd_pairs(spec)
    fds = ffi.new("struct sandbox_fd[]", max(1, len(pairs)))
    for i, (parent_fd, child_fd) in enumerate(pairs):
        fds[i].parent_fd, fds[i].child_fd = parent_fd, child_fd
    c.fds, c.n_fds = fds, len(pairs)

    limits = ffi.new("struct sandbox_rlimit[]", max(1, len(spec.rlimits)))
    for i, (which, (soft, hard)) in enumerate(spec.rlimits.items()):
        limits[i].resource = which
        limits[i].soft = _rlim(soft)
        limits[i].hard = _rlim(hard)
    c.rlimits, c.n_rlimits = limits, len(spec.rlimits)

    c.tmp_size = spec.tmp_size
    c.uid, c.gid = spec.uid, spec.gid
    c.netns_fd = -1 if spec.netns_fd is None else spec.netns_fd
    c.flags = lib.SANDBOX_DIE_WITH_PARENT if spec.die_with_parent else 0
    child = ffi.new("struct sandbox_child *")

    procs = spec.cgroup.procs_files() if spec.cgroup is not None else ()
    cgroup_fds: list[int] = []
    try:
        for path in procs:
            cgroup_fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        c.cgroup_fds = ffi.new("int[]", cgroup_fds or [-1])
        c.n_cgroup_fds = len(cgroup_fds)
        rc = (lib.sandbox_fork if fork else lib.sandbox_spawn)(c, child)
    finally:
        if not fork or child.pid != 0:  # the forked child has closed them already
            for fd in cgroup_fds:
                os.close(fd)
    if rc < 0:
        step = ffi.string(child.error).decode(errors="replace")
        raise OSError(-rc, os.strerror(-rc), step)
    stamps = dict(zip(_STAMPS, child.stamps, strict=True)) if child.pid == 0 else {}
    return Forked(child.pid, child.pidfd, stamps)


def _native() -> tuple[Any, Any]:
    if native.lib is None or not hasattr(native.lib, "sandbox_spawn"):
        raise NativeUnavailable(
            f"sandboxes need the compiled shim, which is {native.REASON or 'without them'}"
        )
    return native.lib, native.ffi


def fd_pairs(spec: SandboxSpec) -> list[tuple[int, int]]:
    """(caller's fd, fd in the sandbox) of every descriptor `spec` passes."""
    pairs = [(fd, fd) for fd in spec.pass_fds] + [(fd, to) for fd, to in spec.moved_fds]
    for child_fd, parent_fd in enumerate((spec.stdin, spec.stdout, spec.stderr)):
        if parent_fd is not None:
            pairs.append((parent_fd, child_fd))
    return pairs


def _rlim(value: int) -> int:
    return (1 << 64) - 1 if value == resource.RLIM_INFINITY or value < 0 else value


def _validate(spec: SandboxSpec, lib: Any) -> None:
    def sandbox_path(path: str, what: str) -> None:
        pure = PurePosixPath(path)
        if not pure.is_absolute() or "\0" in path or any(p in (".", "..") for p in pure.parts):
            raise ValueError(f"{what} {path!r} must be an absolute path without . or ..")

    if not spec.argv:
        raise ValueError("argv is empty")
    sandbox_path(spec.executable or spec.argv[0], "the program")
    sandbox_path(spec.cwd, "cwd")
    if not spec.root_dir.is_absolute() or not spec.root_dir.is_dir():
        raise ValueError(f"root_dir {spec.root_dir} must be an existing absolute directory")
    for mount in spec.mounts:
        sandbox_path(mount.target, "mount target")
        if mount.target.rstrip("/") == "":
            raise ValueError("a mount cannot replace the sandbox's root")
        if mount.source is not None and not mount.source.is_absolute():
            raise ValueError(f"mount source {mount.source} must be absolute")
    for link in spec.symlinks:
        sandbox_path(link.path, "symlink")
    for key in spec.env:
        if not key or "=" in key or "\0" in key:
            raise ValueError(f"bad environment variable name {key!r}")
    if any("\0" in part for part in [*spec.argv, *spec.env.values()]):
        raise ValueError("argv and env values cannot contain NUL")
    children = [child for _, child in fd_pairs(spec)]
    if len(set(children)) != len(children):
        raise ValueError(f"two descriptors for one child fd: {sorted(children)}")
    if spec.tmp_size <= 0:
        raise ValueError("tmp_size must be positive")
    if len(spec.hostname.encode()) > 64:
        raise ValueError("hostname longer than 64 bytes")
    for count, limit, what in (
        (len(spec.mounts), lib.SANDBOX_MAX_MOUNTS, "mounts"),
        (len(spec.symlinks), lib.SANDBOX_MAX_SYMLINKS, "symlinks"),
        (len(children), lib.SANDBOX_MAX_FDS, "descriptors"),
        (len(spec.rlimits), lib.SANDBOX_MAX_RLIMITS, "rlimits"),
    ):
        if count > limit:
            raise ValueError(f"{count} {what}: at most {limit}")


# --- a spec on the wire (to the base zygote) ---------------------------------------------

# The fields that travel as they are; descriptors travel apart (SCM_RIGHTS, as moved_fds).
_PLAIN_FIELDS = ("argv", "env", "executable", "cwd", "hostname", "tmp_size", "uid", "gid")


def spec_to_wire(spec: SandboxSpec) -> dict[str, Any]:
    """`spec` as plain values (msgpack), without its descriptors (stdio, pass_fds, moved_fds,
    netns_fd), which the receiver gives `spec_from_wire` as its own numbers."""
    wire: dict[str, Any] = {name: getattr(spec, name) for name in _PLAIN_FIELDS}
    wire["argv"] = list(spec.argv)
    wire["env"] = dict(spec.env)
    wire["root_dir"] = str(spec.root_dir)
    wire["mounts"] = [
        [m.target, None if m.source is None else str(m.source), m.writable] for m in spec.mounts
    ]
    wire["symlinks"] = [[link.path, link.target] for link in spec.symlinks]
    wire["rlimits"] = [[which, soft, hard] for which, (soft, hard) in spec.rlimits.items()]
    cgroup = spec.cgroup
    wire["cgroup"] = None
    if cgroup is not None:
        wire["cgroup"] = {
            "version": cgroup.version,
            "roots": {c: str(p) for c, p in cgroup.hierarchy.roots.items()},
            "paths": {c: str(p) for c, p in cgroup.paths.items()},
        }
    return wire


def spec_from_wire(wire: Mapping[str, Any], moved_fds: Sequence[tuple[int, int]]) -> SandboxSpec:
    """The spec that `spec_to_wire` sent, with the receiver's descriptors: (its fd, fd in the
    sandbox) pairs. KeyError, TypeError or ValueError for a malformed one."""
    cgroup = None
    if wire["cgroup"] is not None:
        facts = wire["cgroup"]
        roots = {c: Path(p) for c, p in facts["roots"].items()}
        cgroup = Cgroup(
            Hierarchy(facts["version"], roots), {c: Path(p) for c, p in facts["paths"].items()}
        )
    return SandboxSpec(
        **{name: wire[name] for name in _PLAIN_FIELDS},
        root_dir=Path(wire["root_dir"]),
        mounts=tuple(
            Mount(target, None if source is None else Path(source), bool(writable))
            for target, source, writable in wire["mounts"]
        ),
        symlinks=tuple(Symlink(path, target) for path, target in wire["symlinks"]),
        rlimits={int(which): (int(soft), int(hard)) for which, soft, hard in wire["rlimits"]},
        cgroup=cgroup,
        moved_fds=tuple(moved_fds),
    )


# --- the Python runtime's layout ----------------------------------------------------------


@dataclass(frozen=True)
class PythonLayout:
    """What a sandbox needs to run an interpreter: the program, its libraries and stdlib."""

    executable: str  # the real binary (symlinks and venvs resolved): argv[0] in the sandbox
    mounts: tuple[Mount, ...]
    symlinks: tuple[Symlink, ...]


_PROBE = """
import json, os, site, sys, sysconfig
bases = [sys.base_prefix, sys.base_exec_prefix]
print(json.dumps({
    "executable": os.path.realpath(sys.executable),
    "libdir": sysconfig.get_config_var("LIBDIR"),
    "stdlib": [sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")],
    "site": site.getsitepackages(bases) + [sysconfig.get_path("purelib"),
                                           sysconfig.get_path("platlib")],
}))
"""


@functools.cache
def python_layout(python: str) -> PythonLayout:
    """Ask `python` where it lives; the mounts that let it start in a sandbox.

    The interpreter binary, the system library directories (/lib, /usr/lib, ... read-only,
    symlinks kept as on the host), the dynamic loader's cache, libpython's directory and the
    stdlib. Its site-packages are hidden (empty directories): a function sees the runtime,
    its own package and its dependencies, not what the host has installed. Cached per path.
    """
    probe = subprocess.run(
        [python, "-S", "-s", "-E", "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    facts = json.loads(probe.stdout)
    mounts: list[Mount] = []
    symlinks: list[Symlink] = []
    bound: list[Path] = []

    def bind(path: str | None) -> None:
        if not path:
            return
        resolved = Path(path).resolve()
        if resolved.exists() and not _under(resolved, bound):
            mounts.append(Mount.bind(resolved))
            bound.append(resolved)

    for directory in _LIBRARY_DIRS:
        if os.path.islink(directory):
            if os.path.isdir(directory):
                symlinks.append(Symlink(directory, os.readlink(directory)))
        elif os.path.isdir(directory):
            bind(directory)
    bind(_LD_CACHE if os.path.isfile(_LD_CACHE) else None)
    bind(facts["executable"])
    bind(facts["libdir"])
    for path in facts["stdlib"]:
        bind(path)
    hidden: set[Path] = set()
    for path in facts["site"]:
        resolved = Path(path).resolve()
        if resolved.is_dir() and _under(resolved, bound) and resolved not in hidden:
            mounts.append(Mount.empty(str(resolved)))
            hidden.add(resolved)
    return PythonLayout(facts["executable"], tuple(mounts), tuple(symlinks))


def runtime_mounts(runtime_path: Path) -> tuple[Mount, ...]:
    """The worker's runtime folder (symlinks to faasd_py and msgpack) and what each symlink
    points to, all at their host paths, so the symlinks resolve inside the sandbox."""
    mounts = [Mount.bind(runtime_path)]
    for entry in sorted(runtime_path.iterdir()):
        if entry.is_symlink():
            mounts.append(Mount.bind(entry.resolve()))
    return tuple(mounts)


def instance_mounts(
    layout: PythonLayout,
    runtime_path: Path,
    function_dir: Path,
    deps_dir: Path | None = None,
    secrets_dir: Path | None = None,
) -> tuple[Mount, ...]:
    """Everything an instance of a function sees: the interpreter, the runtime, the function
    package and its dependencies (read-only, at their host paths), and its secrets at
    SECRETS_PATH."""
    mounts = [*layout.mounts, *runtime_mounts(runtime_path), Mount.bind(function_dir)]
    if deps_dir is not None and deps_dir.is_dir():
        mounts.append(Mount.bind(deps_dir))
    if secrets_dir is not None:
        mounts.append(Mount.bind(secrets_dir, SECRETS_PATH))
    return tuple(mounts)


def prepare_secrets(
    directory: Path,
    secrets: Mapping[str, bytes],
    *,
    uid: int = SANDBOX_UID,
    gid: int = SANDBOX_GID,
) -> None:
    """Write `secrets` as files in a new `directory`, readable by their owner only (by
    default the sandbox's root): files of mode 0400 owned by `uid`:`gid`, in a folder of mode
    0500 when another user owns it (the worker, root, writes there all the same), 0700 when
    the worker itself does (the same user, for --isolation process, must keep write access
    to replace a file)."""
    directory.mkdir(mode=0o700)
    for name, value in secrets.items():
        write_secret(directory, name, value, uid=uid, gid=gid)
    os.chown(directory, uid, gid)
    if uid != os.geteuid():
        directory.chmod(0o500)


def write_secret(
    directory: Path,
    name: str,
    value: bytes,
    *,
    uid: int = SANDBOX_UID,
    gid: int = SANDBOX_GID,
) -> None:
    """Write or replace one secret in a folder that `prepare_secrets` made, atomically: a
    reader opens either the old file or the new one, never half of a value. The value goes
    to a temporary file in the same folder, renamed over the old. A sandbox that has the
    folder bind-mounted sees the new file at once (a mount of a folder shares its entries; a
    mount of the file itself would keep showing the old one)."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"bad secret name {name!r}")
    partial = directory / f".{name}.{secrets_token.token_hex(4)}.tmp"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
    try:
        view = memoryview(value)
        while view:
            view = view[os.write(fd, view) :]
        os.fchown(fd, uid, gid)
        os.replace(partial, directory / name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    finally:
        os.close(fd)


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


# --- can this machine run sandboxes? ------------------------------------------------------


@functools.cache
def unavailable_reason() -> str | None:
    """Why sandboxes cannot run here, or None if a trial sandbox ran. Cached."""
    try:
        lib, _ = _native()
    except NativeUnavailable as exc:
        return exc.message
    if not lib.sandbox_features() & lib.SANDBOX_HAVE_SECCOMP:
        return "the sandbox launcher has no seccomp filter for this architecture"
    if os.geteuid() != 0:
        return "sandboxes need root (to map ids to SANDBOX_UID and to manage cgroups)"
    if detect() is None:
        return "no cgroup hierarchy offers the memory, cpu and pids controllers"
    try:
        layout = python_layout(sys.executable)
        with tempfile.TemporaryDirectory(prefix="faasd-sandbox-probe-") as root:
            spec = SandboxSpec(
                argv=[layout.executable, "-S", "-c", "pass"],
                root_dir=Path(root),
                mounts=layout.mounts,
                symlinks=layout.symlinks,
            )
            with spawn(spec) as process:
                status = process.wait_blocking(timeout=30)
    except (OSError, subprocess.SubprocessError, TimeoutError, ValueError) as exc:
        return f"a trial sandbox failed: {exc}"
    if status.returncode != 0:
        return f"a trial sandbox's Python {status.describe()}"
    return None
