"""The built dashboard that the package ships (faasd_py/ui/static) is built from ui/'s
sources as they are: CI checks it rather than building it (it needs no Node)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_build_matches_its_sources() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "ui" / "sources.py"), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_page_names_only_assets_that_exist() -> None:
    static = ROOT / "faasd_py" / "ui" / "static"
    page = (static / "index.html").read_text()
    named = [part.split('"', 1)[0] for part in page.split('="/ui/assets/')[1:]]
    assert named and all((static / "assets" / name).is_file() for name in named)
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere
