"""bench/async.py's pure parts: matching callbacks to the requests that caused them (Tally), the
records of its phases, the medians over runs, and the issue's two goals as the report states
them."""

from __future__ import annotations

import importlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

# The benchmark's modules import one another by bare name, as the scripts run from bench/.
sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))

from _async_report import goals, markdown, record, summarize
from _async_tally import Tally

MACHINE = {
    "date": "2026-01-01T00:00:00+00:00",
    "cpu_model": "test CPU",
    "cores": 2,
    "kernel": "6.0",
    "python": "3.11.7",
    "commit": "abc123",
}


def test_a_callback_that_beats_its_202_is_matched_and_timed_from_the_due_time() -> None:
    tally = Tally(start=10.0, end=20.0, expected_status="202", callbacks=True)
    tally.expect("c1", 12.0)
    # The consumer was quicker than the client: the callback comes before the 202 is read.
    assert tally.receive("c1", "200", 12.004)
    tally.answer("202", 12.0, 12.006)
    summary = tally.summary()
    assert summary["callbacks"]["received"] == 1
    assert summary["callbacks"]["lost"] == 0
    assert summary["callbacks"]["p50_ms"] == pytest.approx(4.0, rel=0.01)
    assert summary["request"]["p99_ms"] == pytest.approx(6.0, rel=0.01)


def test_duplicates_unknown_ids_and_lost_calls_are_counted_apart() -> None:
    tally = Tally(start=0.0, end=10.0, expected_status="202", callbacks=True)
    for call_id in ("a", "b", "c"):
        tally.expect(call_id, 1.0)
    assert tally.receive("a", "200", 1.5)
    assert not tally.receive("a", "200", 1.7)  # delivered again: at least once
    assert not tally.receive("zzz", "200", 1.8)  # not a call of this phase
    assert tally.receive("b", "500", 2.0)
    callbacks = tally.summary()["callbacks"]
    assert callbacks["duplicates"] == 1
    assert callbacks["unknown"] == 1
    assert callbacks["lost"] == 1  # "c" never called back
    assert callbacks["not_200"] == 1
    assert callbacks["statuses"] == {"200": 1, "500": 1}
    # The duplicate did not count twice in the latencies either.
    assert tally.callback_latency.count == 2


def test_a_refused_enqueue_awaits_no_callback() -> None:
    tally = Tally(start=0.0, end=10.0, expected_status="202", callbacks=True)
    tally.expect("a", 1.0)
    tally.answer("429", 1.0, 1.001)
    tally.reject("a")
    summary = tally.summary()
    assert summary["callbacks"]["lost"] == 0
    assert summary["errors"] == 1
    assert summary["answers"] == {"429": 1}
    assert summary["answers_per_second"] == 0


def test_only_the_window_counts_warm_up_and_drain_do_not() -> None:
    tally = Tally(start=1.0, end=3.0, expected_status="202", callbacks=True)
    tally.expect("warm", 0.5)  # sent during the warm-up
    tally.answer("202", 0.5, 0.51)
    tally.expect("in", 1.5)
    tally.answer("202", 1.5, 1.51)
    tally.expect("late", 2.9)
    tally.answer("202", 2.9, 2.91)
    tally.receive("warm", "200", 1.2)  # arrives inside: counts for throughput, not latency
    tally.receive("in", "200", 1.6)
    tally.receive("late", "200", 4.0)  # the drain, after the window
    summary = tally.summary()
    assert summary["answers"] == {"202": 2}
    assert summary["successes"] == 3
    assert summary["answers_per_second"] == 1.0  # two 202s in two seconds
    assert summary["callbacks"]["per_second"] == 1.0  # "warm" and "in" arrived inside
    assert tally.completed_after() == 1
    assert tally.callback_latency.count == 2  # "in" and "late" were sent inside


def test_an_async_record_measures_callbacks_its_drain_and_cpu_per_completed_call() -> None:
    tally = Tally(start=0.0, end=2.0, expected_status="202", callbacks=True)
    for n in range(10):
        tally.expect(f"c{n}", n * 0.1)
        tally.answer("202", n * 0.1, n * 0.1 + 0.001)
        tally.receive(f"c{n}", "200", n * 0.1 + 0.05 if n < 6 else 2.5)
    rec = record(
        "embedded",
        1,
        "async",
        tally.summary(),
        drain_seconds=2.0,
        after_window=tally.completed_after(),
        cpu={"up": 0.010, "instances": 0.002},
    )
    assert rec["per_second"] == 3.0  # 6 callbacks inside 2 s, not the 10 202s' 5.0
    assert rec["drain_per_second"] == 2.0  # 4 calls in 2 s
    assert rec["cpu_ms_per_call"] == pytest.approx({"up": 1.0, "instances": 0.2})
    assert rec["callback_p50_ms"] is not None
    assert rec["lost"] == 0


