"""The embedded model through llama.cpp, for real: every method, sync and async, typed results."""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Literal

import pydantic
import pytest
from embedded import LABELS, CutOff, cut_off, outcome
from pydantic import Field
from typing_extensions import TypedDict

from llmnb import listen
from llmnb.errors import ExtractError
from llmnb.sync import private_loop_tasks

SPAM = "I am a Nigerian prince and will make you very rich!"
GREEDY = {"temperature": 0, "seed": 7}
# A type whose grammar forces a long answer (60 strings at least): a free-text "long story" may
# end after a few words, depending on what the model's cache holds from earlier calls.
LONG = Annotated[list[str], Field(min_length=60)]


@dataclass
class Person:
    name: str
    age: int


class City(pydantic.BaseModel):
    name: str
    country: str


class Pet(TypedDict):
    species: str
    legs: int


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


def test_generate_returns_text(embedded_model):
    text = embedded_model.generate("Say hello.", max_tokens=20, **GREEDY)
    assert isinstance(text, str) and text.strip()
    assert embedded_model("Say hello.", max_tokens=20, **GREEDY) == text  # __call__ is generate


@pytest.mark.parametrize(
    "target, check",
    [
        (str, lambda v: isinstance(v, str)),
        (int, lambda v: isinstance(v, int) and not isinstance(v, bool)),
        (float, lambda v: isinstance(v, float)),
        (bool, lambda v: isinstance(v, bool)),
        (list[str], lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
        (Literal["red", "green"], lambda v: v in ("red", "green")),
        (Mood, lambda v: isinstance(v, Mood)),
        (Person, lambda v: isinstance(v, Person) and isinstance(v.age, int)),
        (City, lambda v: isinstance(v, City) and isinstance(v.country, str)),
        (Pet, lambda v: isinstance(v, dict) and set(v) == {"species", "legs"} and isinstance(v["legs"], int)),
        (list[Person], lambda v: isinstance(v, list) and all(isinstance(p, Person) for p in v)),
    ],
    ids=lambda t: getattr(t, "__name__", str(t)) if not callable(t) or isinstance(t, type) else "",
)
def test_extract_types(embedded_model, target, check):
    text = "Alice is 31 years old, has a happy dog with 4 legs and lives in Paris, France."
    try:
        value = embedded_model.extract(target, text, max_tokens=200, **GREEDY)
    except ExtractError as e:  # a list or a string may run on to max_tokens: the one error allowed
        assert cut_off(e) and isinstance(e.raw, str), e
        return
    assert check(value), value


def test_classify_seed_example(embedded_model):
    assert embedded_model.classify(list(LABELS), SPAM, **GREEDY) in LABELS
    assert embedded_model.classify(Mood, "I won the lottery today, best day ever!", **GREEDY) in set(Mood)


def test_sync_and_async_twins_agree(embedded_model):
    prompt = "Name three colours."
    try:
        sync_value = embedded_model.extract(list[str], prompt, **GREEDY)
    except ExtractError as e:  # a plain list may run on to max_tokens: then both are cut off alike
        assert cut_off(e), e
        sync_value = CutOff(e.raw)
    async_value = asyncio.run(outcome(embedded_model.extract_async(list[str], prompt, **GREEDY)))
    assert sync_value == async_value
    assert embedded_model.generate(prompt, max_tokens=15, **GREEDY) == asyncio.run(
        embedded_model.generate_async(prompt, max_tokens=15, **GREEDY)
    )


@pytest.mark.parametrize("parallel", [1, 2])
def test_greedy_answers_do_not_depend_on_what_ran_before(parallel):
    """A greedy call gives what a model with an empty cache gives, whatever came before it,
    the same prompt included (the cached start of a prompt is reused only where that holds:
    FRESH_TAIL in llmnb/backends/local.py). One task at a time and two at once."""
    from llmnb import Models

    prompts = ["Say hello.", "Name three colours.", "Describe the sea.", "Tell me a joke.",
               "Write a haiku about cats.", "Who are you?", "Explain rain briefly.", "What is Python?"]
    fresh = {p: Models.create(parallel=parallel).generate(p, max_tokens=30, temperature=0) for p in prompts}
    model = Models.create(parallel=parallel)
    for p in prompts:  # each prompt right after another one, then right after itself
        assert model.generate(p, max_tokens=30, temperature=0) == fresh[p], p
        assert model.generate(p, max_tokens=30, temperature=0) == fresh[p], p
    for p in prompts:  # then after all the others: its cells come back from memory (prompt_cache)
        assert model.generate(p, max_tokens=30, temperature=0) == fresh[p], p


def test_sync_call_inside_running_loop_leaves_nothing_behind(embedded_model):
    """As in a notebook cell: a loop is running in this thread and the sync method is called without await."""
    threads_before = threading.active_count()

    async def cell():
        return [embedded_model.classify(list(LABELS), SPAM, **GREEDY) for _ in range(3)]

    labels = asyncio.run(cell())
    assert len(set(labels)) == 1 and labels[0] in LABELS  # greedy: the same label each time
    assert private_loop_tasks() == 0
    # at most the private loop thread and the model's worker thread may have been created, once
    assert threading.active_count() <= threads_before + 2
    embedded_model.generate("Hi", max_tokens=5)
    assert threading.active_count() <= threads_before + 2


def test_seed_example_runs_concurrently_and_reports_phases(embedded_model):
    events = []

    async def main():
        with listen(events.append):
            return await asyncio.gather(
                embedded_model.extract_async(list[str], "Generate 20 English names with first name and surname"),
                embedded_model.classify_async(list(LABELS), SPAM), return_exceptions=True,
            )

    names, label = asyncio.run(main())
    # a plain list[str] has no length: sampled, it may run on to max_tokens, the one error allowed
    assert cut_off(names) or isinstance(names, list) and all(isinstance(n, str) for n in names), names
    assert label in LABELS
    by_call = {}
    for e in events:
        if e.kind != "progress":  # one per token
            by_call.setdefault(e.call_id, []).append(e.kind)
    end = "failed" if cut_off(names) else "finished"
    assert sorted(by_call.values()) == sorted([["created", "waiting", "started", "first_token", end],
                                               ["created", "waiting", "started", "first_token", "finished"]])
    finished = [e for e in events if e.kind in ("finished", "failed")]
    assert all(e.tokens_out and e.tokens_in for e in finished)
    # local inference is sequential: the second call starts only after the first finished
    starts = sorted(e.time for e in events if e.kind == "started")
    ends = sorted(e.time for e in finished)
    assert starts[1] >= ends[0]


def test_loop_keeps_ticking_during_local_generation(embedded_model):
    async def main():
        ticks = []

        async def ticker():
            while True:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        start = time.perf_counter()
        # 60 items at least cannot fit in 100 tokens: 100 tokens of work on any CPU, then the cut-off
        with pytest.raises(ExtractError, match="cut off at max_tokens=100"):
            await embedded_model.extract_async(LONG, "List sea creatures.", max_tokens=100, **GREEDY)
        elapsed = time.perf_counter() - start
        t.cancel()
        gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        return elapsed, len(ticks), max(gaps)

    elapsed, n, worst_gap = asyncio.run(main())
    assert elapsed > 0.2  # the generation took real time...
    assert n >= elapsed / 0.01 * 0.3  # ...and the ticker kept running through it (generous slack)
    assert worst_gap < 0.25


def test_cancel_waiting_and_running_local_tasks_keeps_model_usable(embedded_model):
    events = []

    async def main():
        await embedded_model.generate_async("Hi", max_tokens=1)  # the first decode of a process is slow
        with listen(events.append):
            running = asyncio.create_task(embedded_model.extract_async(LONG, "List sea creatures.", max_tokens=600))
            waiting = asyncio.create_task(embedded_model.extract_async(LONG, "List birds.", max_tokens=600))
            await asyncio.sleep(0.3)
            cancelled_at = time.perf_counter()
            running.cancel()
            waiting.cancel()
            for t in (running, waiting):
                with pytest.raises(asyncio.CancelledError):
                    await t
            stopped_after = time.perf_counter() - cancelled_at
        label = await embedded_model.classify_async(list(LABELS), SPAM, **GREEDY)
        return label, stopped_after

    label, stopped_after = asyncio.run(main())
    assert label in LABELS
    # the cancelled call returns only once the worker has let go of the model, a token or so
    # later: far sooner than the 60-item answer would take (generous for a busy machine)
    assert stopped_after < 2
    kinds = [e.kind for e in events]
    assert kinds.count("cancelled") == 2 and "finished" not in kinds


def test_timeout_stops_a_local_generation():
    from llmnb import ModelCallError, Models

    model = Models.create(timeout=0.5)
    start = time.perf_counter()
    with pytest.raises(ModelCallError, match="timeout=0.5"):
        model.generate("Write a very long essay about the sea.", max_tokens=500, temperature=0)
    assert time.perf_counter() - start < 3  # stopped near the bound, not after 500 tokens
    model.backend.timeout = 60  # give the next call room on a busy machine: the model must still serve it
    assert model.classify(list(LABELS), SPAM, **GREEDY) in LABELS


def test_answers_match_llama_cpp_python_itself():
    """The engine reads the prompt, penalises repeats and samples as llama-cpp-python's own
    `Llama.create_chat_completion` does: the same text, greedy, seeded and under a grammar."""
    import llama_cpp

    from llmnb import Models
    from llmnb.backends.base import Generation, Request
    from llmnb.backends.grammar import schema_to_gbnf
    from llmnb.backends.local import REPEAT_PENALTY
    from llmnb.events import Call
    from llmnb.registry import embedded_path
    from llmnb.structured import target_for

    llama = llama_cpp.Llama(str(embedded_path("smollm2")), n_ctx=2048, flash_attn=True, verbose=False)
    model = Models.create()
    schema = target_for(Person).schema
    grammar = llama_cpp.LlamaGrammar.from_string(schema_to_gbnf(schema), verbose=False)
    cases = [("Say hello.", {"temperature": 0}, None), ("Describe the sea in French.", {"temperature": 0}, None),
             ("Tell me a joke.", {"temperature": 0.8, "seed": 3}, None),
             ("Bob is 40 years old.", {"temperature": 0}, grammar)]
    try:
        for prompt, gen, grammar in cases:
            messages = [{"role": "user", "content": prompt}]
            theirs = llama.create_chat_completion(messages, max_tokens=40, repeat_penalty=REPEAT_PENALTY,
                                                  grammar=grammar, **gen)["choices"][0]["message"]["content"]
            if grammar is None:
                ours = model.generate(prompt, max_tokens=40, **gen)
            else:  # the raw text under the grammar, before any parsing
                request = Request(tuple(messages), Generation(max_tokens=40, **gen), schema=schema)
                ours = asyncio.run(model.backend.complete(request, Call("extract", prompt, model.name))).text
            assert ours == theirs, prompt
    finally:
        llama.close()
        model.close()
