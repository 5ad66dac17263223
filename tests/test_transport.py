"""The HTTP transport of remote models: the openai SDK's aiohttp client by default, any client the
SDK takes on request, sessions closed on their own loop, timeouts that hold on aiohttp."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmnb import ModelCallError, Models
from llmnb.demo_server import DemoServer

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import asyncio, gc
import aiohttp
from llmnb import Models
from llmnb.demo_server import DemoServer

server = DemoServer(latency=0.01).start()
options = dict(base_url=server.base_url, api_key="k")
{options}

async def main(close):
    model = Models.create("openai:demo", **options)
    answers = await asyncio.gather(*[model.generate_async("hi") for _ in range(5)])
    if close:
        model.close()
    return answers, model

closed, _ = asyncio.run(main(close=True))
left, model = asyncio.run(main(close=False))  # the model outlives its loop, never closed
del model
gc.collect()
print(closed == left)
kept = Models.create("openai:demo", **options)  # the sync API's loop, still open at exit
count = lambda: sum(isinstance(o, aiohttp.ClientSession) for o in gc.get_objects())
sessions = count()
print(kept.generate("hi") == server.reply, count() > sessions)
"""


def run_script(options: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "dev", "-c", SCRIPT.format(options=options)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_aiohttp_by_default_and_no_session_left_unclosed():
    """Closed or not, on asyncio.run's loop or on the sync API's: no "Unclosed client session"
    (aiohttp logs it as an error, and -X dev shows every ResourceWarning)."""
    out = run_script()
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True", "True"]
    assert "Unclosed" not in out.stderr and "ResourceWarning" not in out.stderr.replace("unclosed event loop", ""), \
        out.stderr[-2000:]


def test_back_to_httpx_with_http_client():
    out = run_script("import openai; options['http_client'] = openai.DefaultAsyncHttpxClient")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True", "False"]  # no aiohttp session made


def test_an_http_client_instance_is_used_as_given(fault_server):
    import openai

    client = openai.DefaultAsyncHttpxClient(headers={"x-mine": "yes"})
    model = Models.create("openai:test", base_url=fault_server.base_url, api_key="k", http_client=client)
    assert model.generate("hi") == fault_server.reply
    assert fault_server.last_headers.get("x-mine") == "yes"
    model.close()


def test_slow_answers_within_the_timeout_arrive_and_late_ones_time_out():
    """Answers that take 1.5 s, 100 at once, each within timeout=5: all arrive (no early timeouts on
    the aiohttp transport); with timeout=0.5 they all fail within a few seconds."""
    with DemoServer(latency=1.5) as server:
        def gather(timeout):
            model = Models.create("openai:demo", base_url=server.base_url, api_key="k", timeout=timeout,
                                  max_retries=0, max_concurrency=100)

            async def main():
                calls = [model.generate_async(f"c{i}") for i in range(100)]
                return await asyncio.gather(*calls, return_exceptions=True)

            start = time.perf_counter()
            answers = asyncio.run(main())
            model.close()
            return answers, time.perf_counter() - start

        answers, _ = gather(timeout=5)
        assert answers == [server.reply] * 100
        answers, wall = gather(timeout=0.5)
        assert all(isinstance(a, ModelCallError) and "timeout=0.5s" in str(a) for a in answers) and wall < 4


@pytest.mark.parametrize("value", [0, -1, "100", True])
def test_bad_rate_limits_are_one_line_errors(value):
    from llmnb import ConfigError

    with pytest.raises(ConfigError, match="rpm must be a positive number"):
        Models.create("openai:demo", base_url="http://127.0.0.1:9/v1", api_key="k", rpm=value)
