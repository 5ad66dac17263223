"""A GGUF model in this process: one engine runs every local call, up to N at once (`parallel=N`).

The engine (batched_engine.py) decodes the N tasks together in its own thread. This is its
asyncio face: calls wait on a per-loop asyncio.Semaphore(N) (the "waiting" phase on the
timeline), so at most N jobs reach the engine from each loop; jobs beyond its slots queue inside
the engine. `parallel=1` is the same engine with one sequence: one task at a time. Every call is a
stream of pieces, one per decode step, which the engine posts to the caller's loop; `complete`
joins them.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator
from dataclasses import replace
from pathlib import Path

from ..errors import ConfigError, ModelCallError
from ..events import Call
from ..per_loop import PerLoop
from .base import Backend, Completion, Delta, Request, join
from .batched_engine import Engine, Job, is_last
from .batched_llama import LlamaContext
from .grammar import converter
from .local import LOCAL_DEFAULTS, import_llama_cpp
from .local_tools import ResponseText, chosen_tools, read_answer

MAX_PARALLEL = 64
LATE = object()  # put in a job's queue when its time is up


class BatchedBackend(Backend):
    defaults = LOCAL_DEFAULTS

    def __init__(self, path: Path, *, name: str, parallel: int = 1, n_ctx: int = 2048, n_threads: int | None = None,
                 timeout: float = 300.0):
        if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL:
            raise ConfigError(f"parallel must be a whole number from 1 to {MAX_PARALLEL}, not {parallel!r}")
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 16:
            raise ConfigError(f"n_ctx (tokens per task) must be a whole number of at least 16, not {n_ctx!r}")
        self.name = name
        self.path = Path(path)
        self.parallel = parallel
        self.timeout = timeout
        lc = LlamaContext(import_llama_cpp(), self.path, n_seq=parallel, n_ctx_seq=n_ctx, n_threads=n_threads)
        converter()  # loaded now, not at the first structured call (see there)
        self.n_ctx = lc.n_ctx_seq
        self._engine = Engine(lc, name)
        self._slots = PerLoop(lambda: asyncio.Semaphore(parallel))
        # The engine thread keeps the engine alive, not this backend: when the model is dropped
        # (a notebook cell run again makes a new one) its thread stops and frees the weights.
        weakref.finalize(self, self._engine.close)

    def __repr__(self) -> str:
        return f"BatchedBackend({self.name!r}, parallel={self.parallel})"

    def slot(self):
        return self._slots.get()

    def close(self) -> None:
        """Stop the engine thread and free the model (running calls fail)."""
        self._engine.close()

    async def complete(self, request: Request, call: Call) -> Completion:
        return join([delta async for delta in self.stream(request, call)])

    def stream(self, request: Request, call: Call) -> AsyncGenerator[Delta, None]:
        """The answer piece by piece, one per decode step. Leaving early (break, aclose, a
        cancelled task) stops the sequence and frees its slot and KV cells."""
        tools = request.tools or request.tool_choice is not None
        return self._answer(request, call) if tools else self._generate(request, call)

    async def _answer(self, request: Request, call: Call) -> AsyncGenerator[Delta, None]:
        """The answer to a request with tools, generated whole as JSON (local_tools): a response's
        text as it is decoded, tool calls in one last delta with finish "tool_calls"."""
        chosen_tools(request)  # a tool_choice that names no tool fails here, before the engine
        reader = ResponseText(request.schema is None)
        sent: list[str] = []
        async with contextlib.aclosing(self._generate(request, call)) as deltas:
            try:
                async for delta in deltas:
                    text = reader.feed(delta.text)
                    if delta.finish is not None:
                        text, calls, finish = read_answer(reader.raw, request, delta.finish)
                        yield replace(delta, text=text[len("".join(sent)):], finish=finish, tool_calls=calls)
                    elif text:
                        sent.append(text)
                        yield Delta(text)
            except ModelCallError as e:
                e.partial = "".join(sent) or None  # the response text the caller has, not the JSON
                raise

    async def _generate(self, request: Request, call: Call) -> AsyncGenerator[Delta, None]:
        """The engine's pieces for one request."""
        loop = asyncio.get_running_loop()
        job = Job(request, loop, asyncio.Queue())
        self._engine.submit(job)
        timer = loop.call_later(self.timeout, job.queue.put_nowait, LATE)  # one timer per call, not per piece
        text: list[str] = []
        try:
            while True:
                try:
                    delta = await self._next(job)
                except ModelCallError as e:
                    e.partial = "".join(text) if text else None  # what the caller already has
                    raise
                if delta.tokens_out == 1:  # one token per step: this is the first
                    call.emit("first_token")
                call.emit("progress", tokens_out=delta.tokens_out)
                if delta.finish is not None:
                    yield delta
                    return
                if delta.text:
                    text.append(delta.text)
                    yield delta
        finally:
            timer.cancel()
            if not job.ended:  # left early: stop the sequence, and wait until its cells are free
                self._engine.cancel(job)
                while not is_last(await job.queue.get()):
                    pass

    async def _next(self, job: Job) -> Delta:
        """The job's next piece. Its last item (final piece, error) marks the job as done."""
        item = await job.queue.get()
        if item is LATE:
            raise ModelCallError(f"{self.name}: generation took longer than timeout={self.timeout}s")
        job.ended = is_last(item)
        if isinstance(item, BaseException):
            raise item
        return item
