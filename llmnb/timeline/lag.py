"""The event-loop blocking probe.

A tiny task that sleeps for a tick and measures how late it wakes up. While something blocks
the loop (a synchronous call inside async code, as sibila's local models do), no task can run,
so the probe wakes late by exactly that long: that stretch is recorded and drawn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

TICK = 0.02
THRESHOLD = 0.06  # a wake-up later than this counts as blocking (well above scheduler jitter)


async def probe(report: Callable[[float, float], None], tick: float = TICK, threshold: float = THRESHOLD) -> None:
    """Run until cancelled; call report(start, end) (perf_counter times) for each blocked stretch."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(tick)
        after = time.perf_counter()
        if after - before - tick > threshold:
            report(before + tick, after)
