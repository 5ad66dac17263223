"""Remote calls truly overlap, and max_concurrency is a real cap: a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

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