def _run(
    queue: str, run: int, sync: float, asyn: float, p99: float, offered: float = 100.0
) -> list[dict[str, Any]]:
    """The records of one run, with only the figures the goals read."""
    base: dict[str, Any] = {
        "queue": queue,
        "run": run,
        "offered_rate": None,
        "answer_p50_ms": 1.0,
        "answer_p99_ms": 2.0,
        "callback_p50_ms": None,
        "callback_p99_ms": None,
        "lag_p99_ms": None,
        "drain_per_second": None,
        "errors": 0,
        "lost": 0,
        "duplicates": 0,
        "cpu_ms_per_call": None,
    }
    return [
        {**base, "phase": "sync", "per_second": sync},
        {**base, "phase": "async", "per_second": asyn},
        {
            **base,
            "phase": "fixed-enqueue",
            "offered_rate": offered,
            "per_second": offered,
            "answer_p99_ms": p99,
        },
    ]


def test_goals_take_each_runs_own_ratio_and_the_median_over_runs_per_queue() -> None:
    records = [
        *_run("embedded", 1, sync=1000, asyn=600, p99=3.0),
        *_run("embedded", 2, sync=2000, asyn=800, p99=4.0),  # a slow async run: 0.4
        *_run("embedded", 3, sync=1000, asyn=550, p99=9.0),
        *_run("redis", 1, sync=1000, asyn=300, p99=6.0),
    ]
    found = {(g.queue, g.what.split()[0]): g for g in goals(records)}
    embedded_share = found["embedded", "async"]
    assert embedded_share.value == pytest.approx(0.55)  # median of 0.6, 0.4, 0.55
    assert embedded_share.worst == pytest.approx(0.4)
    assert embedded_share.met
    assert found["embedded", "enqueue"].value == 4.0
    assert found["embedded", "enqueue"].worst == 9.0
    assert found["embedded", "enqueue"].met
    assert not found["redis", "async"].met
    assert not found["redis", "enqueue"].met


def test_summaries_skip_figures_a_phase_does_not_have() -> None:
    records = [*_run("embedded", 1, 1000, 600, 3.0), *_run("embedded", 2, 1200, 500, 5.0)]
    cells = summarize(records)
    sync = cells["embedded", "sync"]
    assert sync.runs == 2
    assert sync.median["per_second"] == 1100
    assert (sync.minimum["per_second"], sync.maximum["per_second"]) == (1000, 1200)
    assert "callback_p50_ms" not in sync.median
    assert sync.spread("per_second") == "1,100 (1,000..1,200)"
    assert sync.spread("callback_p99_ms") == "-"


def test_the_report_states_each_goal_and_whether_it_was_met() -> None:
    records = [*_run("embedded", 1, 1000, 600, 3.0), *_run("redis", 1, 1000, 300, 6.0)]
    text = markdown("Async", MACHINE, {"runs": 1}, records, ["a note"])
    assert text.startswith("# Async\n")
    assert "test CPU · 2 cores · Linux 6.0 · Python 3.11.7 · commit abc123" in text
    assert "| embedded | async / sync throughput >= 0.5 | 0.60 | 0.60 | yes |" in text
    assert "| redis | async / sync throughput >= 0.5 | 0.30 | 0.30 | no |" in text
    assert "| redis | enqueue p99 at half the enqueue rate < 5 ms | 6.00 | 6.00 | no |" in text
    assert "| embedded | 1,000 | 600 | 0.60 |" in text
    assert text.rstrip().endswith("- a note")


def test_the_report_marks_a_fixed_rate_the_consumer_could_not_keep_up_with() -> None:
    records = [
        *_run("embedded", 1, 1000, 600, 3.0, offered=500),
        *_run("redis", 1, 1000, 300, 6.0, offered=500),  # above redis's 300 calls/s
        *_run("redis", 2, 1000, 600, 6.0, offered=500),
    ]
    text = markdown("Async", MACHINE, {"runs": 2}, records)
    assert "| redis | async, half the enqueue rate * |" in text
    assert "| embedded | async, half the enqueue rate |" in text
    assert "\\* redis: in run(s) 1 half the enqueue rate was above the async throughput" in text
    assert "embedded: in run(s)" not in text


