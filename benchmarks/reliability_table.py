"""The reliability figures: a mixed-fault load against the fault-injecting server, and what was lost.

    python benchmarks/reliability_table.py      # writes benchmarks/results/reliability.md

1000 calls through llmnb (max_concurrency=20, max_retries=3, timeout=2 s) while the server injects
429 (Retry-After 0), 500, 503, dropped connections, malformed bodies, hung requests and invalid
content at random (1 call in 4 meets a fault). Every call must end as a result or a
ModelCallError/ExtractError (nothing lost); tasks, threads, files and sockets are counted before
and after (after a first warm batch fills the connection pool).
"""

from __future__ import annotations

import asyncio
import collections
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import results_file  # noqa: E402  benchmarks/, next to this script
from fault_server import Fault, FaultServer, resources_left  # noqa: E402

from llmnb import ExtractError, ModelCallError, Models  # noqa: E402

CALLS, CAP = 1000, 20
FAULTS = [Fault.http(429, retry_after=0), Fault.http(500), Fault.http(503), Fault.drop(), Fault.malformed(),
          Fault.hang(), Fault.content('{"value": "not a number"}')]


def main() -> None:
    random.seed(7)
    with FaultServer(latency=0.01) as server:
        model = Models.create("openai:fault", base_url=server.base_url, api_key="sk-bench",
                              max_concurrency=CAP, max_retries=3, timeout=2)

        async def batch():
            script = [random.choice(FAULTS) if random.random() < 0.25 else Fault.delay(0) for _ in range(CALLS)]
            server.script(*script)
            calls = [model.extract_async(int, f"call {i}") for i in range(CALLS)]
            return script, await asyncio.gather(*calls, return_exceptions=True)

        async def run():
            await batch()
            before = await resources_left(model)
            server.max_in_flight = 0
            server.bodies.clear()
            script, results = await batch()
            return script, results, before, await resources_left(model)

        script, results, before, after = asyncio.run(run())
    tried = collections.Counter(f.kind if f.kind != "status" else f"HTTP {f.status}"
                                for f in script if f.kind != "delay")
    outcomes = collections.Counter(type(r).__name__ for r in results)
    lost = sum(not isinstance(r, (int, ModelCallError, ExtractError)) for r in results)
    leaks = sum(max(a - b, 0) for a, b in zip(after, before, strict=True))
    lines = [
        "Reliability, `python benchmarks/reliability_table.py` "
        "(seeded; llmnb max_concurrency=20, max_retries=3, timeout=2 s)",
        "", "| figure | value |", "|---|---:|",
        f"| calls made | {CALLS} |",
        f"| faults injected | {sum(tried.values())} ({', '.join(f'{k} {v}' for k, v in sorted(tried.items()))}) |",
        f"| requests the server received | {len(server.bodies)} |",
        f"| results | {outcomes.get('int', 0)} values, {outcomes.get('ModelCallError', 0)} ModelCallError, "
        f"{outcomes.get('ExtractError', 0)} ExtractError |",
        f"| results lost (neither a value nor an llmnb error) | {lost} |",
        f"| leaks (tasks, threads, files, sockets after - before) | {leaks} ({before} -> {after}) |",
        f"| largest concurrency the server saw (cap {CAP}) | {server.max_in_flight} |", ""]
    results_file.publish("reliability", "\n".join(lines))


if __name__ == "__main__":
    main()
