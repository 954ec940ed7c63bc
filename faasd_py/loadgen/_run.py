"""A benchmark run from start to report: check the gateway, run the plan, summarize.

What `faasd-py bench` does between parsing its options and printing: no terminal I/O here (the
live display is a callback), so the same steps serve the CLI, bench scripts and tests.
"""

from __future__ import annotations

import datetime as dt
import http.client
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faasd_py.errors import Unavailable
from faasd_py.loadgen._coordinator import OnProgress, run_plan
from faasd_py.loadgen._machine import load_average, machine_info
from faasd_py.loadgen._plan import Plan
from faasd_py.loadgen._summary import Ceiling, summarize

# Each probe of the gateway gets this long: a gateway that is down is reported within seconds.
PROBE_TIMEOUT = 2.0
# Header values that reports leave out: they are credentials.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


def check_gateway(gateway: str, timeout: float = PROBE_TIMEOUT) -> int:
    """GET /healthz; any HTTP answer means the gateway is there (its status is returned).

    Raises Unavailable, within `timeout`, when nothing answers: a run against a gateway that is
    down would only fill a report with connection errors.
    """
    url = gateway.rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code  # an answer all the same: another gateway may have no /healthz
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise Unavailable(
            f"cannot reach the gateway at {gateway} ({reason}); is `faasd-py up` running? "
            "Point --gateway (or FAASD_GATEWAY) at it."
        ) from None


def describe(plan: Plan, source: str | None = None) -> str:
    """A run in words, for titles: what is invoked, how, for how long."""
    if plan.trace is not None:
        trace = plan.trace
        target = f"invoking {trace.target}" if trace.target else "each on its own deployed function"
        return (
            f"trace replay of {len(trace.functions):,} functions ({source or 'trace'}), "
            f"{trace.replay_minutes} minutes at {trace.speedup:g}x in {trace.seconds:.0f} s, "
            f"{trace.spread} within minutes, {target}"
        )
    if plan.mode == "closed":
        return (
            f"{plan.function}: closed loop, {plan.concurrency} connections for {plan.seconds:g} s"
        )
    steps = plan.steps()
    if len(steps) == 1:
        return f"{plan.function}: open loop at {steps[0].rate:,g} req/s for {plan.seconds:g} s"
    return (
        f"{plan.function}: open loop, {len(steps)} rate steps from {steps[0].rate:,g} to "
        f"{steps[-1].rate:,g} req/s, {plan.step:g} s each"
    )


def plan_config(plan: Plan, source: str | None = None) -> dict[str, Any]:
    """The settings of a run as run.json records them (credentials left out)."""
    request = plan.request
    config: dict[str, Any] = {
        "mode": plan.mode,
        "gateway": plan.gateway,
        "function": plan.function if plan.trace is None else None,
        "rates": list(plan.rates) or None,
        "step_s": plan.step if len(plan.rates) > 1 else None,
        "concurrency": plan.concurrency or None,
        "duration_s": plan.seconds,
        "warmup_s": plan.lead_in,
        "procs": plan.procs,
        "seed": plan.seed,
        "method": request.method,
        "headers": [
            [k, "(left out)" if k.lower() in _SECRET_HEADERS else v] for k, v in request.headers
        ],
        "body_bytes": len(request.body),
        "timeout_s": request.timeout,
        "inflight_cap": plan.inflight_cap,
        "trace": None,
    }
    if plan.trace is not None:
        trace = plan.trace
        config["trace"] = {
            "source": source,
            "functions": len(trace.functions),
            "apps": len({f.app for f in trace.functions}),
            "speedup": trace.speedup,
            "spread": trace.spread,
            "start_minute": trace.start_minute,
            "minutes": trace.replay_minutes,
            "target": trace.target,
            "work": trace.work,
            "cap_ms": trace.cap_ms,
        }
    return config


def run_bench(
    plan: Plan,
    *,
    ceiling: Ceiling,
    label: str,
    source: str | None = None,
    checkout: Path | None = None,
    on_progress: OnProgress | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run `plan` and return its report (run.json's dict)."""
    before = load_average()
    finished = run_plan(plan, on_progress)
    after = load_average()
    meta = {
        "label": label,
        "title": describe(plan, source),
        "started_at": dt.datetime.fromtimestamp(finished.started_at, dt.UTC).isoformat(
            timespec="seconds"
        ),
        "config": plan_config(plan, source),
        "machine": machine_info(checkout),
        "load_average": {"before": before, "after": after},
        **(extra or {}),
    }
    return summarize(
        finished.stats,
        plan,
        interrupted=finished.interrupted,
        recorded_seconds=finished.recorded_seconds,
        ceiling=ceiling,
        meta=meta,
    )
