"""A run of many calls written down as data, so it can execute here, on a cluster's workers or as
a provider's batch jobs: the model as it can be made again, and each task's method, target and
prompt. The executors (`Here`, `llmnb.runs.cluster.Cluster`, `llmnb.runs.batch.Batch`) take the
same `Run` and fill the same `Results`, in the tasks' order.

    run = Run.for_each(model, [Task("label", "classify", "Spam? {text}", target=["spam", "ham"])], texts,
                       name="text")
    results = await run.execute_async()              # here; or run.execute_async(Cluster(client))
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..cache import refreshing, sample_index
from ..errors import ConfigError
from ..model import Model, sync_twin
from .fill import fill
from .here import Done, Here
from .results import Results

METHODS = ("generate", "extract", "classify")


@dataclass(frozen=True)
class Task:
    """One call of a run: `method` ("generate", "extract" or "classify") on `prompt`; `target` is
    extract's type or classify's labels; `options` the method's keyword options (retries=, tools=,
    inst=, max_tokens=...). `sample` numbers identical tasks (0, 1, ...): each is its own answer
    in the cache, and a re-run finds each again; `Run` sets it."""

    name: str
    method: str
    prompt: str | list[dict]
    target: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    sample: int | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"task {self.name!r}: the method must be one of {', '.join(METHODS)}, "
                              f"not {self.method!r}")
        if self.method != "generate" and self.target is None:
            what = "a type" if self.method == "extract" else "the labels"
            raise ConfigError(f"task {self.name!r}: {self.method} needs target= ({what})")
        allowed = options_of(self.method)
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            raise ConfigError(f"task {self.name!r}: {self.method} takes no option {', '.join(unknown)}; "
                              f"it takes {', '.join(sorted(allowed))}")

    async def call(self, model: Model) -> Any:
        """The task's call on `model`, as its sample of identical requests."""
        method = getattr(model, f"{self.method}_async")
        args = (self.prompt,) if self.method == "generate" else (self.target, self.prompt)
        with contextlib.nullcontext() if self.sample is None else sample_index(self.sample):
            return await method(*args, **self.options)


@functools.cache
def options_of(method: str) -> frozenset[str]:
    """The keyword options of a Model method (read once: a run of 50,000 tasks checks each)."""
    return frozenset(inspect.signature(getattr(Model, f"{method}_async")).parameters) - {
        "self", "prompt", "target", "labels"}


class Executor(Protocol):
    """Where a run executes. `execute` fills `results` (task name -> value, or `TaskError`) as
    answers arrive, calls `on_result` with each, and on cancellation keeps what finished (the
    rest in `results.cancelled`) and raises CancelledError."""

    async def execute(self, run: Run, results: Results, on_result: Callable[[Done], None] | None) -> None:
        """Execute every task of `run` into `results` (see the class)."""


@dataclass
class Run:
    """A run of many calls: `tasks` on `model`, at most `max_concurrency` at once (0: no cap; a
    cluster applies it per worker), `refresh=True` asking again even for kept answers."""

    model: Model
    tasks: Sequence[Task]
    max_concurrency: int = 0
    refresh: bool = False

    def __post_init__(self):
        if not isinstance(self.model, Model):
            raise ConfigError(f"a run needs a Model (Models.create(...)), not {type(self.model).__name__}")
        if isinstance(self.max_concurrency, bool) or not isinstance(self.max_concurrency, int) \
                or self.max_concurrency < 0:
            raise ConfigError(f"max_concurrency must be at least 1 (or 0 for no cap), not {self.max_concurrency!r}")
        names = Counter(task.name for task in self.tasks)
        twice = [name for name, n in names.items() if n > 1]
        if twice:
            raise ConfigError(f"the task name {twice[0]!r} is used twice; give each task its own name")
        self.tasks = numbered(self.tasks)

    def __repr__(self) -> str:
        return f"<llmnb.Run of {len(self.tasks)} tasks on {self.model.name}>"

    @classmethod
    def for_each(cls, model: Model, templates: Sequence[Task], items: Sequence, name: str = "item",
                 **options: Any) -> Run:
        """Each template once per item, `{name}` in its prompt filled from the item: tasks
        `label_1 .. label_N` in the items' order, template after template."""
        if isinstance(items, (str, bytes)) or not len(items):
            raise ConfigError(f"give a non-empty list of items to run each task for, not {items!r:.40}")
        tasks = [dataclasses.replace(t, name=f"{t.name}_{i}", sample=None,
                                     prompt=fill(t.prompt, {name: item}) if isinstance(t.prompt, str) else t.prompt)
                 for t in templates for i, item in enumerate(items, 1)]
        return cls(model, tasks, **options)

    async def execute_async(self, executor: Executor | None = None, *, on_result: Callable[[Done], None] | None = None,
                            results: Results | None = None) -> Results:
        """Run every task on `executor` (default: `Here()`, this event loop) and return their
        `Results` in the tasks' order. Pass your own `results` to keep what finished even when
        the run is interrupted."""
        results = Results() if results is None else results
        results.order = [task.name for task in self.tasks]
        with refreshing() if self.refresh else contextlib.nullcontext():
            await (executor or Here()).execute(self, results, on_result)
        return results

    execute = sync_twin(execute_async)


def numbered(tasks: Sequence[Task]) -> tuple[Task, ...]:
    """The tasks with identical requests numbered 0, 1, ... as samples (a task's own number kept):
    wherever they run, each is its own answer, and a re-run finds the same one again."""
    copies: Counter = Counter()
    out = []
    for task in tasks:
        if task.sample is None:
            same = (task.method, repr(task.target), json.dumps(task.prompt, sort_keys=True, default=repr),
                    repr(sorted(task.options.items())))
            task = dataclasses.replace(task, sample=copies[same])
            copies[same] += 1
        out.append(task)
    return tuple(out)
