"""What the timeline costs: render time by number of rows, and its share of a concurrent run.

    python benchmarks/bench_timeline.py            # writes benchmarks/results/timeline.md

1. One update (snapshot of the rows + SVG; and the text form) with 10, 100 and 1000 rows:
   median of repeated renders. A live view does this at most 10 times a second.
2. 10, 100 and 1000 concurrent generate_async calls against a local OpenAI-compatible server
   with 200 ms latency: the timeline off, recording only (display=False), and drawn
   (display=True: the live view's render thread redraws the SVG into an ipywidgets.HTML 10 times
   a second, as in a notebook, minus the kernel's messaging), alternated over several rounds in
   one run (the machine is shared and noisy, so ratios of medians side by side are what count).
   A whole %%llm_parallel cell in a real kernel is timed by benchmarks/bench_peers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import platform
import statistics
import sys
import time

import results_file  # benchmarks/, next to this script

from llmnb import Models, Timeline
from llmnb.demo_server import DemoServer
from llmnb.events import CallEvent
from llmnb.timeline import render
from llmnb.timeline.recorder import Recorder



def rows(n: int):
    rec = Recorder(origin=0.0)
    for i in range(n):
        for kind, t in (("created", 0.0), ("waiting", 0.0), ("started", i * 0.002), ("finished", i * 0.002 + 0.2)):
            rec.apply(CallEvent(i + 1, kind, t, "generate", f"prompt number {i}", "m", tokens_out=10 if kind == "finished" else None))
    return rec


def render_ms(n: int, repeat: int = 30) -> tuple[float, float]:
    rec = rows(n)
    data = rec.rows()
    svg, text = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        render.to_svg(rec.rows(), [], now=data[-1].end)  # one live update: snapshot + SVG
        svg.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        render.to_text(data, [], now=data[-1].end)
        text.append((time.perf_counter() - t) * 1000)
    return statistics.median(svg), statistics.median(text)


async def one_run(model, n: int, mode: str) -> float:
    start = time.perf_counter()
    calls = [model.generate_async("Hello, how are you?") for _ in range(n)]
    if mode == "off":
        await asyncio.gather(*calls)
    else:
        # outside a kernel, display() prints the first and final pictures: not what is measured
        with contextlib.redirect_stdout(io.StringIO()), Timeline(display=mode == "drawn"):
            await asyncio.gather(*calls)
    return time.perf_counter() - start


MODES = ("off", "recorded", "drawn")


def overhead(n: int, rounds: int = 7) -> dict[str, float]:
    with DemoServer(latency=0.2) as server:
        model = Models.create("openai:demo", base_url=server.base_url, max_concurrency=n)

        async def main():
            await one_run(model, n, "off")  # warm up: connections, client
            walls = {mode: [] for mode in MODES}
            for _ in range(rounds):
                for mode in MODES:
                    walls[mode].append(await one_run(model, n, mode))
            return {mode: statistics.median(w) for mode, w in walls.items()}

        return asyncio.run(main())


def main() -> None:
    lines = ["| rows | one SVG update (ms) | text form (ms) |", "|---:|---:|---:|"]
    for n in (10, 100, 1000):
        svg, text = render_ms(n)
        lines.append(f"| {n} | {svg:.2f} | {text:.2f} |")
    lines += ["", "| concurrent calls, 200 ms server latency | off: wall (s, median of 7) | recorded / off | drawn live / off |",
              "|---:|---:|---:|---:|"]
    for n in (10, 100, 1000):
        walls = overhead(n)
        lines.append(f"| {n} | {walls['off']:.3f} | {walls['recorded'] / walls['off']:.3f} | {walls['drawn'] / walls['off']:.3f} |")
    machine = f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {sys.version.split()[0]}"
    report = "\n".join([f"Timeline cost, `python benchmarks/bench_timeline.py` ({machine})", "", *lines, ""])
    results_file.publish("timeline", report)


if __name__ == "__main__":
    main()
