"""What the timeline costs: render time by number of rows, and its share of a concurrent run.

    python benchmarks/bench_timeline.py            # writes benchmarks/results/timeline.md

1. One update (the view of the rows drawn + SVG; and the text form) with 10 to 5,000 rows:
   median of repeated renders. A live view does this at most 10 times a second.
2. 10 to 5,000 concurrent generate_async calls against a local OpenAI-compatible server with
   200 ms latency: the timeline off, recording only (display=False), and drawn (display=True:
   the live view's render thread redraws the SVG into an ipywidgets.HTML 10 times a second, as
   in a notebook, minus the kernel's messaging), alternated in each round, several rounds in one
   run. The machine is shared and noisy, so each round's ratio to "off" is taken side by side,
   and the table gives their median and range; and the render thread's own CPU time over the
   wall time, the share of the process that drawing takes (steadier than a ratio of walls).
   A whole %%llm_parallel cell in a real kernel is timed by benchmarks/bench_peers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

import results_file  # benchmarks/, next to this script

from llmnb import Models, Timeline
from llmnb.events import CallEvent
from llmnb.timeline import render
from llmnb.timeline.recorder import Recorder


def rows(n: int):
    rec = Recorder(origin=0.0)
    for i in range(n):
        for kind, t in (("created", 0.0), ("waiting", 0.0), ("started", i * 0.002), ("finished", i * 0.002 + 0.2)):
            tokens = 10 if kind == "finished" else None
            rec.apply(CallEvent(i + 1, kind, t, "generate", f"prompt number {i}", "m", tokens_out=tokens))
    return rec


def render_ms(n: int, repeat: int = 30) -> tuple[float, float]:
    rec = rows(n)
    end = rec.summary(0.0)["wall"]
    svg, text = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        render.to_svg(rec.view(end, render.MAX_ROWS))  # one live update: the rows drawn + SVG
        svg.append((time.perf_counter() - t) * 1000)
        view = rec.view(end, render.MAX_ROWS)
        t = time.perf_counter()
        render.to_text(view)
        text.append((time.perf_counter() - t) * 1000)
    return statistics.median(svg), statistics.median(text)


class Measured(Timeline):
    """A timeline that keeps its render thread's CPU time: what drawing takes from the calls."""

    draw_cpu = 0.0

    def _paint(self) -> None:
        super()._paint()
        self.draw_cpu = time.thread_time()  # the thread's whole CPU time, as it ends


async def one_run(model, n: int, mode: str) -> tuple[float, float]:
    """Wall time (s) of n concurrent calls, and the live view's CPU time (s) when drawn."""
    gc.collect()  # so a full collection of the process's objects falls in no mode's run by chance
    start = time.perf_counter()
    calls = [model.generate_async("Hello, how are you?") for _ in range(n)]
    if mode == "off":
        await asyncio.gather(*calls)
        return time.perf_counter() - start, 0.0
    # outside a kernel, display() prints the first and final pictures: not what is measured
    with contextlib.redirect_stdout(io.StringIO()), Measured(display=mode == "drawn") as tl:
        await asyncio.gather(*calls)
    return time.perf_counter() - start, tl.draw_cpu


MODES = ("off", "recorded", "drawn")


@contextlib.contextmanager
def demo_server():
    """The demo server in its own process (in this one, its thread would share the client's GIL
    and time); yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "llmnb.demo_server", "--port", str(port), "--latency", "0.2"],
                              stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()  # "serving ..."
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait()


def overhead(n: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Per mode, each round's (wall time, drawing CPU time), in seconds."""
    with demo_server() as url:
        # 5,000 requests at once queue for the HTTP client's connections longer than the default 60 s
        model = Models.create("openai:demo", base_url=url, max_concurrency=n, timeout=600)

        async def main():
            await one_run(model, n, "off")  # warm up: connections, client
            runs = {mode: [] for mode in MODES}
            for _ in range(rounds):
                for mode in MODES:
                    runs[mode].append(await one_run(model, n, mode))
            model.close()  # on its loop, before the loop closes
            return runs

        return asyncio.run(main())


def ratio(runs: dict[str, list[tuple[float, float]]], mode: str) -> str:
    """The median of the rounds' wall ratios to "off" in the same round, with their range."""
    ratios = [wall / off for (wall, _), (off, _) in zip(runs[mode], runs["off"], strict=True)]
    return f"{statistics.median(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})"


def draw_share(runs: dict[str, list[tuple[float, float]]]) -> str:
    """The live view's CPU time as a share of the drawn run's wall time (median over rounds)."""
    return f"{statistics.median(cpu / wall for wall, cpu in runs['drawn']) * 100:.1f} %"


SIZES = {10: 5, 100: 5, 1000: 5, 5000: 3}  # calls: rounds


def main() -> None:
    lines = ["| rows | one SVG update (ms) | text form (ms) |", "|---:|---:|---:|"]
    for n in (10, 100, 1000, 5000):
        svg, text = render_ms(n)
        lines.append(f"| {n} | {svg:.2f} | {text:.2f} |")
    lines += ["", "| concurrent calls, 200 ms server latency | rounds | off: wall (s, median) | recorded / off"
                  " | drawn live / off | drawing's CPU / wall |", "|---:|---:|---:|---:|---:|---:|"]
    for n, rounds in SIZES.items():
        runs = overhead(n, rounds)
        off = statistics.median(wall for wall, _ in runs["off"])
        lines.append(f"| {n} | {rounds} | {off:.3f} | {ratio(runs, 'recorded')} | {ratio(runs, 'drawn')}"
                     f" | {draw_share(runs)} |")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    report = "\n".join([f"Timeline cost, `python benchmarks/bench_timeline.py` ({machine}); ratios: the median of"
                        " each round's ratio to off, with their range", "", *lines, ""])
    results_file.publish("timeline", report)


if __name__ == "__main__":
    main()
