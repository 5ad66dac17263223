"""What running one turn's tools at once buys, and what llmnb's tool machinery costs per call.

    python benchmarks/bench_tools.py            # writes benchmarks/results/tools.md

1. One model call whose first turn asks for K slow tools (each waits `TOOL` seconds), through
   the whole loop against `llmnb.demo_server` in its own process (`LATENCY` a turn): the K calls
   of the turn together (async tools as tasks; sync tools, which block, in threads), against the
   same K tools one at a time (`tool(sequential=True)`, as a loop over the calls runs them).
   Medians of `ROUNDS` alternated rounds.
2. llmnb's own cost per tool call: a turn of N calls of a tool that does nothing (two typed
   arguments to validate), through `llmnb.tools.run_calls` (schema validation, the call events,
   results as text), with and without a Timeline listening, against a bare `asyncio.gather` of
   the same functions (async) or of `loop.run_in_executor` (sync) on the same arguments, already
   parsed: the floor any runner pays.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import bench_streaming  # benchmarks/, next to this script: its demo server process
import results_file

from llmnb import Models, Timeline, tool
from llmnb.backends.base import ToolCall
from llmnb.events import Call
from llmnb.tools import Toolbox, run_calls

KS = (1, 2, 4, 8, 16)
TOOL = 0.2
LATENCY = 0.1
ROUNDS = 3
N = 1_000  # calls per turn for the overhead
OVERHEAD_ROUNDS = 7


def slow_tools(k: int, kind: str, sequential: bool) -> list:
    """K distinct tools (tool_1..tool_K) that wait TOOL seconds: async (asyncio.sleep) or sync (time.sleep)."""
    async def wait_async(city: str = "Lisbon") -> str:
        await asyncio.sleep(TOOL)
        return city

    def wait_sync(city: str = "Lisbon") -> str:
        time.sleep(TOOL)
        return city

    fn = wait_async if kind == "async" else wait_sync
    return [tool(fn, name=f"tool_{i}", sequential=sequential) for i in range(1, k + 1)]


async def loop_walls(model) -> dict:
    """(K, what) -> median wall of one call with K slow tools in its first turn."""
    cases = [(k, kind, seq) for k in KS for kind, seq in (("async", False), ("sync", False), ("async", True))]
    walls: dict = {case: [] for case in cases}
    for _ in range(ROUNDS):
        for k, kind, seq in cases:
            tools = slow_tools(k, kind, seq)
            start = time.perf_counter()
            await model.generate_async("Plan a trip", tools=tools)
            walls[(k, kind, seq)].append(time.perf_counter() - start)
    return {case: statistics.median(w) for case, w in walls.items()}


async def nothing_async(city: str, days: int) -> int:
    return days


def nothing_sync(city: str, days: int) -> int:
    return days


async def overhead() -> dict:
    """Microseconds per tool call: llmnb's run_calls (with and without a timeline) and the bare floor."""
    pool = ThreadPoolExecutor(64)
    loop = asyncio.get_running_loop()
    calls = [ToolCall(f"c{i}", "nothing", '{"city": "Lisbon", "days": 3}') for i in range(N)]
    async_box = Toolbox([tool(nothing_async, name="nothing")])
    sync_box = Toolbox([tool(nothing_sync, name="nothing")])

    async def bare_async():
        await asyncio.gather(*(nothing_async("Lisbon", 3) for _ in range(N)))

    async def bare_sync():
        await asyncio.gather(*(loop.run_in_executor(pool, nothing_sync, "Lisbon", 3) for _ in range(N)))

    async def llmnb_run(box, timeline: bool):
        if timeline:
            async with Timeline(display=False):
                await run_calls(calls, box, Call("generate", "q", "bench"))
        else:
            await run_calls(calls, box, Call("generate", "q", "bench"))

    cases = {("async", "bare"): bare_async, ("async", "llmnb"): lambda: llmnb_run(async_box, False),
             ("async", "timeline"): lambda: llmnb_run(async_box, True),
             ("sync", "bare"): bare_sync, ("sync", "llmnb"): lambda: llmnb_run(sync_box, False),
             ("sync", "timeline"): lambda: llmnb_run(sync_box, True)}
    times: dict = {case: [] for case in cases}
    for _ in range(OVERHEAD_ROUNDS):
        for case, run in cases.items():
            start = time.perf_counter()
            await run()
            times[case].append((time.perf_counter() - start) / N * 1e6)
    pool.shutdown()
    return {case: statistics.median(t) for case, t in times.items()}


def report(walls: dict, costs: dict) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    lines = [f"Tools, `python benchmarks/bench_tools.py` ({machine}; the demo server in its own process, "
             f"{LATENCY * 1000:.0f} ms a turn; each tool waits {TOOL * 1000:.0f} ms; medians of {ROUNDS} rounds)", "",
             "| K tools in one turn | together, async (s) | together, sync in threads (s) | one at a time (s) "
             "| one at a time / together |", "|---:|---:|---:|---:|---:|"]
    for k in KS:
        together, threads, serial = walls[(k, "async", False)], walls[(k, "sync", False)], walls[(k, "async", True)]
        lines.append(f"| {k} | {together:.3f} | {threads:.3f} | {serial:.3f} | {serial / together:.2f}x |")
    lines += ["", f"Two turns of {LATENCY:.1f} s and the tools: together is 2 x {LATENCY:.1f} + {TOOL:.1f} s "
              f"= {2 * LATENCY + TOOL:.1f} s for any K; one at a time, 2 x {LATENCY:.1f} + K x {TOOL:.1f} s.", "",
              f"| per tool call, {N:,} calls in one turn | async tool (µs) | sync tool (µs) |", "|---|---:|---:|"]
    for what, label in (("bare", "bare asyncio.gather (sync: of run_in_executor)"), ("llmnb", "llmnb run_calls"),
                        ("timeline", "llmnb run_calls, a Timeline listening")):
        lines.append(f"| {label} | {costs[('async', what)]:.1f} | {costs[('sync', what)]:.1f} |")
    extra = costs[("async", "llmnb")] - costs[("async", "bare")]
    lines += ["", f"llmnb's own cost: about {extra:.0f} µs a call over the bare floor (async), "
              "for validating the arguments, the call events and the result's text."]
    return "\n".join(lines)


def main() -> None:
    bench_streaming.LATENCY, bench_streaming.PER_TOKEN = LATENCY, 0.0  # the server's settings
    port = bench_streaming.free_port()
    server = bench_streaming.start_server(port)
    try:
        model = Models.create("openai:demo", base_url=f"http://127.0.0.1:{port}/v1", api_key="bench")
        walls = asyncio.run(loop_walls(model))
        model.close()
    finally:
        server.terminate()
    costs = asyncio.run(overhead())
    results_file.publish("tools", report(walls, costs))


if __name__ == "__main__":
    main()
