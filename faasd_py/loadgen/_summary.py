"""A finished run as the report states it: totals, percentiles, breakdowns and flags.

Pure: `summarize` takes the merged RunStats and what the run was asked to do, and returns the
JSON-able dict that run.json holds (with the histograms, so a report can be redrawn and
compared later) and that the markdown and the plots are made from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from faasd_py.loadgen._histogram import Histogram
from faasd_py.loadgen._outcome import ERROR_KINDS, STAGES
from faasd_py.loadgen._plan import Plan
from faasd_py.loadgen._stats import Group, RunStats

FORMAT = "faasd-py-bench-run/1"
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))

# When a run is flagged as not to be trusted as it stands.
MAX_LAG_P99_MS = 10.0  # sends late by more than this at p99: the schedule was not kept
MIN_SEND_SHARE = 0.95  # fewer sends than this share of the schedule
CEILING_SHARE = 0.70  # throughput at this share of the generator's own ceiling


@dataclass(frozen=True)
class Ceiling:
    """The generator's measured ceiling (req/s) for this many processes, or why there is none."""

    rps: float | None
    source: str  # "measured now", "cached from <date>", "not measured (--no-self-test)"


def latency_summary(histogram: Histogram) -> dict[str, float] | None:
    """Percentiles, max, min and mean in milliseconds; None for an empty histogram."""
    if not histogram.count:
        return None
    values = histogram.percentiles([p for _, p in PERCENTILES])
    summary = {name: v / 1000 for (name, _), v in zip(PERCENTILES, values, strict=True)}
    summary.update(
        max=histogram.max / 1000,
        min=histogram.min / 1000,
        mean=histogram.mean / 1000,
        count=float(histogram.count),
    )
    return summary


def _group_row(group: Group) -> dict[str, Any]:
    latency = group.latency
    p50, p99 = latency.percentiles([50, 99]) if latency.count else (0, 0)
    return {
        "count": group.count,
        "errors": group.errors,
        "cold_starts": group.cold_starts,
        "p50_ms": p50 / 1000 if latency.count else None,
        "p99_ms": p99 / 1000 if latency.count else None,
        "mean_ms": latency.mean / 1000 if latency.count else None,
    }


def _timeline(stats: RunStats, seconds: float) -> list[dict[str, Any]]:
    """One row per second of the recorded window, empty seconds included (a stall shows)."""
    last = max([math.ceil(seconds) - 1, *stats.timeline.keys(), 0])
    empty = Group()
    return [{"second": s, **_group_row(stats.timeline.get(s, empty))} for s in range(last + 1)]


def _steps(stats: RunStats, plan: Plan) -> list[dict[str, Any]] | None:
    if plan.mode != "open" or len(plan.rates) < 2:
        return None
    rows = []
    for index, step in enumerate(plan.steps()):
        group = stats.steps.get(index, Group())
        ok = group.count - group.errors
        rows.append(
            {
                "offered_rps": step.rate,
                "seconds": step.duration,
                "throughput_rps": group.count / step.duration if step.duration else 0.0,
                "ok_rps": ok / step.duration if step.duration else 0.0,
                **_group_row(group),
            }
        )
    return rows


def _functions(stats: RunStats) -> list[dict[str, Any]] | None:
    if not stats.functions:
        return None
    rows = [{"function": name, **_group_row(g)} for name, g in stats.functions.items()]
    return sorted(rows, key=lambda r: (-r["count"], r["function"]))


def flags(
    stats: RunStats,
    plan: Plan,
    throughput: float,
    ceiling: Ceiling,
    interrupted: bool,
    recorded_seconds: float,
) -> list[str]:
    """What a reader must know before trusting the figures, one sentence each."""
    found = []
    if interrupted:
        found.append(
            f"interrupted (Ctrl-C) after {recorded_seconds:.1f} of {plan.seconds:.1f} recorded "
            "seconds: a partial report"
        )
    if plan.mode != "closed" and stats.lag.count:
        lag_p99 = stats.lag.percentile(99) / 1000
        if lag_p99 > MAX_LAG_P99_MS:
            found.append(
                f"the generator fell behind its schedule: sends went out {lag_p99:,.1f} ms late "
                f"at p99 (at most {stats.lag.max / 1000:,.1f} ms); the offered rate was not "
                "kept, and latencies (counted from the intended send times) include that delay"
            )
    if plan.mode != "closed" and stats.intended and stats.sent < MIN_SEND_SHARE * stats.intended:
        found.append(
            f"the generator sent {stats.sent:,} of the {stats.intended:,} requests due "
            f"({stats.sent / stats.intended:.0%}): it could not reach the rate asked for"
        )
    if stats.skipped:
        found.append(
            f"generator overloaded: {stats.skipped:,} arrivals skipped because a process had "
            f"{plan.inflight_cap:,} requests in flight"
        )
    if ceiling.rps and throughput >= CEILING_SHARE * ceiling.rps:
        found.append(
            f"throughput reached {throughput / ceiling.rps:.0%} of the generator's own ceiling "
            f"({ceiling.rps:,.0f} req/s with {plan.procs} processes): the generator may be the "
            "bottleneck"
        )
    if stats.unfinished:
        found.append(
            f"{stats.unfinished:,} requests were still waiting for an answer when the run ended"
        )
    if stats.error_count:
        found.append(
            f"{stats.error_count:,} of {attempts(stats):,} requests failed: {_errors(stats)}"
        )
    return found


