"""Reports: the summary of a run, its flags, report.md, the comparison, where reports go."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from faasd_py.errors import BadRequest
from faasd_py.loadgen._markdown import TOP_FUNCTIONS, compare_markdown, run_markdown
from faasd_py.loadgen._plan import Plan, TraceReplay
from faasd_py.loadgen._report import (
    default_out_dir,
    find_checkout,
    load_run,
    run_names,
    write_comparison,
    write_run,
)
from faasd_py.loadgen._stats import RunStats
from faasd_py.loadgen._summary import Ceiling, summarize
from faasd_py.traces import TraceFunction

REPO = Path(__file__).resolve().parents[2]
OPEN = Plan("http://gw", "hello", rates=(100.0,), duration=10.0, procs=2)
TIMING = {"queue": 0.1, "cold-start": 0.0, "execution": 1.0}
NO_CEILING = Ceiling(None, "not measured (--no-self-test)")


def steady(answers: int = 1000, timing: dict[str, float] | None = TIMING) -> RunStats:
    """A run that kept its schedule: every request sent on time and answered 200."""
    stats = RunStats(intended=answers, sent=answers)
    for i in range(answers):
        stats.lag.record(200)
        stats.record_answer(1000 + i, 200, timing, second=i * 10 // answers)
    return stats


def report_of(
    stats: RunStats,
    plan: Plan = OPEN,
    *,
    ceiling: Ceiling = NO_CEILING,
    interrupted: bool = False,
    seconds: float = 10.0,
) -> dict[str, Any]:
    meta = {"label": "t", "title": "hello: test", "config": {"gateway": plan.gateway}}
    return summarize(
        stats,
        plan,
        interrupted=interrupted,
        recorded_seconds=seconds,
        ceiling=ceiling,
        meta=meta,
    )


def test_a_clean_run_has_its_figures_and_no_flags() -> None:
    report = report_of(steady())
    assert report["flags"] == []
    totals = report["totals"]
    assert (totals["intended"], totals["sent"], totals["answered"], totals["ok"]) == (1000,) * 4
    assert totals["throughput_rps"] == 100.0
    latency = report["latency_ms"]
    assert latency["p50"] == pytest.approx(1.5, abs=0.002)
    assert latency["max"] == 1.999
    assert latency["min"] == 1.0
    assert report["status_codes"] == {"200": 1000}
    assert set(report["errors"].values()) == {0}
    assert report["stages_ms"]["execution"]["p50"] == 1.0
    assert report["stages_ms"]["cold-start"] is None  # no answer had a cold start
    assert report["cold_starts"] == 0
    assert [row["count"] for row in report["timeline"]] == [100] * 10
    assert json.loads(json.dumps(report)) == report
    assert "No flags" in run_markdown(report)


def test_without_server_timing_the_stage_columns_are_absent_not_zero() -> None:
    report = report_of(steady(timing=None))
    assert report["stages_ms"] is None
    assert report["cold_starts"] is None
    assert "Absent: the gateway sent no Server-Timing" in run_markdown(report)


def test_a_generator_behind_schedule_is_flagged() -> None:
    stats = steady()
    for _ in range(50):
        stats.lag.record(25_000)
    flags = report_of(stats)["flags"]
    assert len(flags) == 1
    assert "fell behind its schedule" in flags[0]
    assert "25.0 ms late at p99" in flags[0]


def test_a_rate_not_reached_is_flagged() -> None:
    stats = steady(900)
    stats.intended = 1000
    stats.unsent = 100
    (flag,) = report_of(stats)["flags"]
    assert "sent 900 of the 1,000 requests due (90%)" in flag


def test_closed_loop_runs_are_not_judged_by_their_schedule() -> None:
    stats = steady()
    for _ in range(50):
        stats.lag.record(25_000)
    closed = Plan("http://gw", "hello", concurrency=8, duration=10.0)
    report = report_of(stats, closed)
    assert report["flags"] == []
    assert report["generator"]["lag_ms"] is None


def test_coming_near_the_generator_ceiling_is_flagged() -> None:
    assert report_of(steady(), ceiling=Ceiling(200.0, "measured now"))["flags"] == []
    (flag,) = report_of(steady(), ceiling=Ceiling(140.0, "measured now"))["flags"]
    assert "71% of the generator's own ceiling (140 req/s with 2 processes)" in flag
    report = report_of(steady(), ceiling=Ceiling(140.0, "measured now"))
    assert "ceiling 140 req/s (measured now)" in run_markdown(report)
    assert "ceiling not measured (--no-self-test)" in run_markdown(report_of(steady()))


def test_errors_skips_and_interruptions_are_flagged() -> None:
    stats = RunStats(intended=6, sent=5, unfinished=1)
    for _ in range(3):
        stats.record_answer(1000, 404, None, second=0)
    stats.record_failure("timeout", "TimeoutError", second=0)
    stats.record_failure("overloaded", "generator overloaded", second=0)
    report = report_of(stats, interrupted=True, seconds=4.0)
    flags = "\n".join(report["flags"])
    assert "interrupted (Ctrl-C) after 4.0 of 10.0 recorded seconds" in flags
    assert "1 arrivals skipped" in flags
    assert "1 requests were still waiting" in flags
    assert "5 of 5 requests failed: timeout 1, 4xx 3 (HTTP 404 x 3), overloaded 1" in flags
    assert report["partial"] is True
    text = run_markdown(report)
    assert "| timeout | 1 | TimeoutError |" in text
    assert "| 404 | 3 |" in text


def test_rate_steps_get_a_row_each() -> None:
    plan = Plan("http://gw", "hello", rates=(100.0, 200.0), step=5.0, duration=None)
    stats = RunStats()
    for step, n in ((0, 500), (1, 900)):
        for _ in range(n):
            stats.record_answer(2000, 200, None, second=0, step=step)
    report = report_of(stats, plan)
    steps = report["steps"]
    assert [s["offered_rps"] for s in steps] == [100.0, 200.0]
    assert [s["throughput_rps"] for s in steps] == [100.0, 180.0]
    assert "## Rate steps" in run_markdown(report)


def test_the_functions_table_shows_the_busiest_and_sums_up_the_rest() -> None:
    functions = tuple(TraceFunction("o", "a", f"f{i}", "http", (1,)) for i in range(30))
    plan = Plan("http://gw", "trace", trace=TraceReplay(functions))
    stats = RunStats()
    for i in range(30):
        for _ in range(i + 1):
            stats.record_answer(1000, 200, None, second=0, function=f"fn{i:02}")
    report = report_of(stats, plan)
    assert [f["function"] for f in report["functions"][:2]] == ["fn29", "fn28"]
    text = run_markdown(report)
    table = text[text.index("## Functions") :].splitlines()
    rows = [line for line in table if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == TOP_FUNCTIONS + 2
    assert rows[0].startswith("| fn29 | 30 |")
    assert rows[-2].startswith("| *10 others* | 55 |")  # 1 + 2 + ... + 10
    assert rows[-1].startswith("| *all* | 465 |")


def test_names_and_messages_cannot_break_the_tables() -> None:
    stats = RunStats()
    stats.record_failure("other", "ValueError: a|b", second=0)
    assert "ValueError: a\\|b" in run_markdown(report_of(stats))


def test_the_comparison_puts_runs_side_by_side_with_ratios() -> None:
    fast, slow = report_of(steady()), report_of(steady(500), seconds=10.0)
    text = compare_markdown([fast, slow], ["fast", "slow"])
    assert "| figure | fast | slow | slow / fast |" in text
    assert "| answered req/s | 100 | 50 | 0.50x |" in text
    assert "| cold starts | 0 | 0 | - |" in text


def test_reports_are_written_and_read_back(tmp_path: Path) -> None:
    report = report_of(steady())
    written = write_run(tmp_path / "a", report)
    names = {p.name for p in written.paths}
    assert {"run.json", "report.md", "cdf.png", "timeline.png"} <= names
    assert load_run(tmp_path / "a" / "run.json") == report
    write_run(tmp_path / "b", report_of(steady(500)))
    compared = write_comparison(
        tmp_path / "c", [tmp_path / "a" / "run.json", tmp_path / "b" / "run.json"]
    )
    assert {p.name for p in compared.paths} == {
        "compare.md",
        "compare-cdf.png",
        "compare-timeline.png",
    }
    assert "| answered req/s | 100 | 50 | 0.50x |" in (tmp_path / "c" / "compare.md").read_text()


def test_only_run_reports_are_compared(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"benchmark": "warm"}')
    with pytest.raises(BadRequest, match=r"not a run\.json written by `faasd-py bench`"):
        load_run(other)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(BadRequest, match=r"broken\.json is not JSON"):
        load_run(broken)
    with pytest.raises(BadRequest, match="cannot read"):
        load_run(tmp_path / "missing.json")


def test_run_names_come_from_folders_and_stay_unique() -> None:
    paths = [Path("x/a/run.json"), Path("y/a/run.json"), Path("b.json")]
    assert run_names(paths) == ["a (1)", "a (2)", "b"]


def test_reports_go_under_bench_results_in_a_checkout_else_here(tmp_path: Path) -> None:
    now = dt.datetime(2026, 1, 2, 15, 4, 5)
    assert find_checkout(REPO / "faasd_py" / "cli") == REPO
    inside = default_out_dir("hello-r2000", now, REPO / "tests")
    assert inside == REPO / "bench" / "results" / "20260102-150405-hello-r2000"
    outside = default_out_dir("a b/c", now, tmp_path)
    assert outside == tmp_path / "faasd-bench-20260102-150405-a-b-c"
