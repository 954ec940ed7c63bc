"""wrk, the HTTP load generator the warm benchmark drives: installing it, running it, reading it.

wrk's `--latency` table rounds to two digits, so a small Lua `done()` hook prints the exact
figures (microseconds, from wrk's own HdrHistogram) on one line that `parse_output` reads.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

MARKER = "WRK_RESULT"

# Runs inside wrk (LuaJIT) when the test ends. Plain key=value pairs rather than JSON: a run
# with no completed request has a NaN mean, which JSON cannot carry.
LUA_DONE = f"""\
-- faasd-py bench: print wrk's exact figures (microseconds) on one line.
done = function(summary, latency, requests)
  local e = summary.errors
  local fields = {{
    "requests", summary.requests, "duration_us", summary.duration, "bytes", summary.bytes,
    "err_connect", e.connect, "err_read", e.read, "err_write", e.write,
    "err_status", e.status, "err_timeout", e.timeout,
    "lat_min", latency.min, "lat_mean", latency.mean, "lat_stdev", latency.stdev,
    "lat_max", latency.max,
    "p50", latency:percentile(50), "p75", latency:percentile(75),
    "p90", latency:percentile(90), "p99", latency:percentile(99),
    "p999", latency:percentile(99.9),
  }}
  local out = {{}}
  for i = 1, #fields, 2 do
    out[#out + 1] = string.format("%s=%.3f", fields[i], fields[i + 1])
  end
  io.write("{MARKER} " .. table.concat(out, " ") .. "\\n")
end
"""

_PAIR = re.compile(r"(\w+)=(\S+)")


class WrkError(Exception):
    """wrk is missing and cannot be installed, or a run did not report its figures."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in milliseconds; `errors` counts every failed or non-2xx/3xx."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    errors_connect: int
    errors_read: int
    errors_write: int
    errors_timeout: int
    non_2xx_3xx: int

    @property
    def errors(self) -> int:
        return (
            self.errors_connect
            + self.errors_read
            + self.errors_write
            + self.errors_timeout
            + self.non_2xx_3xx
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors}


def parse_output(text: str) -> WrkResult:
    """The figures of the Lua hook's line in wrk's standard output."""
    line = next((ln for ln in text.splitlines() if ln.startswith(MARKER + " ")), None)
    if line is None:
        raise WrkError(f"wrk printed no {MARKER} line; its output was:\n{text.strip()}")
    raw = {key: float(value) for key, value in _PAIR.findall(line)}
    seconds = raw["duration_us"] / 1e6
    requests = int(raw["requests"])
    return WrkResult(
        requests=requests,
        seconds=seconds,
        rps=requests / seconds if seconds > 0 else 0.0,
        p50_ms=raw["p50"] / 1e3,
        p75_ms=raw["p75"] / 1e3,
        p90_ms=raw["p90"] / 1e3,
        p99_ms=raw["p99"] / 1e3,
        p999_ms=raw["p999"] / 1e3,
        mean_ms=raw["lat_mean"] / 1e3,
        max_ms=raw["lat_max"] / 1e3,
        errors_connect=int(raw["err_connect"]),
        errors_read=int(raw["err_read"]),
        errors_write=int(raw["err_write"]),
        errors_timeout=int(raw["err_timeout"]),
        non_2xx_3xx=int(raw["err_status"]),
    )


def ensure_wrk(console: Console) -> str:
    """The path of wrk, installing Debian's package first if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise WrkError("wrk is not installed and there is no apt-get here: install wrk yourself")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise WrkError("wrk is not installed; run `apt-get install -y wrk` as root")
        prefix = [sudo, "-n"]
    install = [*prefix, apt, "install", "-y", "-q", "wrk"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    console.print(f"wrk not found: installing it from Debian packages: {' '.join(install)}")
    done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        update = [*prefix, apt, "update", "-q"]
        console.print(f"that failed; refreshing the package lists first: {' '.join(update)}")
        subprocess.run(update, env=env, capture_output=True, text=True, check=False)
        console.print(f"installing again: {' '.join(install)}")
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    found = shutil.which("wrk")
    if done.returncode != 0 or found is None:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
        raise WrkError(f"could not install wrk (apt-get exited {done.returncode}):\n{tail}")
    console.print(f"installed {escape(wrk_version(found))}")
    return found


def wrk_version(wrk: str) -> str:
    # `wrk -v` prints its banner and then usage, and exits 1.
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else "wrk (unknown version)"


def run_wrk(
    wrk: str,
    url: str,
    *,
    connections: int,
    threads: int,
    seconds: float,
    script: Path,
    timeout: float = 10.0,
    cpus: str | None = None,
) -> WrkResult:
    """One wrk run against `url`; raises WrkError if wrk fails or hangs. `cpus` (taskset's
    list, e.g. "1") binds wrk to those cores, apart from a server pinned elsewhere."""
    pinned = ["taskset", "--cpu-list", cpus] if cpus else []
    argv = [
        *pinned,
        wrk,
        "--latency",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        f"--timeout={max(1, round(timeout))}s",
        f"--script={script}",
        url,
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=seconds + timeout + 30
        )
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish: {' '.join(argv)}") from None
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout}")
    return parse_output(done.stdout)


def write_script(folder: Path) -> Path:
    path = folder / "report.lua"
    path.write_text(LUA_DONE)
    return path
