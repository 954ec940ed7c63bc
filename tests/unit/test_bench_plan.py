"""Plan: the schedule each generator process derives, its warm-up, steps and URLs."""

from __future__ import annotations

import pytest

from faasd_py.loadgen._plan import Plan, TraceReplay
from faasd_py.loadgen._schedule import Arrival, RateStep
from faasd_py.traces import TraceFunction

GATEWAY = "http://127.0.0.1:8080"


def test_the_processes_shares_make_up_the_whole_schedule_once() -> None:
    one = Plan(GATEWAY, "hello", rates=(500.0,), duration=2.0, warmup=1.0, seed=4)
    whole = list(one.arrivals(0))
    plan = Plan(GATEWAY, "hello", rates=(500.0,), duration=2.0, warmup=1.0, procs=3, seed=4)
    shares = [list(plan.arrivals(i)) for i in range(3)]
    assert sorted(a.at for share in shares for a in share) == [a.at for a in whole]
    for share in shares:
        assert [a.at for a in share] == sorted(a.at for a in share)
    # Warm-up first (at the first rate), then the recorded two seconds.
    assert 0 < sum(a.at < 1.0 for a in whole) < len(whole)
    assert max(a.at for a in whole) < 3.0


def test_rate_steps_start_after_the_warm_up_and_arrivals_know_their_step() -> None:
    plan = Plan(GATEWAY, "hello", rates=(100.0, 200.0, 300.0), step=2.0, duration=None, warmup=1.0)
    assert plan.steps() == [
        RateStep(1.0, 100.0, 2.0),
        RateStep(3.0, 200.0, 2.0),
        RateStep(5.0, 300.0, 2.0),
    ]
    assert plan.seconds == 6.0
    assert plan.total_seconds == 7.0
    assert [plan.step_of(t) for t in (0.5, 1.0, 2.9, 3.0, 6.9)] == [0, 0, 0, 1, 2]
    # One rate: no steps to tell apart.
    assert Plan(GATEWAY, "hello", rates=(100.0,), duration=5.0).step_of(2.0) is None


def test_closed_loop_connections_are_spread_over_the_processes() -> None:
    plan = Plan(GATEWAY, "hello", concurrency=7, procs=3, duration=10.0, warmup=2.0)
    assert plan.mode == "closed"
    assert [plan.share(i) for i in range(3)] == [3, 2, 2]
    assert plan.seconds == 10.0
    assert plan.total_seconds == 12.0


def test_urls_quote_the_function_name() -> None:
    plan = Plan("http://gw:8080/", "a b", rates=(1.0,))
    assert plan.url() == "http://gw:8080/function/a%20b"


def trace(counts: tuple[int, ...]) -> TraceFunction:
    return TraceFunction("owner", "app", "function", "http", counts)


def test_a_trace_replay_has_no_warm_up_and_lasts_its_minutes_over_the_speedup() -> None:
    replay = TraceReplay((trace((1, 2, 3, 4)),), speedup=60.0, start_minute=1, minutes=2)
    plan = Plan(GATEWAY, "trace", trace=replay, warmup=5.0)
    assert plan.mode == "trace"
    assert plan.lead_in == 0.0
    assert replay.replay_minutes == 2
    assert plan.seconds == 2.0
    arrivals = list(plan.arrivals(0))
    assert len(arrivals) == 2 + 3  # minutes 1 and 2
    assert all(0 <= a.at < 2.0 for a in arrivals)
    # Asking for more minutes than the trace has replays what it has.
    assert TraceReplay((trace((1, 2)),), minutes=10).replay_minutes == 2


@pytest.mark.parametrize(
    ("target", "cap", "duration", "expected"),
    [
        ("trace-func", None, 12.5, "/function/trace-func?mode=sleep&ms=12.500"),
        ("trace-func", 10.0, 12.5, "/function/trace-func?mode=sleep&ms=10.000"),
        (None, None, 3.0, "/function/tf-abc?mode=sleep&ms=3.000"),  # its own deployment
        ("trace-func", None, None, "/function/trace-func?mode=sleep"),  # no durations file
    ],
)
def test_trace_urls_carry_the_sampled_duration(
    target: str | None, cap: float | None, duration: float | None, expected: str
) -> None:
    replay = TraceReplay((trace((1,)),), target=target, cap_ms=cap)
    plan = Plan(GATEWAY, "trace", trace=replay)
    assert plan.url(Arrival(0.5, "tf-abc", duration)) == GATEWAY + expected
