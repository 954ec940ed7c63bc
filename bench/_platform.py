"""faasd-py as a server under test: build a stack, start `faasd-py up` on a free port, stop it.

The benchmarks that drive the platform from outside (warm.py, datapath.py) share this, so that
each starts it the same way: the installed `faasd-py` of this interpreter, a data directory
of the run's own, output in a log file that is shown when something fails, and a stop that
leaves no sandbox behind.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from _procs import Server, ServerError, free_port, kill_strays, start_server, wait_until_ok
from rich.console import Console
from rich.markup import escape

REPO = Path(__file__).resolve().parent.parent
NAME = "faasd-py"


@dataclass(frozen=True)
class RunningPlatform:
    server: Server
    base_url: str
    data_dir: Path

    def function_url(self, name: str) -> str:
        return f"{self.base_url}/function/{name}"

    def banner_value(self, key: str) -> str | None:
        return banner_value(self.server, key)


def banner_value(server: Server, key: str) -> str | None:
    """A `key: value` line of `up`'s banner, from the start of its log (e.g. "channel")."""
    try:
        with server.log_path.open(errors="replace") as log:
            head = [line for _, line in zip(range(100), log, strict=False)]
    except OSError:
        return None
    for line in head:
        if f"{key}:" in line:
            return line.split(f"{key}:", 1)[1].strip()
    return None


def faasd_command() -> list[str]:
    """The `faasd-py` of this interpreter's environment, or `python -m faasd_py`."""
    script = shutil.which("faasd-py", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "faasd_py"]


def build(stack_file: Path, data_dir: Path, tmp: Path, console: Console) -> None:
    """`faasd-py build -f stack_file` into data_dir; ServerError with its output if it fails."""
    argv = [*faasd_command(), "build", "-f", str(stack_file), "--data-dir", str(data_dir)]
    console.print(f"[bold]{NAME}[/]: building: {escape(' '.join(argv))}")
    server = start_server(f"{NAME} build", argv, tmp / "build.log", cwd=REPO)
    try:
        code = server.process.wait(600)
    except BaseException:
        server.stop(2)
        raise
    if code != 0:
        raise ServerError(
            f"`faasd-py build` exited {code}; the end of its output:\n{server.log_tail()}"
        )


def start(
    tmp: Path,
    stack_file: Path,
    console: Console,
    stack: ExitStack,
    *,
    up_args: Sequence[str] = (),
    ready: Sequence[tuple[str, bytes | None]] = (),
    nice: int = 0,
) -> RunningPlatform:
    """Build the stack, start `up --deploy` with it and wait until each (function, body) of
    `ready` answers 200 (with that body, when not None). `stack` stops it at exit. `nice`:
    run it (and so everything it starts) at that nice value."""
    data_dir = tmp / "data"
    build(stack_file, data_dir, tmp, console)
    port = free_port()
    argv = ["nice", "-n", str(nice)] if nice else []
    argv += [*faasd_command(), "up", "--port", str(port), "--data-dir", str(data_dir)]
    argv += [*up_args, "--deploy", str(stack_file)]
    console.print(f"[bold]{NAME}[/]: starting: {escape(' '.join(argv))}")
    server = start_server(NAME, argv, tmp / "up.log", cwd=REPO)
    # SIGTERM first: `up` finishes in-flight work and stops its instances itself.
    stack.callback(stop, console, server, 25.0, str(tmp))
    platform = RunningPlatform(server, f"http://127.0.0.1:{port}", data_dir)
    wait_until_ok(server, f"{platform.base_url}/healthz", timeout=60, expect_body=None)
    for function, body in ready:
        url = platform.function_url(function)
        wait_until_ok(server, url, timeout=180, expect_body=body)
        console.print(f"[bold]{NAME}[/]: {url} answers 200")
    return platform


def stop(console: Console, server: Server, grace: float, strays_under: str | None = None) -> None:
    """Stop a server under test; kill what it left running under `strays_under`, and say so."""
    was_alive = server.alive
    code = server.stop(grace)
    if was_alive:
        console.print(f"stopped {server.name} (exit status {code})")
    if strays_under:
        left = kill_strays(strays_under)
        if left:
            console.print(
                f"[yellow]{server.name} left {len(left)} process(es) running after it exited; "
                f"killed them[/]: {', '.join(map(str, left))}"
            )


def require_alive(server: Server) -> None:
    if not server.alive:
        raise ServerError(
            f"{server.name} exited with status {server.process.returncode} during the "
            f"benchmark; the end of its log:\n{server.log_tail()}"
        )
