"""The answer cache: 10,000 answers served from it against the same 10,000 sent to a server, and
what writing it costs, with the client idle and with the client busy.

    python benchmarks/bench_cache.py      # writes benchmarks/results/cache.md

The server is llmnb's demo server, answering after LATENCY seconds; the client sends with
max_concurrency=CONCURRENCY. Part one: 10,000 distinct prompts sent (no cache), then the same
10,000 served from a cache file filled before, the server in its own process (so the CPU time
measured is the client's). Part two: calls with no cache and with a fresh cache file, back to
back, ROUNDS pairs (medians), in two settings: the client idle (1,000 calls, the server in its
own process: the client mostly waits) and the client busy (3,000 calls, the server in the
client's process: its thread shares the client's interpreter, so the process is busy the whole
run and every microsecond the cache adds lengthens the run). The difference is what keeping
every answer on disk costs.
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
from llmnb.demo_server import DemoServer

SERVED, WRITTEN, BUSY = 10_000, 1_000, 3_000
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


def paired(url: str, n: int, folder: Path, name: str) -> tuple[list[float], list[float], float]:
    """ROUNDS pairs of n calls, no cache then a fresh cache file: median walls, median CPU per
    call, and the median of the pairs' wall ratios (pairs ran back to back: their ratio drifts
    less with the machine's load than either wall)."""
    plain, kept = [], []
    for r in range(ROUNDS):
        plain.append(calls(url, n, None, f"{name} plain {r}"))
        kept.append(calls(url, n, folder / f"{name}-{r}.sqlite", f"{name} kept {r}"))
    wall = [statistics.median(w for w, _ in runs) for runs in (plain, kept)]
    cpu = [statistics.median(c for _, c in runs) for runs in (plain, kept)]
    return wall, cpu, statistics.median(k[0] / p[0] for p, k in zip(plain, kept, strict=True))


def writing(url: str, folder: Path) -> str:
    with DemoServer(latency=LATENCY) as here:
        calls(here.base_url, 500, None, "warm")
        busy = paired(here.base_url, BUSY, folder, "busy")
    idle = paired(url, WRITTEN, folder, "idle")
    lines = [f"### Every answer written to a fresh cache file: the client idle and busy (medians of {ROUNDS} pairs)",
             "", "| client | calls | wall, no cache | wall, cache | cache's cost (wall) | CPU per call, no cache "
             "| CPU per call, cache |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, n, (wall, cpu, ratio) in (("idle (server in its own process)", WRITTEN, idle),
                                        ("busy (server in the client's process)", BUSY, busy)):
        lines.append(f"| {name} | {n:,} | {wall[0]:.2f} s | {wall[1]:.2f} s | {100 * (ratio - 1):+.1f} % "
                     f"| {cpu[0]:.0f} µs | {cpu[1]:.0f} µs |")
    lines += ["", "The cache's cost is the median of the pairs' wall ratios. CPU per call is the process's: with "
              "the server in the client's process it includes the server's."]
    return "\n".join(lines)


def main() -> None:
    parts = os.environ.get("PARTS", "served,writing").split(",")  # PARTS=writing: that part alone, printed
    proc, url = demo_server()
    try:
        with tempfile.TemporaryDirectory() as folder:
            report = "\n\n".join(part(url, Path(folder)) for part in (served, writing) if part.__name__ in parts)
    finally:
        proc.kill()
    report += f"\n\nPython {sys.version.split()[0]}, {os.cpu_count()} CPUs."
    if len(parts) == 2:
        results_file.publish("cache", report)
    else:
        print(report)


if __name__ == "__main__":
    main()