# --- the split topology ------------------------------------------------------------------------


def _bench_script() -> Any:
    """bench/async.py as a module (`async` is a keyword: no import statement can name it)."""
    return importlib.import_module("async")


def test_split_is_redis_only_and_is_the_default_queue_there() -> None:
    script = _bench_script()
    args = script.parse_args(["--topology", "split", "--quick"])
    assert (args.queues, args.consumers) == (["redis"], ["up"])
    assert script.parse_args(["--quick"]).queues == ["embedded", "redis"]  # `one` as before
    with pytest.raises(SystemExit):
        script.parse_args(["--topology", "split", "--queues", "embedded,redis"])
    with pytest.raises(SystemExit):
        script.parse_args(["--topology", "split", "--consumer", "nobody"])


def test_cpu_is_reported_per_role_per_call_and_as_cores_busy() -> None:
    tally = Tally(start=0.0, end=2.0, expected_status="202", callbacks=True)
    for n in range(4):
        tally.expect(f"c{n}", n * 0.1)
        tally.answer("202", n * 0.1, n * 0.1 + 0.001)
        tally.receive(f"c{n}", "200", n * 0.1 + 0.05)
    cpu = {"gateway": 0.004, "consumer": 0.008, "consumer_instances": 0.002, "bench": 0.002}
    rec = record("redis split, up", 1, "fixed-enqueue", tally.summary(), cpu=cpu, wall_seconds=4)
    assert rec["cpu_ms_per_call"] == pytest.approx(
        {"gateway": 1.0, "consumer": 2.0, "consumer_instances": 0.5, "bench": 0.5}
    )
    assert rec["cpu_cores"]["consumer"] == pytest.approx(0.002)
    records = [{**r, "queue": "redis split, up"} for r in _run("redis", 1, 1000, 600, 3.0)]
    records[-1] = {**records[-1], "cpu_ms_per_call": rec["cpu_ms_per_call"]}
    records[-1]["cpu_cores"] = rec["cpu_cores"]
    text = markdown("Async", MACHINE, {"topology": "split"}, records)
    # A column per role any row has, in the report's order; no column for roles none has.
    header = (
        "| queue | phase | enqueueing up (gateway, worker; no consumer) | consumer process "
        "| consumer's instances | benchmark (client, receiver) | all |"
    )
    assert text.count(header) == 2  # per call, and cores busy
    assert "| redis split, up | fixed-enqueue | 1.00 | 2.00 | 0.50 | 0.50 | 4.00 |" in text
    assert "up (gateway, worker, consumer)" not in text


def test_a_split_report_is_written_as_async_split(tmp_path: Path) -> None:
    script = _bench_script()
    records = _run("redis split, up", 1, 1000, 600, 3.0)
    for rec in records:
        rec["detail"] = {}
    source = tmp_path / "in.json"
    settings = {"runs": 1, "topology": "split", "consumers": "up"}
    report = {"machine": MACHINE, "settings": settings, "runs": records, "notes": ["n"]}
    source.write_text(json.dumps(report))
    out = tmp_path / "out"
    script.rewrite_reports(source, out, Console(file=io.StringIO()))
    assert (out / "async-split.json").exists()
    assert not (out / "async.json").exists()
    text = (out / "async-split.md").read_text()
    assert text.startswith("# Async invocations") and "split" in text.splitlines()[0]
    assert "| redis split, up | enqueue p99 at half the enqueue rate < 5 ms | 3.00 |" in text


def test_cpu_seconds_of_a_real_process_and_of_what_runs_below_it() -> None:
    from _async_topology import CpuRole, cpu_seconds
    from _procs import Server

    # A parent that burns CPU in a child it started: its own seconds and those below it apart.
    code = (
        "import subprocess, sys; "
        "subprocess.run([sys.executable, '-c', 'import time\\nend = time.process_time() + 0.3\\n"
        "while time.process_time() < end: pass\\nprint(1, flush=True)\\ntime.sleep(60)'])"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == b"1"  # the child burnt its CPU
            server = Server("parent", process, Path("/dev/null"))
            seconds = cpu_seconds([CpuRole("gateway", server, "instances")])
            assert set(seconds) == {"gateway", "instances", "bench"}
            assert seconds["instances"] >= 0.25
            assert seconds["gateway"] < seconds["instances"]
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the parent and the child, in its session
