"""The call-life hook: every model call reports what happens to it, to whoever listens.

A listener is any callable taking a `CallEvent`. `listen(callback)` subscribes it for the current
context only (a `contextvars.ContextVar`), so it sees the calls made inside the `with` block and in
every task created there (asyncio copies the context into new tasks). Model code only emits; it
never knows who listens. The timeline is one listener; a log or a progress bar could be another.

Event kinds, in order of a call's life:
    created     -> the call was made
    waiting     -> it waits for a slot (remote `max_concurrency`) or the local model's lock
    throttled   -> it waits for the rate limit (requests or tokens per minute, or the pause after
                   a 429); the wait ends at the next `started` (or at the call's end)
    started     -> it holds its slot and runs (sends its request, or decodes)
    first_token -> the first output token arrived (local models always know it; remote models
                   when the call is streamed)
    progress    -> `tokens_out` output tokens so far (sent as pieces arrive; listeners keep it cheap)
    keeping     -> the answer arrived (the slot is free again) and the call waits for the answer
                   cache to keep it; a timeline draws the wait as waiting, not in flight
    tools       -> the model asked for tools and the call waits for them to run; its next turn's
                   `started` ends the wait
    then one of: finished (with token counts when known), failed (with a short error text),
    cancelled.
An `extract`/`classify` call with `retries=` that asks again repeats waiting -> started for each
attempt under the same call_id; the timeline keeps the first, so the row runs from the first start
to the end of the last attempt.
A tool run (method "tool", its label the tool's name) is a call of its own whose `parent` is the
call_id of the model call that asked for it: created -> started -> finished or failed.
A call answered from the cache goes created -> finished with `cached=True`; `cost` (USD, when
the model's price is known) comes with `finished`.
A provider's batch job (method "batch", see `llmnb.runs.batch`) is a call of its own, not a task:
validating -> waiting, in progress -> started, rows answered so far -> progress (`tokens_out`),
finalizing -> tools, no progress for long -> stalled (until its next progress), then its end.
The tasks it carries are calls of their own, from the moment they are sent to their answer.
Times come from `time.perf_counter()` (monotonic, high resolution).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

KINDS = ("created", "waiting", "throttled", "started", "first_token", "progress", "keeping", "tools", "stalled",
         "finished", "failed", "cancelled")
JOB = "batch"  # the method of a batch job's call
ENDS = frozenset({"finished", "failed", "cancelled"})

Listener = Callable[["CallEvent"], None]

_listeners: ContextVar[tuple[Listener, ...]] = ContextVar("llmnb_listeners", default=())
_expecting: ContextVar[tuple[Callable[[int], None], ...]] = ContextVar("llmnb_expecting", default=())
_task_name: ContextVar[str | None] = ContextVar("llmnb_task_name", default=None)
_call_ids = itertools.count(1)


@dataclass(frozen=True)
class CallEvent:
    """One moment of a call's life, as listeners receive it: `kind` (see the module's list),
    `time` (perf_counter seconds), the call's `method`, `label` and `model`; token counts and
    `error` when known; `parent` for a tool run; `cached` and `cost` with `finished`."""

    call_id: int
    kind: str
    time: float
    method: str
    label: str
    model: str
    tokens_in: int | None = None
    tokens_out: int | None = None
    error: str | None = None
    parent: int | None = None  # a tool run: the call_id of the model call that asked for it
    cached: bool = False  # finished with an answer from the cache, nothing sent
    cost: float | None = None  # USD of this call's tokens (for a cached answer: what it would have cost)
    worker: str | None = None  # the cluster worker that made the call (None: this process)


@contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Send the events of every call made in this context (and its tasks) to `listener`
    (once: a listener already listening here is not added again)."""
    current = _listeners.get()
    token = _listeners.set(current if listener in current else current + (listener,))
    try:
        yield
    finally:
        _listeners.reset(token)


