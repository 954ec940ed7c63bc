"""Waiting on states of processes outside the test's event loop (no event to wait on)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(condition: Callable[[], bool], what: str = "condition") -> None:
    """Poll `condition` every 20 ms, up to 10 s (a deadline to catch a hang, not a speed)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} not met within 10 s")
