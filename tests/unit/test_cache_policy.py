"""Access statistics (decay, bound, round trip), the pre-warm plan, and the sizing policy."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faasd_py.cache import AccessStats, Demand, Ranked, SizingPolicy, prewarm_plan


def test_score_mixes_frequency_and_recency() -> None:
    stats = AccessStats(half_life=60.0)
    for t in range(10):
        stats.record("old-hot", float(t))
    stats.record("new", 600.0)
    stats.record("new", 600.0)
    # Ten reads ten minutes ago have decayed by 2**-10: two fresh reads beat them.
    assert stats.score("new", 600.0) > stats.score("old-hot", 600.0)
    # At the time of the old reads, the hot key was ahead.
    assert stats.score("old-hot", 9.0) > 9.0


def test_ranking_and_working_set() -> None:
    stats = AccessStats(half_life=100.0)
    stats.record("a", 0.0, size=10)
    for _ in range(3):
        stats.record("b", 50.0, size=20)
    stats.record("c", 90.0, size=30)
    assert [r.key for r in stats.ranked(100.0)] == ["b", "c", "a"]
    ws = stats.working_set(100.0, window=60.0)
    assert (ws.keys, ws.bytes, ws.largest) == (2, 50, 30)


def test_json_round_trip_through_text() -> None:
    stats = AccessStats(max_keys=5, half_life=30.0)
    stats.record("x", 1.0, size=3)
    stats.record("x", 2.0)
    stats.record("y", 3.0, size=7)
    back = AccessStats.from_json(json.loads(json.dumps(stats.to_json())))
    assert back.to_json() == stats.to_json()
    assert back.score("x", 10.0) == stats.score("x", 10.0)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"format": 99},
        {"format": 1, "max_keys": 3, "half_life": 1.0, "keys": [[1, 1.0, 1.0, 1, 1]]},
    ],
)
def test_from_json_rejects_what_it_did_not_write(bad: object) -> None:
    with pytest.raises(ValueError):
        AccessStats.from_json(bad)


@settings(max_examples=200)
@given(
    max_keys=st.integers(1, 20),
    accesses=st.lists(st.tuples(st.integers(0, 60), st.floats(0, 1e4)), max_size=200),
)
def test_statistics_stay_within_their_bound(
    max_keys: int, accesses: list[tuple[int, float]]
) -> None:
    stats = AccessStats(max_keys=max_keys, half_life=100.0)
    now = 0.0
    for key, dt in accesses:
        now += dt
        stats.record(f"k{key}", now, size=key)
        assert len(stats) <= max_keys
        assert f"k{key}" in stats  # the key just read is never the one forgotten


def test_pruning_forgets_the_coldest_keys() -> None:
    stats = AccessStats(max_keys=10, half_life=100.0)
    for i in range(10):
        for _ in range(i + 1):
            stats.record(f"k{i}", 0.0)
    stats.record("new", 0.0)
    kept = {r.key for r in stats.ranked(0.0)}
    assert "new" in kept and "k9" in kept and "k0" not in kept


def test_prewarm_plan_skips_what_does_not_fit_and_keeps_going() -> None:
    ranked = [
        Ranked("big", 9.0, 80),
        Ranked("mid", 8.0, 30),
        Ranked("huge", 7.0, 1000),
        Ranked("unknown", 6.0, 0),
        Ranked("small", 5.0, 10),
        Ranked("cold", 0.0, 1),
    ]
    plan = prewarm_plan(ranked, budget=100, bypass_bytes=500)
    assert [r.key for r in plan] == ["big", "small"]
    assert [r.key for r in prewarm_plan(ranked, 100, 500, max_keys=1)] == ["big"]


@given(
    sizes=st.lists(st.tuples(st.floats(0, 100), st.integers(0, 200)), max_size=30),
    budget=st.integers(0, 500),
    bypass=st.integers(0, 300),
)
def test_prewarm_plan_stays_within_budget_in_rank_order(
    sizes: list[tuple[float, int]], budget: int, bypass: int
) -> None:
    ranked = sorted(
        (Ranked(f"k{i}", s, n) for i, (s, n) in enumerate(sizes)), key=lambda r: -r.score
    )
    plan = prewarm_plan(ranked, budget, bypass)
    assert sum(r.size for r in plan) <= budget
    assert all(0 < r.size <= bypass for r in plan)
    order = [r.key for r in ranked]
    assert [r.key for r in plan] == sorted((r.key for r in plan), key=order.index)


MiB = 1024 * 1024


def test_sizing_follows_the_working_set_between_minimum_and_maximum() -> None:
    policy = SizingPolicy(min_bytes=4 * MiB, max_per_app=64 * MiB, total=1024 * MiB)
    small, mid, large, wide = policy.decide(
        [
            Demand("small", working_set=1 * MiB, largest=100),
            Demand("mid", working_set=16 * MiB, largest=MiB),
            Demand("large", working_set=500 * MiB, largest=MiB),
            Demand("wide", working_set=1 * MiB, largest=10 * MiB),
        ]
    )
    assert (small.budget, small.reason) == (4 * MiB, "minimum (working set is smaller)")
    assert (mid.budget, mid.reason) == (20 * MiB, "working set")
    assert (large.budget, large.reason) == (64 * MiB, "per-app maximum (working set is larger)")
    assert wide.budget == 20 * MiB  # room for two of its largest objects


def test_sizing_scales_down_to_the_worker_total() -> None:
    policy = SizingPolicy(min_bytes=10, max_per_app=1000, total=300, headroom=1.0)
    a, b = policy.decide([Demand("a", 1000, 0), Demand("b", 200, 0)])
    assert a.reason == b.reason == "scaled down to the worker total"
    assert a.budget + b.budget <= 300 and a.budget > b.budget >= 10


@given(
    demands=st.lists(
        st.tuples(st.integers(0, 10**9), st.integers(0, 10**8)), min_size=1, max_size=12
    ),
    minimum=st.integers(0, 10**7),
    extra=st.integers(0, 10**9),
    total=st.integers(0, 2 * 10**9),
)
def test_sizing_never_exceeds_the_total_nor_the_per_app_maximum(
    demands: list[tuple[int, int]], minimum: int, extra: int, total: int
) -> None:
    policy = SizingPolicy(min_bytes=minimum, max_per_app=minimum + extra, total=total)
    decisions = policy.decide([Demand(f"a{i}", ws, big) for i, (ws, big) in enumerate(demands)])
    assert sum(d.budget for d in decisions) <= total
    for d in decisions:
        assert 0 <= d.budget <= d.wish <= policy.max_per_app
        if minimum * len(demands) <= total:
            assert d.budget >= min(minimum, d.wish)
