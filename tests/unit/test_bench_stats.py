"""RunStats: what the engine records, how processes' shares merge and travel as JSON."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from faasd_py.loadgen._histogram import Histogram
from faasd_py.loadgen._stats import RunStats

TIMING = {"queue": 0.25, "cold-start": 0.0, "execution": 1.5, "total": 2.0}
COLD = {"queue": 0.0, "cold-start": 180.0, "execution": 2.0}


def test_an_answer_counts_its_status_stages_and_groups() -> None:
    stats = RunStats()
    stats.record_answer(2000, 200, TIMING, second=0, step=1, function="f")
    stats.record_answer(185_000, 200, COLD, second=1, function="f")
    stats.record_answer(900, 404, TIMING, second=1)
    assert stats.answered == 3
    assert stats.statuses == {200: 2, 404: 1}
    assert stats.errors == {"4xx": 1}
    assert stats.timed == 3
    assert stats.cold_starts == 1
    # The cold-start stage holds only the answers that had one.
    assert stats.stages["cold-start"].count == 1
    assert stats.stages["cold-start"].max == 180_000
    assert stats.stages["queue"].count == 3
    assert stats.stages["execution"].percentile(0) == 1500
    assert [stats.timeline[s].count for s in (0, 1)] == [1, 2]
    assert stats.timeline[1].errors == 1
    assert stats.steps[1].count == 1
    assert stats.functions["f"].count == 2
    assert stats.functions["f"].cold_starts == 1


def test_without_server_timing_no_stage_is_recorded() -> None:
    stats = RunStats()
    stats.record_answer(1000, 200, None, second=0)
    assert stats.timed == 0
    assert stats.stages == {}
    assert stats.cold_starts == 0


def test_failures_count_as_errors_of_their_kind_with_one_sample() -> None:
    stats = RunStats()
    stats.record_failure("connect", "ClientConnectorError: refused", second=0)
    stats.record_failure("connect", "ClientConnectorError: another", second=2, function="g")
    stats.record_failure("overloaded", "generator overloaded", second=2, step=0)
    assert stats.errors == {"connect": 2, "overloaded": 1}
    assert stats.error_samples["connect"] == "ClientConnectorError: refused"
    assert stats.skipped == 1
    assert stats.answered == 0  # failures have no latency
    assert stats.error_count == 3
    assert stats.timeline[2].count == stats.timeline[2].errors == 2
    assert stats.functions["g"].errors == 1


# Outcomes as (latency us, status or 0 for a failure, cold, second, function index).
outcomes = st.lists(
    st.tuples(
        st.integers(1, 10**8),
        st.sampled_from([0, 200, 404, 500]),
        st.booleans(),
        st.integers(0, 5),
        st.integers(0, 3),
    ),
    max_size=60,
)


def record(stats: RunStats, outcome: tuple[int, int, bool, int, int]) -> None:
    latency, status, cold, second, function = outcome
    if status == 0:
        stats.record_failure("timeout", "TimeoutError", second, function=f"f{function}")
        return
    timing = COLD if cold else TIMING
    stats.record_answer(latency, status, timing, second, step=second % 2, function=f"f{function}")


@given(outcomes, st.integers(1, 4))
def test_processes_shares_merged_after_json_equal_one_process_recording_all(
    all_outcomes: list[tuple[int, int, bool, int, int]], procs: int
) -> None:
    whole = RunStats()
    for outcome in all_outcomes:
        record(whole, outcome)
    merged = RunStats()
    for index in range(procs):
        share = RunStats()
        for outcome in all_outcomes[index::procs]:
            record(share, outcome)
        # As the share travels from a generator process to the coordinator.
        merged.merge(RunStats.from_json(json.loads(json.dumps(share.to_json()))))
    assert merged.to_json() == whole.to_json()
    assert merged.latency == whole.latency


def test_counters_merge_and_round_trip() -> None:
    a = RunStats(intended=10, sent=8, unsent=1, unfinished=1, warmup_sent=3)
    a.lag.record(500)
    b = RunStats(intended=5, sent=5)
    b.lag.record(1500)
    a.merge(RunStats.from_json(b.to_json()))
    assert (a.intended, a.sent, a.unsent, a.unfinished, a.warmup_sent) == (15, 13, 1, 1, 3)
    expected = Histogram()
    expected.record(500)
    expected.record(1500)
    assert a.lag == expected
    assert RunStats.from_json(a.to_json()).to_json() == a.to_json()
