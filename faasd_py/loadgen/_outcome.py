"""What one request's outcome counts as: its error kind, and the stages its Server-Timing names.

Pure functions over a status, a header value or an exception, so the engine's hot path stays a
few calls and the rules are tested without a network.
"""

from __future__ import annotations

import math

from faasd_py.http1 import ConnectFailed

# The stages faasd-py's gateway reports in Server-Timing (milliseconds), in the order reports
# show them. `total` is the gateway's own time for the request (its handler's entry to the
# response): what the client waited beyond it went to HTTP, the network and the generator.
STAGES = ("queue", "cold-start", "execution", "total")
COLD_START = "cold-start"

# Errors by kind, in the order reports show them. "overloaded" is the generator's own: an
# arrival skipped because the process already had its cap of requests in flight.
ERROR_KINDS = ("connect", "timeout", "4xx", "5xx", "other", "overloaded")
OVERLOADED = "overloaded"


def status_error(status: int) -> str | None:
    """The error kind of an HTTP status, or None for a success (1xx-3xx)."""
    if 400 <= status < 500:
        return "4xx"
    if status >= 500:
        return "5xx"
    return None


def exception_kind(exc: BaseException) -> str:
    """The error kind of a request that raised instead of answering."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectFailed):
        return "connect"
    return "other"


def describe(exc: BaseException) -> str:
    """One line naming the exception, kept short: reports show one sample per kind."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return (f"{name}: {text}" if text else name)[:300]


def parse_server_timing(header: str) -> dict[str, float]:
    """The `dur` of each metric in a Server-Timing header, in milliseconds.

    `queue;dur=0.1, cold-start;dur=0, execution;dur=1.5` -> {"queue": 0.1, ...}. Metrics
    without a usable `dur` are left out rather than read as zero: a stage the gateway did not
    time must not look instantaneous.
    """
    found: dict[str, float] = {}
    for metric in header.split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        if not name:
            continue
        for param in params:
            key, sep, value = param.partition("=")
            if sep and key.strip().lower() == "dur":
                try:
                    ms = float(value.strip().strip('"'))
                except ValueError:
                    break
                if math.isfinite(ms) and ms >= 0:
                    found[name] = ms
                break
    return found
