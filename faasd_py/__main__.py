"""`python -m faasd_py` is the `faasd-py` command."""

from __future__ import annotations

from faasd_py.cli import main

if __name__ == "__main__":
    main()
