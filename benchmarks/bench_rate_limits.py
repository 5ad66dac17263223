"""300 calls against a server that allows 50 requests a second: answers of 429, calls lost, wall.

    python benchmarks/bench_rate_limits.py      # writes benchmarks/results/rate_limits.md

The server is llmnb's demo server with `RateLimit(requests=50)` (429 with Retry-After beyond 50
requests in a second, OpenAI's x-ratelimit-* headers on every answer), answering after 200 ms;
then the same server without the x-ratelimit-* headers, as some OpenAI-compatible servers are.
The floor is 300 / 50 = 6 s. Each setting runs on a fresh server, ROUNDS times (medians).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

import results_file  # benchmarks/, next to this script

from llmnb import ModelCallError, Models, listen
from llmnb.demo_server import DemoServer, RateLimit

CALLS, PER_SECOND, LATENCY = 300, 50, 0.2
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SETTINGS = {
    "llmnb, defaults (max_concurrency=16)": {},
    "llmnb, max_concurrency=50": {"max_concurrency": 50},
    f"llmnb, rpm={PER_SECOND * 60} (the server's limit)": {"rpm": PER_SECOND * 60},
    f"llmnb, max_concurrency=300, rpm={PER_SECOND * 60}": {"max_concurrency": 300, "rpm": PER_SECOND * 60},
}


async def llmnb_calls(url: str, options: dict) -> tuple[int, float]:
    """(calls lost, seconds the calls spent waiting for the rate limit in all)."""
    model = Models.create("openai:demo", base_url=url, api_key="sk-bench", **options)
    events = []
    with listen(events.append):
        calls = [model.generate_async(f"call {i}") for i in range(CALLS)]
        answers = await asyncio.gather(*calls, return_exceptions=True)
    model.close()
    return sum(isinstance(a, ModelCallError) for a in answers), throttled_seconds(events)


def throttled_seconds(events) -> float:
    """Time from each `throttled` event to the same call's next `started`, summed."""
    since: dict[int, float] = {}
    total = 0.0
    for event in events:
        if event.kind == "throttled":
            since[event.call_id] = event.time
        elif event.kind == "started" and event.call_id in since:
            total += event.time - since.pop(event.call_id)
    return total


async def raw_calls(url: str, options: dict) -> tuple[int, float]:
    """The raw SDK with its own retries (2 by default), each call waiting out its own Retry-After."""
    import openai

    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=url)

    async def one(i):
        return await client.chat.completions.create(model="demo", messages=[{"role": "user", "content": f"call {i}"}])

    answers = await asyncio.gather(*[one(i) for i in range(CALLS)], return_exceptions=True)
    await client.close()
    return sum(isinstance(a, Exception) for a in answers), 0.0


def measure(runner, options: dict, headers: bool = True) -> dict:
    with DemoServer(latency=LATENCY, rate_limit=RateLimit(requests=PER_SECOND, headers=headers)) as server:
        start = time.perf_counter()
        lost, throttled = asyncio.run(runner(server.base_url, options))
        return {"wall": time.perf_counter() - start, "429": server.rate_limit.rejected, "lost": lost,
                "throttled": throttled}


def main() -> None:
    runs: dict[str, list[dict]] = {}
    for _ in range(ROUNDS):
        for headers, server in ((True, ""), (False, "; server sends only Retry-After")):
            runs.setdefault(f"raw AsyncOpenAI, its default retries{server}", []).append(measure(raw_calls, {}, headers))
            for name, options in SETTINGS.items():
                runs.setdefault(name + server, []).append(measure(llmnb_calls, options, headers))
    lines = ["| client | answers of 429 | calls lost | wall (s) | waited for the rate limit, all calls (s) |",
             "|---|---:|---:|---:|---:|"]
    for name, rounds in runs.items():
        med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        lines.append(f"| {name} | {med['429']:.0f} | {med['lost']:.0f} | {med['wall']:.2f} | {med['throttled']:.1f} |")
    report = "\n".join([
        f"Rate limits, `python benchmarks/bench_rate_limits.py` ({CALLS} calls, a server allowing {PER_SECOND} requests"
        f" a second and answering after {LATENCY * 1000:.0f} ms; floor {CALLS / PER_SECOND:.0f} s; median of {ROUNDS}"
        f" rounds; {os.cpu_count()} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')})", "",
        *lines, ""])
    results_file.publish("rate_limits", report)


if __name__ == "__main__":
    main()