@contextmanager
def expecting(callback: Callable[[int], None]) -> Iterator[None]:
    """`callback(n)` hears every `expect_calls(n)` made in this context (and its tasks)."""
    token = _expecting.set((*_expecting.get(), callback))
    try:
        yield
    finally:
        _expecting.reset(token)


def expect_calls(n: int) -> None:
    """Tell the timelines open in this context that `n` more calls are coming, so a big run's
    picture shows its progress as done / total and the time left (a task runner calls it)."""
    for callback in _expecting.get():
        callback(n)


@contextmanager
def quiet() -> Iterator[None]:
    """No listener hears the calls made in this context (a run asking its cache what it holds)."""
    token = _listeners.set(())
    try:
        yield
    finally:
        _listeners.reset(token)


def relay() -> Listener:
    """A listener passing on events of calls made in another process (a cluster's worker) to this
    context's listeners, as they are now. Each call gets an id of this process, so rows of many
    workers never mix; `time` must already be on this process's perf_counter clock."""
    listeners = _listeners.get()
    ids: dict[tuple[str | None, int], int] = {}

    def passed_on(event: CallEvent) -> None:
        def local(call_id: int) -> int:
            key = (event.worker, call_id)
            if key not in ids:
                ids[key] = next(_call_ids)
            return ids[key]

        event = replace(event, call_id=local(event.call_id),
                        parent=None if event.parent is None else local(event.parent))
        for listener in listeners:
            try:
                listener(event)
            except Exception as e:  # as in Call.emit: a broken listener never breaks the run
                warnings.warn(f"llmnb event listener {listener!r} failed: {e!r}", RuntimeWarning, stacklevel=2)

    return passed_on


def name_calls(name: str) -> None:
    """Prefix the labels of the calls made from now on in this context (one task) with `name`."""
    _task_name.set(name)


def excerpt(text: str, width: int = 40) -> str:
    """A one-line label for a prompt: whitespace collapsed, cut with an ellipsis."""
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


class Call:
    """One call's reporter. It captures the listeners when the call is made, so events still
    reach them if a later step runs in another thread's callback."""

    def __init__(self, method: str, label: str, model: str, parent: int | None = None):
        self.id = next(_call_ids)
        self.parent = parent
        self.method = method
        name = _task_name.get()
        self.label = f"{name}: {label}" if name else label
        self.model = model
        self._listeners = _listeners.get()
        self.sent = self.from_cache = 0  # model turns sent to the backend / answered by the answer cache
        self.cost: float | None = 0.0  # USD of those turns (None once a turn's price is not known)
        self.emit("created")

    def sources(self) -> dict[str, Any]:
        """What a model call's `finished` event adds: answered from the cache only, and the cost;
        nothing for a call that made no model turn (a tool run, an awaitable a timeline tracks)."""
        if not self.sent and not self.from_cache:
            return {}
        return {"cached": self.from_cache > 0 and not self.sent, "cost": self.cost}

    def emit(self, kind: str, **details) -> None:
        if not self._listeners:
            return
        event = CallEvent(self.id, kind, time.perf_counter(), self.method, self.label, self.model,
                          parent=self.parent, **details)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception as e:  # a broken listener must never break the model call
                warnings.warn(f"llmnb event listener {listener!r} failed: {e!r}", RuntimeWarning, stacklevel=2)


def error_line(e: BaseException) -> str:
    """A failure as a `failed` event's error: "TypeName: message"."""
    return f"{type(e).__name__}: {e}"


@contextmanager
def reported(call: Call, counts: object = SimpleNamespace(),
             error: Callable[[Exception], str] = error_line) -> Iterator[None]:
    """Report how the block's call ends: `cancelled` (also an async generator closed before its
    end), `failed` with `error(e)`, or `finished` with the call's `sources()`. Each carries the
    fields of `counts` (token counts, read at the end: they grow while the call runs)."""
    try:
        yield
    except (asyncio.CancelledError, GeneratorExit):
        call.emit("cancelled", **vars(counts))
        raise
    except Exception as e:
        call.emit("failed", **vars(counts), error=error(e))
        raise
    call.emit("finished", **vars(counts), **call.sources())
