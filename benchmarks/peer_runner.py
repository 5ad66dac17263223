"""One library making N concurrent chat calls to a server; prints JSON figures. Run by bench_peers.py,
each library in its own venv: `PYTHON peer_runner.py LIB N BASE_URL`."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

PROMPT = "Hello, how are you?"


async def raw(n, url):
    import openai

    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=url, max_retries=0)

    async def run(k):
        return await asyncio.gather(*[client.chat.completions.create(model="demo", messages=[{"role": "user", "content": PROMPT}]) for _ in range(k)])

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


RUNNERS = {"raw": raw, "llmnb": llmnb_, "llmnb+timeline": lambda n, u: llmnb_(n, u, True),
           "langchain": langchain, "sibila": sibila}


async def main(lib: str, n: int, url: str) -> dict:
    run = await RUNNERS[lib](n, url)
    await run(min(n, 10))  # warm up: imports, connections
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    answers = await run(n)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert len(answers) == n
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"lib": lib, "n": n, "wall": wall, "cpu": cpu, "rss_mb": after.ru_maxrss / 1024}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))))
