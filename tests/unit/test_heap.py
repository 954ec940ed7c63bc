"""settle_heap: garbage left by starting is collected, not frozen; the rest is frozen; what is
made later is collected as ever."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from faasd_py.heap import settle_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """A reference cycle nobody holds (only the collector frees it), seen through a weakref."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session collects as before


def test_garbage_is_collected_and_the_rest_frozen(thawed: None) -> None:
    kept = [Node() for _ in range(100)]
    dropped = cycle()
    settle_heap()
    assert dropped() is None  # collected before the freeze, not kept forever
    assert gc.get_freeze_count() >= len(kept)
    later = cycle()
    gc.collect()
    assert later() is None
