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


class Probe:
    """The probe task's state: when it is due to wake, so the block's end can see a stretch
    blocked until then, which the probe itself never wakes to report (it is cancelled first)."""

    def __init__(self, report: Callable[[float, float], None], tick: float = TICK, threshold: float = THRESHOLD):
        self.report, self.tick, self.threshold = report, tick, threshold
        self.due = time.perf_counter() + tick  # from its creation: a block may block before it first runs

    async def run(self) -> None:
        """Run until cancelled; call report(start, end) (perf_counter times) for each blocked stretch."""
        while True:
            woke = time.perf_counter()
            if woke - self.due > self.threshold:
                self.report(self.due, woke)
            self.due = woke + self.tick
            await asyncio.sleep(self.tick)

    def finish(self, now: float) -> None:
        """Report the stretch blocked from the probe's due time until `now`, if it is one."""
        if now - self.due > self.threshold:
            self.report(self.due, now)
