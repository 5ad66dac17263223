"""The local engine's thread: N llama.cpp sequences in one context, decoded together.

llama.cpp can decode many sequences in one batch, and on a CPU one step for eight sequences
costs little more than a step for one. So the N tasks share one llama.cpp context (one sequence,
one KV stream and one sampler each) and one engine thread that runs the decode loop, never on
the event loop. Continuous batching: a task joins as soon as a slot frees (its prompt is processed
in the same steps that decode the others) and leaves when it ends. Each step:

    admit queued jobs into free slots -> drop cancelled ones (their KV cells are freed at once)
    -> one llama_decode of every running sequence's next token plus chunks of new prompts
    -> sample each sequence that got logits -> post each one's new text to its caller's loop

A slot keeps the start of its last finished task's prompt, and a new task whose prompt starts the
same way (the same system instruction, say) reuses those KV cells, within the rule that keeps
answers independent of what ran before (`FRESH_TAIL`). Cells a slot gives up are kept in memory
for a later prompt that starts like them (prompt_cache).
"""

from __future__ import annotations

import asyncio
import codecs
import threading
from collections import deque
from dataclasses import dataclass, field

from ..errors import ConfigError, ModelCallError
from .base import Delta, Request
from .batched_llama import LlamaContext, SequenceSampler
from .grammar import schema_to_gbnf
from .local import REPEAT_PENALTY, reusable
from .local_tools import answer_schema, chat_messages
from .prompt_cache import PromptCache, common_prefix


@dataclass(eq=False)
class Job:
    """One generation handed to the engine. The engine posts to `queue`, on the caller's `loop`:
    a `Delta` per decode step (the last one has a `finish`), or an exception, or None once the
    job was cancelled."""

    request: Request
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    cancelled: bool = False  # set by the caller, read by the engine
    ended: bool = False  # the caller has read the last item


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
    text: codecs.IncrementalDecoder | None = None  # keeps a character split over two tokens whole


