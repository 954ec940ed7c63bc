"""Writing reports: run.json, report.md and PNGs of a run; the comparison of several runs.

Where a report goes by default: under bench/results/ when run from a checkout of faasd-py (so
results can be committed next to the code that produced them), else in the current folder.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faasd_py.errors import BadRequest
from faasd_py.loadgen._markdown import compare_markdown, run_markdown
from faasd_py.loadgen._plots import PlotsUnavailable, plot_compare, plot_run
from faasd_py.loadgen._summary import FORMAT

RUN_JSON = "run.json"


@dataclass
class Written:
    """The files a report was written to, and why some were not (no matplotlib)."""

    paths: list[Path] = field(default_factory=list)
    note: str | None = None


def find_checkout(start: Path) -> Path | None:
    """The faasd-py checkout that `start` is in, if any."""
    for folder in (start, *start.parents):
        if (folder / "faasd_py" / "loadgen").is_dir() and (folder / "bench").is_dir():
            return folder
    return None


def slug(text: str) -> str:
    """A label as a folder name's part: letters, digits, dots and dashes."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:60] or "run"


def default_out_dir(label: str, now: dt.datetime, cwd: Path) -> Path:
    stamp = now.strftime("%Y%m%d-%H%M%S")
    checkout = find_checkout(cwd)
    if checkout is not None:
        return checkout / "bench" / "results" / f"{stamp}-{slug(label)}"
    return cwd / f"faasd-bench-{stamp}-{slug(label)}"


def _plots(written: Written, draw: Any) -> None:
    try:
        written.paths += draw()
    except PlotsUnavailable as exc:
        written.note = str(exc)


def write_run(out: Path, report: Mapping[str, Any]) -> Written:
    """run.json, report.md, and the plots when matplotlib is there."""
    out.mkdir(parents=True, exist_ok=True)
    written = Written()
    path = out / RUN_JSON
    path.write_text(json.dumps(report, indent=1) + "\n")
    written.paths.append(path)
    path = out / "report.md"
    path.write_text(run_markdown(report))
    written.paths.append(path)
    _plots(written, lambda: plot_run(report, out))
    return written


def load_run(path: Path) -> dict[str, Any]:
    """A run.json written by `faasd-py bench`; BadRequest naming the file otherwise."""
    try:
        report = json.loads(path.read_text())
    except OSError as exc:
        raise BadRequest(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise BadRequest(f"{path} is not JSON: {exc}") from None
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        raise BadRequest(f"{path} is not a run.json written by `faasd-py bench` ({FORMAT})")
    return report


def run_names(paths: Sequence[Path]) -> list[str]:
    """Short names for runs: the folder of a run.json, else the file's name; unique."""
    names = [p.parent.name if p.name == RUN_JSON else p.stem for p in paths]
    return [f"{n} ({i + 1})" if names.count(n) > 1 else n for i, n in enumerate(names)]


def write_comparison(out: Path, paths: Sequence[Path]) -> Written:
    """compare.md and the overlaid plots of the runs in `paths`."""
    reports = [load_run(p) for p in paths]
    names = run_names(paths)
    out.mkdir(parents=True, exist_ok=True)
    written = Written()
    path = out / "compare.md"
    path.write_text(compare_markdown(reports, names))
    written.paths.append(path)
    _plots(written, lambda: plot_compare(reports, names, out))
    return written
