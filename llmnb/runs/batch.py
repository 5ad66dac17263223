"""`Batch`: a run executed as the provider's batch jobs (OpenAI's Batch API: half the price, answers
within 24 hours), on the same timeline and into the same `Results` as a run made here.

    results = await run.execute_async(Batch())          # or %%llm_parallel --batch

Every task first runs here with kept answers only (`missing.find_missing`): what the model's
answer cache holds answers at once, and each other task stops at its first turn the cache lacks.
Those turns become the lines of a JSONL file, each named by its cache key (custom_id), sent as
one job per file (more files past the provider's limits). When a job ends, its answers are kept
in the cache; the tasks run again, and a task whose answer asks for tools (or an answer that
does not fit its type, with retries) stops at its next turn, which makes the next round; the
others end there, with what a run made here would return. The tasks the cache answered from
the start run here once more, reported as kept answers.

A batch run needs the model's answer cache (`Models.create(..., cache=True)`): the jobs and
their answers are written there the moment they exist, so a kernel killed while its job runs, or
a cell run again after an Interrupt, collects the same job instead of sending the rows again. An
Interrupt stops the waiting, never the job (`cancel_batch` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any

from ..backends.base import Completion
from ..cache import kept_only, refreshing
from ..cache.jobs import JobRecord, open_records, records, save
from ..cache.turns import INCOMPLETE as CUT
from ..errors import ConfigError, ModelCallError, NotKept
from ..events import quiet
from ..model import Model
from ..providers import PROVIDERS, BatchAPI
from . import batch_jobs as jobs
from .batch_board import Board, JobRow
from .batch_lines import Failure, Outcome, files_of, line_for, validation_errors
from .form import Run, Task
from .here import Done, run_tasks
from .missing import find_missing
from .results import Results

INCOMPLETE = "the answer was cut off at max_tokens before it was complete; raise max_tokens="


class Batch:
    """The provider's Batch API as an executor of runs: `poll` seconds between the first looks at
    a job, growing 1.5 times each look up to `max_poll`; a job whose status and counts have not
    moved for `stall` seconds is shown as stalled."""

    def __init__(self, poll: float = 2.0, max_poll: float = 60.0, stall: float = 600.0):
        if not (0 < poll <= max_poll) or stall <= 0:
            raise ConfigError(f"Batch takes 0 < poll <= max_poll and stall > 0, not poll={poll!r}, "
                              f"max_poll={max_poll!r}, stall={stall!r}")
        self.poll, self.max_poll, self.stall = poll, max_poll, stall

    def __repr__(self) -> str:
        return f"Batch(poll={self.poll}, max_poll={self.max_poll})"

    async def execute(self, run: Run, results: Results, on_result: Callable[[Done], None] | None = None) -> None:
        """Execute the run as batch jobs (see the module); the results come in the tasks' order."""
        api, store = batch_api(run.model), needs_cache(run.model)
        board = Board(run.model.name, run.model.price, api.price_factor, self.stall)
        try:
            outcomes = await Rounds(self, run, api, store, board).all()
        except asyncio.CancelledError:
            board.cancel_all()
            results.cancelled = [task.name for task in run.tasks]
            raise
        jobs_note = f"in {board.jobs} batch job{'s' if board.jobs != 1 else ''}"
        results.how = jobs_note if board.jobs else "with no batch job"
        await replay(run, results, on_result, outcomes, board)


