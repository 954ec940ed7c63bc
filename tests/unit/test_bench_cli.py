"""`faasd-py bench`: its two forms, usage errors (exit 2) and a gateway that is down (exit 1).

Nothing here starts a run: every case fails before the generator processes would start.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from faasd_py.cli import cli
from faasd_py.loadgen._progress import Progress, render
from tests.unit.test_cli_options import closed_port


def bench(*args: str, tmp: Path | None = None) -> Result:
    env = {"FAASD_DATA_DIR": str(tmp)} if tmp else None
    return CliRunner().invoke(cli, ["bench", *args], env=env)


def test_help_explains_both_forms_and_lists_the_run_options() -> None:
    result = bench("--help")
    assert result.exit_code == 0
    assert "faasd-py bench FUNCTION [OPTIONS]" in result.output
    assert "faasd-py bench report A.json B.json" in result.output
    assert "Options of `faasd-py bench [run]`" in result.output
    assert "--rate R|A:B:S" in result.output
    assert "default: 30s" in result.output  # the per-request timeout of bench, not 60s


def test_without_arguments_bench_shows_its_help() -> None:
    result = bench()
    assert "faasd-py bench FUNCTION [OPTIONS]" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hello", "--rate", "100", "--duration", "0"], "--duration must be above zero"),
        (["hello", "--rate", "-5"], "the rate must not be negative"),
        (["hello", "--rate", "0"], "the rate must be above zero"),
        (["hello", "--rate", "500:100:100"], "below the start rate"),
        (["hello", "--rate", "100", "--step", "0s"], "--step must be above zero"),
        (["hello", "--concurrency", "0"], "0 is not in the range x>=1"),
        (["hello"], "give either --rate (open loop) or --concurrency"),
        (["hello", "--rate", "1", "--concurrency", "2"], "give either --rate"),
        ([], None),  # no arguments: help
        (["--rate", "100"], "give a FUNCTION to benchmark"),
        (["hello", "--rate", "1", "--body", "x", "--body-size", "1k"], "--body or --body-size"),
        (["hello", "--rate", "1", "--body-size", "lots"], "expected a size"),
        (["hello", "--rate", "1", "--body", "@/nonexistent/file"], "cannot read"),
        (["hello", "--synthetic-trace"], "a FUNCTION or a trace"),
        (["--synthetic-trace", "--rate", "5"], "are for a FUNCTION, not a trace"),
        (["--synthetic-trace", "--durations", __file__], "--durations goes with --trace"),
        (["--self-test", "hello"], "--self-test runs alone"),
        (["report", "only-one.json"], "at least two run.json files"),
        (["hello", "--rate", "1", "--gateway", "ftp://gw"], "expected an http:// URL"),
    ],
)
def test_usage_errors_exit_2_with_their_reason(args: list[str], message: str | None) -> None:
    result = bench(*args)
    if message is None:
        assert "Usage" in result.output
        return
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_an_unknown_first_argument_is_the_function_of_a_run_and_report_is_a_command(
    tmp_path: Path,
) -> None:
    # Both fail before running anything; which message they give shows which command ran.
    as_run = bench("report", "--rate", "1", tmp=tmp_path)
    assert "Usage: cli bench report [OPTIONS] RUNS..." in as_run.output
    assert "No such option '--rate'" in as_run.output
    as_function = bench("reports", "--rate", "1", "--duration", "0")
    assert "--duration must be above zero" in as_function.output


def test_a_gateway_that_is_down_is_a_clear_error_within_seconds(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    result = bench("hello", "--rate", "10", "--gateway", url, "--no-self-test", tmp=tmp_path)
    # No retries and no waiting out the 30 s request timeout (a generous bound for a busy
    # machine; the refused connection itself is immediate).
    assert time.monotonic() - started < 15
    assert result.exit_code == 1
    assert f"cannot reach the gateway at {url}" in result.output


def test_progress_shows_phase_rate_latency_and_errors() -> None:
    progress = Progress(total_seconds=12.0, lead_in=2.0, intended_rate=100.0)
    progress.update(
        0, {"sent": 50, "answered": 40, "errors": 2, "inflight": 3, "latency": _latencies()}
    )
    progress.update(
        1, {"sent": 70, "answered": 60, "errors": 1, "inflight": 1, "latency": _latencies()}
    )
    progress.tick(1.0)
    assert render(progress).plain.startswith("warming up   1.0/12.0 s  sent 120")
    progress.update(
        0, {"sent": 150, "answered": 140, "errors": 2, "inflight": 0, "latency": _latencies()}
    )
    progress.tick(2.0)
    text = render(progress).plain
    assert text.startswith("running   2.0/12.0 s  sent 220")
    assert "rate 100/s (of 100/s)" in text  # 100 more sent in the last second
    assert "p50 1.00 ms  p99 1.00 ms" in text
    assert "errors 3" in text
    assert "in flight 1" in text


def _latencies() -> dict[str, object]:
    from faasd_py.loadgen._histogram import Histogram

    histogram = Histogram()
    histogram.record(1000)
    return histogram.to_json()


def test_a_malformed_trace_is_an_error_that_names_its_line(tmp_path: Path) -> None:
    trace = tmp_path / "invocations.csv"
    trace.write_text("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1,2\no,a,g,http,1,x\n")
    result = bench("--trace", str(trace), "--no-self-test", tmp=tmp_path)
    assert result.exit_code == 1
    assert f"{trace} line 3" in result.output
    assert "'x'" in result.output
