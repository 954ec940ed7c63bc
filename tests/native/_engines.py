"""Running shm channel tests under each doorbell engine (faasd_py.datapath.doorbells).

`with_engines(KINDS)` turns the channel kinds' `shm` into `shm-epoll` and `shm-io_uring`; the
value stays a `str` equal to "shm" (so `open_pair` and anything else that looks at the kind is
unchanged) that also carries its engine. `use_engine_of_kind` is the autouse fixture that
configures that engine for the test and restores the previous choice after it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from _pytest.mark import ParameterSet

from faasd_py.datapath import doorbells
from tests.native.conftest import IN_CI

URING_MISSING = doorbells.probe()

needs_uring = pytest.mark.skipif(
    bool(URING_MISSING) and not IN_CI, reason=f"io_uring unavailable: {URING_MISSING}"
)


class ShmKind(str):
    """The kind "shm", run with the doorbell engine `engine`."""

    engine: str

    def __new__(cls, engine: str) -> ShmKind:
        kind = super().__new__(cls, "shm")
        kind.engine = engine
        return kind


def with_engines(kinds: Sequence[Any]) -> list[ParameterSet]:
    """`kinds` with shm once per engine (ids shm-epoll, shm-io_uring); the others as they are."""
    out: list[ParameterSet] = []
    for param in kinds:
        if param.values != ("shm",):
            out.append(param)
            continue
        for engine in ("epoll", "io_uring"):
            marks = [*param.marks, *([needs_uring] if engine == "io_uring" else [])]
            out.append(pytest.param(ShmKind(engine), id=f"shm-{engine}", marks=marks))
    return out


@pytest.fixture(autouse=True)
def use_engine_of_kind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Configure the doorbell engine of a ShmKind parameter for this test."""
    callspec = getattr(request.node, "callspec", None)
    kind = callspec.params.get("kind") if callspec is not None else None
    if not isinstance(kind, ShmKind):
        yield
        return
    previous = doorbells.selection()
    doorbells.configure(kind.engine)
    try:
        yield
    finally:
        doorbells.configure(previous.requested)
