"""Real sandboxes (faasd_py.isolation.sandbox, native/sandbox.c): what a process inside can see and
do.

Each test starts Python in a sandbox with the worker's layout and asserts from the outside on
what it reports (as JSON on stdout) and on its exit status. These need root, user namespaces and
the compiled shim: without them they skip with the reason, except under CI=true, where a
missing capability fails the run.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import platform
import resource
import select
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
import pytest

import faasd_py
from faasd_py.isolation import sandbox
from faasd_py.isolation.cgroups import Cgroup, CgroupLimits
from faasd_py.isolation.sandbox import (
    SANDBOX_UID,
    SECRETS_PATH,
    ExitStatus,
    Mount,
    PythonLayout,
    SandboxSpec,
    instance_mounts,
    prepare_secrets,
    python_layout,
    spawn,
)
from tests._ci import in_ci

TIMEOUT = 30.0


@pytest.fixture(scope="module", autouse=True)
def _sandboxes_available() -> None:
    reason = sandbox.unavailable_reason()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI=true, yet sandboxes cannot run here: {reason}")
    pytest.skip(f"sandboxes cannot run here: {reason}")


@pytest.fixture(scope="module")
def layout() -> PythonLayout:
    return python_layout(sys.executable)


@pytest.fixture
def root_dir(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def cgroup_factory() -> Iterator[Any]:
    """Make cgroups with unique names; kill and remove them all at teardown."""
    made: list[Cgroup] = []

    def make(limits: CgroupLimits) -> Cgroup:
        cgroup = Cgroup.create(f"test-{uuid.uuid4().hex[:12]}", limits)
        made.append(cgroup)
        return cgroup

    yield make
    for cgroup in made:
        cgroup.kill()
        for _ in range(100):
            try:
                cgroup.remove()
                break
            except OSError:
                select.select([], [], [], 0.02)


@dataclass
class Run:
    status: ExitStatus
    stdout: str
    stderr: str

    def report(self) -> Any:
        """The JSON the script printed last."""
        assert self.status.returncode == 0, f"{self.status.describe()}: {self.stderr}"
        return json.loads(self.stdout.strip().splitlines()[-1])


def _read_all(fd: int) -> str:
    chunks = []
    with open(fd, "rb", closefd=True) as stream:
        while chunk := stream.read(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


# The two ways into a sandbox: `spawn` executes the program in it; `fork` is the base zygote's
# way (fork_sandboxed), where a single-threaded Python process forks and the child builds the
# same sandbox around itself and then runs the code. The tests marked with LAUNCHES hold for
# both.
LAUNCHES = pytest.mark.parametrize("launch", ["spawn", "fork"])

# A single-threaded process (pytest's has threads) that forks into `spec`'s sandbox and runs
# its code there as `python -c` would, then exits as the child did.
_FORKER = """
import json, os, signal, sys, traceback
from faasd_py.isolation.sandbox import fork_sandboxed, spec_from_wire
request = json.loads(sys.stdin.readline())
pairs = [(1, 1), (2, 2), *[(fd, fd) for fd in request["pass_fds"]]]
spec = spec_from_wire(request["spec"], pairs)
pid, pidfd, _ = fork_sandboxed(spec)
if pid == 0:
    os.environ.clear()
    os.environ.update(spec.env)
    code = 0
    try:
        exec(compile(spec.argv[-1], "<sandboxed>", "exec"), {"__name__": "__main__"})
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
if info.si_code == os.CLD_EXITED:
    sys.exit(info.si_status)
if info.si_status != signal.SIGKILL:  # killed: so is this process, by the same signal
    signal.signal(info.si_status, signal.SIG_DFL)
