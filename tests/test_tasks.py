"""The task runner behind %%llm_parallel, on its own: plain asyncio, no IPython."""

from __future__ import annotations

import asyncio

import pytest

from llmnb import Models, listen
from llmnb.runs.here import Done, run_tasks
from llmnb.runs.results import Results, TaskError


def test_results_in_order_failures_kept_and_reported_as_they_complete():
    done: list[Done] = []

    async def after(seconds, value):
        await asyncio.sleep(seconds)
        if isinstance(value, Exception):
            raise value
        return value

    jobs = {"slow": lambda: after(0.3, "s"), "boom": lambda: after(0.1, ValueError("bad")),
            "quick": lambda: after(0, "q")}
    results = asyncio.run(run_tasks(jobs, on_result=done.append))
    assert isinstance(results, Results) and results.order == ["slow", "boom", "quick"]
    assert [d.name for d in done] == ["quick", "boom", "slow"]  # completion order
    assert results.as_list()[0] == "s" and results.as_list()[2] == "q"
    assert isinstance(results["boom"], TaskError) and set(results.errors) == {"boom"}
    assert all(d.began is not None and d.ended >= d.began for d in done)
    assert results.summary_line().startswith("2 done, 1 failed (first: boom: ValueError: bad)")


def test_max_concurrency_caps_the_jobs_running_at_once():
    running = peak = 0

    async def job():
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return 1

    results = asyncio.run(run_tasks({f"t{i}": job for i in range(40)}, max_concurrency=3))
    assert peak == 3 and results.as_list() == [1] * 40
    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(run_tasks({"a": job}, max_concurrency=-1))


def test_cancelling_the_run_keeps_what_finished():
    results = Results()
    started = []

    async def job(seconds):
        started.append(seconds)
        await asyncio.sleep(seconds)
        return seconds

    async def main():
        jobs = {"fast": lambda: job(0.05), "slow": lambda: job(30), "slower": lambda: job(60)}
        run = asyncio.ensure_future(run_tasks(jobs, results=results))
        await asyncio.sleep(0.5)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    left = asyncio.run(main())
    assert dict(results) == {"fast": 0.05} and results.cancelled == ["slow", "slower"]
    assert results.as_list() == [0.05, None, None] and left == []
    assert "1 done, 2 cancelled" == results.summary_line()


def test_each_jobs_calls_carry_its_name(fault_server):
    model = Models.create("openai:test", base_url=fault_server.base_url, api_key="k")
    labels = []

    async def main():
        with listen(lambda e: labels.append(e.label) if e.kind == "finished" else None):
            return await run_tasks({f"job{i}": (lambda i=i: model.generate_async(f"prompt {i}")) for i in range(3)})

    results = asyncio.run(main())
    model.close()
    assert results.as_list() == [fault_server.reply] * 3
    assert sorted(labels) == ["job0: prompt 0", "job1: prompt 1", "job2: prompt 2"]
