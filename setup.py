"""Build of the C shim (faasd_py._native); everything else is in pyproject.toml.

The shim is optional: without a compiler (or Python's headers) the install goes on with a warning
and faasd-py runs on its pure-Python fallback (faasd_py/native.py decides at import).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """A build_ext whose failure is a warning, not an error (the fallback is permanent)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._warn(exc)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    _warned = False

    def _warn(self, exc: BaseException) -> None:
        if os.environ.get("FAASD_REQUIRE_NATIVE") == "1":
            raise exc
        if self._warned:  # a failed compile also fails the copy that follows it
            return
        self._warned = True
        print(
            f"WARNING: the native shim (faasd_py._native) was not built: {exc}\n"
            "WARNING: faasd-py will run on its pure-Python fallback (socket channel). "
            "Install a C compiler and Python's headers, then reinstall, for the shm channel.",
            file=sys.stderr,
        )


setup(
    cffi_modules=["native/_build.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
