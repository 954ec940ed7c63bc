"""bench/warm.py and bench/profile_warm.py's pure parts: run records and their CPU per request,
medians, issue 14's goals met or missed, the report written again from its JSON; py-spy and
perf output grouped into the warm path's stages; the /proc readers of bench/_cpu.py against
real processes; the python3-http template's Flask app answering as the other servers do."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

# The benchmark's modules import one another by bare name, as the scripts run from bench/.
sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))

import _cpu
import _warm_profile as wp
import _warm_report as wr
import warm

MACHINE = {
    "date": "2026-01-01T00:00:00+00:00",
    "cpu_model": "test CPU",
    "cores": 2,
    "kernel": "6.0",
    "python": "3.11.7",
    "commit": "abc123",
}


def wrk(rps: float, p50: float, seconds: float = 10.0) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "requests": int(rps * seconds),
        "seconds": seconds,
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p50 * 3,
        "errors": 0,
    }
    return figures


def run(variant: str, connections: int, rps: float, p50: float, cpu_us: float) -> dict[str, Any]:
    seconds = 10.0
    server = cpu_us * rps * seconds / 1e6
    record: dict[str, Any] = wr.record(
        variant,
        connections,
        1,
        wrk(rps, p50, seconds),
        server_cpu_s=server,
        wrk_cpu_s=2.0,
        machine_busy_s=server + 2.5,
    )
    return record


def test_a_record_holds_cpu_per_request_and_cores() -> None:
    rec = wr.record(
        "bare",
        16,
        2,
        wrk(20_000, 0.5),
        server_cpu_s=8.0,
        wrk_cpu_s=3.0,
        machine_busy_s=12.0,
        threads=2,
    )
    assert rec["cpu_us"] == pytest.approx(40.0)  # 8 s over 200,000 requests
    assert rec["server_cores"] == pytest.approx(0.8)
    assert rec["wrk_cores"] == pytest.approx(0.3)
    assert rec["machine_us"] == pytest.approx(45.0)  # (12 - 3) s over the requests
    assert rec["other_cores"] == pytest.approx(0.1)  # 12 - 3 - 8 s over 10 s
    assert (rec["variant"], rec["connections"], rec["run"], rec["threads"]) == ("bare", 16, 2, 2)


def test_medians_over_runs_with_their_spread() -> None:
    runs = [run("bare", 16, rps, 0.5, cpu) for rps, cpu in ((10, 30), (30, 50), (20, 40))]
    (cell,) = wr.summarize(runs)
    assert cell.runs == 3
    assert cell.medians["rps"] == 20 and cell.minimums["rps"] == 10 and cell.maximums["rps"] == 30
    assert cell.medians["cpu_us"] == pytest.approx(40)


def all_runs(faasd_cpu: float, faasd_rps16: float) -> list[dict[str, Any]]:
    return [
        run(wr.SUBJECT, 1, 4000, 0.3, faasd_cpu),
        run(wr.BARE, 1, 9000, 0.25, 30),
        run(wr.SUBJECT, 16, faasd_rps16, 1.0, faasd_cpu),
        run(wr.BARE, 16, 20_000, 0.8, 30),
        run(wr.NET, 16, faasd_rps16 / 3, 3.0, 300),
        run(wr.FLASK, 16, 4000, 4.0, 200),
        run(wr.ONE_CORE, 16, 6000, 2.0, faasd_cpu),
        run(wr.TWO_CORES, 16, 11_000, 1.0, faasd_cpu),
    ]


def test_goals_met_missed_and_not_measured() -> None:
    verdicts = {g.goal: g.met for g in wr.goals(wr.summarize(all_runs(55, 12_000)))}
    assert verdicts == {
        "server CPU per warm invocation (hello, sandboxed, shm), at 16 connections": True,
        "throughput at 16 connections / bare aiohttp's": True,  # 0.6x
        "throughput at 64 connections / bare aiohttp's": None,  # no 64-connection runs
        "p50 at 1 connection / bare aiohttp's": True,  # 1.2x
        "shm / net throughput at 16 connections": True,  # 3x
        "shm / net p50 at 16 connections": True,  # a third
        "throughput on 2 cores / pinned to 1, at 16 connections": True,  # 1.83x
    }
    missed = {g.goal: g.met for g in wr.goals(wr.summarize(all_runs(280, 5000)))}
    assert (
        missed["server CPU per warm invocation (hello, sandboxed, shm), at 16 connections"] is False
    )
    assert missed["throughput at 16 connections / bare aiohttp's"] is False


def test_the_report_is_written_again_from_its_json(tmp_path: Path) -> None:
    runs = all_runs(280, 5000)
    source = tmp_path / "in" / "warm.json"
    source.parent.mkdir()
    report = {
        "benchmark": "warm",
        "machine": MACHINE,
        "settings": {"duration_s": 10},
        "tools": {},
        "notes": ["a note"],
        "runs": [r for r in runs if "core" not in r["variant"]],
        "scaling_runs": [r for r in runs if "core" in r["variant"]],
    }
    source.write_text(json.dumps(report))
    out = tmp_path / "out"
    warm.rewrite_reports(source, out, Console(file=io.StringIO()))
    text = (out / "warm.md").read_text()
    assert (
        "| throughput at 16 connections / bare aiohttp's | >= 0.50x | 0.25x | **missed** |" in text
    )
    assert "| 16 | flask-waitress |" in text and "| 16 | faasd-py 1 core |" in text
    assert "- a note" in text
    written = json.loads((out / "warm.json").read_text())
    assert {g["met"] for g in written["goals"]} == {False, None, True}
    assert len(written["scaling_summary"]) == 2


def test_a_report_without_runs_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "warm.json"
    source.write_text('{"machine": {}}')
    with pytest.raises(warm.BenchError, match="runs"):
        warm.rewrite_reports(source, tmp_path, Console(file=io.StringIO()))


PYSPY = """\
<module> (faasd-py:6);run (faasd_py/server.py:56);Runner.run (asyncio/runners.py:118) 40
invoke (faasd_py/gateway/_invoke.py:61);Response.__init__ (aiohttp/web_response.py:723) 30
invoke (faasd_py/gateway/_invoke.py:50) 10
Worker.invoke (faasd_py/worker/_worker.py:348);ShmChannel.send (faasd_py/datapath/x.py:106) 15
invoke (faasd_py/gateway/_invoke.py:61);GatewayMetrics.observe (faasd_py/gateway/_metrics.py:73) 5
serve (faasd_py/runtime/_serve.py:87);ShmEndpoint.wait (faasd_py/datapath/shm.py:335) 100
"""


def test_samples_go_to_the_stage_of_their_innermost_matching_frame() -> None:
    part = wp.shares(wp.parse_pyspy(PYSPY))
    assert part.total == 200 and part.waits == 100
    assert part.stages == {
        "event loop (uvloop's C: epoll, socket reads and writes, callbacks)": 40,
        "HTTP parsing and response building (the lean /function/ front, aiohttp)": 30,
        "gateway invoke (request to reply, Server-Timing)": 10,
        "doorbells and shm rings (cffi calls: eventfd, futex, ring push/pop)": 15,
        "metrics": 5,
    }
    assert wp.stage_of(["main (somewhere/else.py:1)"]) == wp.OTHER
    front = [
        "Runner.run (asyncio/runners.py:118)",
        "FrontProtocol._respond (faasd_py/gateway/_front.py:9)",
    ]
    assert wp.stage_of(front).startswith("HTTP parsing")


PERF = """\
# Samples: 1K of event 'cpu-clock'
#
    50.00%  libpython3.11.so.1.0   [.] _PyEval_EvalFrameDefault
    30.00%  _native.abi3.so        [.] shm_poll
    15.00%  [kernel.kallsyms]      [k] finish_task_switch.isra.0
     5.00%  libc.so.6              [.] syscall
