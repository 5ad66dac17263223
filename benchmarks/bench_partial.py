"""How much sooner a structured answer shows when it streams: the time to its first partial value
against the time to the whole, validated value.

    python benchmarks/bench_partial.py              # writes benchmarks/results/partial.md

Two models, each asked for the same `Person` with `extract_stream_async`, one call at a time:
the embedded model (SmolLM2-135M through llama.cpp, grammar-constrained, temperature 0) and a
remote one streamed over server-sent events (`llmnb.demo_server` in its own process: the first
token `LATENCY` after the request, then one every `PER_TOKEN`). For each call: the time from the
call to its first partial value, to the first value with a field written, and to the last value;
and how many values it gave. No answer cache: every call is asked for. Last, what reading the
values costs: a 600-character answer fed to `PartialReader` four characters at a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import time

import results_file  # benchmarks/, next to this script
from demo_process import free_port, start_demo_server
from pydantic import BaseModel

from llmnb import Models
from llmnb.partial import PartialReader
from llmnb.structured import target_for

CALLS = 7
LATENCY = 0.2
PER_TOKEN = 0.02
PROMPT = "Invent a person: name, age, city and three hobbies."


class Person(BaseModel):
    name: str
    age: int
    city: str
    hobbies: list[str]


async def one_call(model, **options) -> tuple[float, float, float, int]:
    """(first value, first field written, last value) in seconds from the call, and the count."""
    start = time.perf_counter()
    times, field = [], None
    async for value in model.extract_stream_async(Person, PROMPT, **options):
        times.append(time.perf_counter() - start)
        if field is None and any(v not in (None, "") for v in value.__dict__.values()):
            field = times[-1]
    assert isinstance(value, Person), "the last value is the whole, validated answer"
    return times[0], field if field is not None else times[-1], times[-1], len(times)


async def measure(model, **options) -> list[tuple[float, float, float, int]]:
    await one_call(model, **options)  # warm up: a connection, the model's first prompt
    return [await one_call(model, **options) for _ in range(CALLS)]


def row(name: str, calls: list[tuple[float, float, float, int]]) -> str:
    first, field, last, count = (statistics.median(c[i] for c in calls) for i in range(4))
    return (f"| {name} | {first * 1000:.0f} | {field * 1000:.0f} | {last * 1000:.0f} | {last / first:.1f}x "
            f"| {count:.0f} |")


def reading_cost() -> str:
    """The mean time pydantic takes per piece to read the partial value of a 600-character answer."""
    text = json.dumps({"value": {"name": "Ada Lovelace", "age": 36, "city": "London", "hobbies": ["maths"] * 60}})
    pieces = [text[i:i + 4] for i in range(0, len(text), 4)]
    times = []
    for _ in range(CALLS):
        reader = PartialReader(target_for(Person))
        start = time.perf_counter()
        for piece in pieces:
            reader.feed(piece)
        times.append((time.perf_counter() - start) / len(pieces))
    return (f"Reading the values: {statistics.median(times) * 1e6:.0f} µs a piece for a {len(text)}-character "
            f"answer in {len(pieces)} pieces of 4 characters (median of {CALLS} readings).")


def main() -> None:
    port = free_port()
    server = start_demo_server(port, LATENCY, PER_TOKEN)
    try:
        local = Models.create(cache=False)
        remote = Models.create("openai:demo", base_url=f"http://127.0.0.1:{port}/v1", api_key="no-key",
                               cache=False)
        rows = [row("embedded SmolLM2-135M (llama.cpp, temperature 0)",
                    asyncio.run(measure(local, temperature=0, max_tokens=120))),
                row(f"remote, streamed (demo server: {LATENCY * 1000:.0f} ms, then {PER_TOKEN * 1000:.0f} ms a token)",
                    asyncio.run(measure(remote)))]
        local.close()
        remote.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    title = (f"Partial values, `python benchmarks/bench_partial.py` ({machine}; medians of {CALLS} calls "
             "one at a time)")
    table = ["| model | first value (ms) | first field written (ms) | whole answer (ms) | whole / first "
             "| values per answer |", "|---|---:|---:|---:|---:|---:|", *rows]
    results_file.publish("partial", f"{title}\n\n" + "\n".join(table) + f"\n\n{reading_cost()}\n")


if __name__ == "__main__":
    main()