def attempts(stats: RunStats) -> int:
    """Requests that answered, failed without an answer, or were skipped."""
    no_answer = sum(n for kind, n in stats.errors.items() if kind not in _STATUS_KINDS)
    return stats.answered + no_answer


_STATUS_KINDS = ("4xx", "5xx")


def _errors(stats: RunStats) -> str:
    """ "4xx 3 (HTTP 404 x 3), timeout 1": the kinds, and the statuses behind 4xx and 5xx."""
    parts = []
    for kind in ERROR_KINDS:
        n = stats.errors.get(kind)
        if not n:
            continue
        if kind in _STATUS_KINDS:
            first = int(kind[0])
            codes = [
                f"HTTP {c} x {m:,}" for c, m in sorted(stats.statuses.items()) if c // 100 == first
            ]
            parts.append(f"{kind} {n:,} ({', '.join(codes)})")
        else:
            parts.append(f"{kind} {n:,}")
    return ", ".join(parts)


def summarize(
    stats: RunStats,
    plan: Plan,
    *,
    interrupted: bool,
    recorded_seconds: float,
    ceiling: Ceiling,
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """The whole report of a run. `meta` (label, config, machine, times) is included as is."""
    seconds = recorded_seconds or 0.0
    throughput = stats.answered / seconds if seconds else 0.0
    ok = sum(n for status, n in stats.statuses.items() if status < 400)
    timed = stats.timed > 0
    report: dict[str, Any] = {
        "format": FORMAT,
        **meta,
        "mode": plan.mode,
        "partial": interrupted,
        "generator": {
            "procs": plan.procs,
            "ceiling_rps": ceiling.rps,
            "ceiling_source": ceiling.source,
            "lag_ms": latency_summary(stats.lag) if plan.mode != "closed" else None,
        },
        "flags": flags(stats, plan, throughput, ceiling, interrupted, seconds),
        "totals": {
            "recorded_seconds": seconds,
            "intended": stats.intended,
            "sent": stats.sent,
            "answered": stats.answered,
            "ok": ok,
            "errors": stats.error_count,
            "skipped": stats.skipped,
            "unsent": stats.unsent,
            "unfinished": stats.unfinished,
            "warmup_sent": stats.warmup_sent,
            "intended_rps": stats.intended / seconds if seconds else 0.0,
            "sent_rps": stats.sent / seconds if seconds else 0.0,
            "throughput_rps": throughput,
            "ok_rps": ok / seconds if seconds else 0.0,
        },
        "latency_ms": latency_summary(stats.latency),
        "status_codes": {str(k): v for k, v in sorted(stats.statuses.items())},
        "errors": {kind: stats.errors.get(kind, 0) for kind in ERROR_KINDS},
        "error_samples": dict(stats.error_samples),
        # Against a gateway that sends no Server-Timing these are None, not zero.
        "stages_ms": (
            {stage: latency_summary(stats.stages.get(stage, Histogram())) for stage in STAGES}
            if timed
            else None
        ),
        "timed_answers": stats.timed,
        "cold_starts": stats.cold_starts if timed else None,
        "timeline": _timeline(stats, seconds),
        "steps": _steps(stats, plan),
        "functions": _functions(stats),
        "histograms": {
            "latency": stats.latency.to_json(),
            "lag": stats.lag.to_json(),
            "stages": {k: v.to_json() for k, v in stats.stages.items()},
            "timeline": {str(k): g.latency.to_json() for k, g in sorted(stats.timeline.items())},
        },
    }
    return report
