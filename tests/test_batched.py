"""parallel=N: several generations of the real embedded model in one llama.cpp context."""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import pytest
from embedded import CutOff, outcome
from pydantic import BaseModel

from llmnb import Models
from llmnb.errors import ConfigError, ModelCallError
from llmnb.events import listen


class Person(BaseModel):
    name: str
    age: int
    hobbies: list[str]


@dataclass
class City:
    city: str
    country: str


class Mood(enum.Enum):
    happy = "happy"
    sad = "sad"


TASKS = [  # (method, target, prompt): four kinds of structured output
    ("extract", Person, "Bob is 40 and likes chess and golf."),
    ("extract", City, "I flew from my home in Lyon, France to see the sea."),
    ("extract", list[str], "Name three fruits."),
    ("classify", Mood, "I won the lottery today and laughed all day!"),
]
STORIES = [f"Write a short story about {w}." for w in ("a lighthouse", "a fox", "a violin", "a storm")]


@pytest.fixture
def batched():
    """A new parallel=4 model: no prompt cached yet, so its outputs do not depend on earlier tests."""
    model = Models.create("llamacpp:smollm2", parallel=4, temperature=0)
    yield model
    model.backend.close()


@pytest.fixture
def sequential():
    """A new model running one task at a time (parallel=1), likewise with nothing cached."""
    return Models.create("llamacpp:smollm2", temperature=0)


def run_task(model, method, target, prompt, **gen):
    """The task's value, or CutOff if its answer ran into max_tokens (how long the model writes
    varies by CPU; one at a time and batched, a greedy answer is cut off alike)."""
    return outcome(getattr(model, f"{method}_async")(target, prompt, **gen))


def record_frees(model) -> list[int]:
    """The sequences whose KV cells the engine frees entirely from now on, recorded on the engine
    thread as it frees them (reading llama.cpp's memory from here could race a decode)."""
    lc, freed = model.backend._engine.lc, []
    forget = lc.forget

    def recording(seq: int, start: int = 0) -> None:
        if start == 0:
            freed.append(seq)
        forget(seq, start)

    lc.forget = recording
    return freed


def used_cells(model) -> list[int]:
    """The highest KV position of each sequence (-1: the sequence holds no cells). Only while the
    engine is idle: llama.cpp's memory is not safe to read during a decode."""
    lc = model.backend._engine.lc
    return [lc.L.llama_memory_seq_pos_max(lc.memory, s) for s in range(lc.n_seq)]


def test_structured_results_are_valid_and_match_one_at_a_time(batched, sequential):
    async def main():
        together = await asyncio.gather(*(run_task(batched, *t) for t in TASKS))
        one_by_one = [await run_task(sequential, *t) for t in TASKS]
        return together, one_by_one

    together, one_by_one = asyncio.run(main())
    person, city, fruits, mood = together
    assert isinstance(person, CutOff) or isinstance(person, Person) and isinstance(person.age, int)
    assert isinstance(city, CutOff) or isinstance(city, City) and isinstance(city.country, str)
    assert isinstance(fruits, CutOff) or isinstance(fruits, list) and all(isinstance(f, str) for f in fruits)
    assert isinstance(mood, Mood)  # a label's grammar ends within the default max_tokens
    # Same prompt tokens, sampler chain and attention kernels: identical at temperature 0.
    assert together == one_by_one


def test_seeded_sampling_matches_one_at_a_time(batched, sequential):
    async def main():
        gen = {"temperature": 0.8, "seed": 3}
        together = await asyncio.gather(*(run_task(batched, *t, **gen) for t in TASKS[:2]),
                                        *(batched.generate_async(s, max_tokens=30, **gen) for s in STORIES[:2]))
        one_by_one = [await run_task(sequential, *t, **gen) for t in TASKS[:2]]
        one_by_one += [await sequential.generate_async(s, max_tokens=30, **gen) for s in STORIES[:2]]
        return together, one_by_one

    together, one_by_one = asyncio.run(main())
    assert list(together) == one_by_one


def test_four_tasks_overlap_on_the_timeline(batched):
    events = defaultdict(dict)

    async def main():
        with listen(lambda e: events[e.call_id].setdefault(e.kind, e.time)):
            return await asyncio.gather(*(batched.generate_async(s, max_tokens=24) for s in STORIES))

    texts = asyncio.run(main())
    assert all(isinstance(t, str) for t in texts)
    assert len(events) == 4 and all({"waiting", "started", "finished"} <= set(e) for e in events.values())
    assert max(e["started"] for e in events.values()) < min(e["finished"] for e in events.values())


