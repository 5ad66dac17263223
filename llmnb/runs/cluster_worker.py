"""What a Dask worker runs for `Cluster`: a chunk of a run's tasks, on the worker's event loop.

The worker makes the model again from its `Recipe`, once per worker process (a local GGUF file is
loaded once and kept for later runs), with the API key of its own environment, or the one the
user gave, sent inside the chunk as a `Secret`. Each chunk's tasks run at once (at most
`Chunk.concurrency`) with an in-memory store standing in for the cache: every turn the chunk made
goes back to the driver, which keeps it in its own cache. The calls' events go to the driver as
they happen (`cluster_events`); a cancelled chunk stops its calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import events
from ..backends.base import Completion
from ..cache import MemoryStore
from ..model import Model
from ..registry import Recipe
from .cluster_events import Forwarder
from .cluster_limits import key_digest, share_limits
from .form import Task
from .results import TaskError

WATCH_SECONDS = 0.2  # how often a chunk looks whether the driver cancelled it
_models: dict[tuple[Recipe, str, bool], Model] = {}  # made once per worker process, for every later run
_making: dict[tuple[Recipe, str, bool], asyncio.Lock] = {}


class Secret:
    """An API key the user passed to `Models.create(api_key=...)`, travelling to the workers inside
    a chunk: its repr and str never show it, and no key or name is made from it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def __repr__(self) -> str:
        return "Secret(hidden)"

    __str__ = __repr__

    def reveal(self) -> str:
        return self._value

    def digest(self) -> str:
        """A short hash naming the key (e.g. a shared rate limit's name), never the key."""
        return key_digest(self._value)


@dataclass(frozen=True)
class Chunk:
    """Some tasks of a run, sent to a worker as one Dask task under the Dask key `key`."""

    key: str
    run: str  # the run's id: its events' topic
    recipe: Recipe
    tasks: tuple[Task, ...]
    concurrency: int
    secret: Secret | None = None
    shared_limits: bool = True  # the scheduler holds the rate limits (False: each worker its own)


@dataclass(frozen=True)
class Answer:
    """A task's value (or `TaskError`) and when it began and ended (time.time() on the worker)."""

    name: str
    value: Any
    began: float
    ended: float


@dataclass(frozen=True)
class ChunkResult:
    """What a chunk sends back: its answers, every model turn it made as (cache key, model name,
    completion) for the driver's cache, and the worker that ran it."""

    answers: tuple[Answer, ...]
    turns: tuple[tuple[str, str, Completion], ...]
    worker: str


async def run_chunk(chunk: Chunk) -> ChunkResult:
    """The Dask task: run the chunk's tasks on this worker (see the module)."""
    from distributed import get_worker

    worker = get_worker()
    model = await worker_model(chunk, worker)
    store = MemoryStore()
    here = Model(model.backend, defaults=model.defaults, cache=store, price=model.price)
    gate = asyncio.Semaphore(chunk.concurrency)

    async def one(task: Task) -> Answer:
        async with gate:
            began = time.time()
            events.name_calls(task.name)
            try:
                value = await task.call(here)
            except Exception as e:  # one failing task never loses the others
                value = TaskError(e)
            return Answer(task.name, value, began, time.time())

    forward = Forwarder(worker, chunk.run)
    with events.listen(forward):
        jobs = [asyncio.ensure_future(one(task)) for task in chunk.tasks]
    watch = asyncio.ensure_future(stop_when_cancelled(worker, chunk.key, jobs))
    try:
        answers = await asyncio.gather(*jobs)
    finally:
        watch.cancel()
        forward.flush()
    turns = tuple((key, name, completion) for key, (name, completion) in store.answers.items())
    return ChunkResult(tuple(answers), turns, worker.address)


async def worker_model(chunk: Chunk, worker) -> Model:
    """The chunk's model in this worker process, made from its recipe on first use (off the event
    loop: a GGUF file takes seconds to load) and kept for later chunks and runs."""
    secret = chunk.secret
    key = (chunk.recipe, secret.digest() if secret else "", chunk.shared_limits)
    if key not in _models:
        async with _making.setdefault(key, asyncio.Lock()):
            if key not in _models:
                model = await asyncio.to_thread(make, chunk.recipe, secret)
                if chunk.shared_limits:
                    share_limits(model, worker, secret.digest() if secret else None)
                _models[key] = model
    return _models[key]


def make(recipe: Recipe, secret: Secret | None) -> Model:
    return recipe.make(api_key=None if secret is None else secret.reveal())


async def stop_when_cancelled(worker, key: str, jobs: Sequence[asyncio.Future]) -> None:
    """Cancel the chunk's tasks once the driver has cancelled its Dask task (an Interrupt): Dask
    forgets the key on this worker, but does not stop a coroutine already running."""
    while True:
        await asyncio.sleep(WATCH_SECONDS)
        state = worker.state.tasks.get(key)
        if state is None or state.state not in ("executing", "long-running"):
            for job in jobs:
                job.cancel()
            return
