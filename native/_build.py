"""Builds faasd_py._native, the C shim, with cffi in out-of-line API mode.

Every `native/*.c` is compiled into the module and every `native/*.cdef` declares what Python
may call, so each part of the shim (shared-memory channel, sandbox launcher, ...) lives in its
own files. `setup.py` names this builder in `cffi_modules`; a failed build leaves the
pure-Python fallback in place (faasd_py/native.py decides at import).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent



def make_builder(*, absolute_sources: bool = False) -> FFI:
    """The FFI builder. setuptools wants `sources` relative to the project root, where it runs;
    `FFI.compile` works in its tmpdir and needs them absolute."""
    builder = FFI()
    builder.cdef("\n".join(p.read_text() for p in sorted(HERE.glob("*.cdef"))))
    sources = sorted(HERE.glob("*.c"))
    builder.set_source(
        "faasd_py._native",
        "\n".join(f'#include "{h.name}"' for h in sorted(HERE.glob("*.h"))),
        sources=[str(p if absolute_sources else p.relative_to(ROOT)) for p in sources],
        include_dirs=[str(HERE)],
        extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit"],
        libraries=[],
    )
    return builder


ffibuilder = make_builder()


def build_in_place() -> Path:
    """Compile in build/native (generated C and objects stay out of the tree) and copy the
    module next to the package, as `pip install -e .` would."""
    tmpdir = ROOT / "build" / "native"
    builder = make_builder(absolute_sources=True)
    built = Path(builder.compile(tmpdir=str(tmpdir), verbose=True))
    target = ROOT / "faasd_py" / built.name
    for stale in target.parent.glob("_native.*.so"):  # e.g. the abi3 one pip built
        stale.unlink()
    shutil.copy2(built, target)
    return target


if __name__ == "__main__":
    # For development: `python native/_build.py`.
    print(f"built {build_in_place()}", file=sys.stderr)
