"""With a cache, the timeline counts a call as in flight while it holds its slot, not while it
waits for the cache to keep its answer."""

from __future__ import annotations

import asyncio
import time

from llmnb import Models, listen
from llmnb.demo_server import DemoServer
from llmnb.events import CallEvent
from llmnb.timeline.recorder import Recorder


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, b in intervals] + [(b, -1) for a, b in intervals])  # an end before a start
    level = peak = 0
    for _, change in edges:
        level += change
        peak = max(peak, level)
    return peak


def test_calls_waiting_for_the_cache_to_keep_their_answers_are_not_in_flight(tmp_path):
    with DemoServer(latency=0.05) as server:
        model = Models.create("openai:demo", base_url=server.base_url, max_concurrency=2,
                              cache=str(tmp_path / "a.sqlite"))
        rec = Recorder(origin=time.perf_counter())
        busy = []

        def hold_the_cache(event: CallEvent) -> None:  # the cache's thread is busy while the calls run
            if event.kind == "started" and not busy:
                busy.append(model.cache._do(lambda db: time.sleep(0.5)))

        async def run():
            await asyncio.gather(*[model.generate_async(f"question {i}") for i in range(6)])

        with listen(rec), listen(hold_the_cache):
            asyncio.run(run())
    now = time.perf_counter() - rec.origin
    rows = rec.rows()
    assert [r.status for r in rows] == ["done"] * 6 and server.max_in_flight == 2
    running = [(a, b) for r in rows for phase, a, b in r.stretches(now) if phase == "running"]
    assert most_at_once(running) == 2  # as the slots allow; the waits to keep are drawn as waiting
    assert all(r.phases[-1][0] == "waiting" for r in rows)
    strip = rec.view(now, max_rows=10, big_rows=1).big.strip  # the big-run picture's "in flight"
    assert max(area / strip.width for area in strip.area["running"]) <= 2 + 1e-9
