"""Which data path runs, decided once at import (as uvicorn's tests check which loop it chose):
the native shim when it is built, the Python fallback (socket channel) when it is absent or
FAASD_NO_NATIVE=1 says so, and a clear error for shm where there is no shim."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from faasd_py import native
from faasd_py.config import Config
from faasd_py.datapath.channel import default_kind, resolve_kind
from faasd_py.errors import NativeUnavailable, SpecError
from faasd_py.spec import FunctionSpec
from tests.native.conftest import IN_CI, needs_native

REPO = Path(__file__).resolve().parents[2]

# What a fresh interpreter decides; `block` hides the compiled module as if it were not built.
PROBE = textwrap.dedent(
    """
    import json, sys
    if {block}:
        sys.modules["faasd_py._native"] = None  # import fails: as if never built
    from faasd_py import native
    from faasd_py.datapath.channel import default_kind, resolve_kind
    from faasd_py.config import Config
    from faasd_py.errors import NativeUnavailable
    try:
        resolve_kind("shm", "socket")
        refused = ""
    except NativeUnavailable as exc:
        refused = exc.message
    print(json.dumps({{
        "has_native": native.HAS_NATIVE, "reason": native.REASON, "lib": native.lib is None,
        "default": default_kind(), "config": Config().channel, "refused": refused,
        "describe": native.describe(),
    }}))
    """
)


def probe(*, block: bool = False, **env: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(block=block)],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    decided: dict[str, Any] = json.loads(result.stdout)
    return decided


def test_faasd_no_native_forces_the_fallback() -> None:
    decided = probe(FAASD_NO_NATIVE="1")
    assert decided["has_native"] is False and decided["lib"] is True
    assert decided["reason"] == "disabled by FAASD_NO_NATIVE"
    assert decided["default"] == decided["config"] == "socket"
    assert "the shm channel needs the native shim" in decided["refused"]
    assert "--channel socket" in decided["refused"]
    assert decided["describe"] == "not in use: disabled by FAASD_NO_NATIVE"


def test_a_missing_module_means_the_fallback() -> None:
    decided = probe(block=True)
    assert decided["has_native"] is False
    assert decided["reason"].startswith("not built")
    assert decided["default"] == "socket"


@pytest.mark.parametrize("value", ["", "0"])
def test_faasd_no_native_off_keeps_the_shim(value: str) -> None:
    assert probe(FAASD_NO_NATIVE=value)["has_native"] is native.HAS_NATIVE


@needs_native
def test_the_shim_is_chosen_when_built() -> None:
    assert native.HAS_NATIVE, native.REASON
    assert default_kind() == Config().channel == "shm"
    assert resolve_kind(None, "shm") == "shm"


def test_ci_proves_the_native_path() -> None:
    if not IN_CI:
        pytest.skip("only under CI=true, where the shim must be built")
    assert native.HAS_NATIVE, f"CI must build the native shim, but it is {native.REASON}"


def test_a_function_picks_its_channel_by_annotation() -> None:
    def spec(value: str) -> FunctionSpec:
        return FunctionSpec("f", "f:latest", annotations={"com.faasd-py.channel": value})

    assert FunctionSpec("f", "f:latest").channel is None
    assert spec("socket").channel == "socket"
    assert spec(" SHM ").channel == "shm"
    assert resolve_kind(spec("socket").channel, "shm") == "socket"
    assert spec("Net").channel == "net"
    with pytest.raises(SpecError, match="expected shm, socket, net, got 'rdma'") as caught:
        _ = spec("rdma").channel
    assert caught.value.field == "annotations.com.faasd-py.channel"


def test_config_rejects_an_unknown_channel() -> None:
    with pytest.raises(ValueError, match="channel must be one of shm, socket, net, got 'rdma'"):
        Config(channel="rdma")


def test_shm_refused_where_there_is_no_shim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "HAS_NATIVE", False)
    monkeypatch.setattr(native, "REASON", "not built (test)")
    assert default_kind() == "socket"
    assert resolve_kind("socket", "socket") == "socket"
    with pytest.raises(NativeUnavailable, match=r"not built \(test\)") as caught:
        resolve_kind("shm", "socket")
    assert caught.value.status == 501
