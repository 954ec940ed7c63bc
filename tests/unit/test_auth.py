"""Gateway credentials: created once, mode 0600, checked in constant time."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

from faasd_py.gateway import load_or_create_credentials


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_are_created_once_and_private(tmp_path: Path) -> None:
    credentials, created = load_or_create_credentials(tmp_path / "credentials")
    assert created and credentials.user == "admin" and len(credentials.password) >= 24
    for path in (tmp_path / "credentials").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = load_or_create_credentials(tmp_path / "credentials")
    assert again == credentials and not created_again


def test_only_the_right_basic_header_matches(tmp_path: Path) -> None:
    credentials, _ = load_or_create_credentials(tmp_path)
    assert credentials.matches(_basic("admin", credentials.password))
    assert not credentials.matches(_basic("admin", credentials.password + "x"))
    assert not credentials.matches(_basic("root", credentials.password))
    assert not credentials.matches(None)
    assert not credentials.matches("Bearer abc")
    assert not credentials.matches("Basic !!!not-base64")