class Rounds:
    """The rounds of one batch run: find what the cache lacks, collect the jobs already sent for
    it or send it, keep the answers, run the carried tasks again; until nothing is left to send."""

    def __init__(self, batch: Batch, run: Run, api: BatchAPI, store: Any, board: Board):
        self.batch, self.run, self.api, self.store, self.board = batch, run, api, store, board
        self.model: Model = run.model
        self.failed: dict[str, Failure] = {}
        self.answered: set[str] = set()
        self.outcomes: dict[str, Any] = {}  # a carried task's value, or the error it raised

    async def all(self) -> dict[str, Any]:
        """Every round; returns each carried task's outcome (its value, or the error it raised)."""
        client = await self.model.backend.client()  # type: ignore[attr-defined]
        identity = await self.store.identity(self.model.backend)
        pending: list[Task] = list(self.run.tasks)
        missing = (await find_missing(self.run)).missing  # under the run's refresh, if it has one
        while True:
            pending = [t for t in pending if t.name in missing]
            wanted = {missing[t.name].key: missing[t.name].request for t in pending}
            if not wanted:
                return self.outcomes
            known = [r for r in await open_records(self.store, self.model.name, identity) if set(r.keys) & set(wanted)]
            sent = [await jobs.attach(client, self.store, r) for r in known]
            sent = sent or await self.send(client, identity, wanted)
            rows = [self.board.job(record) for record in sent]  # each job's row above the rows it carries
            for task in pending:
                self.board.carry(task, missing[task.name].key)
            names = [t.name for t in pending]
            collected = await asyncio.gather(*(self.finish(client, record, row, names)
                                               for record, row in zip(sent, rows, strict=True)))
            for record, found in collected:
                await self.keep(found)
                await save(self.store, record.with_status("collected"))  # after its answers are kept
            missing = await self.again(pending)

    async def again(self, tasks: list[Task]) -> dict[str, NotKept]:
        """The carried tasks run again from the cache: each ends (its outcome kept for the results)
        or stops at its next turn the cache lacks, which makes the next round."""
        async def one(task: Task) -> NotKept | None:
            try:
                self.outcomes[task.name] = await task.call(self.model)
            except NotKept as e:
                if e.key not in self.answered:
                    return e
                failure = self.failed.get(e.key) or Failure(
                    "the batch answered this turn but the cache does not give it back (a task with refresh=True?)")
                self.outcomes[task.name] = ModelCallError(f"{self.model.name} batch: {failure.message}",
                                                          status=failure.status)
            except Exception as e:  # the error the task raises, as a run here would
                self.outcomes[task.name] = e
            return None

        with quiet(), kept_only(), not_refreshing():
            found = await asyncio.gather(*(one(task) for task in tasks))
        return {task.name: e for task, e in zip(tasks, found, strict=True) if e is not None}

    async def send(self, client: Any, identity: str, wanted: dict[str, Any]) -> list[JobRecord]:
        """The wanted turns as new jobs, one per input file within the provider's limits. Shielded:
        an Interrupt during an upload still writes down the job it makes."""
        backend = self.model.backend
        mode, drop = getattr(backend, "schema_mode", None) or "json_schema", backend.quirks.drop  # type: ignore
        lines = {key: line_for(key, backend.model, request, mode, drop)  # type: ignore[attr-defined]
                 for key, request in wanted.items()}
        files = files_of(list(lines.values()), self.api.max_lines, self.api.max_bytes)
        keys = list(lines)
        made, start = [], 0
        for file in files:
            part = keys[start:start + len(file)]
            start += len(file)
            made.append(asyncio.shield(jobs.submit(client, self.store, self.model.name, identity, part, file)))
        return list(await asyncio.gather(*made))

    async def finish(self, client: Any, record: JobRecord, row: JobRow,
                     names: list[str]) -> tuple[JobRecord, dict[str, Outcome]]:
        """Wait for one job and read its answers and failures."""
        keys = set(record.keys)

        def seen(job: Any) -> None:
            if job.status == "in_progress" and row.status != "in_progress":
                self.board.running(keys, names)
            row.seen(job)

        job = await jobs.wait(client, str(record.job), self.batch.poll, self.batch.max_poll, seen)
        if job is None:
            gone = Failure(f"the batch job {record.job} is not on the server any more; run again to send its rows")
            row.end("failed", gone.message)
            return record, {key: gone for key in record.keys}
        if job.status == "failed":
            reason = f"the batch job {job.id} failed validation: {validation_errors(job.errors)}"
            found: dict[str, Outcome] = {key: Failure(reason) for key in record.keys}
        else:
            found = await jobs.collect(client, job)
            left = (f"the batch job {job.id} was {job.status} before answering this row; run again to send it"
                    if job.status != "completed" else f"the batch job {job.id} gave no answer for this row")
            found.update({key: Failure(left) for key in record.keys if key not in found})
        reasons = [o.message for o in found.values() if isinstance(o, Failure)]
        row.end(job.status, None if job.status == "completed" or not reasons else reasons[0])
        return record, found

    async def keep(self, found: dict[str, Outcome]) -> None:
        """Answers into the model's cache (as a live call keeps them), failures remembered. The
        writes are awaited together: the cache's thread commits them in a few transactions."""
        writes = []
        for key, outcome in found.items():
            self.answered.add(key)
            if isinstance(outcome, Completion) and outcome.finish in CUT:
                outcome = Failure(INCOMPLETE)
            if isinstance(outcome, Failure):
                self.failed[key] = outcome
                continue
            self.board.answered(key, outcome)
            writes.append(self.store.keep(key, self.model.name, outcome))
        await asyncio.gather(*writes)


