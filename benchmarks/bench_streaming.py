"""What streaming through llmnb costs, and how exactly it records the time to first token.

    python benchmarks/bench_streaming.py            # writes benchmarks/results/streaming.md

The server is `llmnb.demo_server` in its own process (so the client's CPU time is the client's
alone): the first token `LATENCY` after the request, then one token every `PER_TOKEN`.

1. 100 concurrent streamed calls, every piece read: llmnb's `stream_async` against the OpenAI SDK's
   own streaming (`AsyncOpenAI(...).chat.completions.create(stream=True)`, on its default httpx
   transport and on its aiohttp one, which llmnb uses), alternated over several rounds in one
   run; the median wall time and client CPU time (process_time) of each, and their ratio to the
   SDK on httpx.
2. The time to first token as llmnb records it (the `first_token` event's time minus the
   `started` event's), against the server's scripted delay: one call at a time, and in the batch
   of 100, next to the same time as the raw client sees it (request sent to first piece read).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import statistics
import sys
import time

import results_file  # benchmarks/, next to this script
from demo_process import free_port, start_demo_server

from llmnb import Models, listen

N = 100
ROUNDS = 7
LATENCY = 0.2
PER_TOKEN = 0.01
PROMPT = [{"role": "user", "content": "Hello, how are you?"}]
PIECE = b"I'm"  # the demo server's first token


class TTFT:
    """A listener that keeps each call's time to first token: first_token minus started."""

    def __init__(self):
        self.started: dict[int, float] = {}
        self.values: list[float] = []

    def __call__(self, event) -> None:
        if event.kind == "started":
            self.started[event.call_id] = event.time
        elif event.kind == "first_token":
            self.values.append(event.time - self.started[event.call_id])


async def llmnb_call(model) -> str:
    return "".join([piece async for piece in model.stream_async(PROMPT)])


async def raw_call(client, firsts: list[float]) -> str:
    sent = time.perf_counter()
    stream = await client.chat.completions.create(model="demo", messages=PROMPT, stream=True,
                                                  stream_options={"include_usage": True})
    pieces = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if not pieces:
                firsts.append(time.perf_counter() - sent)
            pieces.append(chunk.choices[0].delta.content)
    return "".join(pieces)


def socket_ttft(port: int) -> float:
    """The time to first token a plain socket sees (no HTTP library): the floor of the transport."""
    body = json.dumps({"model": "demo", "messages": PROMPT, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sent = time.perf_counter()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: demo\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        received = b""
        while b'"content": "' + PIECE not in received:
            received += sock.recv(65536)
        return time.perf_counter() - sent


async def timed(calls) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    answers = await asyncio.gather(*calls)
    assert len(set(answers)) == 1 and answers[0], "every call must read the whole answer"
    return time.perf_counter() - wall, time.process_time() - cpu


async def measure(base_url: str) -> dict:
    import openai

    model = Models.create("openai:demo", base_url=base_url, max_concurrency=N)
    client = openai.AsyncOpenAI(base_url=base_url, api_key="no-key", max_retries=0)
    # llmnb sends through the SDK's aiohttp transport: the SDK on it too, for a like-for-like row
    aio = openai.AsyncOpenAI(base_url=base_url, api_key="no-key", max_retries=0,
                             http_client=openai.DefaultAioHttpClient())
    # The local engine's row joins here, as one more (name, make the calls) pair.
    runners = {"llmnb stream_async": lambda: [llmnb_call(model) for _ in range(N)],
               "AsyncOpenAI, stream=True": lambda: [raw_call(client, []) for _ in range(N)],
               "AsyncOpenAI on aiohttp, stream=True": lambda: [raw_call(aio, []) for _ in range(N)]}
    for make in runners.values():
        await timed(make())  # warm up: connections, clients
    runs = {name: [] for name in runners}
    for _ in range(ROUNDS):
        for name, make in runners.items():
            runs[name].append(await timed(make()))
    single, raw_single, batch, raw_batch = TTFT(), [], TTFT(), []
    with listen(single):
        for _ in range(10):
            await llmnb_call(model)
    for _ in range(10):
        await raw_call(client, raw_single)
    with listen(batch):
        await asyncio.gather(*[llmnb_call(model) for _ in range(N)])
    await asyncio.gather(*[raw_call(client, raw_batch) for _ in range(N)])
    await client.close()
    await aio.close()
    model.close()
    return {"runs": runs, "ttft": {"one at a time (10 calls)": (single.values, raw_single),
                                   f"{N} at once": (batch.values, raw_batch)}}


def report(result: dict, floor: float) -> str:
    runs = result["runs"]
    names = list(runs)
    base = names[1]
    lines = [f"| {N} concurrent streamed calls | wall (s) | client CPU (s) | wall / raw | CPU / raw |",
             "|---|---:|---:|---:|---:|"]
    for name in names:
        wall = statistics.median(w for w, _ in runs[name])
        cpu = statistics.median(c for _, c in runs[name])
        raw_wall = statistics.median(w for w, _ in runs[base])
        raw_cpu = statistics.median(c for _, c in runs[base])
        lines.append(f"| {name} | {wall:.3f} | {cpu:.3f} | {wall / raw_wall:.3f} | {cpu / raw_cpu:.3f} |")
    header = (f"| time to first token (server's scripted delay {LATENCY * 1000:.0f} ms) | llmnb records, median (ms) "
              "| its error (ms) | max (ms) | the raw client sees, median (ms) |")
    lines += ["", header, "|---|---:|---:|---:|---:|"]
    for case, (ours, raw) in result["ttft"].items():
        median = statistics.median(ours) * 1000
        lines.append(f"| {case} | {median:.1f} | {median - LATENCY * 1000:+.1f} | {max(ours) * 1000:.1f} "
                     f"| {statistics.median(raw) * 1000:.1f} |")
    lines += ["", f"A plain socket (no HTTP library) sees the first token after {floor * 1000:.1f} ms (median of 10)."]
    return "\n".join(lines)


def main() -> None:
    port = free_port()
    server = start_demo_server(port, LATENCY, PER_TOKEN)
    try:
        result = asyncio.run(measure(f"http://127.0.0.1:{port}/v1"))
        floor = statistics.median(socket_ttft(port) for _ in range(10))
    finally:
        server.terminate()
        server.wait(timeout=10)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    title = (f"Streaming, `python benchmarks/bench_streaming.py` ({machine}; medians of {ROUNDS} alternated rounds; "
             f"server: first token after {LATENCY * 1000:.0f} ms, then one every {PER_TOKEN * 1000:.0f} ms)")
    results_file.publish("streaming", f"{title}\n\n{report(result, floor)}\n")


if __name__ == "__main__":
    main()
