"""The same tasks on several models at once, as one grid: which model answers right, how fast,
at what cost.

    res = await compare_async({"small": local, "demo": remote}, [Task("capital", "generate", "...")])
    res["capital", "demo"]          # results keyed by (task, model)
    res.grid()                      # tasks down, models across (a pandas DataFrame)
    res.grid("latency"), res.grid("cost")

Every (task, model) pair runs at once on this event loop (`max_concurrency` caps each model on
its own: one slow provider does not hold back the others). The calls are made model after
model, so a timeline's rows come grouped by model, each labelled "model/task" (under a cap, in
the order the tasks get to start). A task's latency
is the seconds from its start (once its model's cap lets it run) to its answer; its cost is the
sum of its model calls' costs as their `finished` events report them (None where the model's
price is not known).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import events
from ..cache import refreshing
from ..errors import ConfigError
from ..model import Model, sync_twin
from .form import Run, Task
from .here import Done, run_tasks
from .results import Results


def columns(models: Mapping[str, Model] | Sequence[Model]) -> dict[str, Model]:
    """The grid's columns: {label: model} as given, or a list of models labelled by their names."""
    if isinstance(models, Mapping):
        named = dict(models)
    else:
        named = {}
        for model in models:
            if getattr(model, "name", None) in named:
                raise ConfigError(f"two models are named {model.name!r}; give a dict of labels, "
                                  "e.g. compare({'cold': a, 'warm': b}, tasks)")
            named[getattr(model, "name", repr(model))] = model
    if not named:
        raise ConfigError("compare needs at least one model")
    wrong = next((label for label, m in named.items() if not isinstance(m, Model)), None)
    if wrong is not None:
        raise ConfigError(f"{wrong!r} is a {type(named[wrong]).__name__}, not a Model; "
                          "make one with Models.create(...)")
    return named


class Spent:
    """A listener adding up the cost of one task's model calls (its tools' runs cost nothing)."""

    def __init__(self) -> None:
        self.cost: float | None = 0.0

    def __call__(self, event: events.CallEvent) -> None:
        if event.kind == "finished" and event.parent is None:
            self.cost = None if event.cost is None or self.cost is None else self.cost + event.cost


async def compare_async(models: Mapping[str, Model] | Sequence[Model], tasks: Sequence[Task], *,
                        max_concurrency: int = 0, refresh: bool = False,
                        on_result: Callable[[Done], None] | None = None, results: Results | None = None) -> Results:
    """Run every task on every model at once; `Results` keyed by (task name, model label), with
    `.grid()`, `.latency` and `.cost` (see the module). `models`: a dict {label: Model}, or a
    list of models labelled by their names. `max_concurrency` caps the tasks at once per model
    (0: no cap); `refresh=True` asks again even for kept answers. `on_result` sees each
    answer as it arrives (its `name` the (task, model) key). Pass your own `results` to keep
    what finished even when the run is interrupted."""
    runs = {label: Run(model, tasks, max_concurrency=max_concurrency, refresh=refresh)
            for label, model in columns(models).items()}  # each run checks and numbers the tasks
    results = Results() if results is None else results
    results.models = list(runs)
    results.tasks = [task.name for task in next(iter(runs.values())).tasks]
    jobs: dict[Any, Callable] = {}
    for label, run in runs.items():
        gate = asyncio.Semaphore(max_concurrency) if max_concurrency else contextlib.nullcontext()
        for task in run.tasks:
            jobs[task.name, label] = _measured(task, run.model, label, gate, results)
    with refreshing() if refresh else contextlib.nullcontext():
        await run_tasks(jobs, on_result=on_result, results=results)
    return results


def _measured(task: Task, model: Model, label: str, gate: Any, results: Results) -> Callable:
    """The job of one grid cell: the task's call on `model`, its latency and cost kept in `results`."""
    key = (task.name, label)

    async def job() -> Any:
        events.name_calls(f"{label}/{task.name}")  # the timeline's row says which model
        spent = Spent()
        async with gate:
            start = time.perf_counter()
            try:
                with events.listen(spent):
                    return await task.call(model)
            finally:
                results.latency[key] = time.perf_counter() - start
                results.cost[key] = spent.cost

    return job


compare = sync_twin(compare_async)