async def replay(run: Run, results: Results, on_result: Callable[[Done], None] | None,
                 outcomes: dict[str, Any], board: Board) -> None:
    """Every task's result into `results`, in the tasks' order: a task the batch answered gives
    the outcome of its last pass (told by its own row, at the batch price); every other task runs
    here from the cache, told as a kept answer."""
    async def one(task: Task) -> Any:
        if task.name in outcomes:
            outcome = outcomes[task.name]
            board.end(task.name, outcome if isinstance(outcome, BaseException) else None)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        with kept_only(), not_refreshing():
            try:
                return await task.call(run.model)
            except NotKept:
                raise ModelCallError(f"{run.model.name} batch: no answer was kept for this turn; run again") from None

    await run_tasks({task.name: functools.partial(one, task) for task in run.tasks}, on_result=on_result,
                    results=results)


def not_refreshing() -> contextlib.AbstractContextManager:
    """`refresh` holds for a run's first round only: the answers its jobs brought are then read back."""
    return refreshing(False)


def batch_api(model: Model) -> BatchAPI:
    """The model's provider's Batch API, or a ConfigError in one line saying why there is none."""
    provider = model.name.partition(":")[0]
    named = PROVIDERS.get(provider)
    if not hasattr(model.backend, "client") or named is None:
        raise ConfigError(f"{model.name} runs on this machine: it has no Batch API; run without --batch")
    if named.batch is None:
        why = "a local server" if named.local else f"{provider}'s batches take another form than OpenAI's"
        raise ConfigError(f"{model.name} has no OpenAI Batch API ({why}); run without --batch, or use an openai: "
                          "model (with base_url= for any server that serves /v1/batches)")
    return named.batch


def needs_cache(model: Model) -> Any:
    """The model's answer cache: where a batch run writes its jobs and their answers."""
    store = model.cache
    if store is None:
        raise ConfigError(f"a batch run keeps its jobs and their answers in the model's answer cache, and "
                          f"{model.name} has none: make it with Models.create(..., cache=True) "
                          "(or call llmnb.use_cache())")
    return store


def batch_jobs(store: Any) -> list[JobRecord]:
    """The batch jobs a cache knows (a Cache or `model.cache`), oldest first, with their status."""
    return records(store)


def forget_batch(store: Any, job: str | JobRecord) -> JobRecord:
    """Stop waiting for a job (its id, or a record of `batch_jobs`): a server that lost track of it
    may leave it in progress for ever. The next run sends its rows again; the job itself is not
    touched (`cancel_batch` asks the provider to stop it)."""
    from ..sync import run as run_sync

    job_id = job.job if isinstance(job, JobRecord) else job
    record = next((r for r in records(store) if r.job == job_id), None)
    if record is None:
        raise ConfigError(f"the cache {store} knows no batch job {job_id!r}; see its batch_jobs()")
    forgotten = record.with_status("forgotten")
    run_sync(save(store, forgotten))
    return forgotten


async def cancel_batch_async(model: Model, job: str | JobRecord) -> str:
    """Ask the provider to cancel a batch job (its id, or a record of `batch_jobs`); returns its
    status after the request. The answers it made before it stopped are collected by the next run."""
    client = await model.backend.client()  # type: ignore[attr-defined]
    job_id = job.job if isinstance(job, JobRecord) else job
    if job_id is None:
        raise ConfigError(f"{job!r} has no job yet: nothing to cancel")
    return await jobs.cancel(client, job_id)


def cancel_batch(model: Model, job: str | JobRecord) -> str:
    """Blocking twin of `cancel_batch_async`."""
    from ..sync import run as run_sync

    return run_sync(cancel_batch_async(model, job))
