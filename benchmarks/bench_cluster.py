"""Figures for `Cluster` (a run on a Dask cluster's workers), measured side by side in one run.

    python benchmarks/bench_cluster.py                      # every part (~5 min on 2 cores)
    python benchmarks/bench_cluster.py --part throughput --rounds 5

Each part writes its table into benchmarks/results/cluster.md (and prints it).

1. throughput: the embedded SmolLM2-135M generating for TASKS prompts (max_tokens=32, new
   prompts every round), generated tokens a second: one kernel (this process, 1 and 2 llama.cpp
   threads) against a LocalCluster of 2 worker processes with 1 thread each, on the same cores.
   Rounds alternate between the three; the ratio is the median of the rounds' ratios. The
   workers load the model once, in a first run not counted.
2. shared limit: 600 calls with rpm=2700 shared by 2 workers against the demo server allowing
   50 requests a second (90 % of its rate), answering 429 beyond; answers of 429 per run.
3. client CPU: CALLS calls to the demo server (its own process, 20 ms latency), with a timeline
   recording every call: CPU seconds of this process per call, run here against run on the
   cluster (scheduler and workers in their own processes, their events relayed to this process).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import results_file  # benchmarks/, next to this script

TASKS, CALLS = 16, 2000
SUBJECTS = ["rivers", "owls", "copper", "tea", "glaciers", "jazz", "bees", "maps", "salt", "kites", "moss", "bells",
            "ferns", "clocks", "wool", "comets", "tides", "lamps", "honey", "chess"]


def prompts(round_no: int) -> list[str]:
    return [f"Write three sentences about {SUBJECTS[(round_no * 7 + i) % len(SUBJECTS)]} (note {round_no}.{i})."
            for i in range(TASKS)]


def tokens_per_s(model, executor, round_no: int) -> float:
    from llmnb import listen
    from llmnb.runs import Run, Task

    run = Run.for_each(model, [Task("text", "generate", "{p}", options={"max_tokens": 32})], prompts(round_no),
                       name="p")
    out: list[int] = []

    def count(event) -> None:
        if event.kind == "finished" and event.tokens_out:
            out.append(event.tokens_out)

    start = time.perf_counter()
    with listen(count):
        run.execute(executor)
    return sum(out) / (time.perf_counter() - start)


def throughput(rounds: int) -> str:
    from distributed import Client, LocalCluster

    from llmnb import Models
    from llmnb.runs import Here
    from llmnb.runs.cluster import Cluster

    kernels = {1: Models.create("smollm2", n_threads=1), 2: Models.create("smollm2", n_threads=2)}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        on_cluster, workers = Models.create("smollm2", n_threads=1), Cluster(client, chunk=1)
        tokens_per_s(on_cluster, workers, -1)  # each worker loads the model once
        rows: dict[str, list[float]] = {"kernel, 1 thread": [], "kernel, 2 threads": [], "cluster, 2 x 1 thread": []}
        for r in range(rounds):
            rows["kernel, 1 thread"].append(tokens_per_s(kernels[1], Here(), r))
            rows["kernel, 2 threads"].append(tokens_per_s(kernels[2], Here(), r))
            rows["cluster, 2 x 1 thread"].append(tokens_per_s(on_cluster, workers, r))
    best_kernel = [max(a, b) for a, b in zip(rows["kernel, 1 thread"], rows["kernel, 2 threads"], strict=True)]
    ratios = [c / k for c, k in zip(rows["cluster, 2 x 1 thread"], best_kernel, strict=True)]
    lines = [f"### Throughput: {TASKS} generate tasks, max_tokens=32, {rounds} rounds ({machine()})", "",
             "| where | generated tokens/s, median | rounds |", "|---|---|---|"]
    lines += [f"| {name} | {statistics.median(v):.0f} | {', '.join(f'{x:.0f}' for x in v)} |"
              for name, v in rows.items()]
    each = ", ".join(f"{x:.2f}" for x in ratios)
    lines += ["", f"Cluster against the better kernel, median of the rounds' ratios: "
                  f"**{statistics.median(ratios):.2f}x** ({each})."]
    return "\n".join(lines)


def shared_limit(runs: int) -> str:
    from distributed import Client, LocalCluster

    from llmnb import Models
    from llmnb.demo_server import DemoServer, RateLimit
    from llmnb.runs import Run, Task
    from llmnb.runs.cluster import Cluster

    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        for _ in range(runs):
            with DemoServer(latency=0.05, rate_limit=RateLimit(requests=50)) as server:
                model = Models.create("openai:demo", base_url=server.base_url, rpm=2700)
                run = Run.for_each(model, [Task("g", "generate", "hello {x}")], list(range(600)), name="x")
                start = time.perf_counter()
                results = run.execute(Cluster(client))
                rows.append((server.rate_limit.rejected, len(results.values_ok), time.perf_counter() - start))
    lines = [f"### Shared limit: 600 calls, rpm=2700 over 2 workers, a server allowing 50/s ({machine()})", "",
             "| run | answers of 429 | answered | wall s (the first run loads the workers' models) |",
             "|---|---|---|---|"]
    lines += [f"| {i} | {r} | {ok} | {wall:.1f} |" for i, (r, ok, wall) in enumerate(rows, 1)]
    return "\n".join(lines)


def client_cpu() -> str:
    from distributed import Client
    from distributed.deploy.subprocess import SubprocessCluster

    from llmnb import Models, Timeline
    from llmnb.runs import Here, Run, Task
    from llmnb.runs.cluster import Cluster

    port = 8000 + os.getpid() % 1000
    server = subprocess.Popen([sys.executable, "-m", "llmnb.demo_server", "--port", str(port), "--latency", "0.02"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        model = Models.create("openai:demo", base_url=f"http://127.0.0.1:{port}/v1", max_concurrency=64)
        run = Run.for_each(model, [Task("g", "generate", "call {x}")], list(range(CALLS)), name="x",
                           max_concurrency=64)
        with SubprocessCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            cpu = {}
            for name, executor in (("here, one kernel", Here()), ("cluster, 2 workers", Cluster(client))):
                run.execute(executor)  # warm: connections, the workers' models
                with Timeline(display=False) as timeline:
                    before, start = time.process_time(), time.perf_counter()
                    run.execute(executor)
                    cpu[name] = ((time.process_time() - before) / CALLS * 1000, time.perf_counter() - start,
                                 len(timeline.records()))
    finally:
        server.terminate()
    lines = [f"### Client CPU per call: {CALLS} calls, demo server at 20 ms, a timeline recording ({machine()})", "",
             "| where | CPU ms per call (this process) | wall s | timeline rows |", "|---|---|---|---|"]
    lines += [f"| {name} | {ms:.2f} | {wall:.1f} | {rows:,} |" for name, (ms, wall, rows) in cpu.items()]
    return "\n".join(lines)


def machine() -> str:
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, load {load:.1f} at the start"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["throughput", "limit", "cpu"], action="append")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    parts = args.part or ["throughput", "limit", "cpu"]
    if "throughput" in parts:
        results_file.publish("cluster", throughput(args.rounds), "throughput")
    if "limit" in parts:
        results_file.publish("cluster", shared_limit(args.rounds), "limit")
    if "cpu" in parts:
        results_file.publish("cluster", client_cpu(), "cpu")


if __name__ == "__main__":
    main()
