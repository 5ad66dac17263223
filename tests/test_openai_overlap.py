"""Remote calls truly overlap, and max_concurrency is a real cap: a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import pytest

from llmnb import Models, Timeline
from llmnb.demo_server import DemoServer


@pytest.fixture
def server():
    with DemoServer(latency=0.5) as s:
        yield s


def test_two_calls_overlap(server):
    model = Models.create("openai:demo", base_url=server.base_url)

    async def main():
        start = time.perf_counter()
        answers = await asyncio.gather(model.generate_async("Hello"), model.classify_async(["a", "b"], "x"))
        return answers, time.perf_counter() - start

    (text, _), took = asyncio.run(main())
    assert isinstance(text, str) and text
    assert took < 0.9  # two 0.5 s requests, side by side (serially they take 1 s)
    assert server.max_in_flight == 2


def test_max_concurrency_is_a_hard_cap(server):
    model = Models.create("openai:demo", base_url=server.base_url, max_concurrency=2)

    async def main():
        with Timeline() as tl:
            await asyncio.gather(*[model.generate_async(f"call {i}") for i in range(6)])
        return tl

    start = time.perf_counter()
    tl = asyncio.run(main())
    assert server.max_in_flight == 2 and server.requests == 6
    assert time.perf_counter() - start >= 1.4  # three rounds of two
    waited = [r for r in tl.records() if r["wait"] > 0.3]
    assert len(waited) == 4  # the timeline shows who waited for a slot


def test_sync_twin_on_remote_model_from_a_running_loop(server):
    model = Models.create("openai:demo", base_url=server.base_url)

    async def cell():  # a notebook cell calling the blocking twin
        return model.generate("Hello")

    assert asyncio.run(cell()) == server.reply


def test_models_made_again_and_again_never_stall(server):
    """A notebook cell run again makes a new model each time. A dropped model's HTTP client, left
    to the garbage collector with open connections, made later concurrent calls hang until their
    timeout (2 of 30 rounds of 10). llmnb closes a dropped model's clients; no round may stall."""
    server.latency = 0.2

    async def main():
        walls = []
        for _ in range(30):
            model = Models.create("openai:demo", base_url=server.base_url, max_concurrency=10, timeout=5,
                                  max_retries=0)
            start = time.perf_counter()
            await asyncio.gather(*[model.generate_async("Hello, how are you?") for _ in range(10)])
            walls.append(time.perf_counter() - start)
        return walls

    walls = asyncio.run(main())
    assert max(walls) < 2.5, walls  # a stall is a whole timeout (5 s); a round takes about 0.2 s


def test_the_first_call_does_not_block_the_loop(server):
    """Making the HTTP client (the SDK's imports, TLS set-up: 0.2-0.4 s) happens when the model is
    created, or in a worker thread for another loop: never on the loop during a call."""
    made_on = []
    model = Models.create("openai:demo", base_url=server.base_url)
    make = model.backend._clients._make
    model.backend._clients._make = lambda: made_on.append(threading.current_thread()) or make()

    async def first_calls():
        with Timeline(display=False) as tl:
            await model.generate_async("Hello")
        return tl, threading.current_thread()

    tl, loop_thread = asyncio.run(first_calls())  # takes the client made with the model
    assert made_on == [] and sum(end - start for start, end in tl.lags) < 0.15, tl.lags
    tl, loop_thread = asyncio.run(first_calls())  # another loop: its client is made off the loop
    assert len(made_on) == 1 and made_on[0] is not loop_thread
    assert sum(end - start for start, end in tl.lags) < 0.15, tl.lags

    @dataclass
    class Fresh:  # a type never used before: its schema is built at this first call
        name: str
        tags: list[str]

    async def first_extract():
        with Timeline(display=False) as tl:
            await model.extract_async(Fresh, "Alice, tagged a and b")
        return tl

    assert sum(end - start for start, end in asyncio.run(first_extract()).lags) < 0.15
