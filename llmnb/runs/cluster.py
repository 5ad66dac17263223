"""`Cluster`: a run executed on a Dask cluster's workers (`pip install llmnb[dask]`).

    from distributed import Client
    results = await run.execute_async(Cluster(Client("tcp://scheduler:8786")))   # or Cluster(client)

The kernel's cache answers first (`find_missing`): the tasks it answers run here, from the cache,
and only the others leave this process, in chunks of a few tasks (one Dask task each). A worker
makes the model again from its recipe (`cluster_worker`), runs the chunk and sends back each
task's value and every turn it made; this process keeps the turns in its cache as each chunk comes
back, so an Interrupt or a dead kernel loses nothing that came back and a re-run sends nothing
that was answered. Rate limits hold for the whole cluster (`cluster_limits`); every worker's calls
show on this process's listeners, the live timeline among them (`cluster_events`).

What travels: the model's recipe (name and plain options; no key), the tasks (prompts, targets,
options), and the API key only when it was given as `api_key=` (not read from the environment),
inside the chunk's payload, hidden from every repr and never in a Dask key. Over TLS when the
cluster is set up with `security=`.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

try:
    import distributed
except ImportError as e:  # an optional dependency: say how to get it
    raise ImportError("a Dask cluster needs distributed: pip install 'llmnb[dask]'", name="distributed") from e

from .. import events, providers
from ..errors import ConfigError
from ..per_loop import PerLoop
from .cluster_events import TOPIC, receive
from .cluster_limits import SharedLimits
from .cluster_worker import Chunk, ChunkResult, Secret, run_chunk
from .here import Done, run_tasks
from .missing import find_missing
from .results import Results, TaskError

if TYPE_CHECKING:
    from .form import Run, Task

PER_WORKER = 16  # tasks at once per worker thread when the run sets no max_concurrency
_clients: PerLoop[dict[str, distributed.Client]] = PerLoop(dict)  # scheduler address -> llmnb's client


async def close_clients() -> None:
    """Close the clients llmnb opened on the running loop (not the ones you gave it)."""
    clients = _clients.get()
    for client in clients.values():
        await client.close()
    clients.clear()


class ClusterLost(ConfigError):
    """The Dask scheduler went away during a run; what came back is kept."""


class Cluster:
    """Execute runs on a Dask cluster: `Cluster(client)` with a `distributed.Client` (or a
    `LocalCluster`, or a scheduler's address). The run's `max_concurrency` holds per worker thread
    (default 16); `chunk` tasks travel together (default: that many, fewer for small runs).
    `workers` counts the workers whose calls this process heard in its last run."""

    def __init__(self, client_or_address: Any, *, chunk: int | None = None):
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ConfigError(f"chunk must be a whole number of at least 1, not {chunk!r}")
        self.given, self.chunk = client_or_address, chunk
        self.workers: dict[str, int] = {}  # worker -> call events heard in the last run

    def __repr__(self) -> str:
        return f"Cluster({self.address})"

    @property
    def address(self) -> str:
        """The scheduler's address."""
        given = self.given
        if isinstance(given, str):
            return given
        scheduler = getattr(given, "scheduler", None)
        return getattr(given, "scheduler_address", None) or getattr(scheduler, "address", None) or repr(given)

    async def client(self) -> distributed.Client:
        """An asynchronous client on the running loop: the one given, or one of llmnb's own for
        the scheduler's address, kept for later runs on this loop."""
        given = self.given
        if isinstance(given, distributed.Client) and given.asynchronous \
                and getattr(given.loop, "asyncio_loop", None) is asyncio.get_running_loop():
            return given
        clients = _clients.get()
        if self.address not in clients or clients[self.address].status in ("closed", "closing"):
            clients[self.address] = await distributed.Client(
                self.address, asynchronous=True, security=getattr(given, "security", None), name="llmnb",
                set_as_default=False)
        return clients[self.address]

    async def execute(self, run: Run, results: Results, on_result: Callable[[Done], None] | None = None) -> None:
        """Fill `results`: kept answers from this process's cache, the rest from the workers."""
        split = await find_missing(run)
        order = results.order
        try:
            if split.kept:  # answered here, from the cache (run_tasks numbers only these)
                jobs = {task.name: (lambda t=task: t.call(run.model)) for task in split.kept}
                await run_tasks(jobs, max_concurrency=run.max_concurrency, on_result=on_result, results=results)
            missing = [task for task in run.tasks if task.name in split.missing]
            if missing:
                await self._send(run, missing, results, on_result)
        finally:  # the run's own order; what did not come back is cancelled
            results.order = order
            results.cancelled = [name for name in order if name not in results]

    async def _send(self, run: Run, tasks: Sequence[Task], results: Results,
                    on_result: Callable[[Done], None] | None) -> None:
        client = await self.client()
        shared = await register_limits(client)
        run_id = uuid.uuid4().hex[:12]
        threads = await worker_threads(client)
        per_worker = run.max_concurrency or PER_WORKER
        size = self.chunk or max(1, min(per_worker, -(-len(tasks) // (2 * threads))))
        chunks = [Chunk(f"llmnb-{run_id}-{i}", run_id, recipe_of(run.model), tuple(tasks[i: i + size]),
                        min(per_worker, size), secret_of(run.model), shared) for i in range(0, len(tasks), size)]
        self.workers = {}
        client.subscribe_topic(TOPIC + run_id, receive(events.relay(), self.workers))
        events.expect_calls(len(tasks))  # an open timeline shows the run's progress out of this total
        start = time.time()
        futures = [client.submit(run_chunk, chunk, key=chunk.key, pure=False) for chunk in chunks]
        by_key = {chunk.key: chunk for chunk in chunks}
        try:
            async for future in distributed.as_completed(futures, loop=client.loop):
                chunk = by_key[future.key]
                outcome = await answered(future, chunk)
                await keep(run.model, outcome)
                report(outcome, chunk, start, results, on_result)
        finally:  # an Interrupt stops the workers' calls; the chunks that came back are let go
            client.unsubscribe_topic(TOPIC + run_id)
            if client.status == "running":
                await client.cancel(futures)


async def answered(future, chunk: Chunk) -> ChunkResult | BaseException:
    """The chunk's result; the error that lost it (after Dask's own retries), or ClusterLost."""
    from distributed.client import FutureCancelledError

    try:
        return await future
    except FutureCancelledError:
        if future.client.status != "running":
            raise ClusterLost(f"lost the Dask scheduler at {future.client.scheduler.address}: the results that came "
                              "back are kept (results.cancelled lists the rest); run again to send the rest") from None
        raise asyncio.CancelledError() from None
    except Exception as e:  # a worker lost again and again (KilledWorker), a chunk that could not be made
        return e


async def keep(model, outcome: ChunkResult | BaseException) -> None:
    """Keep the chunk's turns in this process's cache before its results are reported."""
    store = model.cache
    if store is None or isinstance(outcome, BaseException):
        return
    await asyncio.gather(*(store.keep(key, name, completion) for key, name, completion in outcome.turns))


def report(outcome: ChunkResult | BaseException, chunk: Chunk, start: float, results: Results,
           on_result: Callable[[Done], None] | None) -> None:
    if isinstance(outcome, BaseException):
        done = [Done(task.name, TaskError(outcome), None, time.time() - start) for task in chunk.tasks]
    else:
        done = [Done(a.name, a.value, a.began - start, a.ended - start) for a in outcome.answers]
    for one in done:
        results[one.name] = one.value
        if on_result is not None:
            on_result(one)


async def register_limits(client) -> bool:
    """The cluster's shared rate limits on the scheduler (once per scheduler); False, with a
    warning, when the scheduler cannot hold them (llmnb is not installed where it runs)."""
    try:
        await client.register_plugin(SharedLimits(), name=SharedLimits.name)
    except Exception as e:
        warnings.warn(f"the Dask scheduler cannot hold llmnb's shared rate limits ({type(e).__name__}: {e}); "
                      "each worker keeps the model's limits on its own: install llmnb where the scheduler runs",
                      RuntimeWarning, stacklevel=2)
        return False
    return True


async def worker_threads(client) -> int:
    """The cluster's worker threads now (one at least: workers may still be coming)."""
    return max(1, sum((await client.nthreads()).values()))


def recipe_of(model):
    if model.recipe is None:
        raise ConfigError("a cluster makes the model again on each worker: make it with Models.create(...)")
    return model.recipe.checked()


def secret_of(model) -> Secret | None:
    """The key to send along: only one given as api_key= (a worker reads its own environment's)."""
    key = getattr(model.backend, "_secret", None)
    provider = providers.PROVIDERS.get(model.name.partition(":")[0])
    if not key or key == "no-key" or (provider is not None and os.environ.get(provider.key_env) == key):
        return None
    return Secret(key)


