"""A GGUF model in this process that runs up to N generations together: `parallel=N`.

llama.cpp can decode many sequences in one batch, and on a CPU one step for eight sequences
costs little more than a step for one. So the N tasks share one llama.cpp context (one sequence,
one KV stream and one sampler each) and one engine thread that runs the decode loop, never on
the event loop. Continuous batching: a task joins as soon as a slot frees (its prompt is processed
in the same steps that decode the others) and leaves when it ends. Each step:

    admit queued jobs into free slots -> drop cancelled ones (their KV cells are freed at once)
    -> one llama_decode of every running sequence's next token plus chunks of new prompts
    -> sample each sequence that got logits -> finish those that ended

Calls wait on a per-loop asyncio.Semaphore(N) (the "waiting" phase on the timeline), so at most
N jobs reach the engine from each loop; jobs beyond its slots queue inside the engine.
A slot keeps the start of its last finished task's prompt, and a new task whose prompt starts the
same way (the same system instruction, say) reuses those KV cells, as `Llama` does for one
sequence, within the rule that keeps answers independent of what ran before (`FRESH_TAIL`).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, ModelCallError
from .base import Backend, Completion, PerLoop, Request
from .batched_llama import LlamaContext, SequenceSampler
from .grammar import schema_to_gbnf
from .llamacpp import LOCAL_DEFAULTS, REPEAT_PENALTY, import_llama_cpp, reusable

MAX_PARALLEL = 64


@dataclass
class Job:
    """One generation handed to the engine; `deliver` is called once, from the engine thread."""

    request: Request
    deliver: object
    cancelled: bool = False


@dataclass
class Slot:
    """One llama.cpp sequence and the task that holds it."""

    seq: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV cells this sequence holds
    job: Job | None = None
    sampler: SequenceSampler | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to decode
    n_prompt: int = 0
    out: list[int] = field(default_factory=list)
    max_tokens: int = 0
    row: int = -1  # batch row of this step's logits, or -1


class Engine:
    """The decode loop, in its own thread. Thread-safe entry points: `submit`, `cancel`, `close`."""

    def __init__(self, lc: LlamaContext, name: str):
        self.lc = lc
        self.name = name
        self.slots = [Slot(i) for i in range(lc.n_seq)]
        self._inbox: deque[Job] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="llmnb-batched", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._wake:
            if self._closed:
                raise ModelCallError(f"{self.name}: the model was closed")
            self._inbox.append(job)
            self._wake.notify()

    def cancel(self, job: Job) -> None:
        with self._wake:
            job.cancelled = True
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # --- the engine thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while self._wait_for_work():
                try:
                    self._drop_cancelled()
                    self._admit()
                    if self._running():
                        self._step()
                except Exception as e:  # noqa: BLE001 - a bug here must not leave calls waiting forever
                    for slot in self._running():
                        self._end(slot, ModelCallError(f"{self.name}: the batched engine failed: {e!r}"), keep_cache=False)
        finally:
            closed = ModelCallError(f"{self.name}: the model was closed")
            for slot in self._running():
                self._end(slot, closed)
            while self._inbox:
                self._inbox.popleft().deliver(closed)
            self.lc.close()

    def _wait_for_work(self) -> bool:
        """Sleep until there is something to do; answer cancelled queued jobs. False once closed."""
        with self._wake:
            while not self._closed and not self._inbox and not self._running():
                self._wake.wait()
            if self._closed:
                return False
            cancelled = [job for job in self._inbox if job.cancelled]
            for job in cancelled:
                self._inbox.remove(job)
        for job in cancelled:
            job.deliver(None)
        return True

    def _running(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.job is not None]

    def _drop_cancelled(self) -> None:
        for slot in self._running():
            if slot.job.cancelled:
                self._end(slot, None, keep_cache=False)

    def _admit(self) -> None:
        while True:
            free = [slot for slot in self.slots if slot.job is None]
            with self._wake:
                if not free or not self._inbox:
                    return
                job = self._inbox.popleft()
            try:
                self._start(job, free)
            except Exception as e:  # noqa: BLE001 - a bad prompt or grammar fails its own task only
                job.deliver(e)

    def _start(self, job: Job, free: list[Slot]) -> None:
        request = job.request
        prompt = self.lc.prompt_tokens(request.messages)
        if len(prompt) >= self.lc.n_ctx_seq:
            raise ConfigError(
                f"{self.name}: the prompt ({len(prompt)} tokens) does not fit the context of {self.lc.n_ctx_seq} "
                f"tokens per task; shorten it or pass a larger n_ctx= to Models.create "
                f"(at most {self.lc.n_ctx_train}, the model's training context)"
            )
        gbnf = schema_to_gbnf(request.schema) if request.schema is not None else None
        sampler = SequenceSampler(self.lc, temperature=request.gen.temperature, repeat_penalty=REPEAT_PENALTY,
                                  seed=request.gen.seed, gbnf=gbnf)
        slot = max(free, key=lambda s: _common_prefix(s.cached, prompt))
        keep = min(_common_prefix(slot.cached, prompt), reusable(len(prompt)))  # see FRESH_TAIL
        self.lc.forget(slot.seq, keep)
        slot.cached = prompt[:keep]
        slot.pending = prompt[keep:]
        slot.job, slot.sampler, slot.n_prompt, slot.out = job, sampler, len(prompt), []
        slot.max_tokens = request.gen.max_tokens

    def _step(self) -> None:
        """One llama_decode for every running sequence, then one sampled token for each that got logits."""
        items, members = [], []
        decoding = [s for s in self._running() if not s.pending]
        prefilling = [s for s in self._running() if s.pending]
        for slot in decoding:
            slot.row = len(items)
            items.append((slot.out[-1], len(slot.cached), slot.seq, True))
            members.append((slot, 1))
        room = self.lc.n_batch - len(items)
        for slot in prefilling:
            slot.row = -1
            if room <= 0:
                continue
            chunk = slot.pending[:room]
            start = len(slot.cached)
            done = len(chunk) == len(slot.pending)
            for i, token in enumerate(chunk):
                items.append((token, start + i, slot.seq, done and i == len(chunk) - 1))
            if done:
                slot.row = len(items) - 1
            members.append((slot, len(chunk)))
            room -= len(chunk)
        if not self._decode(items, members):
            return
        for slot, n in members:
            self._advance(slot, n)
        for slot, _ in members:
            if slot.row >= 0 and slot.job is not None:
                self._sample(slot)

    def _decode(self, items, members) -> bool:
        """Decode the step's batch; True when it worked for all. Otherwise each sequence is decoded
        alone (and sampled), so one sequence's trouble fails that sequence only."""
        if self.lc.decode(items) == 0:
            return True
        first = 0
        for slot, n in members:
            part, first = items[first:first + n], first + n
            self.lc.forget(slot.seq, len(slot.cached))  # cells a failed decode may have left
            rc = self.lc.decode(part)
            if rc != 0:
                self._end(slot, ModelCallError(f"{self.name}: llama_decode failed with code {rc}"), keep_cache=False)
                continue
            self._advance(slot, n)
            if slot.row >= 0:
                slot.row = len(part) - 1
                self._sample(slot)
        return False

    @staticmethod
    def _advance(slot: Slot, n: int) -> None:
        """Record that `n` more tokens of this sequence are in its KV cells."""
        if slot.pending:
            slot.cached += slot.pending[:n]
            del slot.pending[:n]
        else:
            slot.cached.append(slot.out[-1])

    def _sample(self, slot: Slot) -> None:
        try:
            token = slot.sampler.sample(slot.row)
        except Exception as e:  # noqa: BLE001 - fails this sequence only
            self._end(slot, e, keep_cache=False)
            return
        if self.lc.is_end(token):
            slot.out.append(token)  # counted like the sequential path counts sampled tokens
            self._end(slot, self._completion(slot, ended=True))
            return
        slot.sampler.accept(token)
        slot.out.append(token)
        if len(slot.out) >= slot.max_tokens or len(slot.cached) + 1 >= self.lc.n_ctx_seq:
            self._end(slot, self._completion(slot, ended=False))

    def _completion(self, slot: Slot, *, ended: bool) -> Completion:
        tokens = slot.out[:-1] if ended else slot.out
        text = b"".join(self.lc.piece(t) for t in tokens).decode("utf-8", errors="ignore")
        return Completion(text, tokens_in=slot.n_prompt, tokens_out=len(slot.out))

    def _end(self, slot: Slot, outcome, *, keep_cache: bool = True) -> None:
        job = slot.job
        if keep_cache:  # the next task may reuse the start of this prompt, never the generated tokens
            del slot.cached[reusable(slot.n_prompt):]
        else:
            self.lc.forget(slot.seq)
            slot.cached = []
        if slot.sampler is not None:
            slot.sampler.close()
        slot.job, slot.sampler, slot.pending, slot.out, slot.row = None, None, [], [], -1
        job.deliver(outcome)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class BatchedBackend(Backend):
    defaults = LOCAL_DEFAULTS

    def __init__(self, path: Path, *, name: str, parallel: int, n_ctx: int = 2048, n_threads: int | None = None,
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

    async def complete(self, request: Request, call=None) -> Completion:
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def deliver(outcome):  # from the engine thread
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:  # the loop has closed: nobody waits any more
                pass

        job = Job(request, deliver)
        self._engine.submit(job)
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(future)
        except BaseException as e:
            self._engine.cancel(job)
            await asyncio.wait([future])  # the engine frees the sequence within one step
            if not future.cancelled():
                future.exception()  # retrieved: a late failure of a cancelled call is not news
            if isinstance(e, TimeoutError):
                raise ModelCallError(f"{self.name}: generation took longer than timeout={self.timeout}s") from e
            raise


def _settle(future: asyncio.Future, outcome) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    elif outcome is None:
        future.cancel()
    else:
        future.set_result(outcome)