"""


def test_perf_lines_by_library_and_the_instances_wait_share() -> None:
    rows = wp.parse_perf(PERF)
    assert rows[1] == (30.0, "_native.abi3.so", "shm_poll")
    assert list(wp.by_library(rows).values()) == [50.0, 30.0, 15.0, 5.0]
    assert wp.wait_share(rows) == pytest.approx(0.45)


def test_the_breakdown_adds_up_to_the_measured_cpu() -> None:
    up = wp.shares(wp.parse_pyspy(PYSPY))
    instance = wp.shares(
        wp.parse_pyspy("serve (faasd_py/runtime/_serve.py:92);handle (function/handler.py:2) 10\n")
    )
    rows = wp.breakdown(100.0, up, 50.0, instance, instance_wait=0.4)
    assert sum(r.us for r in rows) == pytest.approx(150.0)
    assert sum(r.percent for r in rows) == pytest.approx(100.0)
    by_stage = {(r.side, r.stage): r.us for r in rows}
    assert by_stage[("instance", wp.INSTANCE_WAIT)] == pytest.approx(20.0)
    assert by_stage[("instance", "instance: handler")] == pytest.approx(30.0)
    assert by_stage[("up", "metrics")] == pytest.approx(5.0)


def test_proc_readers_see_a_child_and_its_cpu() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.time() + 0.3\nwhile time.time() < end: pass\ntime.sleep(30)",
        ]
    )
    try:
        before = _cpu.machine_busy_s()
        assert child.pid in _cpu.tree(os.getpid())
        deadline = time.monotonic() + 20
        while _cpu.sample(os.getpid()).descendants_s < 0.1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _cpu.sample(os.getpid()).descendants_s >= 0.1
        assert _cpu.machine_busy_s() > before
        voluntary, involuntary = _cpu.context_switches([child.pid])
        assert voluntary + involuntary > 0
        cores = os.sched_getaffinity(0)
        assert _cpu.pin(child.pid, {min(cores)}) >= 1
        assert os.sched_getaffinity(child.pid) == {min(cores)}
    finally:
        child.kill()
        child.wait()


def test_the_template_app_answers_hello_on_any_path() -> None:
    pytest.importorskip("flask")
    pytest.importorskip("waitress")
    import _warm_flask

    client = _warm_flask.app.test_client()
    for path in ("/", "/function/hello", "/function/hello/a/b"):
        answer = client.post(path, data=b"hi")
        assert (answer.status_code, answer.data) == (200, b"hello")
