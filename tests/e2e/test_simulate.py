"""`faasd-py simulate` as a user runs it: trace files in, reports out, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Cli, clean_environment

DATA = Path(__file__).resolve().parent.parent / "data"
MINUTES = 30
MEMORY_HEADER = (
    "HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,"
    "AverageAllocatedMb_pct5,AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,"
    "AverageAllocatedMb_pct75,AverageAllocatedMb_pct95,AverageAllocatedMb_pct99,"
    "AverageAllocatedMb_pct100"
)


def write_trace(folder: Path) -> tuple[Path, Path]:
    """App A (100 MB): one invocation at minutes 0, 5 and 20; app B (200 MB): 4 at minute 2,
    2 at minute 3 (tests/unit/test_simulator.py counts the same trace by hand)."""
    rows = {("a", "a1"): {0: 1, 5: 1, 20: 1}, ("b", "b1"): {2: 3}, ("b", "b2"): {2: 1, 3: 2}}
    lines = ["HashOwner,HashApp,HashFunction,Trigger," + ",".join(map(str, range(1, 31)))]
    for (app, name), active in rows.items():
        counts = [str(active.get(m, 0)) for m in range(MINUTES)]
        lines.append(f"owner,{app},{name},http," + ",".join(counts))
    trace = folder / "invocations.csv"
    trace.write_text("\n".join(lines) + "\n")
    memory = folder / "memory.csv"
    memory.write_text(
        MEMORY_HEADER
        + "\n"
        + "".join(
            f"owner,{app},1,{mb},{mb},{mb},{mb},{mb},{mb},{mb},{mb},{mb}\n"
            for app, mb in (("a", 100), ("b", 200))
        )
    )
    return trace, memory


def test_a_trace_file_is_simulated_and_reported(offline_cli: Cli, tmp_path: Path) -> None:
    trace, memory = write_trace(tmp_path)
    out = tmp_path / "report"
    stdout = offline_cli.ok(
        "simulate", "--trace", trace, "--memory", memory, "--no-sweep",
        "--policy", "fixed:10m", "--policy", "no-unload", "--out", out,
    )  # fmt: skip
    assert "fixed:10m" in stdout and "no-unload" in stdout
    report = json.loads((out / "run.json").read_text())
    rows = {row["policy"]: row for row in report["policies"]}
    assert set(rows) == {"fixed:10m", "no-unload"}
    assert rows["fixed:10m"]["cold_starts"] == 3
    assert rows["fixed:10m"]["wasted_mb_s"] == pytest.approx(285_300)
    assert rows["no-unload"]["cold_starts"] == 2
    assert rows["no-unload"]["wasted_normalized"] == pytest.approx(510_000 / 285_300)
    assert report["settings"]["memory_defaulted_apps"] == 0
    assert report["settings"]["arrivals"] == "uniform"
    assert report["settings"]["durations_missing_functions"] == 3
    assert "| fixed:10m |" in (out / "report.md").read_text()
    assert (out / "cdf.png").stat().st_size > 0 and (out / "pareto.png").stat().st_size > 0


def test_functions_without_durations_are_counted_and_strict_refuses_them(
    offline_cli: Cli, tmp_path: Path
) -> None:
    trace, memory = write_trace(tmp_path)
    args = ("simulate", "--trace", trace, "--memory", memory, "--no-sweep")
    done = offline_cli(*args, "--out", tmp_path / "report")
    assert done.returncode == 0, done.stderr
    assert "3 invoked functions (9 invocations) have no durations" in done.stderr
    assert "they ran 1 s each" in done.stderr
    failure(offline_cli(*args, "--strict"), 1, "--strict: 3 invoked functions")
    # Without the memory file: every app is counted too.
    failure(offline_cli("simulate", "--trace", trace, "--strict"), 1, "2 of 2 apps have no memory")


@pytest.mark.parametrize("arrivals", ["poisson", "start"])
def test_other_arrival_models(offline_cli: Cli, tmp_path: Path, arrivals: str) -> None:
    trace, memory = write_trace(tmp_path)
    out = tmp_path / "report"
    offline_cli.ok(
        "simulate", "--trace", trace, "--memory", memory, "--no-sweep", "--policy", "fixed:0s",
        "--arrivals", arrivals, "--default-duration", "100ms", "--sample-durations", "--out", out,
    )  # fmt: skip
    report = json.loads((out / "run.json").read_text())
    rows = {row["policy"]: row for row in report["policies"]}
    assert report["settings"]["arrivals"] == arrivals
    # Unloaded as soon as it is idle: all 9 cold, but for arrivals that come while the app runs
    # (all of a minute's at its start find the first one running: one cold start per minute).
    expected = 9 if arrivals == "poisson" else 5
    assert rows["fixed:0h"]["cold_starts"] == expected


def test_the_real_sample_in_the_repository(offline_cli: Cli, tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[2] / "bench" / "data" / "azure2019-sample"
    out = tmp_path / "report"
    done = offline_cli(
        "simulate", "--trace", sample / "invocations.csv", "--durations", sample / "durations.csv",
        "--memory", sample / "memory.csv", "--strict", "--no-sweep", "--out", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "252 functions in 242 apps, 480 minutes, 2,329,863 invocations" in done.stderr
    assert "warning" not in done.stderr
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert (settings["durations_missing_functions"], settings["memory_defaulted_apps"]) == (0, 0)


def test_the_published_format_with_durations(offline_cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "report"
    offline_cli.ok(
        "simulate",
        "--trace", DATA / "invocations_per_function_md.anon.d01.csv",
        "--durations", DATA / "function_durations_percentiles.anon.d01.csv",
        "--memory", DATA / "app_memory_percentiles.anon.d01.csv",
        "--policy", "hybrid", "--no-sweep", "--out", out,
    )  # fmt: skip
    report = json.loads((out / "run.json").read_text())
    assert [r["policy"] for r in report["policies"]] == ["fixed:10m", "hybrid:4h"]
    assert report["settings"]["apps"] >= 3


def test_a_synthetic_day_with_the_pareto_sweep(offline_cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "report"
    offline_cli.ok(
        "simulate", "--synthetic-trace", "--apps", "40", "--hours", "3", "--seed", "3",
        "--bin-width", "30s", "--range", "2h", "--min-samples", "3", "--out", out,
    )  # fmt: skip
    report = json.loads((out / "run.json").read_text())
    names = [r["policy"] for r in report["policies"]]
    # The default hybrid (2 h here), then the sweep's fixed and hybrid ranges, once each.
    assert names[:2] == ["hybrid:2h", "fixed:10m"]
    assert {"fixed:2h", "hybrid:1h", "hybrid:4h"} <= set(names) and len(names) == len(set(names))
    assert report["settings"]["hybrid"]["bin_width"] == 30.0
    assert (out / "pareto.png").exists()


def failure(done: subprocess.CompletedProcess[str], code: int, *expected: str) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    for text in expected:
        assert text in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_bad_policy_strings_are_usage_errors(offline_cli: Cli) -> None:
    done = offline_cli("simulate", "--synthetic-trace", "--policy", "lru")
    failure(done, 2, "unknown policy 'lru'", "fixed:DURATION")
    done = offline_cli("simulate", "--synthetic-trace", "--policy", "fixed:soon")
    failure(done, 2, "bad policy 'fixed:soon'")


def test_a_trace_is_required_and_only_one(offline_cli: Cli, tmp_path: Path) -> None:
    failure(offline_cli("simulate"), 2, "--trace FILE or --synthetic-trace")
    trace, memory = write_trace(tmp_path)
    done = offline_cli("simulate", "--trace", trace, "--synthetic-trace")
    failure(done, 2, "not both")
    failure(offline_cli("simulate", "--synthetic-trace", "--memory", memory), 2, "--memory")
    failure(offline_cli("simulate", "--trace", tmp_path / "absent.csv"), 2, "does not exist")


def test_bad_hybrid_options_are_usage_errors(offline_cli: Cli) -> None:
    done = offline_cli("simulate", "--synthetic-trace", "--range", "90s")
    failure(done, 2, "whole number of bins")
    failure(offline_cli("simulate", "--synthetic-trace", "--bin-width", "0s"), 2, "above 0")


def test_a_malformed_trace_names_its_line(offline_cli: Cli, tmp_path: Path) -> None:
    trace, _ = write_trace(tmp_path)
    lines = trace.read_text().splitlines()
    lines[2] = lines[2].replace(",3,", ",x,")
    trace.write_text("\n".join(lines) + "\n")
    failure(offline_cli("simulate", "--trace", trace), 1, "line 3", "not a whole number")


def test_without_numpy_it_says_what_to_install(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['numpy'] = None; "
        "from faasd_py.cli import main; "
        "sys.argv = ['faasd-py', 'simulate', '--synthetic-trace']; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    failure(done, 1, "simulate needs numpy", "faasd-py[sim]")


def test_help_lists_the_options(offline_cli: Cli) -> None:
    text = offline_cli.ok("simulate", "--help")
    for option in (
        "--trace",
        "--synthetic-trace",
        "--apps",
        "--memory",
        "--policy",
        "--range",
        "--bin-width",
        "--min-samples",
        "--oob-threshold",
        "--cv-threshold",
        "--arrivals",
        "--sample-durations",
        "--strict",
        "--out",
    ):
        assert option in text
    assert "default: 24.0" in text  # a synthetic day, where `bench` replays two hours
    assert "simulate" in offline_cli.ok("--help")


def test_a_trace_without_invocations_is_an_error(offline_cli: Cli, tmp_path: Path) -> None:
    header = "HashOwner,HashApp,HashFunction,Trigger,1,2,3\n"
    silent, empty = tmp_path / "silent.csv", tmp_path / "empty.csv"
    silent.write_text(header + "o,a,f,http,0,0,0\n")
    empty.write_text(header)
    failure(offline_cli("simulate", "--trace", silent), 1, "has no invocations")
    failure(offline_cli("simulate", "--trace", empty), 1, "has no functions")
