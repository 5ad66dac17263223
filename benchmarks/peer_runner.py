"""One library making N concurrent chat calls to a server; prints JSON figures. Run by bench_peers.py,
each library in its own venv: `PYTHON peer_runner.py LIB N BASE_URL [--profile]`."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import json
import os
import pstats
import resource
import sys
import time

PROMPT = "Hello, how are you?"


async def raw(n, url, aiohttp=False):
    import openai

    http_client = openai.DefaultAioHttpClient() if aiohttp else None
    # llmnb's timeout (the SDK's default gives connecting 5 s, which thousands of connections
    # opened at once on a busy machine can exceed)
    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=url, max_retries=0, timeout=60, http_client=http_client)

    async def run(k):
        messages = [{"role": "user", "content": PROMPT}]
        return await asyncio.gather(*[client.chat.completions.create(model="demo", messages=messages)
                                      for _ in range(k)])

    return run


async def llmnb_(n, url, timeline=False):
    from llmnb import Models, Timeline

    model = Models.create("openai:demo", base_url=url, api_key="sk-bench", max_concurrency=max(n, 1))

    async def run(k):
        if timeline:
            with Timeline():
                return await asyncio.gather(*[model.generate_async(PROMPT) for _ in range(k)])
        return await asyncio.gather(*[model.generate_async(PROMPT) for _ in range(k)])

    return run


async def langchain(n, url):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="demo", api_key="sk-bench", base_url=url, max_retries=0)

    async def run(k):
        return await llm.abatch([PROMPT] * k, config={"max_concurrency": k})

    return run


async def sibila(n, url):
    from sibila import OpenAIModel

    model = OpenAIModel("demo", api_key="sk-bench", base_url=url, ctx_len=4096)

    async def run(k):
        return await asyncio.gather(*[model.call_async(PROMPT) for _ in range(k)])

    return run


async def pydantic_ai(n, url):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    agent = Agent(OpenAIChatModel("demo", provider=OpenAIProvider(base_url=url, api_key="sk-bench")))

    async def run(k):
        return await asyncio.gather(*[agent.run(PROMPT) for _ in range(k)])

    return run


RUNNERS = {"raw": raw, "raw+aiohttp": lambda n, u: raw(n, u, True), "llmnb": llmnb_,
           "llmnb+timeline": lambda n, u: llmnb_(n, u, True),
           "langchain": langchain, "sibila": sibila, "pydantic-ai": pydantic_ai}


async def main(lib: str, n: int, url: str, profile: bool = False) -> dict:
    run = await RUNNERS[lib](n, url)
    await run(min(n, 10))  # warm up: imports, connections
    # Every library starts from an empty garbage-collector generation: otherwise a full collection
    # (0.1-0.15 s here, over the 100,000 objects the imports leave) falls inside some runs and not
    # others, by the luck of the warm-up's allocation count.
    gc.collect()
    profiler = cProfile.Profile() if profile else None
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    with profiler or contextlib.nullcontext():
        answers = await run(n)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert len(answers) == n
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    figures = {"lib": lib, "n": n, "wall": wall, "cpu": cpu, "rss_mb": after.ru_maxrss / 1024}
    if profiler:  # where the client's time goes: llmnb's own code against everything under it
        stats = pstats.Stats(profiler).stats
        figures["profiled_s"] = sum(v[2] for v in stats.values())
        figures["in_llmnb_s"] = sum(v[2] for (path, _, _), v in stats.items() if f"{os.sep}llmnb{os.sep}" in path)
    return figures


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], "--profile" in sys.argv[4:]))))
