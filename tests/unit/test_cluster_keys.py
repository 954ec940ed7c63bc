"""ClusterKey: sealing, MACs and check values, and the rules for its file and variable."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faasd_py.cluster._keys import (
    CLUSTER_KEY_ENV,
    ClusterKey,
    ClusterKeyError,
    ClusterKeyMismatch,
)
from faasd_py.errors import FaasdError

KEY = ClusterKey(bytes(range(32)), "test")
OTHER = ClusterKey(bytes(range(1, 33)), "other")


@given(st.binary(max_size=4096), st.binary(max_size=64))
def test_open_returns_what_was_sealed(plaintext: bytes, context: bytes) -> None:
    assert KEY.open(KEY.seal(plaintext, context), context) == plaintext


def test_sealing_twice_gives_different_bytes_that_hide_the_plaintext() -> None:
    plaintext = b"hunter2 " * 4
    first, second = KEY.seal(plaintext, b"c"), KEY.seal(plaintext, b"c")
    assert first != second  # a random nonce each time
    assert plaintext not in first and b"hunter2" not in first


def test_a_sealed_value_opens_under_its_own_context_only() -> None:
    sealed = KEY.seal(b"value", b"secret:ns:a")
    with pytest.raises(ClusterKeyMismatch, match="does not match"):
        KEY.open(sealed, b"secret:ns:b")


def test_another_key_cannot_open_and_says_the_key_does_not_match() -> None:
    sealed = KEY.seal(b"value", b"c")
    with pytest.raises(ClusterKeyMismatch) as raised:
        OTHER.open(sealed, b"c")
    assert isinstance(raised.value, FaasdError)
    assert "cluster key does not match" in raised.value.message
    assert "other" in raised.value.message  # where the key came from


@pytest.mark.parametrize("position", [0, 12, -1])
def test_any_altered_byte_is_refused(position: int) -> None:
    sealed = bytearray(KEY.seal(b"value", b"c"))
    sealed[position] ^= 1
    with pytest.raises(ClusterKeyMismatch):
        KEY.open(bytes(sealed), b"c")


def test_data_too_short_to_be_sealed_is_refused() -> None:
    with pytest.raises(ClusterKeyMismatch):
        KEY.open(b"short", b"c")


def test_mac_is_keyed_and_verifies_in_constant_time() -> None:
    tag = KEY.mac(b"hello")
    assert len(tag) == 32
    assert KEY.verify_mac(b"hello", tag)
    assert not KEY.verify_mac(b"hellO", tag)
    assert not OTHER.verify_mac(b"hello", tag)


def test_check_value_tells_keys_apart_and_reveals_neither_the_key_nor_the_mac_key() -> None:
    secret = bytes(range(32))
    assert KEY.check_value() == ClusterKey(secret).check_value()
    assert KEY.check_value() != OTHER.check_value()
    assert secret.hex() not in KEY.check_value()
    assert KEY.mac(b"").hex()[:32] != KEY.check_value()
    assert secret.hex() not in repr(KEY)


def test_a_key_is_32_bytes() -> None:
    with pytest.raises(ClusterKeyError, match="32 bytes"):
        ClusterKey(b"x" * 16)


def test_create_writes_a_private_file_that_load_reads(tmp_path: Path) -> None:
    path = tmp_path / "data" / "cluster.key"
    created = ClusterKey.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    assert ClusterKey.load(path).check_value() == created.check_value()


def test_create_never_replaces_a_key(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    first = ClusterKey.create(path)
    with pytest.raises(ClusterKeyError, match="never replaced"):
        ClusterKey.create(path)
    assert ClusterKey.load(path).check_value() == first.check_value()


def test_load_reads_base64_as_well_as_hex(tmp_path: Path) -> None:
    secret = secrets.token_bytes(32)
    path = tmp_path / "cluster.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, base64.b64encode(secret) + b"\n")
    os.close(fd)
    assert ClusterKey.load(path).check_value() == ClusterKey(secret).check_value()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_load_refuses_a_file_others_may_read_and_says_chmod(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "cluster.key"
    ClusterKey.create(path)
    path.chmod(mode)
    with pytest.raises(ClusterKeyError, match=f"chmod 600 {path}"):
        ClusterKey.load(path)


def test_a_missing_file_says_where_to_copy_it_from(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    with pytest.raises(ClusterKeyError) as raised:
        ClusterKey.load(path)
    assert str(path) in raised.value.message
    assert "first gateway's --data-dir" in raised.value.message
    assert "cluster.key" in raised.value.message


def test_a_file_of_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key at all!")
    os.close(fd)
    with pytest.raises(ClusterKeyError, match="neither hex nor base64"):
        ClusterKey.load(path)


def test_the_variable_comes_before_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cluster.key"
    from_file = ClusterKey.create(path)
    secret = secrets.token_bytes(32)
    monkeypatch.setenv(CLUSTER_KEY_ENV, secret.hex())
    key = ClusterKey.from_env_or_file(path)
    assert key.check_value() == ClusterKey(secret).check_value() != from_file.check_value()
    assert key.source == CLUSTER_KEY_ENV
    monkeypatch.delenv(CLUSTER_KEY_ENV)
    assert ClusterKey.from_env_or_file(path).check_value() == from_file.check_value()


def test_a_variable_that_is_not_hex_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CLUSTER_KEY_ENV, "zz" * 32)
    with pytest.raises(ClusterKeyError, match=CLUSTER_KEY_ENV):
        ClusterKey.from_env_or_file(tmp_path / "cluster.key")
