"""The CLI as a user runs it: the installed `faasd-py` script against a real `faasd-py up`.

One platform serves the whole e2e session (starting one takes a while); each test works in its
own folder and uses function names of its own, so tests do not see each other's functions.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

# The script the venv installed, as a user's shell finds it.
FAASD_PY = str(Path(sys.executable).with_name("faasd-py"))
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as Ctrl-C stops it; SIGKILL if it has not stopped within STOP_TIMEOUT."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


COMMAND_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def clean_environment() -> dict[str, str]:
    """The environment without FAASD_* settings of whoever runs the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FAASD_")}


@dataclass(frozen=True)
class Platform:
    """A running `faasd-py up`: where it listens and where it keeps its state."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass(frozen=True)
class Cli:
    """Runs `faasd-py` in a folder of its own, pointed at the platform by FAASD_* variables."""

    cwd: Path
    env: Mapping[str, str]

    def __call__(
        self, *args: str | Path, input: bytes = b"", env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [FAASD_PY, *map(str, args)],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        return subprocess.CompletedProcess(
            done.args,
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )

    def ok(self, *args: str | Path, input: bytes = b"") -> str:
        """Run a command that must succeed; its stdout."""
        done = self(*args, input=input)
        assert done.returncode == 0, f"faasd-py {args} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [FAASD_PY, *args],
            cwd=self.cwd,
            env=dict(self.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"faasd-py up exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"faasd-py up did not answer /healthz in {START_TIMEOUT}s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """`faasd-py up` on a free port; stopped with SIGTERM, which must end it cleanly."""
    root = tmp_path_factory.mktemp("platform")
    data_dir, log = root / "data", root / "up.log"
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [FAASD_PY, "up", "--port", str(port), "--data-dir", str(data_dir)],
            env=clean_environment(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        yield Platform(url, data_dir, process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"faasd-py up did not stop within {STOP_TIMEOUT}s of SIGTERM")
        assert code == 0, f"faasd-py up exited with {code} after SIGTERM:\n{log.read_text()}"


@pytest.fixture
def faasd(platform: Platform, tmp_path: Path) -> Cli:
    """The CLI in this test's folder, talking to the platform through FAASD_* variables."""
    env = {
        **clean_environment(),
        "FAASD_GATEWAY": platform.url,
        "FAASD_DATA_DIR": str(platform.data_dir),
    }
    return Cli(cwd=tmp_path, env=env)


@pytest.fixture
def offline_cli(tmp_path: Path) -> Cli:
    """The CLI with no platform: for help and for failures before any request."""
    return Cli(cwd=tmp_path, env={**clean_environment(), "FAASD_DATA_DIR": str(tmp_path)})
