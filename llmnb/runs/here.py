"""A run executed here, on this event loop: a cap on how many tasks run together, each result
reported as it completes, failures kept as entries, and a cancelled run keeping what finished.

`Here` executes a `Run`; `run_tasks` runs any named jobs the same way:

    results = await run_tasks({"a": lambda: model.generate_async("hi"), ...}, max_concurrency=8)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import events
from .results import Results, TaskError

if TYPE_CHECKING:
    from .form import Run

Job = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Done:
    """One finished job: its value (or `TaskError`), and when it began and ended, in seconds from
    the start of the run (`began` is None for a job that failed before it got its turn)."""

    name: str
    value: Any
    began: float | None
    ended: float


class Here:
    """The default executor: every task of the run on this event loop, at most the run's
    `max_concurrency` at once."""

    def __repr__(self) -> str:
        return "Here()"

    async def execute(self, run: Run, results: Results, on_result: Callable[[Done], None] | None = None) -> None:
        """Run the tasks with `run_tasks`: results as they complete, the finished ones kept on cancel."""
        jobs = {task.name: functools.partial(task.call, run.model) for task in run.tasks}
        await run_tasks(jobs, max_concurrency=run.max_concurrency, on_result=on_result, results=results)


async def run_tasks(jobs: Mapping[str, Job], *, max_concurrency: int = 0,
                    on_result: Callable[[Done], None] | None = None, results: Results | None = None) -> Results:
    """Run every job (name -> a function returning an awaitable) concurrently; return `Results`
    in the jobs' order. At most `max_concurrency` run at once (0: no cap). `on_result` sees each
    job as it completes. If the run is cancelled, the jobs still running are cancelled, the ones
    that finished stay in `results` (pass your own to keep them) and CancelledError is raised."""
    if max_concurrency < 0:
        raise ValueError(f"max_concurrency must be at least 1 (or 0 for no cap), not {max_concurrency}")
    results = Results() if results is None else results
    results.order = list(jobs)
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else contextlib.nullcontext()
    start = time.perf_counter()
    events.expect_calls(len(jobs))  # an open timeline shows the run's progress out of this total

    async def one(name: str, job: Job) -> Done:
        began = None
        events.name_calls(name)  # this task's own context: its calls' labels carry the name
        try:
            async with gate:
                began = time.perf_counter() - start
                value = await job()
        except Exception as e:  # one failing job never loses the others
            value = TaskError(e)
        return Done(name, value, began, time.perf_counter() - start)

    tasks = [asyncio.ensure_future(one(name, job)) for name, job in jobs.items()]
    try:
        for next_done in asyncio.as_completed(tasks):
            done = await next_done
            results[done.name] = done.value
            if on_result is not None:
                on_result(done)
    finally:  # cancelled (Interrupt): stop what still runs, keep what finished
        await _cancel_and_keep(tasks, results)
    return results


async def _cancel_and_keep(tasks: Sequence[asyncio.Future], results: Results) -> None:
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled():
            done = task.result()
            results.setdefault(done.name, done.value)
    results.cancelled = [name for name in results.order if name not in results]