os.kill(os.getpid(), info.si_status)
"""


async def _run_forked(spec: SandboxSpec, seconds: float) -> Run:
    request = {"spec": sandbox.spec_to_wire(spec), "pass_fds": list(spec.pass_fds)}
    forker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _FORKER,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=tuple(spec.pass_fds),
    )
    try:
        async with asyncio.timeout(seconds):
            stdout, stderr = await forker.communicate(json.dumps(request).encode() + b"\n")
    finally:
        if forker.returncode is None:
            forker.kill()  # on timeout (its sandbox: the cgroup's, if any, or the test's)
            await forker.wait()
    code = forker.returncode
    assert code is not None
    oom = spec.cgroup is not None and spec.cgroup.oom_kills() > 0
    return Run(ExitStatus(code, oom), stdout.decode(errors="replace"), stderr.decode())


async def run(spec: SandboxSpec, seconds: float = TIMEOUT, launch: str = "spawn") -> Run:
    """Start `spec` with stdout and stderr captured; wait for it (killed after `seconds`)."""
    if launch == "fork":
        return await _run_forked(spec, seconds)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        process = spawn(replace(spec, stdout=out_w, stderr=err_w))
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    with process:
        stdout = asyncio.create_task(asyncio.to_thread(_read_all, out_r))
        stderr = asyncio.create_task(asyncio.to_thread(_read_all, err_r))
        try:
            async with asyncio.timeout(seconds):
                status = await process.wait()
        finally:
            process.kill()  # on timeout; its namespace's processes die with it
        return Run(status, await stdout, await stderr)


def python(
    layout: PythonLayout,
    root_dir: Path,
    code: str,
    *,
    mounts: Sequence[Mount] = (),
    **options: Any,
) -> SandboxSpec:
    """A spec that runs `code` with the sandboxed interpreter."""
    return SandboxSpec(
        argv=[layout.executable, "-S", "-s", "-c", textwrap.dedent(code)],
        root_dir=root_dir,
        mounts=[*layout.mounts, *mounts],
        symlinks=layout.symlinks,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp"},
        **options,
    )


# --- identity and privileges ------------------------------------------------------------------


@LAUNCHES
async def test_root_of_its_own_namespaces_without_privileges(
    layout: PythonLayout, root_dir: Path, launch: str
) -> None:
    code = """
        import json, os, socket
        lines = open("/proc/self/status").read().splitlines()
        status = dict(line.split(":\\t", 1) for line in lines)
        print(json.dumps({
            "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
            "groups": os.getgroups(), "hostname": socket.gethostname(),
            "uid_map": open("/proc/self/uid_map").read().split(),
            "gid_map": open("/proc/self/gid_map").read().split(),
            "caps": [status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")],
            "no_new_privs": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
            "cwd": os.getcwd(), "core": __import__("resource").getrlimit(4),
            "session": [os.getsid(0), os.getpgrp()],
        }))
    """
    report = (await run(python(layout, root_dir, code, hostname="fn-box"), launch=launch)).report()
    assert report["pid"] == 1
    assert (report["uid"], report["gid"], report["groups"]) == (
        0,
        0,
        [],
    )  # no supplementary groups: the host's were dropped
    assert report["uid_map"] == ["0", str(SANDBOX_UID), "1"]
    assert report["gid_map"] == ["0", str(sandbox.SANDBOX_GID), "1"]
    assert report["hostname"] == "fn-box"
    assert report["caps"] == ["0000000000000000"] * 5
    assert report["no_new_privs"] == "1"
    assert report["seccomp"] == "2"  # filter mode
    assert report["cwd"] == "/tmp"
    assert report["core"] == [0, 0]
    assert report["session"] == [1, 1]  # its own session: the worker's signals stay outside


@LAUNCHES
async def test_exit_code_is_reported(layout: PythonLayout, root_dir: Path, launch: str) -> None:
    assert (
        await run(python(layout, root_dir, "raise SystemExit(3)"), launch=launch)
    ).status == ExitStatus(3)


async def test_pid_1_ignores_its_own_fatal_signals(layout: PythonLayout, root_dir: Path) -> None:
    """As init of its PID namespace, the function cannot be killed from inside by a signal it
    has no handler for: only the worker (outside) can SIGKILL it."""
    code = (
        "import os, signal; os.kill(1, signal.SIGKILL); os.kill(1, signal.SIGTERM); print('alive')"
    )
    result = await run(python(layout, root_dir, code))
    assert (result.status.returncode, result.stdout.strip()) == (0, "alive")


async def test_kill_ends_the_whole_namespace(layout: PythonLayout, root_dir: Path) -> None:
    marker = f"kill-probe-{uuid.uuid4().hex}"
    code = f"""
        import os, time
        for _ in range(3):
            if os.fork() == 0:
                break
        os.write(1, b"up\\n")  # each of the four, once it runs
        time.sleep(60)  # {marker}
    """
    read_end, write_end = os.pipe()
    try:
        process = spawn(replace(python(layout, root_dir, code), stdout=write_end))
    finally:
        os.close(write_end)
    with process, open(read_end, "rb") as out:
        ups = await asyncio.wait_for(asyncio.to_thread(read_lines, out, 4), TIMEOUT)
        assert ups == [b"up\n"] * 4
        assert len(host_pids_mentioning(marker)) == 4  # pid 1 and its three children
        process.kill()
        async with asyncio.timeout(TIMEOUT):
            status = await process.wait()
    assert status.returncode == -9
    assert status.describe() == "was killed by SIGKILL"
    assert await gone(marker), f"processes of the namespace outlived its pid 1: {marker}"


# --- the file system ----------------------------------------------------------------------------


@LAUNCHES
async def test_sees_only_what_is_mounted(
    layout: PythonLayout, root_dir: Path, launch: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (data / "lib").mkdir(parents=True)
    (data / "lib" / "visible.txt").write_text("public")
    (data / "credentials.json").write_text('{"password": "hunter2"}')
    probes = [
        str(data / "credentials.json"),
        "/etc/shadow",
        "/etc/passwd",
        "/root/.bash_history",
        "/root/.ssh",
        "/home",
        "/var/lib",
        "/sys/kernel",
        "/boot",
        str(Path(faasd_py.__file__).parent),
        str(Path.cwd()),
    ]
    code = f"""
        import json, os
        seen = {{}}
        for path in {probes!r}:
            try:
                os.stat(path)
                seen[path] = "visible"
            except OSError as exc:
                seen[path] = exc.errno
        print(json.dumps({{
            "seen": seen,
            "visible": open({str(data / "lib" / "visible.txt")!r}).read(),
            "data": os.listdir({str(data)!r}),
            "top": sorted(os.listdir("/")),
        }}))
    """
    spec = python(layout, root_dir, code, mounts=[Mount.bind(data / "lib")])
    report = (await run(spec, launch=launch)).report()
    assert report["visible"] == "public"
    assert report["data"] == ["lib"]  # the credentials next to it do not exist in there
    assert report["seen"] == dict.fromkeys(probes, errno.ENOENT)
    expected_top = {"dev", "proc", "tmp", *(Path(p).parts[1] for p in _sandbox_paths(spec))}
    assert set(report["top"]) == expected_top
    assert os.listdir(root_dir) == []  # the root was built in the sandbox's mount namespace only


def _sandbox_paths(spec: SandboxSpec) -> list[str]:
    return [m.target for m in spec.mounts] + [s.path for s in spec.symlinks]


@LAUNCHES
async def test_cannot_write_outside_tmp(
    layout: PythonLayout, root_dir: Path, launch: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    secrets = tmp_path / "secrets"
    prepare_secrets(secrets, {"api-key": b"s3cret"})
    marker = f"sandbox-{uuid.uuid4().hex}"
    targets = [
        "/marker",
        f"{data}/marker",
        f"{SECRETS_PATH}/marker",
        f"{SECRETS_PATH}/api-key",
        "/usr/lib/marker",
        "/etc/ld.so.cache",
        f"{layout.executable}",
        "/dev/marker",
        "/proc/sys/kernel/hostname",
        "/proc/sys/vm/drop_caches",
    ]
    code = f"""
        import json, os
        outcome = {{}}
        for path in {targets!r}:
            try:
                with open(path, "ab") as f:
                    f.write(b"x")
                outcome[path] = "written"
            except OSError as exc:
                outcome[path] = exc.errno
        with open("/tmp/{marker}", "w") as f:
            f.write("mine")
        with open("/dev/shm/{marker}", "w") as f:
            f.write("mine")
        with open("/dev/null", "w") as f:
            f.write("discarded")
        print(json.dumps({{
            "outcome": outcome,
            "tmp": open("/tmp/{marker}").read(),
            "secret": open("{SECRETS_PATH}/api-key").read(),
        }}))
    """
    mounts = [Mount.bind(data), Mount.bind(secrets, SECRETS_PATH)]
    report = (await run(python(layout, root_dir, code, mounts=mounts), launch=launch)).report()
    for path, outcome in report["outcome"].items():
        assert outcome in (errno.EROFS, errno.EACCES, errno.EPERM), (path, outcome)
    assert report["tmp"] == "mine"
    assert report["secret"] == "s3cret"
    assert list(data.iterdir()) == []
    assert not Path("/tmp", marker).exists() and not Path("/dev/shm", marker).exists()
    assert (secrets / "api-key").read_bytes() == b"s3cret"


async def test_tmp_is_private_to_each_sandbox(layout: PythonLayout, root_dir: Path) -> None:
    # The writer writes its file, says so, and keeps running (its /tmp with it) until its
    # stdin closes; the reader looks at its own /tmp meanwhile.
    code = """
        import json, os, sys
        open("/tmp/shared", "w").write("a")
        os.write(1, b"written\\n")
        sys.stdin.read()
        print(json.dumps(os.listdir("/tmp")))
    """
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    try:
        spec = replace(python(layout, root_dir, code), stdin=in_read, stdout=out_write)
        writer = spawn(spec)
    finally:
        os.close(in_read)
        os.close(out_write)
    with writer, open(out_read, "rb") as out:
        assert await asyncio.wait_for(asyncio.to_thread(out.readline), TIMEOUT) == b"written\n"
        reader = python(
            layout,
            root_dir,  # the same root directory: each sandbox builds its own tree on it
            "import json, os; print(json.dumps(os.listdir('/tmp')))",
        )
        seen_by_reader = (await run(reader)).report()
        os.close(in_write)
        async with asyncio.timeout(TIMEOUT):
            assert (await writer.wait()).returncode == 0
        seen_by_writer = json.loads(out.read())
    assert seen_by_writer == ["shared"]  # the file was there all along, in the writer's /tmp
    assert seen_by_reader == []


async def test_secrets_belong_to_the_sandbox_root(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    prepare_secrets(secrets, {"a": b"1", "b": b"2"})
    assert sorted(p.name for p in secrets.iterdir()) == ["a", "b"]
    for path in (secrets, secrets / "a"):
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (SANDBOX_UID, sandbox.SANDBOX_GID)
    assert secrets.stat().st_mode & 0o777 == 0o500
    assert (secrets / "a").stat().st_mode & 0o777 == 0o400
    with pytest.raises(ValueError, match="bad secret name"):
        prepare_secrets(tmp_path / "other", {"../x": b""})


# --- network and processes --------------------------------------------------------------------


@LAUNCHES
async def test_no_network(layout: PythonLayout, root_dir: Path, launch: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        host_address = _host_address()
        code = f"""
            import json, socket
            def attempt(address):
                try:
                    socket.create_connection(address, timeout=5).close()
                    return "connected"
                except OSError as exc:
                    return exc.errno
            print(json.dumps({{
                "loopback": attempt(("127.0.0.1", {port})),
                "host": attempt(({host_address!r}, {port})) if {host_address!r} else None,
                "public": attempt(("1.1.1.1", 53)),
                "interfaces": [name for _, name in socket.if_nameindex()],
            }}))
        """
        report = (await run(python(layout, root_dir, code), launch=launch)).report()
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing reached the test's listener
    assert report["loopback"] == errno.ECONNREFUSED  # its own loopback, where nobody listens
    if host_address:
        assert report["host"] == errno.ENETUNREACH
    assert report["public"] == errno.ENETUNREACH
    assert report["interfaces"] == ["lo"]
    interfaces = (await run(python(layout, root_dir, _INTERFACES))).report()
    assert interfaces == {"lo": 1}  # a new namespace, its loopback up


def _host_address() -> str:
    """A non-loopback address of this host, or "" if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            return str(probe.getsockname()[0])
        except OSError:
            return ""


# Prints {interface: 1 if up else 0} for every interface the sandbox sees.
_INTERFACES = """
import fcntl, json, socket, struct
def up(name):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH22x", name.encode(), 0)
        return struct.unpack("16sH22x", fcntl.ioctl(s, 0x8913, request))[1] & 1  # SIOCGIFFLAGS
print(json.dumps({name: up(name) for _, name in socket.if_nameindex()}))
"""


async def test_joins_a_given_network_namespace(layout: PythonLayout, root_dir: Path) -> None:
    """netns_fd (the `net` mode's veth lives there): the sandbox sees that namespace's
    interfaces as the worker set them up, and no loopback raised by the launcher."""
    from pyroute2 import NetNS, netns

    name = f"faasd-test-{uuid.uuid4().hex[:8]}"

    def make() -> bool:  # pyroute2 runs an event loop of its own: not in this thread
        netns.create(name)
        with NetNS(name) as ns:
            try:
                ns.link("add", ifname="fn0", kind="veth", peer="fn1")
                return True
            except Exception:  # a kernel without veth: loopback alone still tells
                return False

    try:
        veth = await asyncio.to_thread(make)
        fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            report = (await run(python(layout, root_dir, _INTERFACES, netns_fd=fd))).report()
        finally:
            os.close(fd)
    finally:
        await asyncio.to_thread(netns.remove, name)
    assert report == ({"lo": 0, "fn0": 0, "fn1": 0} if veth else {"lo": 0})
    # The caller's thread went back to its own namespace.
    assert "fn0" not in [n for _, n in socket.if_nameindex()]


@LAUNCHES
async def test_pid_namespace_hides_other_processes(
    layout: PythonLayout, root_dir: Path, launch: str
) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    sleeper = spawn(python(layout, root_dir, f"import time; time.sleep(30)  # {marker}"))
    with sleeper:
        # Running, as the host sees it, before the probe looks for it.
        for _ in range(int(TIMEOUT / 0.02)):
            if host_pids_mentioning(marker):
                break
            await asyncio.sleep(0.02)
        assert host_pids_mentioning(marker), "the sleeper never ran"
        code = """
            import json, os
            pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            cmdlines = [open(f"/proc/{p}/cmdline", "rb").read().decode() for p in pids]
            print(json.dumps({"pid": os.getpid(), "pids": pids, "cmdlines": cmdlines}))
        """
        report = (await run(python(layout, root_dir, code), launch=launch)).report()
        assert sleeper.poll() is None
    assert report["pid"] == 1
    assert report["pids"] == [1]
    assert not any(marker in line for line in report["cmdlines"])


# --- seccomp --------------------------------------------------------------------------------------

# System call numbers for the architectures the filter supports.
# fmt: off
_SYSCALLS = {
    "x86_64": {
        "mount": 165, "umount2": 166, "ptrace": 101, "kexec_load": 246, "kexec_file_load": 320,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "bpf": 321,
        "perf_event_open": 298, "keyctl": 250, "add_key": 248, "request_key": 249,
        "reboot": 169, "swapon": 167, "swapoff": 168, "unshare": 272, "setns": 308,
        "pivot_root": 155, "chroot": 161, "process_vm_readv": 310, "userfaultfd": 323,
        "open_tree": 428, "fsopen": 430, "io_uring_setup": 425, "clone": 56, "clone3": 435,
    },
    "aarch64": {
        "mount": 40, "umount2": 39, "ptrace": 117, "kexec_load": 104, "kexec_file_load": 294,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "bpf": 280,
        "perf_event_open": 241, "keyctl": 219, "add_key": 217, "request_key": 218,
        "reboot": 142, "swapon": 224, "swapoff": 225, "unshare": 97, "setns": 268,
        "pivot_root": 41, "chroot": 51, "process_vm_readv": 270, "userfaultfd": 282,
        "open_tree": 428, "fsopen": 430, "io_uring_setup": 425, "clone": 220, "clone3": 435,
    },
}
# fmt: on


@LAUNCHES
async def test_seccomp_denies_escapes(layout: PythonLayout, root_dir: Path, launch: str) -> None:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        pytest.fail(f"no system call table for {platform.machine()} in this test")
    code = f"""
        import ctypes, json, os, socket, threading
        libc = ctypes.CDLL(None, use_errno=True)
        numbers = {numbers!r}
        CLONE_NEWUSER, SIGCHLD = 0x10000000, 17

        def call(name, *args):
            args = [ctypes.c_long(a) for a in args] + [ctypes.c_long(0)] * (6 - len(args))
            ctypes.set_errno(0)
            rc = libc.syscall(ctypes.c_long(numbers[name]), *args)
            if rc == 0 and name == "clone":
                os._exit(0)  # a child: the filter let it through; the parent reports it
            return ctypes.get_errno() if rc == -1 else "succeeded"

        outcome = {{n: call(n) for n in numbers if n not in ("clone", "clone3")}}
        outcome["ptrace(TRACEME)"] = call("ptrace", 0)  # allowed to anyone without a filter
        outcome["unshare(NEWUSER)"] = call("unshare", CLONE_NEWUSER)
        outcome["clone(NEWUSER)"] = call("clone", CLONE_NEWUSER | SIGCHLD)
        outcome["clone3"] = call("clone3")
        families = {{}}
        # AF_VSOCK, AF_PACKET, AF_BLUETOOTH, AF_ALG (not all named in every Python build)
        for family in (40, 17, 31, 38, socket.AF_INET, socket.AF_UNIX):
            kind = socket.SOCK_RAW if family == 17 else socket.SOCK_STREAM
            try:
                socket.socket(family, kind).close()
                families[family] = "opened"
            except OSError as exc:
                families[family] = exc.errno
        # What functions do keeps working: threads (clone3 falls back to clone), fork.
        box = []
        thread = threading.Thread(target=lambda: box.append("ran"))
        thread.start(); thread.join()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({{
            "outcome": outcome, "families": families, "thread": box,
            "fork": os.waitstatus_to_exitcode(status),
        }}))
    """
    report = (await run(python(layout, root_dir, code), launch=launch)).report()
    outcome = report.pop("outcome")
    assert outcome.pop("clone3") == errno.ENOSYS
    assert outcome == dict.fromkeys(outcome, errno.EPERM)
    assert {"mount", "umount2", "ptrace", "bpf", "keyctl", "unshare", "setns"} <= set(outcome)
    denied = {str(family): errno.EAFNOSUPPORT for family in (40, 17, 31, 38)}
    allowed = {str(int(family)): "opened" for family in (socket.AF_INET, socket.AF_UNIX)}
    assert report["families"] == denied | allowed
    assert report["thread"] == ["ran"]
    assert report["fork"] == 7


# --- descriptors ------------------------------------------------------------------------------


@LAUNCHES
async def test_only_passed_descriptors_stay_open(
    layout: PythonLayout, root_dir: Path, launch: str
) -> None:
    leaked = os.open("/dev/null", os.O_RDONLY)  # inheritable on purpose
    os.set_inheritable(leaked, True)
    read_end, write_end = os.pipe()
    passed = write_end
    try:
        code = f"""
            import json, os
            fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
            os.write({write_end}, b"through the passed fd")
            try:
                os.fstat({leaked})
                leaked = "open"
            except OSError as exc:
                leaked = exc.errno
            print(json.dumps({{"fds": fds, "leaked": leaked, "stdin": os.read(0, 10).decode()}}))
        """
        spec = python(layout, root_dir, code, pass_fds=[write_end])
        report = (await run(spec, launch=launch)).report()
        os.close(write_end)
        write_end = -1
        assert os.read(read_end, 100) == b"through the passed fd"
    finally:
        for fd in (leaked, read_end, write_end):
            if fd >= 0:
                os.close(fd)
    assert passed in report["fds"]
    # 0-2, the passed one, and the one listdir had open while it read the directory
    assert len(set(report["fds"]) - {0, 1, 2, passed}) == 1
    assert report["leaked"] == errno.EBADF
    assert report["stdin"] == ""  # /dev/null


async def test_stdio_and_renumbered_descriptors(layout: PythonLayout, root_dir: Path) -> None:
    read_end, write_end = os.pipe()
    in_read, in_write = os.pipe()
    os.write(in_write, b"from stdin")
    os.close(in_write)
    try:
        code = "import os, sys; os.write(1, sys.stdin.read().upper().encode())"
        spec = replace(python(layout, root_dir, code), stdin=in_read, stdout=write_end)
        process = spawn(spec)
        os.close(write_end)
        with process:
            async with asyncio.timeout(TIMEOUT):
                assert (await process.wait()).returncode == 0
        assert os.read(read_end, 100) == b"FROM STDIN"
    finally:
        os.close(read_end)
        os.close(in_read)


# --- cgroups ----------------------------------------------------------------------------------


async def test_fork_bomb_hits_pids_max_and_the_host_survives(
    layout: PythonLayout, root_dir: Path, cgroup_factory: Any
) -> None:
    cgroup = cgroup_factory(CgroupLimits(memory_bytes=512 << 20, cpu=1.0, pids=24))
    code = """
        import os, time
        deadline = time.monotonic() + 3
        refused = 0
        while time.monotonic() < deadline:
            try:
                os.fork()  # parent and child both go on forking
            except OSError:
                refused += 1
                time.sleep(0.01)
        if os.getpid() == 1:
            print(refused, flush=True)
    """
    result = await run(python(layout, root_dir, code, cgroup=cgroup))
    assert result.status.returncode == 0, result.stderr
    stats = cgroup.statistics()
    assert stats.pids_limit_hits > 0
    assert int(result.stdout) > 0  # pid 1 itself was refused forks
    assert cgroup.pids() == set()  # every process died with pid 1
    cgroup.remove()
    # The host and other sandboxes carry on.
    after = await run(python(layout, root_dir, "print('alive')"))
    assert after.stdout.strip() == "alive"


@LAUNCHES
async def test_memory_limit_kills_and_reports_out_of_memory(
    layout: PythonLayout, root_dir: Path, launch: str, cgroup_factory: Any
) -> None:
    cgroup = cgroup_factory(CgroupLimits(memory_bytes=64 << 20, pids=16))
    code = """
        import sys
        blocks = []
        for _ in range(64):
            blocks.append(bytes([1]) * (8 << 20))  # every page written
        print("allocated 512 MiB under a 64 MiB limit", flush=True)
    """
    result = await run(python(layout, root_dir, code, cgroup=cgroup), launch=launch)
    assert result.status.oom_killed, result
    assert result.status.returncode == -9
    assert "out of memory" in result.status.describe()
    assert "allocated" not in result.stdout
    stats = cgroup.statistics()
    assert stats.oom_kills >= 1
    assert stats.memory_peak_bytes is None or stats.memory_peak_bytes <= 64 << 20


async def test_within_limits_is_not_out_of_memory(
    layout: PythonLayout, root_dir: Path, cgroup_factory: Any
) -> None:
    cgroup = cgroup_factory(CgroupLimits(memory_bytes=128 << 20, pids=16))
    result = await run(python(layout, root_dir, "b = bytearray(16 << 20)", cgroup=cgroup))
    assert result.status == ExitStatus(0, oom_killed=False)


async def test_cpu_limit_throttles(
    layout: PythonLayout, root_dir: Path, cgroup_factory: Any
) -> None:
    cgroup = cgroup_factory(CgroupLimits(cpu=0.2))
    code = """
        import time
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            pass
        print(time.process_time())
    """
    result = await run(python(layout, root_dir, code, cgroup=cgroup))
    assert result.status.returncode == 0, result.stderr
    assert float(result.stdout) < 0.55  # 0.2 CPU for 1.5 s; unthrottled about 1.5 s


async def test_cgroup_kill_ends_the_sandbox(
    layout: PythonLayout, root_dir: Path, cgroup_factory: Any
) -> None:
    """What the worker does with a sandbox it lost track of (after a crash, say)."""
    cgroup = cgroup_factory(CgroupLimits(pids=16))
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(60)\ntime.sleep(60)"
    with spawn(python(layout, root_dir, code, cgroup=cgroup)) as process:
        for _ in range(int(TIMEOUT / 0.02)):  # a deadline that only catches a hang
            if len(cgroup.pids()) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(cgroup.pids()) == 2 and process.pid in cgroup.pids()
        cgroup.kill()
        async with asyncio.timeout(TIMEOUT):
            assert (await process.wait()).returncode == -9
    assert cgroup.pids() == set()


def test_a_renamed_cgroup_keeps_its_processes_and_limits(cgroup_factory: Any) -> None:
    """The base zygote's spare is moved into a cgroup ahead and renamed for its instance."""
    cgroup = cgroup_factory(CgroupLimits(pids=8))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for procs in cgroup.procs_files():
            procs.write_text(str(sleeper.pid))
        name = f"test-{uuid.uuid4().hex[:12]}"
        try:
            renamed = cgroup.renamed(name)
        except PermissionError:
            assert cgroup.version == 2
            pytest.skip("cgroup v2 does not rename cgroups")
        assert not any(d.exists() for d in cgroup.directories)
        assert all(d.name == name for d in renamed.directories)
        assert renamed.pids() == {sleeper.pid}
        assert (renamed.paths["pids"] / "pids.max").read_text().strip() == "8"
        cgroup.paths = renamed.paths  # the factory's teardown removes it under its new name
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cgroup_files_hold_the_limits(cgroup_factory: Any) -> None:
    cgroup = cgroup_factory(CgroupLimits(memory_bytes=96 << 20, cpu=0.5, pids=40))
    memory, cpu, pids = cgroup.paths["memory"], cgroup.paths["cpu"], cgroup.paths["pids"]
    assert (pids / "pids.max").read_text().strip() == "40"
    if cgroup.version == 2:
        assert (memory / "memory.max").read_text().strip() == str(96 << 20)
        assert (cpu / "cpu.max").read_text().split() == ["50000", "100000"]
    else:
        assert (memory / "memory.limit_in_bytes").read_text().strip() == str(96 << 20)
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            assert memsw.read_text().strip() == str(96 << 20)
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
    cgroup.set_limits(CgroupLimits())
    assert (pids / "pids.max").read_text().strip() == "max"
    with pytest.raises(FileExistsError):
        Cgroup.create(cgroup.directories[0].name, CgroupLimits())
    cgroup.remove()
    assert not any(d.exists() for d in cgroup.directories)


# --- the Python runtime, as the worker starts it -------------------------------------------------


@pytest.fixture
def function_package(tmp_path: Path) -> tuple[Path, Path]:
    function_dir = tmp_path / "function"
    deps_dir = tmp_path / "deps"
    function_dir.mkdir()
    (deps_dir / "helper").mkdir(parents=True)
    (deps_dir / "helper" / "__init__.py").write_text("GREETING = 'hello from deps'\n")
    (function_dir / "handler.py").write_text(
        textwrap.dedent(
            f"""
            import helper
            SECRET = open("{SECRETS_PATH}/api-key").read()

            def handle(event, context):
                return helper.GREETING
            """
        )
    )
    return function_dir, deps_dir


@pytest.fixture
def runtime_path(tmp_path: Path) -> Path:
    """The worker's runtime folder: symlinks to faasd_py and msgpack, as Worker.start makes."""
    path = tmp_path / "run" / "lib"
    path.mkdir(parents=True)
    for module in (faasd_py, msgpack):
        assert module.__file__ is not None
        os.symlink(Path(module.__file__).parent, path / module.__name__)
    return path


def _runtime_env(runtime_path: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "PYTHONPATH": str(runtime_path),
        "PYTHONSAFEPATH": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


async def test_runtime_imports_inside(
    layout: PythonLayout,
    root_dir: Path,
    tmp_path: Path,
    runtime_path: Path,
    function_package: tuple[Path, Path],
) -> None:
    function_dir, deps_dir = function_package
    prepare_secrets(tmp_path / "secrets", {"api-key": b"k"})
    mounts = instance_mounts(layout, runtime_path, function_dir, deps_dir, tmp_path / "secrets")
    code = f"""
        import json, sys
        import faasd_py.runtime, faasd_py.runtime.__main__, msgpack  # all the runtime imports
        sys.path[:0] = [{str(function_dir)!r}, {str(deps_dir)!r}]
        import handler
        print(json.dumps({{"answer": handler.handle(None, None), "secret": handler.SECRET,
                           "site": [p for p in sys.path if "site-packages" in p]}}))
    """
    spec = SandboxSpec(
        argv=[layout.executable, "-S", "-s", "-c", textwrap.dedent(code)],
        root_dir=root_dir,
        mounts=mounts,
        symlinks=layout.symlinks,
        env=_runtime_env(runtime_path),
    )
    report = (await run(spec)).report()
    assert report == {"answer": "hello from deps", "secret": "k", "site": []}


async def test_runtime_starts_and_reports_ready(
    layout: PythonLayout,
    root_dir: Path,
    tmp_path: Path,
    runtime_path: Path,
    function_package: tuple[Path, Path],
    cgroup_factory: Any,
) -> None:
    """`python -S -s -m faasd_py.runtime` with the worker's arguments, on a socket channel:
    it imports the handler (which reads its secret) and says "ready" on the channel."""
    function_dir, deps_dir = function_package
    prepare_secrets(tmp_path / "secrets", {"api-key": b"k"})
    mounts = instance_mounts(layout, runtime_path, function_dir, deps_dir, tmp_path / "secrets")
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    argv = [
        layout.executable,
        "-S",
        "-s",
        "-m",
        "faasd_py.runtime",
        f"--fd={child.fileno()}",
        "--function-name=probe",
        f"--function-dir={function_dir}",
        f"--deps-dir={deps_dir}",
        f"--secrets-dir={SECRETS_PATH}",
        "--max-inflight=1",
        "--max-body=65536",
        "--max-frame=70000",
    ]
    spec = SandboxSpec(
        argv=argv,
        root_dir=root_dir,
        mounts=mounts,
        symlinks=layout.symlinks,
        env=_runtime_env(runtime_path),
        pass_fds=[child.fileno()],
        cgroup=cgroup_factory(CgroupLimits(memory_bytes=256 << 20, cpu=1.0, pids=64)),
    )
    err_r, err_w = os.pipe()
    try:
        process = spawn(replace(spec, stderr=err_w))
    finally:
        os.close(err_w)
        child.close()
    with parent, process:
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        received = b""
        try:
            async with asyncio.timeout(TIMEOUT):
                while msgpack.packb("ready") not in received and len(received) < 65536:
                    chunk = await reader.read(4096)
                    if not chunk:
                        break
                    received += chunk
        finally:
            process.kill()
            writer.close()
            await writer.wait_closed()
            stderr = await asyncio.to_thread(_read_all, err_r)
    assert msgpack.packb("ready") in received, (received, stderr)


# --- errors ---------------------------------------------------------------------------------


def test_spawn_reports_the_failed_step(layout: PythonLayout, root_dir: Path) -> None:
    missing = python(layout, root_dir, "pass", mounts=[Mount.bind("/nonexistent/dir")])
    with pytest.raises(FileNotFoundError) as caught:
        spawn(missing)
    assert caught.value.filename == "open /nonexistent/dir"

    no_program = replace(python(layout, root_dir, "pass"), argv=["/usr/bin/not-there"])
    with pytest.raises(FileNotFoundError, match="execute /usr/bin/not-there"):
        spawn(no_program)

    with pytest.raises(OSError) as bad_fd:
        spawn(replace(python(layout, root_dir, "pass"), pass_fds=[_closed_fd()]))
    assert bad_fd.value.errno == errno.EBADF


def _closed_fd() -> int:
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    return fd


def test_spec_is_validated(layout: PythonLayout, root_dir: Path) -> None:
    good = python(layout, root_dir, "pass")
    for bad in (
        replace(good, argv=[]),
        replace(good, argv=["python"]),
        replace(good, cwd="tmp"),
        replace(good, root_dir=root_dir / "missing"),
        replace(good, mounts=[Mount.bind("/usr", "/usr/../etc")]),
        replace(good, mounts=[Mount.bind("/usr", "/")]),
        replace(good, mounts=[Mount.bind("usr", "/usr")]),
        replace(good, env={"A=B": "c"}),
        replace(good, pass_fds=[1], stdout=2),
        replace(good, tmp_size=0),
        replace(good, hostname="h" * 65),
    ):
        with pytest.raises(ValueError):
            spawn(bad)


async def test_many_sandboxes_at_once_from_threads(layout: PythonLayout, root_dir: Path) -> None:
    """spawn from several threads at once: each child must still get only its own pipes."""

    async def one(i: int) -> Run:
        spec = python(layout, root_dir, f"print({i})")
        return await run(spec)

    results = await asyncio.gather(*(one(i) for i in range(8)))
    assert [r.stdout.strip() for r in results] == [str(i) for i in range(8)]
    threads = await asyncio.gather(
        *(asyncio.to_thread(_spawn_and_wait, layout, root_dir, i) for i in range(8))
    )
    assert threads == list(range(8))


def _spawn_and_wait(layout: PythonLayout, root_dir: Path, code: int) -> int:
    with spawn(python(layout, root_dir, f"raise SystemExit({code})")) as process:
        return process.wait_blocking(TIMEOUT).returncode


def test_rlimits_apply(layout: PythonLayout, root_dir: Path) -> None:
    spec = python(
        layout,
        root_dir,
        "import resource; raise SystemExit(resource.getrlimit(resource.RLIMIT_NOFILE)[0])",
        rlimits={resource.RLIMIT_NOFILE: (42, 64)},
    )
    with spawn(spec) as process:
        assert process.wait_blocking(TIMEOUT).returncode == 42


async def test_a_launch_cancelled_midway_leaves_no_sandbox_running(
    layout: PythonLayout, root_dir: Path
) -> None:
    """The worker may give up on a start (a function removed, a shutdown) while the launcher
    still runs in its thread: the sandbox it then starts must not outlive the cancel."""
    from faasd_py.worker._process import _spawn_in_thread

    code = "import time; time.sleep(60)  # cancelled-launch-probe"
    before = {p for p in os.listdir("/proc") if p.isdigit()}
    for delay in (0.0, 0.001, 0.003):
        task = asyncio.create_task(_spawn_in_thread(python(layout, root_dir, code)))
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # A cancelled launch kills what it started before the task ends; the kill takes effect
    # at once, its reaping a moment later, however busy the machine.
    assert await gone("cancelled-launch-probe", ignore=before), "sandboxes outlived the cancel"


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def host_pids_mentioning(marker: str, ignore: Collection[str] = ()) -> list[str]:
    """Pids (as the host sees them) of the processes whose command line holds `marker`."""
    return [
        p
        for p in os.listdir("/proc")
        if p.isdigit() and p not in ignore and marker.encode() in _cmdline(p)
    ]


async def gone(marker: str, ignore: Collection[str] = ()) -> bool:
    """Whether every process mentioning `marker` ends (TIMEOUT at most: a deadline that only
    catches processes left running)."""
    for _ in range(int(TIMEOUT / 0.02)):
        if not host_pids_mentioning(marker, ignore):
            return True
        await asyncio.sleep(0.02)
    return False


def read_lines(stream: BinaryIO, count: int) -> list[bytes]:
    """Up to `count` lines (fewer if the stream ends first)."""
    lines: list[bytes] = []
    while len(lines) < count and (line := stream.readline()):
        lines.append(line)
    return lines
