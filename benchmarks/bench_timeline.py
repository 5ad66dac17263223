"""What the timeline costs: render time by number of rows, and its share of a concurrent run.

    python benchmarks/bench_timeline.py            # writes benchmarks/results/timeline.md

1. One update (snapshot of the rows + SVG; and the text form) with 10, 100 and 1000 rows:
   median of repeated renders. A live view does this at most 10 times a second.
2. 100 concurrent generate_async calls against a local OpenAI-compatible server with 200 ms
   latency, with the timeline off and on, alternated over several rounds in one run (the
   machine is shared and noisy, so the ratio of medians side by side is what counts). Outside
   a kernel the timeline records and probes the loop but draws nothing; the drawing cost is (1).
"""

from __future__ import annotations

import asyncio
import platform
import statistics
import sys
import time
from pathlib import Path

from llmnb import Models, Timeline
from llmnb.demo_server import DemoServer
from llmnb.events import CallEvent
from llmnb.timeline import render
from llmnb.timeline.recorder import Recorder

OUT = Path(__file__).parent / "results" / "timeline.md"


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


async def one_run(model, n: int, timeline: bool) -> float:
    start = time.perf_counter()
    if timeline:
        with Timeline():
            await asyncio.gather(*[model.generate_async("Hello, how are you?") for _ in range(n)])
    else:
        await asyncio.gather(*[model.generate_async("Hello, how are you?") for _ in range(n)])
    return time.perf_counter() - start


def overhead(n: int = 100, rounds: int = 7) -> tuple[float, float]:
    with DemoServer(latency=0.2) as server:
        model = Models.create("openai:demo", base_url=server.base_url, max_concurrency=n)

        async def main():
            await one_run(model, n, False)  # warm up: connections, client
            off, on = [], []
            for _ in range(rounds):
                off.append(await one_run(model, n, False))
                on.append(await one_run(model, n, True))
            return statistics.median(off), statistics.median(on)

        return asyncio.run(main())


def main() -> None:
    lines = ["| rows | one SVG update (ms) | text form (ms) |", "|---:|---:|---:|"]
    for n in (10, 100, 1000):
        svg, text = render_ms(n)
        lines.append(f"| {n} | {svg:.2f} | {text:.2f} |")
    off, on = overhead()
    lines += ["", "| 100 concurrent calls, 200 ms server latency | wall (s, median of 7) |", "|---|---:|",
              f"| timeline off | {off:.3f} |", f"| timeline on | {on:.3f} |", f"| ratio on / off | {on / off:.3f} |"]
    machine = f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {sys.version.split()[0]}"
    report = "\n".join([f"Timeline cost, `python benchmarks/bench_timeline.py` ({machine})", "", *lines, ""])
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