class Engine:
    """The decode loop, in its own thread. Thread-safe entry points: `submit`, `cancel`, `close`."""

    def __init__(self, lc: LlamaContext, name: str):
        self.lc = lc
        self.name = name
        self.slots = [Slot(i) for i in range(lc.n_seq)]
        self.kept = PromptCache()  # prompts the slots gave up, to put back when one comes again
        self.running: list[Slot] = []
        self._inbox: deque[Job] = deque()
        self._outbox: dict[asyncio.AbstractEventLoop, list] = {}
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="llmnb-batched", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._wake:
            if self._closed:
                raise ModelCallError(f"{self.name}: the model was closed; make a new one with Models.create")
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
                    if self.running:
                        self._step()
                except Exception as e:  # noqa: BLE001 - a bug here must not leave calls waiting forever
                    for slot in list(self.running):
                        self._end(slot, ModelCallError(f"{self.name}: the local engine failed: {e!r}"),
                                  keep_cache=False)
                self._flush()
        finally:
            closed = ModelCallError(f"{self.name}: the model was closed; make a new one with Models.create")
            for slot in list(self.running):
                self._end(slot, closed)
            while self._inbox:
                self._post(self._inbox.popleft(), closed)
            self._flush()
            self.lc.close()
            self.kept.clear()

    def _wait_for_work(self) -> bool:
        """Sleep until there is something to do; answer cancelled queued jobs. False once closed."""
        with self._wake:
            while not self._closed and not self._inbox and not self.running:
                self._wake.wait()
            if self._closed:
                return False
            cancelled = [job for job in self._inbox if job.cancelled]
            for job in cancelled:
                self._inbox.remove(job)
        for job in cancelled:
            self._post(job, None)
        return True

    def _post(self, job: Job, item) -> None:
        """Queue `item` for `job`'s caller; sent at the end of the step, one wake-up per loop."""
        self._outbox.setdefault(job.loop, []).append((job.queue, item))

    def _flush(self) -> None:
        for loop, items in self._outbox.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # the loop has closed: nobody waits any more
                pass
        self._outbox = {}

    def _drop_cancelled(self) -> None:
        for slot in list(self.running):
            if slot.job is not None and slot.job.cancelled:
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
                self._post(job, e)

    def _start(self, job: Job, free: list[Slot]) -> None:
        request = job.request
        prompt = self.lc.prompt_tokens(chat_messages(request))
        if len(prompt) >= self.lc.n_ctx_seq:
            raise ConfigError(
                f"{self.name}: the prompt ({len(prompt)} tokens) does not fit the context of {self.lc.n_ctx_seq} "
                f"tokens per task; shorten it or pass a larger n_ctx= to Models.create "
                f"(at most {self.lc.n_ctx_train}, the model's training context)"
            )
        gbnf = answer_grammar(request)
        assert request.gen.temperature is not None and request.gen.max_tokens is not None  # LOCAL_DEFAULTS under all
        sampler = SequenceSampler(self.lc, temperature=request.gen.temperature, repeat_penalty=REPEAT_PENALTY,
                                  seed=request.gen.seed, gbnf=gbnf)
        slot, keep = self._place(prompt, free)
        self.lc.forget(slot.seq, keep)
        slot.cached = prompt[:keep]
        slot.pending = prompt[keep:]
        slot.job, slot.sampler, slot.n_prompt, slot.out = job, sampler, len(prompt), []
        slot.max_tokens = request.gen.max_tokens
        slot.text = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self.running.append(slot)

    def _place(self, prompt: list[int], free: list[Slot]) -> tuple[Slot, int]:
        """The free slot for a prompt, and how many of the prompt's first tokens its cells already
        hold: the slot whose cells start most like the prompt, or, when a kept prompt starts more
        like it, that slot with the kept prompt's cells put back. Cells a slot is about to give up
        are kept first."""
        limit = reusable(len(prompt))  # see FRESH_TAIL
        slot = max(free, key=lambda s: common_prefix(s.cached, prompt))
        keep = min(common_prefix(slot.cached, prompt), limit)
        kept, shared = self.kept.best(prompt)
        if min(shared, limit) > keep:
            self._keep(slot)
            loaded = self.lc.load(slot.seq, self.kept.take(kept))
            slot.cached = list(kept) if loaded else []
            keep = min(shared, limit) if loaded else 0
        elif keep < len(slot.cached):
            self._keep(slot)
        return slot, keep

    def _keep(self, slot: Slot) -> None:
        if slot.cached and not self.kept.holds(slot.cached):
            self.kept.put(slot.cached, self.lc.save(slot.seq))

    def _step(self) -> None:
        """One llama_decode for every running sequence, then one sampled token for each that got logits."""
        items, members = self._batch()
        if not self._decode(items, members):
            return
        for slot, n in members:
            self._advance(slot, n)
        for slot, _ in members:
            if slot.row >= 0 and slot.job is not None:
                self._sample(slot)

    def _batch(self) -> tuple[list, list]:
        """This step's (token, position, sequence, wants logits) items: the next token of every
        decoding sequence first, then as much of the waiting prompts as the batch holds."""
        items: list[tuple[int, int, int, bool]] = []
        members: list[tuple[Slot, int]] = []
        for slot in self.running:
            slot.row = -1
            if not slot.pending:
                slot.row = len(items)
                items.append((slot.out[-1], len(slot.cached), slot.seq, True))
                members.append((slot, 1))
        room = self.lc.n_batch - len(items)
        for slot in self.running:
            if not slot.pending or room <= 0:
                continue
            chunk = slot.pending[:room]
            start = len(slot.cached)
            done = len(chunk) == len(slot.pending)
            items.extend((token, start + i, slot.seq, False) for i, token in enumerate(chunk))
            if done:
                items[-1] = items[-1][:3] + (True,)
                slot.row = len(items) - 1
            members.append((slot, len(chunk)))
            room -= len(chunk)
        return items, members

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
        assert slot.sampler is not None and slot.job is not None  # a running slot holds both
        try:
            token = slot.sampler.sample(slot.row)
        except Exception as e:  # noqa: BLE001 - fails this sequence only
            self._end(slot, e, keep_cache=False)
            return
        slot.out.append(token)  # the end token too: counted as llama.cpp's own server counts it
        if self.lc.is_end(token):
            self._end(slot, self._delta(slot, b"", "stop"))
            return
        slot.sampler.accept(token)
        if len(slot.out) >= slot.max_tokens or len(slot.cached) + 1 >= self.lc.n_ctx_seq:
            self._end(slot, self._delta(slot, self.lc.piece(token), "length"))
        else:
            self._post(slot.job, self._delta(slot, self.lc.piece(token), None))

    def _delta(self, slot: Slot, piece: bytes, finish: str | None) -> Delta:
        assert slot.text is not None  # set with the job
        text = slot.text.decode(piece, final=finish is not None)
        return Delta(text, tokens_in=slot.n_prompt, tokens_out=len(slot.out), finish=finish)

    def _end(self, slot: Slot, outcome, *, keep_cache: bool = True) -> None:
        """Free the slot and post the job's last item (its final Delta, an exception, or None)."""
        job = slot.job
        assert job is not None
        if keep_cache:  # the next task may reuse the start of this prompt, never the generated tokens
            del slot.cached[reusable(slot.n_prompt):]
            self.lc.forget(slot.seq, len(slot.cached))  # so that the cells are what `cached` says
        else:
            self.lc.forget(slot.seq)
            slot.cached = []
        if slot.sampler is not None:
            slot.sampler.close()
        slot.job, slot.sampler, slot.pending, slot.out, slot.row, slot.text = None, None, [], [], -1, None
        self.running.remove(slot)
        self._post(job, outcome)


def answer_grammar(request: Request) -> str | None:
    """The grammar the answer is generated under: the tool-call union with tools (its keys in
    the order given: a call's name comes before its arguments), else the schema's, else none."""
    if request.tools:
        return schema_to_gbnf(answer_schema(request), sort_keys=False)
    return schema_to_gbnf(request.schema) if request.schema is not None else None


def _put_all(items) -> None:
    """On the callers' loop: hand each job its items."""
    for queue, item in items:
        queue.put_nowait(item)


def is_last(item) -> bool:
    """Whether a job's item is its last: the final piece, an error, or None (cancelled)."""
    return item is None or isinstance(item, BaseException) or (isinstance(item, Delta) and item.finish is not None)
