"""`faasd-py bench` as a user runs it (the installed script, its generator processes) against a
real faasd-py (server.start on a free port, real instances) and against servers of known speed.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from faasd_py.packages import PackageStore
from faasd_py.spec import FunctionSpec, StackFunction
from tests.e2e.conftest import FAASD_PY, clean_environment
from tests.integration.conftest import HELLO, Platform
from tests.unit.test_cli_options import closed_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN_TIMEOUT = 25.0
SCALE_TO_ZERO = {"com.openfaas.scale.min": "0"}


@dataclass(frozen=True)
class Done:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def environment(tmp: Path, data_dir: Path | None = None) -> dict[str, str]:
    env = {**clean_environment(), "XDG_CACHE_HOME": str(tmp / "cache")}
    if data_dir is not None:
        env["FAASD_DATA_DIR"] = str(data_dir)
    return env


async def start_bench(
    args: Sequence[str | Path], env: dict[str, str]
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        FAASD_PY,
        "bench",
        *map(str, args),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def bench(*args: str | Path, env: dict[str, str], limit: float = RUN_TIMEOUT) -> Done:
    started = time.monotonic()
    process = await start_bench(args, env)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"faasd-py bench {' '.join(map(str, args))} did not end within {limit} s")
    assert process.returncode is not None
    return Done(process.returncode, stdout.decode(), stderr.decode(), time.monotonic() - started)


def read_report(folder: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((folder / "run.json").read_text())
    return report


async def bench_report(
    *args: str | Path, out: Path, env: dict[str, str]
) -> tuple[Done, dict[str, Any]]:
    """A run that must succeed, and its report, whose counts must add up."""
    done = await bench(*args, "--out", out, env=env)
    assert done.code == 0, done.output
    report = read_report(out)
    assert_counts_add_up(report)
    return done, report


def assert_counts_add_up(report: dict[str, Any]) -> None:
    totals, errors = report["totals"], report["errors"]
    no_answer = errors["connect"] + errors["timeout"] + errors["other"]
    assert totals["intended"] == totals["sent"] + totals["skipped"] + totals["unsent"]
    assert totals["sent"] == totals["answered"] + no_answer + totals["unfinished"]
    assert sum(report["status_codes"].values()) == totals["answered"]
    statuses = {int(k): v for k, v in report["status_codes"].items()}
    assert errors["4xx"] == sum(n for s, n in statuses.items() if 400 <= s < 500)
    assert errors["5xx"] == sum(n for s, n in statuses.items() if s >= 500)
    assert totals["errors"] == sum(errors.values())
    timeline = sum(row["count"] for row in report["timeline"])
    assert timeline == totals["answered"] + no_answer + errors["overloaded"]


async def test_open_loop_against_faasd_py_then_closed_loop_and_their_comparison(
    platform: Platform, tmp_path: Path
) -> None:
    await platform.deploy("cold", HELLO, labels=SCALE_TO_ZERO)
    env = environment(tmp_path)
    common = ["--gateway", platform.url, "--procs", "2", "--no-self-test", "--body", "x"]
    _, report = await bench_report(
        "cold", "--rate", "200", "--duration", "2s", "--warmup", "0", *common,
        out=tmp_path / "open", env=env,
    )  # fmt: skip
    totals = report["totals"]
    assert 300 <= totals["intended"] <= 500  # a Poisson schedule of 200 req/s for 2 s
    assert totals["answered"] == totals["intended"]
    assert report["status_codes"] == {"200": totals["answered"]}
    # faasd-py's Server-Timing: every stage has figures, and the first request was cold.
    assert report["timed_answers"] == totals["answered"]
    assert report["cold_starts"] >= 1
    assert report["stages_ms"]["cold-start"]["max"] > 1.0
    assert report["stages_ms"]["execution"]["p50"] > 0
    assert report["generator"]["ceiling_source"] == "not measured (--no-self-test)"
    assert report["mode"] == "open"
    files = {p.name for p in (tmp_path / "open").iterdir()}
    assert {"run.json", "report.md", "cdf.png", "timeline.png"} <= files
    assert "## Server-Timing stages (ms)" in (tmp_path / "open" / "report.md").read_text()

    _, closed_report = await bench_report(
        "cold", "--concurrency", "4", "--duration", "1s", "--warmup", "0.5s", *common,
        out=tmp_path / "closed", env=env,
    )  # fmt: skip
    assert closed_report["mode"] == "closed"
    assert closed_report["totals"]["answered"] > 0
    assert closed_report["status_codes"] == {"200": closed_report["totals"]["answered"]}
    assert closed_report["totals"]["warmup_sent"] > 0

    compared = await bench(
        "report", tmp_path / "open" / "run.json", tmp_path / "closed" / "run.json",
        "--out", tmp_path / "both", env=env,
    )  # fmt: skip
    assert compared.code == 0, compared.output
    text = (tmp_path / "both" / "compare.md").read_text()
    assert "| figure | open | closed | closed / open |" in text
    files = {p.name for p in (tmp_path / "both").iterdir()}
    assert files == {"compare.md", "compare-cdf.png", "compare-timeline.png"}


async def test_an_unknown_function_gives_a_report_of_404s(
    platform: Platform, tmp_path: Path
) -> None:
    done, report = await bench_report(
        "nosuch", "--rate", "100", "--duration", "1s", "--warmup", "0", "--procs", "1",
        "--gateway", platform.url, "--no-self-test", out=tmp_path / "r", env=environment(tmp_path),
    )  # fmt: skip
    answered = report["totals"]["answered"]
    assert answered == report["totals"]["sent"] > 0  # every request sent had its answer
    assert report["status_codes"] == {"404": answered}
    assert report["errors"]["4xx"] == answered
    assert any("HTTP 404" in flag for flag in report["flags"])
    assert "HTTP 404" in done.stdout


async def test_a_gateway_that_is_down_is_a_clear_error_at_once(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    done = await bench("hello", "--rate", "10", "--gateway", url, env=environment(tmp_path))
    assert done.code == 1
    # No retries and no waiting out the 30 s request timeout: the time is the command's own
    # start, however slow that is on a busy machine.
    assert done.seconds < 20
    assert f"cannot reach the gateway at {url}" in done.stderr
    assert "Traceback" not in done.output


async def test_ctrl_c_ends_the_run_and_still_writes_a_partial_report(
    platform: Platform, tmp_path: Path
) -> None:
    args: list[str | Path] = [
        "nosuch", "--rate", "100", "--duration", "30s", "--warmup", "0", "--procs", "2",
        "--gateway", platform.url, "--no-self-test", "--out", tmp_path / "r",
    ]  # fmt: skip
    process = await start_bench(args, environment(tmp_path))
    assert process.stderr is not None
    line = await asyncio.wait_for(process.stderr.readline(), RUN_TIMEOUT)
    assert b"running for 30 s" in line, line
    # Ctrl-C once requests are going out (a progress line says so), however long that takes.
    sent = 0
    while not sent:
        line = await asyncio.wait_for(process.stderr.readline(), RUN_TIMEOUT)
        assert line, "the run ended before it sent anything"
        found = re.search(rb"sent ([0-9,]+)", line)
        sent = int(found.group(1).replace(b",", b"")) if found else 0
    process.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 130, stderr.decode()
    report = read_report(tmp_path / "r")
    assert report["partial"] is True
    assert report["flags"][0].startswith("interrupted (Ctrl-C) after ")
    totals = report["totals"]
    assert 0 < totals["recorded_seconds"] < 30  # ended early, and says how long it ran
    assert totals["sent"] > 0 and set(report["status_codes"]) <= {"404"}
    assert_counts_add_up(report)


def build_trace_func(platform: Platform) -> None:
    spec = FunctionSpec(service="trace-func", image="trace-func:latest")
    function = StackFunction(spec=spec, lang="python3-http", handler=EXAMPLES / "trace-func")
    PackageStore(platform.config.packages_dir).build(function)


# A synthetic trace of 8 apps over 3 minutes (seed 3): 37 functions, 296 invocations in all.
SYNTHETIC = ["--synthetic-trace", "--apps", "8", "--hours", "0.05", "--seed", "3"]


async def test_a_synthetic_trace_replays_against_trace_func(
    platform: Platform, tmp_path: Path
) -> None:
    build_trace_func(platform)
    await platform.deploy("trace-func", env={"max_inflight": "16"})
    _, report = await bench_report(
        *SYNTHETIC, "--speedup", "90", "--cap-duration", "200ms", "--procs", "2",
        "--gateway", platform.url, "--no-self-test", out=tmp_path / "r", env=environment(tmp_path),
    )  # fmt: skip
    assert report["mode"] == "trace"
    assert report["config"]["trace"]["functions"] == 37
    assert report["totals"]["intended"] == report["totals"]["answered"] == 296
    assert report["status_codes"] == {"200": 296}
    functions = report["functions"]
    assert sum(f["count"] for f in functions) == 296
    assert all(f["function"].startswith("tf-") for f in functions)
    # Each invocation ran for its sampled duration (at most the cap) inside trace-func.
    # Uncapped, half of this trace's invocations would run for more than 3 s (and some for
    # 55 s); capped, each sleeps 200 ms at most, plus whatever a busy machine adds.
    execution = report["stages_ms"]["execution"]
    assert execution["p50"] > 1.0
    assert execution["p50"] < 1500
    assert "## Functions (" in (tmp_path / "r" / "report.md").read_text()


async def test_trace_functions_can_each_have_their_own_deployment(
    platform: Platform, tmp_path: Path
) -> None:
    build_trace_func(platform)
    _, report = await bench_report(
        *SYNTHETIC, "--limit-functions", "4", "--deploy-trace-functions", "--speedup", "120",
        "--cap-duration", "50ms", "--procs", "1", "--gateway", platform.url, "--no-self-test",
        out=tmp_path / "r", env=environment(tmp_path, platform.config.data_dir),
    )  # fmt: skip
    names = {f["function"] for f in report["functions"]}
    status, deployed = await platform.system("GET", "/system/functions")
    assert status == 200
    labels = {f["name"]: f["labels"] for f in deployed}
    assert names <= set(labels)
    assert all(labels[n]["com.faasd-py.app"].startswith("ta-") for n in names)
    # Scaled to zero (scale.min 0): each app's first invocation was a cold start. An app loads
    # as a whole, so its other functions may find an instance already started.
    apps = {labels[n]["com.faasd-py.app"] for n in names}
    assert report["cold_starts"] >= len(apps) > 0
    assert report["errors"] == dict.fromkeys(report["errors"], 0)


@pytest.fixture
async def sleepy_server() -> AsyncIterator[str]:
    """A server that answers every request after exactly SLEEP seconds."""

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(SLEEP)
        return web.Response(text="slept")

    app = web.Application()
    app.router.add_route("*", "/function/{name}", answer)
    app.router.add_get("/healthz", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


SLEEP = 0.050


@pytest.mark.parametrize("loop", [["--concurrency", "4"], ["--rate", "40"]], ids=["closed", "open"])
async def test_latencies_of_a_server_that_sleeps_50_ms_are_50_ms(
    sleepy_server: str, tmp_path: Path, loop: list[str]
) -> None:
    _, report = await bench_report(
        "sleepy", *loop, "--duration", "2s", "--warmup", "0.5s", "--procs", "2",
        "--gateway", sleepy_server, "--no-self-test", out=tmp_path / "r", env=environment(tmp_path),
    )  # fmt: skip
    assert report["totals"]["errors"] == 0
    assert report["totals"]["answered"] == report["totals"]["sent"] > 0
    latency = report["latency_ms"]
    # Never less than the sleep; more by a local round trip, and on a busy machine by the
    # generator's lag (counted, in the open loop). The upper bound only catches a wrong unit or
    # clock (seconds read as milliseconds would be 1000 times off), not a slow machine.
    assert latency["min"] >= 49.9
    assert 50.0 <= latency["p50"] < 5_000.0, latency
    # No Server-Timing from this server: the stage columns are absent, not zero.
    assert report["stages_ms"] is None and report["cold_starts"] is None


async def test_the_self_test_measures_and_caches_the_generator_ceiling(tmp_path: Path) -> None:
    env = environment(tmp_path)
    done = await bench("--self-test", "--procs", "1", "--self-test-duration", "1s", env=env)
    assert done.code == 0, done.output
    assert "generator ceiling:" in done.stdout
    cache = json.loads((tmp_path / "cache" / "faasd-py" / "selftest.json").read_text())
    (entry,) = cache.values()
    assert entry["rps"] > 0
    assert f"{entry['rps']:,.0f} req/s" in done.stdout
