"""What a batch run tells its listeners (the timeline, a log): each job as a call of its own
(method "batch") through its phases, and each task it carries as a call from the moment it is
sent to the moment its answer is read back, at the batch price.

A job's phases are told with the events every call has: validating -> "waiting", in progress ->
"started" (its request counts as "progress": rows answered so far), finalizing -> "tools" (the
wait after the work), a job that made no progress for `stall` seconds -> "stalled", its end ->
finished, failed or cancelled.
"""

from __future__ import annotations

import time
from typing import Any

from ..backends.base import Completion
from ..cache.jobs import JobRecord
from ..events import JOB, Call, excerpt
from ..prices import Price
from .form import Task

PHASE_EVENT = {"validating": "waiting", "in_progress": "started", "finalizing": "tools", "cancelling": "tools"}


class JobRow:
    """One job on the picture."""

    def __init__(self, record: JobRecord, model: str, stall: float):
        self.call = Call(JOB, f"job {record.job}: {len(record.keys):,} rows", model)
        self.status = ""
        self.progress: tuple[Any, ...] = ()
        self.changed = time.monotonic()
        self.stalled = False
        self.stall = stall

    def seen(self, job: Any) -> None:
        counts = job.request_counts
        done = None if counts is None else (counts.completed or 0) + (counts.failed or 0)
        progress = (job.status, done)
        now = time.monotonic()
        if progress != self.progress:
            self.progress, self.changed, self.stalled = progress, now, False
            if job.status != self.status and job.status in PHASE_EVENT:
                self.call.emit(PHASE_EVENT[job.status])
            if done is not None:
                self.call.emit("progress", tokens_out=done)
        elif not self.stalled and now - self.changed > self.stall:
            self.stalled = True
            self.call.emit("stalled")
        self.status = job.status

    def end(self, status: str, reason: str | None = None) -> None:
        if status == "completed":
            self.call.emit("finished")
        elif status == "cancelled":
            self.call.emit("cancelled")
        else:
            self.call.emit("failed", error=reason or status)


class Board:
    """The run's job rows and carried task rows, and the cost of what the batch answered."""

    def __init__(self, model: str, price: Price | None, factor: float, stall: float):
        self.model, self.price, self.factor, self.stall = model, price, factor, stall
        self.tasks: dict[str, Call] = {}
        self.keys: dict[str, list[str]] = {}  # task name -> the keys the batch answered for it
        self.answers: dict[str, Completion] = {}
        self.jobs = 0

    def job(self, record: JobRecord) -> JobRow:
        self.jobs += 1
        return JobRow(record, self.model, self.stall)

    def carry(self, task: Task, key: str) -> None:
        """`task`'s turn `key` goes in a job (its row appears, waiting, at its first)."""
        if task.name not in self.tasks:
            prompt = task.prompt if isinstance(task.prompt, str) else task.prompt[-1].get("content", "")
            self.tasks[task.name] = Call(task.method, f"{task.name}: {excerpt(prompt)}", self.model)
            self.tasks[task.name].emit("waiting")
        self.keys.setdefault(task.name, []).append(key)

    def running(self, keys: set[str], names: list[str]) -> None:
        for name in names:
            if name in self.tasks and keys.intersection(self.keys[name]):
                self.tasks[name].emit("started")

    def answered(self, key: str, completion: Completion) -> None:
        self.answers[key] = completion

    def end(self, name: str, error: BaseException | None = None) -> None:
        """The task's row ends: finished with its tokens and batch cost, or failed."""
        call = self.tasks.get(name)
        if call is None:
            return
        answers = [self.answers[k] for k in self.keys[name] if k in self.answers]
        tokens_in = sum(a.tokens_in or 0 for a in answers) if answers else None
        tokens_out = sum(a.tokens_out or 0 for a in answers) if answers else None
        if error is not None:
            call.emit("failed", tokens_in=tokens_in, tokens_out=tokens_out, error=f"{type(error).__name__}: {error}")
            return
        call.emit("finished", tokens_in=tokens_in, tokens_out=tokens_out, cost=self.cost(answers))

    def cost(self, answers: list[Completion]) -> float | None:
        """USD of these answers at the batch price (None when the live price is not known)."""
        if self.price is None:
            return None
        costs = [self.price.cost(a.tokens_in, a.tokens_out) for a in answers]
        return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs) * self.factor

    def cancel_all(self) -> None:
        for call in self.tasks.values():
            call.emit("cancelled")
