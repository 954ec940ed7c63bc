"""The placement policy: stable, spread when an app outgrows a worker, shrink back, never
empty; and pick() among an app's workers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faasd_py.cluster._placement import AppDemand, WorkerLoad, pick, place, slots

GB = 1 << 30


def worker(
    name: str,
    free_gb: float = 4,
    *,
    budget_gb: float = 8,
    cores: float = 2,
    cpu: float = 0.0,
    own: dict[str, int] | None = None,
) -> WorkerLoad:
    budget = int(budget_gb * GB)
    return WorkerLoad(
        name, cores, budget, budget - int(free_gb * GB), cpu, tuple((own or {}).items())
    )


def demand(instances: int = 1, gb: float = 1, app: str = "shop") -> AppDemand:
    return AppDemand(app, int(gb * GB), instances)


# --- a new app --------------------------------------------------------------------------------


def test_a_new_app_goes_to_the_worker_with_most_free_memory() -> None:
    workers = [worker("a", 2), worker("b", 6), worker("c", 4)]
    assert place(demand(), workers, ()) == ("b",)


def test_ties_on_memory_go_to_the_least_cpu_load_per_core_then_the_name() -> None:
    busy = worker("a", 4, cores=2, cpu=1.5)  # 0.75 per core
    idle_big = worker("b", 4, cores=8, cpu=2.0)  # 0.25 per core
    assert place(demand(), [busy, idle_big], ()) == ("b",)
    assert place(demand(), [worker("z", 4), worker("y", 4)], ()) == ("y",)


def test_nothing_fits_still_returns_the_best_single_worker() -> None:
    workers = [worker("a", 0.5), worker("b", 0.75), worker("c", 0.25)]
    assert place(demand(instances=3, gb=1), workers, ()) == ("b",)


def test_no_workers_no_placement() -> None:
    assert place(demand(), [], ("a",)) == ()


# --- stable, spread, shrink -------------------------------------------------------------------


def test_an_app_stays_where_it_is_while_it_fits_even_if_another_worker_is_emptier() -> None:
    workers = [worker("a", 2), worker("b", 7)]
    assert place(demand(instances=2), workers, ("a",)) == ("a",)


def test_an_app_that_outgrows_its_worker_spreads_to_the_next_best() -> None:
    workers = [worker("a", 2), worker("b", 3), worker("c", 5)]
    # a holds 2 instances, c (most room) the other 3.
    assert place(demand(instances=5), workers, ("a",)) == ("a", "c")
    # More than a and c hold together: b joins too.
    assert place(demand(instances=8), workers, ("a",)) == ("a", "c", "b")


def test_spreading_skips_workers_without_a_slot() -> None:
    workers = [worker("a", 1), worker("b", 0.5), worker("c", 1)]
    assert place(demand(instances=4), workers, ("a",)) == ("a", "c")


def test_the_apps_own_reservation_counts_as_room_on_its_workers() -> None:
    # a's budget is full of the app's own 4 instances: 4 still fit, no spread.
    full = worker("a", 0, budget_gb=4, own={"shop": 4 * GB})
    assert place(demand(instances=4), [full, worker("b", 8)], ("a",)) == ("a",)
    # Another app's reservation there does not count for it.
    assert place(demand(instances=4, app="blog"), [full, worker("b", 8)], ("a",)) == ("a", "b")


def test_shrinks_back_to_the_first_workers_once_they_hold_the_demand() -> None:
    workers = [worker("a", 2), worker("b", 3), worker("c", 5)]
    assert place(demand(instances=2), workers, ("b", "a", "c")) == ("b",)
    assert place(demand(instances=4), workers, ("b", "a", "c")) == ("b", "a")
    assert place(demand(instances=6), workers, ("b", "a", "c")) == ("b", "a", "c")


def test_a_dead_worker_is_replaced_by_the_best_live_one() -> None:
    workers = [worker("b", 1), worker("c", 3)]
    assert place(demand(), workers, ("dead",)) == ("c",)
    assert place(demand(instances=4), workers, ("b", "dead")) == ("b", "c")


def test_live_current_workers_stay_even_when_nothing_more_fits() -> None:
    workers = [worker("a", 0.5), worker("b", 0.5)]
    assert place(demand(instances=3), workers, ("b",)) == ("b",)


def test_an_app_without_memory_needs_one_worker() -> None:
    workers = [worker("a", 0), worker("b", 0)]
    assert place(demand(instances=50, gb=0), workers, ()) == ("a",)
    assert slots(demand(instances=50, gb=0), workers[0]) == 50


# --- pick -------------------------------------------------------------------------------------


def test_pick_takes_the_worker_with_fewest_outstanding_calls_ties_in_order() -> None:
    assert pick(("a",), {"a": 100}) == "a"
    assert pick(("a", "b"), {}) == "a"
    assert pick(("a", "b"), {"a": 2, "b": 1}) == "b"
    assert pick(("a", "b", "c"), {"a": 1, "b": 0, "c": 0}) == "b"
    with pytest.raises(ValueError):
        pick((), {})


# --- invariants -------------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "c", "d", "e", "f"])


@st.composite
def loads(draw: st.DrawFn) -> list[WorkerLoad]:
    chosen = draw(st.lists(names, unique=True, max_size=6))
    result = []
    for name in chosen:
        budget = draw(st.integers(0, 16)) * GB // 2
        result.append(
            WorkerLoad(
                name,
                draw(st.sampled_from([0.0, 1.0, 2.0, 8.0])),
                budget,
                draw(st.integers(0, budget)),
                draw(st.floats(0, 8)),
                tuple(
                    (app, draw(st.integers(0, 4 * GB)))
                    for app in draw(st.lists(st.sampled_from(["x", "y"]), unique=True))
                ),
            )
        )
    return result


demands = st.builds(
    AppDemand,
    st.sampled_from(["x", "y"]),
    st.sampled_from([0, GB // 4, GB, 3 * GB]),
    st.integers(1, 12),
)
currents = st.lists(names, max_size=4)


@given(demands, loads(), currents)
def test_the_result_is_live_workers_and_empty_only_without_workers(
    d: AppDemand, ws: list[WorkerLoad], current: list[str]
) -> None:
    result = place(d, ws, current)
    assert set(result) <= {w.name for w in ws}
    assert len(set(result)) == len(result)
    assert bool(result) == bool(ws)


@given(demands, loads(), currents, st.randoms(use_true_random=False))
def test_the_result_depends_on_the_workers_not_their_order(
    d: AppDemand, ws: list[WorkerLoad], current: list[str], rng: random.Random
) -> None:
    shuffled = list(ws)
    rng.shuffle(shuffled)
    assert place(d, ws, current) == place(d, shuffled, current)


@given(demands, loads(), currents)
def test_live_current_workers_are_kept_first(
    d: AppDemand, ws: list[WorkerLoad], current: list[str]
) -> None:
    by_name = {w.name: w for w in ws}
    alive = [name for name in dict.fromkeys(current) if name in by_name]
    result = place(d, ws, current)
    held = sum(slots(d, by_name[name]) for name in alive)
    if alive and held >= d.instances:
        # They hold it: the result is the shortest prefix of them that does.
        assert result == tuple(alive[: len(result)])
        assert sum(slots(d, by_name[name]) for name in result) >= d.instances
        assert sum(slots(d, by_name[name]) for name in result[:-1]) < d.instances
    else:
        # They do not: all stay, in order, and others are added only with a slot each.
        assert result[: len(alive)] == tuple(alive)
        assert all(slots(d, by_name[name]) > 0 for name in result[len(alive) :]) or (
            not alive and len(result) == 1
        )


@given(demands, loads(), currents)
def test_placing_again_from_the_result_changes_nothing(
    d: AppDemand, ws: list[WorkerLoad], current: list[str]
) -> None:
    # What gateways racing to place an app converge on: the answer is a fixed point.
    result = place(d, ws, current)
    assert place(d, ws, result) == result
