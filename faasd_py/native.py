"""The compiled shim (`faasd_py._native`) or the pure-Python fallback, decided once at import.

As aiohttp picks its C parser: if the module imports, `HAS_NATIVE` is true and `lib` / `ffi` are
the cffi objects; otherwise (not built, or `FAASD_NO_NATIVE=1`) they are None, `REASON` says
why, and the platform runs on the socket channel. `FEATURES` holds what the C side probed on
this kernel (io_uring can be compiled out, disabled by sysctl or denied by seccomp).

C functions return -errno; `check` turns that into OSError, as the standard library would.
The sandbox runtime imports this module too, so it imports nothing beyond the standard library.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["FEATURES", "HAS_NATIVE", "REASON", "Features", "check", "describe", "ffi", "lib"]


@dataclass(frozen=True)
class Features:
    """What the kernel offers the shim, probed once at import."""

    memfd: bool = False
    futex: bool = False
    eventfd: bool = False
    io_uring: bool = False

    def names(self) -> list[str]:
        return [name for name, on in vars(self).items() if on]


lib: Any = None
ffi: Any = None
HAS_NATIVE = False
REASON = ""
FEATURES = Features()


def _disabled_by_environment() -> bool:
    return os.environ.get("FAASD_NO_NATIVE", "") not in ("", "0")


if _disabled_by_environment():
    REASON = "disabled by FAASD_NO_NATIVE"
else:
    try:
        _module = importlib.import_module("faasd_py._native")
    except ImportError as exc:
        REASON = f"not built ({exc})"
    else:
        lib, ffi = _module.lib, _module.ffi
        _bits = lib.shm_features()
        FEATURES = Features(
            memfd=bool(_bits & lib.SHM_HAVE_MEMFD),
            futex=bool(_bits & lib.SHM_HAVE_FUTEX),
            eventfd=bool(_bits & lib.SHM_HAVE_EVENTFD),
            io_uring=bool(_bits & lib.SHM_HAVE_IO_URING),
        )
        HAS_NATIVE = FEATURES.memfd and FEATURES.eventfd
        if not HAS_NATIVE:
            REASON = "built, but this kernel lacks memfd or eventfd"


def check(rc: int) -> int:
    """`rc` if it is not negative; else OSError(-rc) with the system's message for it."""
    if rc < 0:
        raise OSError(-rc, os.strerror(-rc))
    return rc


def describe() -> str:
    """One line for banners and logs: whether the shim is in use, and what it found."""
    if HAS_NATIVE:
        return f"built ({', '.join(FEATURES.names())})"
    return f"not in use: {REASON}"
