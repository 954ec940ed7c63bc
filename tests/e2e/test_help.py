"""Every command explains itself, and `python -m faasd_py` is the same command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.conftest import Cli, clean_environment

COMMANDS = [
    (),
    ("up",),
    ("new",),
    ("build",),
    ("deploy",),
    ("list",),
    ("describe",),
    ("invoke",),
    ("logs",),
    ("remove",),
    ("secret",),
    ("secret", "create"),
    ("secret", "update"),
    ("secret", "list"),
    ("secret", "remove"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "faasd-py")
def test_help(offline_cli: Cli, command: tuple[str, ...]) -> None:
    text = offline_cli.ok(*command, "--help")
    assert text.startswith("Usage: faasd-py")
    assert "Example" in text or not command


def test_python_dash_m_is_the_same_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "faasd_py", "--help"],
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "deploy" in done.stdout and "invoke" in done.stdout


def test_version(offline_cli: Cli) -> None:
    assert "faasd-py, version" in offline_cli.ok("--version")