def test_more_tasks_than_slots_wait_for_one():
    model = Models.create("llamacpp:smollm2", parallel=2, temperature=0, n_ctx=512)
    spans = defaultdict(dict)

    async def main():
        with listen(lambda e: spans[e.call_id].setdefault(e.kind, e.time)):
            return await asyncio.gather(*(model.generate_async(s, max_tokens=12) for s in STORIES))

    try:
        assert len(asyncio.run(main())) == 4
    finally:
        model.backend.close()
    for span in spans.values():  # never more than two running at once
        running = [s for s in spans.values() if s["started"] <= span["started"] < s["finished"]]
        assert len(running) <= 2
    waited = sorted(s["started"] - s["waiting"] for s in spans.values())
    assert waited[-1] > 0.05  # the last ones waited for a slot to free


def test_cancelling_one_of_four_frees_its_sequence_and_spares_the_others(batched):
    untouched = Models.create("llamacpp:smollm2", parallel=4, temperature=0)

    async def main():
        started = asyncio.Event()
        count = []

        def seen(event):
            if event.kind == "started":
                count.append(event.call_id)
                if len(count) == 4:
                    started.set()

        with listen(seen):
            tasks = [asyncio.create_task(batched.generate_async(s, max_tokens=60)) for s in STORIES]
            await started.wait()
            await asyncio.sleep(0.3)  # all four are decoding
            frees = record_frees(batched)
            tasks[1].cancel()
            with pytest.raises(asyncio.CancelledError):
                await tasks[1]
            freed = len(frees)  # before the other three end
            others = await asyncio.gather(tasks[0], tasks[2], tasks[3])
        after = await asyncio.gather(*(run_task(batched, *t) for t in TASKS))
        expected = await asyncio.gather(*(untouched.generate_async(s, max_tokens=60) for s in STORIES))
        return freed, others, after, expected

    try:
        freed, others, after, expected = asyncio.run(main())
    finally:
        untouched.backend.close()
    assert freed == 1  # the cancelled task's KV cells went at once, and only its own
    assert others == [expected[0], expected[2], expected[3]]  # as if the fourth had never been there
    assert isinstance(after[0], (Person, CutOff)) and isinstance(after[3], Mood)
    assert all(slot.job is None for slot in batched.backend._engine.slots)


def test_a_sequence_failing_mid_decode_fails_alone(batched, sequential, monkeypatch):
    """Fault injection: one sequence's sampler breaks after a few tokens, while all four decode
    together. That task fails with the error; the other three finish as if alone."""
    engine = batched.backend._engine  # this engine only: `sequential` runs the same engine code
    start = engine._start

    def start_with_a_fault(job, free):
        start(job, free)
        if job.request.messages[-1]["content"] == STORIES[2]:
            slot = next(s for s in engine.slots if s.job is job)
            sample, calls = slot.sampler.sample, []

            def breaking(row):
                calls.append(row)
                if len(calls) > 3:
                    raise RuntimeError("injected sampler fault")
                return sample(row)

            slot.sampler.sample = breaking

    monkeypatch.setattr(engine, "_start", start_with_a_fault)

    async def main():
        together = await asyncio.gather(*(batched.generate_async(s, max_tokens=30) for s in STORIES),
                                        return_exceptions=True)
        alone = [await sequential.generate_async(s, max_tokens=30) for s in STORIES]
        return together, alone

    together, alone = asyncio.run(main())
    assert isinstance(together[2], RuntimeError) and "injected" in str(together[2])
    assert [together[i] for i in (0, 1, 3)] == [alone[i] for i in (0, 1, 3)]
    assert all(slot.job is None for slot in batched.backend._engine.slots)


def test_a_prompt_too_long_fails_alone():
    model = Models.create("llamacpp:smollm2", parallel=2, temperature=0, n_ctx=64)

    async def main():
        return await asyncio.gather(model.generate_async("word " * 600), model.generate_async("Hi", max_tokens=5),
                                    return_exceptions=True)

    try:
        long, short = asyncio.run(main())
    finally:
        model.backend.close()
    # llama.cpp raises tiny contexts to its minimum; the message gives the real size
    n_ctx = model.backend.n_ctx
    assert isinstance(long, ConfigError) and "n_ctx=" in str(long) and f"{n_ctx} tokens per task" in str(long)
    assert isinstance(short, str)


