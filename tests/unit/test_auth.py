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


def _basic_bytes(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_malformed_or_foreign_credentials_do_not_match_and_do_not_raise(tmp_path: Path) -> None:
    credentials, _ = load_or_create_credentials(tmp_path)
    for header in (
        _basic_bytes("admin:pä".encode()),  # what `curl -u $'admin:p\xc3\xa4ss'` sends
        _basic_bytes("ädmin:".encode() + credentials.password.encode()),
        _basic_bytes(b"admin:\xff\xfe"),  # not UTF-8
        _basic_bytes(b"admin" + credentials.password.encode()),  # no colon
        "Basic " + "YWRtaW46cMOk".replace("Y", "é"),  # non-ASCII where base64 belongs
        "Basic",
        "Basic ",
    ):
        assert not credentials.matches(header), header


def test_non_ascii_credentials_match_as_utf8(tmp_path: Path) -> None:
    (tmp_path / "basic-auth-user").write_text("ädmin\n")
    (tmp_path / "basic-auth-password").write_text("pässwörd\n")
    credentials, created = load_or_create_credentials(tmp_path)
    assert not created
    assert credentials.matches(_basic("ädmin", "pässwörd"))
    assert not credentials.matches(_basic("ädmin", "passwörd"))
    assert not credentials.matches(_basic_bytes("ädmin:pässwörd".encode("latin-1")))
