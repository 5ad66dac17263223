"""llmnb.demo_batch, the Batch API stand-in of notebook 12, driven by the Batch executor: a job
cancelled half way keeps what it answered, and the next run sends only the rest."""

from __future__ import annotations

import asyncio
import contextlib

from llmnb import Models
from llmnb.demo_batch import DemoBatchServer
from llmnb.runs import Run, Task, TaskError
from llmnb.runs.batch import Batch, cancel_batch_async, forget_batch


def test_a_cancelled_job_keeps_its_answers_and_the_next_run_sends_the_rest(tmp_path):
    async def main():
        with DemoBatchServer(latency=0.3, concurrency=2, validating=0.1) as server:
            model = Models.create("openai:demo", base_url=server.base_url, api_key="none", cache=tmp_path / "c.sqlite")
            run = Run.for_each(model, [Task("say", "generate", "Say {item}")], [f"row {i}" for i in range(8)])
            first = asyncio.ensure_future(run.execute_async(Batch(poll=0.05, max_poll=0.1)))
            while not server.batches or (server.batches["batch_1"]["request_counts"] or {}).get("completed", 0) < 2:
                await asyncio.sleep(0.02)
            assert await cancel_batch_async(model, "batch_1") in ("in_progress", "cancelling", "cancelled")
            results = await first
            answered = len(results.values_ok)
            assert 2 <= answered < 8 and results.summary_line().startswith(f"{answered} done in 1 batch job")
            error = next(v for v in results.values() if isinstance(v, TaskError)).error
            assert "was cancelled before answering this row; run again to send it" in str(error)
            assert [j.status for j in model.cache.batch_jobs()] == ["collected"]
            again = await run.execute_async(Batch(poll=0.05, max_poll=0.1))
            assert len(again.values_ok) == 8 and again.summary_line() == "8 done in 1 batch job"
            assert server.batches["batch_2"]["request_counts"]["total"] == 8 - answered  # only the rest

    asyncio.run(main())


def test_a_job_the_server_lost_fails_its_rows_once_and_the_next_run_sends_them(tmp_path):
    from servers import free_port

    port = free_port()

    async def main():
        with DemoBatchServer(latency=0.5, concurrency=1, validating=0.1, port=port) as server:
            model = Models.create("openai:demo", base_url=server.base_url, api_key="none", cache=tmp_path / "c.sqlite")
            run = Run.for_each(model, [Task("say", "generate", "Say {item}")], ["a", "b"])
            first = asyncio.ensure_future(run.execute_async(Batch(poll=0.05, max_poll=0.1)))
            while not server.batches:
                await asyncio.sleep(0.02)
            first.cancel()  # an Interrupt: the job stays open in the file
            with contextlib.suppress(asyncio.CancelledError):
                await first
        with DemoBatchServer(latency=0.01, validating=0.01, port=port) as server:  # restarted: no jobs
            lost = await run.execute_async(Batch(poll=0.05, max_poll=0.1))
            assert len(lost.errors) == 2 and "is not on the server any more" in str(lost.errors["say_1"])
            again = await run.execute_async(Batch(poll=0.05, max_poll=0.1))
            assert again.as_list() == ["I'm doing well, thank you. How about you?"] * 2
            assert len(server.batches) == 1

    asyncio.run(main())


def test_a_job_forgotten_is_waited_for_no_more_and_its_rows_go_again(tmp_path):
    async def main():
        with DemoBatchServer(latency=0.05, concurrency=4, validating=0.05) as server:
            model = Models.create("openai:demo", base_url=server.base_url, api_key="none", cache=tmp_path / "c.sqlite")
            run = Run.for_each(model, [Task("say", "generate", "Say {item}")], ["a", "b"])
            server.validating = 3600  # a job that never moves, as on a server that lost track of it
            first = asyncio.ensure_future(run.execute_async(Batch(poll=0.05, max_poll=0.1)))
            while not [j for j in model.cache.batch_jobs() if j.job]:  # its id written down
                await asyncio.sleep(0.02)
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            server.validating = 0.05
            forgotten = await asyncio.to_thread(forget_batch, model.cache, "batch_1")
            assert forgotten.status == "forgotten" and len(forgotten.keys) == 2
            again = await run.execute_async(Batch(poll=0.05, max_poll=0.1))
            assert len(again.values_ok) == 2 and sorted(server.batches) == ["batch_1", "batch_2"]

    asyncio.run(main())
