"""A stand-in for a function of a trace: runs for as long as it is asked, then answers.

`faasd-py bench --trace` replays each trace function's invocations against this function with
the duration drawn for that invocation: `?ms=12.5` (default 0) and `&mode=sleep` (default: wait
without using the CPU, as an I/O-bound function does) or `&mode=spin` (keep a CPU busy, as a
compute-bound one does). The answer says what it did, as JSON.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

# Longer than any exec_timeout worth setting: a wrong query must not pin an instance for hours.
MAX_MS = 600_000.0


def _bad(message: str) -> dict[str, Any]:
    return {"statusCode": 400, "body": json.dumps({"error": message})}


def handle(event: Any, context: Any) -> dict[str, Any]:
    try:
        ms = float(event.query.get("ms", "0"))
    except ValueError:
        return _bad(f"ms must be a number of milliseconds, got {event.query.get('ms')!r}")
    if not math.isfinite(ms) or not 0 <= ms <= MAX_MS:
        return _bad(f"ms must be between 0 and {MAX_MS:g}, got {ms!r}")
    mode = event.query.get("mode", "sleep")
    if mode not in ("sleep", "spin"):
        return _bad(f"mode must be sleep or spin, got {mode!r}")
    started = time.perf_counter()
    if mode == "sleep":
        time.sleep(ms / 1000)
    else:
        deadline = started + ms / 1000
        while time.perf_counter() < deadline:
            pass
    took = (time.perf_counter() - started) * 1000
    return {
        "statusCode": 200,
        "body": json.dumps({"mode": mode, "ms": ms, "took_ms": round(took, 3)}),
        "headers": {"Content-Type": "application/json"},
    }
