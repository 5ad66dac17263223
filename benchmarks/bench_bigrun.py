"""What the big-run picture costs: one redraw at 1,000 to 50,000 rows, and its share of runs of
10,000 and 50,000 calls drawn live.

    python benchmarks/bench_bigrun.py            # writes benchmarks/results/bigrun.md

1. One update of the big-run picture (its view: counters and the strip, no rows; then the SVG;
   and the text form), median of repeated renders, beside the rows picture it replaces above
   200 rows.
2. Runs, each with no timeline ("off"), recorded only (`Timeline(display=False)`: the events and
   the event-loop probe) and with the live view drawn (the render thread redrawing the SVG into an
   ipywidgets.HTML, as in a notebook, minus the kernel's messaging), alternated in each round:
   (a) 10,000 generate_async calls against the demo server in its own process (200 ms latency,
   256 at once); (b) 10,000 and 50,000 synthetic calls, each reporting through the real event hook
   (events.Call) as a remote call does: waiting, started, finished with tokens and cost after
   125-375 ms, 256 at once, one in ten answered from the cache, one in a hundred failed. The
   synthetic calls leave out the HTTP client's own CPU time, so drawing's share of the process is
   higher there than with real calls: the harder case. The figures: drawing's CPU time (the
   render thread's own) over the drawn run's wall time, and the wall ratios to "off" in the same
   round (median and range).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import os
import platform
import random
import statistics
import sys
import time

import results_file  # benchmarks/, next to this script
from bench_timeline import Measured, demo_server, ratio

from llmnb import Models, events
from llmnb.events import CallEvent
from llmnb.timeline import render
from llmnb.timeline.recorder import Recorder

AT_ONCE = 256
LATENCY = 0.25  # seconds, on average, of a synthetic call


def recorded(n: int) -> Recorder:
    """n calls made 2 ms apart, each waiting, running 0.2 s and ending (one in ten from the cache)."""
    rec = Recorder(origin=0.0)
    rec.expect(n)
    for i in range(1, n + 1):
        t = i * 0.002
        script = ((("created", t, {}), ("finished", t + 0.001, {"cached": True, "cost": 2e-5})) if i % 10 == 0 else
                  (("created", t, {}), ("waiting", t, {}), ("started", t, {}),
                   ("finished", t + 0.2, {"tokens_out": 10, "cost": 2e-5})))
        for kind, at, details in script:
            rec.apply(CallEvent(i, kind, at, "generate", f"prompt number {i}", "m", **details))
    return rec


def render_ms(n: int, big_rows: int | None, repeat: int = 30) -> tuple[float, float]:
    """Median ms of one SVG update (the view, then the SVG) and of the text form."""
    rec = recorded(n)
    end = rec.summary(0.0)["wall"] + 0.002
    svg, text = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        render.to_svg(rec.view(end, render.MAX_ROWS, big_rows))
        svg.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        render.to_text(rec.view(end, render.MAX_ROWS, big_rows))
        text.append((time.perf_counter() - t) * 1000)
    return statistics.median(svg), statistics.median(text)


async def synthetic(i: int, gate: asyncio.Semaphore) -> None:
    call = events.Call("generate", f"row {i}", "demo")
    if i % 10 == 0:
        call.emit("finished", tokens_in=10, tokens_out=12, cached=True, cost=2e-5)
        return
    call.emit("waiting")
    async with gate:
        call.emit("started")
        await asyncio.sleep(LATENCY * (0.5 + random.random()))
    if i % 100 == 1:
        call.emit("failed", error="RateLimitError: 429 Too Many Requests")
    else:
        call.emit("finished", tokens_in=10, tokens_out=12, cost=2e-5)


async def one_run(n: int, call, mode: str) -> tuple[float, float]:
    """Wall time (s) of n calls made at once by `call(i)`, and the live view's CPU time (s)."""
    gc.collect()
    start = time.perf_counter()
    if mode == "off":
        await asyncio.gather(*(call(i) for i in range(n)))
        return time.perf_counter() - start, 0.0
    # outside a kernel, display() prints the first and final pictures: not what is measured
    with contextlib.redirect_stdout(io.StringIO()), Measured(display=mode == "drawn") as tl:
        tl.expect(n)
        await asyncio.gather(*(call(i) for i in range(n)))
    return time.perf_counter() - start, tl.draw_cpu


MODES = ("off", "recorded", "drawn")


async def rounds(n: int, count: int, call) -> dict[str, list[tuple[float, float]]]:
    await one_run(1_000, call, "drawn")  # warm up: importing ipywidgets, the first widget and picture
    runs = {mode: [] for mode in MODES}
    for _ in range(count):
        for mode in MODES:
            runs[mode].append(await one_run(n, call, mode))
    return runs


def synthetic_runs(n: int, count: int) -> dict[str, list[tuple[float, float]]]:
    async def main():
        gate = asyncio.Semaphore(AT_ONCE)
        return await rounds(n, count, lambda i: synthetic(i, gate))

    return asyncio.run(main())


def demo_runs(n: int, count: int) -> dict[str, list[tuple[float, float]]]:
    with demo_server() as url:
        model = Models.create("openai:demo", base_url=url, max_concurrency=AT_ONCE, timeout=600)

        async def main():
            await one_run(AT_ONCE, lambda i: model.generate_async("Hello"), "off")  # warm up: connections
            runs = await rounds(n, count, lambda i: model.generate_async(f"Hello, how are you? ({i})"))
            model.close()  # on its loop, before the loop closes
            return runs

        return asyncio.run(main())


def row(what: str, n: int, count: int, runs) -> str:
    """A table row: drawing's share to two decimals (bench_timeline's one is not enough here)."""
    off = statistics.median(wall for wall, _ in runs["off"])
    share = statistics.median(cpu / wall for wall, cpu in runs["drawn"]) * 100
    return (f"| {what} | {n:,} | {count} | {off:.2f} | {ratio(runs, 'recorded')} | {ratio(runs, 'drawn')}"
            f" | {share:.2f} % |")


RUNS = (("demo server, 200 ms", 10_000, 2, demo_runs), ("synthetic events", 10_000, 3, synthetic_runs),
        ("synthetic events", 50_000, 2, synthetic_runs))


def main() -> None:
    lines = ["| rows | big-run picture: one SVG update (ms) | its text form (ms) | rows picture: one SVG update (ms) |",
             "|---:|---:|---:|---:|"]
    for n in (1_000, 10_000, 50_000):
        (svg, text), (rows_svg, _) = render_ms(n, render.BIG_ROWS), render_ms(n, None)
        lines.append(f"| {n:,} | {svg:.2f} | {text:.2f} | {rows_svg:.2f} |")
    lines += ["", f"| calls ({AT_ONCE} at once) | n | rounds | off: wall (s, median) | recorded / off"
                  " | drawn live / off | drawing's CPU / wall |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [row(what, n, count, runner(n, count)) for what, n, count, runner in RUNS]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    results_file.publish("bigrun", "\n".join([
        f"Big-run picture cost, `python benchmarks/bench_bigrun.py` ({machine}); ratios: the median of each round's"
        " ratio to off, with their range", "", *lines, ""]))


if __name__ == "__main__":
    main()
