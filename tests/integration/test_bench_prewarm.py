"""bench/prewarm.py (make bench-prewarm) as a user runs it: both traces, the report, both plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import clean_environment

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_prewarm_benchmark_reports_the_real_sample_and_a_synthetic_day(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, BENCH / "prewarm.py", "--apps", "30", "--seed", "2", "--out", tmp_path],
        cwd=BENCH,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "prewarm.json").read_text())
    real, synthetic = report["traces"]
    assert real["settings"]["functions"] == 252 and real["settings"]["minutes"] == 480
    assert synthetic["settings"]["apps"] == 30 and synthetic["settings"]["minutes"] == 1440
    for trace in report["traces"]:
        names = [row["policy"] for row in trace["policies"]]
        assert {"fixed:10m", "fixed:20m", "fixed:1h", "fixed:2h", "hybrid:1h", "hybrid:4h"} <= set(
            names
        )
        assert trace["checks"]
    text = (tmp_path / "prewarm.md").read_text()
    assert "## real sample" in text and "## synthetic day" in text
    for plot in ("prewarm-cdf.png", "prewarm-pareto.png"):
        assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG")
