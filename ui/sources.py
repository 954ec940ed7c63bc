"""The dashboard's build stamp: a hash of its sources, written beside the built files.

`python ui/sources.py write` records the hash after a build (make ui does); `check` exits 1
when the committed build was made from other sources than these (CI runs it through
tests/browser/test_build.py, and make ui rebuilds when it fails and npm is there).
Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

UI = Path(__file__).resolve().parent
STAMP = UI.parent / "faasd_py" / "ui" / "static" / "SOURCES"
FILES = ("index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts")


def sources() -> list[Path]:
    found = [UI / name for name in FILES]
    found += [p for p in (UI / "src").rglob("*") if p.is_file()]
    return sorted(found)


def digest() -> str:
    """sha256 over each source's path (from ui/) and the sha256 of its content."""
    total = hashlib.sha256()
    for path in sources():
        content = hashlib.sha256(path.read_bytes()).hexdigest()
        total.update(f"{path.relative_to(UI).as_posix()}\n{content}\n".encode())
    return total.hexdigest()


def main(argv: list[str]) -> int:
    if argv[1:] == ["write"]:
        STAMP.write_text(digest() + "\n")
        return 0
    if argv[1:] == ["check"]:
        recorded = STAMP.read_text().strip() if STAMP.exists() else "(none)"
        if recorded == digest():
            return 0
        print(f"the built dashboard ({STAMP}) is not built from ui/'s sources: run `make ui`")
        return 1
    print("usage: sources.py write|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
