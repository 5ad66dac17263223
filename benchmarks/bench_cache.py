"""The answer cache: 10,000 answers served from it against the same 10,000 sent to a server, and
what writing it costs while 1,000 calls run.

    python benchmarks/bench_cache.py      # writes benchmarks/results/cache.md

The server is llmnb's demo server in its own process (so the CPU time measured is the client's),
answering after LATENCY seconds. The client sends with max_concurrency=CONCURRENCY. Part one:
10,000 distinct prompts sent (no cache), then the same 10,000 served from a cache file filled
before. Part two: 1,000 calls with no cache and with a fresh cache file, back to back, ROUNDS
times (medians): the difference is what keeping every answer on disk costs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import results_file  # benchmarks/, next to this script

from llmnb import Models

SERVED, WRITTEN = 10_000, 1_000
LATENCY, CONCURRENCY = 0.2, 100
ROUNDS = int(os.environ.get("ROUNDS", "9"))


def demo_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llmnb.demo_server", "--port", str(port),
                             "--latency", str(LATENCY)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # "serving ...": it listens
    return proc, f"http://127.0.0.1:{port}/v1"


def calls(url: str, n: int, cache: Path | None, tag: str) -> tuple[float, float]:
    """(wall seconds, client CPU microseconds per call) of `n` distinct calls made at once."""
    model = Models.create("openai:demo", base_url=url, max_concurrency=CONCURRENCY,
                          cache=str(cache) if cache else False)

    async def run():
        await asyncio.gather(*[model.generate_async(f"{tag} {i}") for i in range(n)])

    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(run())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    model.close()
    return wall, cpu / n * 1e6


def served(url: str, folder: Path) -> str:
    path = folder / "served.sqlite"
    sent = calls(url, SERVED, None, "served")
    calls(url, SERVED, path, "served")  # fills the file
    hit = calls(url, SERVED, path, "served")
    rows = [("sent to the server (no cache)", sent), ("served from the cache", hit)]
    lines = [f"### {SERVED:,} answers, {LATENCY} s server latency, max_concurrency={CONCURRENCY}", "",
             "| | wall | client CPU per call |", "|---|---:|---:|"]
    lines += [f"| {name} | {wall:.2f} s | {cpu:.0f} µs |" for name, (wall, cpu) in rows]
    lines += ["", f"Served from the cache: {sent[0] / hit[0]:.0f}x less wall, {sent[1] / hit[1]:.1f}x less CPU "
              "per call than sending."]
    return "\n".join(lines)


def writing(url: str, folder: Path) -> str:
    plain, kept = [], []
    for r in range(ROUNDS):
        plain.append(calls(url, WRITTEN, None, f"plain {r}"))
        kept.append(calls(url, WRITTEN, folder / f"written-{r}.sqlite", f"kept {r}"))
    wall = [statistics.median(w for w, _ in runs) for runs in (plain, kept)]
    cpu = [statistics.median(c for _, c in runs) for runs in (plain, kept)]
    # each pair ran back to back: the median of their ratios drifts less with the machine's load
    ratio = statistics.median(k[0] / p[0] for p, k in zip(plain, kept, strict=True))
    lines = [f"### {WRITTEN:,} calls at once, each answer written to a fresh cache file (medians of {ROUNDS})", "",
             "| | wall | client CPU per call |", "|---|---:|---:|",
             f"| no cache | {wall[0]:.2f} s | {cpu[0]:.0f} µs |",
             f"| cache (every answer written before its call returns) | {wall[1]:.2f} s | {cpu[1]:.0f} µs |", "",
             f"Writing the cache costs {100 * (ratio - 1):+.1f} % of the wall (median of the {ROUNDS} pairs' ratios; "
             f"{cpu[1] - cpu[0]:+.0f} µs CPU per call)."]
    return "\n".join(lines)


def main() -> None:
    proc, url = demo_server()
    try:
        with tempfile.TemporaryDirectory() as folder:
            report = served(url, Path(folder)) + "\n\n" + writing(url, Path(folder))
    finally:
        proc.kill()
    results_file.publish("cache", f"{report}\n\nPython {sys.version.split()[0]}, {os.cpu_count()} CPUs.")


if __name__ == "__main__":
    main()
