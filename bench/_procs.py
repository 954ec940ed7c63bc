"""Servers under test as child processes: start, wait until they answer, always stop them.

Each server runs in its own session (so a Ctrl-C in the terminal reaches the benchmark only,
which then stops the servers in order) with its output in a log file shown when it fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class ServerError(Exception):
    """A server under test did not start, did not answer, or exited early."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"

    def stop(self, grace: float) -> int | None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL whatever is left of its group."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        # The group outlives its leader when children (sandboxes) linger.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        try:
            return self.process.wait(5)
        except subprocess.TimeoutExpired:
            return None


def kill_strays(marker: str) -> list[int]:
    """SIGKILL every process whose command line holds `marker`, a folder unique to this run.

    What a server under test left behind (sandboxes run in sessions of their own, so killing
    the server's group misses them); the pids, so that the caller can say so.
    """
    needle = marker.encode()
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


def start_server(name: str, argv: Sequence[str], log_path: Path, cwd: Path | None = None) -> Server:
    log = log_path.open("wb")
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        log.close()
    return Server(name=name, process=process, log_path=log_path)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of a GET; HTTP error statuses are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until_ok(server: Server, url: str, timeout: float, expect_body: bytes | None) -> bytes:
    """Poll `url` until it answers 200 (and `expect_body`, when given); the body it answered."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not server.alive:
            raise ServerError(
                f"{server.name} exited with status {server.process.returncode} before {url} "
                f"answered 200; the end of its log ({server.log_path}):\n{server.log_tail()}"
            )
        try:
            status, body = http_get(url, timeout=min(10.0, timeout))
        except (OSError, urllib.error.URLError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200 and (expect_body is None or body == expect_body):
                return body
            last = f"HTTP {status}: {body[:200]!r}"
        time.sleep(0.2)
    raise ServerError(
        f"{server.name}: {url} did not answer 200 within {timeout:.0f} s (last: {last}); "
        f"the end of its log ({server.log_path}):\n{server.log_tail()}"
    )
