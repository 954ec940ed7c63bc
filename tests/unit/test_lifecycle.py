"""The pure app lifecycle (faasd_py.worker._lifecycle): scripted times in, actions out."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from faasd_py.cli import cli
from faasd_py.cli._functions import keepalive_lines
from faasd_py.config import live_policy
from faasd_py.scheduler import FixedKeepAlive, HybridConfig, HybridPolicy, NoUnload, Reason
from faasd_py.worker import Action, AppLifecycle, describe_json

LOAD, PREWARM, UNLOAD = Action.LOAD, Action.PREWARM, Action.UNLOAD


def periodic(period: float, bin_width: float = 1.0) -> AppLifecycle:
    """A hybrid app that has learnt idle times of exactly `period` (a representative
    histogram: every sample in one bin)."""
    config = HybridConfig(range=240 * bin_width, bin_width=bin_width)
    app = HybridPolicy(config).new_app()
    for k in range(10):
        app.observe(k * 100.0, k * 100.0 + period)
    return AppLifecycle("hybrid", app)


def call(life: AppLifecycle, at: float, seconds: float = 0.1) -> list[Action]:
    """An invocation arriving at `at` and running `seconds`: every action it caused."""
    return life.arrival(at) + life.end(at + seconds)


def test_a_periodic_app_is_unloaded_at_once_and_prewarmed_before_its_next_call() -> None:
    life = periodic(20.0)
    windows = life.policy.windows(0.0)
    assert windows.reason is Reason.HISTOGRAM and 0 < windows.prewarm < 20 < windows.keepalive
    assert call(life, 1000.0) == [UNLOAD]
    end = 1000.1
    assert not life.loaded
    assert life.load_at == pytest.approx(end + windows.prewarm)
    assert life.unload_at == pytest.approx(end + windows.keepalive)
    assert life.next_deadline == life.load_at
    assert life.due(end + windows.prewarm - 0.01) == []
    assert life.due(end + windows.prewarm) == [PREWARM]
    assert life.loaded and life.next_deadline == life.unload_at
    # The next call comes inside the window: no load, and its idle time is learnt.
    before = life.observations
    assert life.arrival(end + 20.0) == []
    assert life.observations == before + 1
    assert life.load_at is None and life.unload_at is None


def test_the_keepalive_timer_unloads_a_prewarmed_app_that_was_not_called() -> None:
    life = periodic(20.0)
    call(life, 0.0)
    assert life.due(life.load_at or 0) == [PREWARM]
    unload_at = life.unload_at
    assert unload_at is not None
    assert life.due(unload_at) == [UNLOAD]
    assert not life.loaded and life.next_deadline is None
    # A call after that finds the app unloaded: a cold start loads it.
    assert life.arrival(unload_at + 5) == [LOAD]


def test_a_late_driver_never_loads_an_app_only_to_unload_it() -> None:
    life = periodic(20.0)
    call(life, 0.0)
    assert life.due(1e6) == []  # both timers passed: the unload wins, no load
    assert not life.loaded and life.next_deadline is None


def test_an_early_call_cold_starts_and_cancels_both_timers() -> None:
    life = periodic(20.0)
    call(life, 0.0)
    assert life.arrival(1.0) == [LOAD]
    assert life.next_deadline is None and life.due(1e6) == []


def test_too_few_samples_fall_back_to_keeping_the_app_for_the_whole_range() -> None:
    policy = live_policy("hybrid", 0.1)
    assert policy is not None
    life = AppLifecycle(policy.name, policy.new_app())
    assert call(life, 0.0, 0.5) == []
    assert life.loaded and life.unload_at == pytest.approx(0.5 + 24.0)
    assert life.statistics().decisions == {"fallback": 1}
    assert life.due(24.49) == [] and life.due(24.5) == [UNLOAD]


def test_fixed_keepalive_unloads_after_its_length_and_no_unload_never() -> None:
    fixed = AppLifecycle("fixed:1s", FixedKeepAlive(1.0).new_app())
    assert call(fixed, 0.0) == []
    assert fixed.due(1.05) == [] and fixed.due(1.1) == [UNLOAD]
    assert call(fixed, 3.0) == [LOAD]
    never = AppLifecycle("no-unload", NoUnload().new_app())
    assert call(never, 0.0) == [] and never.next_deadline is None and never.due(1e9) == []


def test_a_zero_keepalive_unloads_when_the_execution_ends() -> None:
    life = AppLifecycle("fixed:0s", FixedKeepAlive(0.0).new_app())
    assert call(life, 0.0) == [UNLOAD]


def test_only_gaps_with_nothing_in_flight_are_idle_times_and_only_the_last_end_decides() -> None:
    life = periodic(20.0)
    before = life.observations
    life.arrival(0.0)
    life.arrival(0.5)  # overlaps the first: not an idle time
    assert life.end(1.0) == []  # one still running: no windows yet
    assert life.statistics().last_windows is None
    assert life.end(2.0) == [UNLOAD]
    assert life.observations == before
    life.arrival(30.0)
    assert life.observations == before + 1
    with pytest.raises(RuntimeError):
        AppLifecycle("x", NoUnload().new_app()).end(0.0)


def test_timers_wait_while_an_execution_runs() -> None:
    life = AppLifecycle("fixed:1s", FixedKeepAlive(1.0).new_app())
    call(life, 0.0)
    life.arrival(0.5)
    assert life.due(5.0) == [] and life.loaded


def test_scaled_to_zero_by_the_user_unloads_until_the_next_arrival() -> None:
    life = periodic(20.0)
    call(life, 0.0)
    life.due(life.load_at or 0)
    life.unloaded_by_user()
    assert not life.loaded and life.next_deadline is None
    assert life.arrival(50.0) == [LOAD]


def test_describe_json_gives_windows_timers_and_no_infinity() -> None:
    life = AppLifecycle("no-unload", NoUnload().new_app())
    call(life, 0.0)
    shown = describe_json(life.statistics(), "shop", now=1.0)
    assert shown["keepaliveSeconds"] is None and shown["reason"] == "no-unload"
    assert shown["decisions"] == {"no-unload": 1} and shown["loaded"] is True
    periodic_app = periodic(20.0)
    call(periodic_app, 0.0)
    shown = describe_json(periodic_app.statistics(), "shop", now=1.0)
    assert shown["reason"] == "histogram" and shown["loaded"] is False
    assert isinstance(shown["loadInSeconds"], float) and 0 < shown["loadInSeconds"] < 20
    histogram = shown["histogram"]
    assert isinstance(histogram, dict) and histogram["samples"] == 10
    assert math.isclose(float(histogram["rangeSeconds"]), 240.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("hybrid", "hybrid:24s"), ("fixed:1s", "fixed:1s"), ("no-unload", "no-unload")],
)
def test_live_policies_scale_the_hybrid_range_with_the_bin_width(text: str, expected: str) -> None:
    policy = live_policy(text, 0.1)
    assert policy is not None and policy.name == expected
    assert live_policy(" None ", 0.1) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sometimes", "unknown policy 'sometimes'; expected hybrid"),
        ("fixed:soon", "bad policy 'fixed:soon'"),
        ("hybrid:7s", "whole number of bins"),
    ],
)
def test_bad_policies_are_named_with_the_accepted_forms(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        live_policy(text, 60.0)
    if text == "sometimes":
        assert "none" in str(error.value)


def test_a_deployed_app_is_loaded_and_kept_for_the_keepalive_only() -> None:
    life = AppLifecycle("fixed:10s", FixedKeepAlive(10.0).new_app())
    assert life.deployed(100.0) == [] and life.unload_at == 110.0
    assert life.due(110.0) == [UNLOAD]
    assert life.statistics().decisions == {}  # not a decision, and not an idle time
    assert life.arrival(200.0) == [LOAD] and life.observations == 0
    never = AppLifecycle("no-unload", NoUnload().new_app())
    assert never.deployed(0.0) == [] and never.next_deadline is None


def test_up_rejects_a_bad_policy_flag_naming_the_forms(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["up", "--data-dir", str(tmp_path), "--policy", "sometimes"])
    assert result.exit_code == 2 and "--policy" in result.output
    assert "unknown policy 'sometimes'" in result.output and "none" in result.output
    env = {"FAASD_POLICY": "hybrid:7s", "FAASD_BIN_WIDTH": "1m"}
    result = runner.invoke(cli, ["up", "--data-dir", str(tmp_path)], env=env)
    assert result.exit_code == 2 and "whole number of bins" in result.output


def test_describe_prints_the_windows_the_rule_and_the_figures() -> None:
    life = periodic(20.0)
    call(life, 0.0)
    shown = describe_json(life.statistics(), "shop", now=1.0)
    shown.update(coldStarts=1, prewarmLoads=3, prewarmHits=2, instanceSeconds=9.5)
    lines = keepalive_lines(shown)
    assert lines[0].startswith("Keep-alive (app shop, policy hybrid): unloaded; pre-warm load in")
    assert "rule histogram" in lines[1] and "idle-time histogram" in lines[1]
    assert "10 idle times" in lines[2] and "decisions: histogram 1" in lines[3]
    assert "pre-warm hits 2" in lines[4] and "instance-seconds 9.5" in lines[4]