def test_timeout_fails_the_call_and_the_model_keeps_serving():
    model = Models.create("llamacpp:smollm2", parallel=2, temperature=0, n_ctx=512, timeout=0.2)

    async def main():
        with pytest.raises(ModelCallError, match="timeout=0.2"):
            await model.generate_async(STORIES[0], max_tokens=400)
        model.backend.timeout = 60  # room for the next call on a busy machine: the model must serve it
        return await model.generate_async("Say hi", max_tokens=3)

    try:
        assert isinstance(asyncio.run(main()), str)
        assert used_cells(model).count(-1) >= 1
    finally:
        model.backend.close()


@pytest.mark.parametrize("parallel", [0, -2, True, "4", 2.5, 1000])
def test_bad_parallel_is_a_config_error(parallel):
    with pytest.raises(ConfigError, match="parallel"):
        Models.create("llamacpp:smollm2", parallel=parallel)


@pytest.mark.parametrize("parallel", [1, 2])
def test_close_frees_the_model_and_later_calls_say_so(parallel):
    with Models.create("llamacpp:smollm2", parallel=parallel) as model:
        assert isinstance(model.generate("Hi", max_tokens=3), str)
    with pytest.raises(ModelCallError, match="closed"):
        model.generate("Hi", max_tokens=3)


def test_a_dropped_batched_model_stops_its_engine_thread():
    """A notebook cell run again makes a new model: the old one's thread and memory must go."""
    import gc

    def engines():
        return sum(t.name == "llmnb-batched" and t.is_alive() for t in threading.enumerate())

    gc.collect()  # models that earlier tests dropped stop their engines now, not during the count
    before = engines()
    model = Models.create("llamacpp:smollm2", parallel=2)
    model.generate("Hi", max_tokens=3)
    assert engines() == before + 1
    del model
    gc.collect()
    deadline = time.monotonic() + 10
    while engines() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engines() == before


def record_reads(model) -> list[int]:
    """How many items each llama_decode of the engine holds from now on (a prompt read in one
    step, then one item a step for the answer, when tasks run one at a time)."""
    lc, sizes = model.backend._engine.lc, []
    decode = lc.decode

    def recording(items):
        sizes.append(len(items))
        return decode(items)

    lc.decode = recording
    return sizes


def test_a_prompt_read_before_others_is_put_back_not_read_again(sequential):
    """One task at a time, three long prompts taking turns: from the second round on, each
    prompt's cells come back from memory and only its last FRESH_TAIL tokens are read, and the
    answers stay those of the first round (an empty cache's)."""
    from llmnb.backends.local import FRESH_TAIL

    topics = ("the sea", "a forest", "a city")
    prompts = [f"Here are my notes on {t}: " + " ".join(f"Note {i}: {t} matters for reason {i}." for i in range(30))
               + " Summarise them." for t in topics]
    sizes = record_reads(sequential)
    rounds = []
    for _ in range(3):
        answers, reads = [], []
        for p in prompts:
            del sizes[:]
            answers.append(sequential.generate(p, max_tokens=4, temperature=0))
            reads.append(sizes[0])
        rounds.append((answers, reads))
    (first, first_reads), *later = rounds
    assert all(n > 300 for n in first_reads)  # the shared chat template aside, read in full
    for answers, reads in later:
        assert reads == [FRESH_TAIL] * len(prompts)
        assert answers == first
    assert len(sequential.backend._engine.kept) == len(prompts)
    sequential.close()  # frees the kept prompts with the model
    assert len(sequential.backend._engine.kept) == 0


def test_kept_prompts_stay_within_their_budget():
    """The least recently used go first; a prompt that another extends is dropped for it; a
    prompt too big for the budget is not kept."""
    import ctypes

    from llmnb.backends.prompt_cache import PromptCache

    def cells(n):
        return (ctypes.c_uint8 * n)()

    cache = PromptCache(budget=100)
    cache.put([1, 2, 3], cells(40))
    cache.put([1, 5, 6], cells(40))
    assert cache.best([1, 2, 3, 4]) == ((1, 2, 3), 3) and cache.holds([1, 2])
    cache.take((1, 2, 3))  # now the most recently used
    cache.put([7, 8], cells(40))  # over budget: (1, 5, 6) goes
    assert len(cache) == 2 and cache.best([1, 5, 6]) == ((1, 2, 3), 1)
    cache.put([1, 2, 3, 4], cells(50))  # holds (1, 2, 3) too
    assert len(cache) == 2 and cache.best([1, 2, 3]) == ((1, 2, 3, 4), 3) and not cache.holds([1, 5])
    cache.put([9], cells(101))
    assert cache.best([9]) == ((), 0) and len(cache) == 2
