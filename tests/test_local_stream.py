"""Streaming from the embedded model: pieces per decode step, through the one local engine."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from itertools import pairwise

import pytest

from llmnb import Models
from llmnb.events import listen

PROMPTS = ["Say hello.", "Describe the sea in French, with accents.", "Write a haiku about cats.",
           "Tell me a joke about a café in Zürich."]


@pytest.fixture(params=[1, 4], ids=["parallel=1", "parallel=4"])
def local(request):
    model = Models.create("llamacpp:smollm2", parallel=request.param, temperature=0)
    yield model
    model.close()


async def collect(model, prompt, **gen) -> list[str]:
    return [piece async for piece in model.stream_async(prompt, **gen)]


def test_streamed_pieces_join_to_the_generated_text(local):
    async def main():
        streamed = [await collect(local, p, max_tokens=40) for p in PROMPTS]
        generated = [await local.generate_async(p, max_tokens=40) for p in PROMPTS]
        return streamed, generated

    streamed, generated = asyncio.run(main())
    assert ["".join(pieces) for pieces in streamed] == generated
    # piece by piece, not one block: an answer of two words or more came in two pieces or more
    assert all(len(pieces) > 1 for pieces in streamed if len("".join(pieces).split()) > 1)
    # no piece holds half a character: every piece is valid text on its own
    assert all(isinstance(p, str) and "\ufffd" not in p for pieces in streamed for p in pieces)


def test_the_blocking_stream_gives_the_same_pieces(local):
    pieces = list(local.stream(PROMPTS[1], max_tokens=30))
    assert "".join(pieces) == local.generate(PROMPTS[1], max_tokens=30)


def test_leaving_a_stream_early_frees_its_sequence(local):
    events = []

    async def main():
        with listen(events.append):
            stream = local.stream_async("Write a very long story about the sea.", max_tokens=400)
            async for _ in stream:
                break
            await stream.aclose()
        return await local.generate_async("Say hi", max_tokens=5)

    assert isinstance(asyncio.run(main()), str)
    engine = local.backend._engine
    assert engine.running == [] and all(slot.job is None for slot in engine.slots)
    kinds = [e.kind for e in events]
    assert "cancelled" in kinds and "finished" not in kinds


def test_first_token_and_progress_come_before_finished(local):
    events = defaultdict(list)

    async def main():
        with listen(lambda e: events[e.call_id].append(e)):
            await local.generate_async("Name three colours.", max_tokens=20)  # not streamed: the events all the same
            await collect(local, "Name three fruits.", max_tokens=20)

    asyncio.run(main())
    assert len(events) == 2
    for call in events.values():
        kinds = [e.kind for e in call]
        assert kinds.index("started") < kinds.index("first_token") < kinds.index("finished")
        assert kinds.count("first_token") == 1
        progress = [e.tokens_out for e in call if e.kind == "progress"]
        assert progress and progress == sorted(progress) and progress[0] >= 1
        finished = next(e for e in call if e.kind == "finished")
        assert progress[-1] == finished.tokens_out


def test_four_streams_interleave():
    model = Models.create("llamacpp:smollm2", parallel=4, temperature=0)
    order = []

    async def one(i, prompt):
        async for _ in model.stream_async(prompt, max_tokens=30):
            order.append(i)

    async def main():
        await asyncio.gather(*(one(i, p) for i, p in enumerate(PROMPTS)))

    try:
        asyncio.run(main())
    finally:
        model.close()
    assert set(order) == {0, 1, 2, 3}
    switches = sum(a != b for a, b in pairwise(order))
    # the pieces of the four answers arrive mixed, step by step: while the two longest answers
    # both run, every step switches at least twice (how long each runs is the model's choice)
    second_longest = sorted(order.count(i) for i in range(4))[-2]
    assert switches >= min(3 * 4, 2 * (second_longest - 1))


def test_cut_off_answer_reports_length():
    from llmnb.backends.base import Generation, Request, join
    from llmnb.events import Call

    model = Models.create("llamacpp:smollm2", temperature=0)

    story = ({"role": "user", "content": "Write a long story about the sea."},)

    async def main():
        whole = await model.backend.complete(Request(story, Generation(max_tokens=60, temperature=0)),
                                             Call("generate", "y", model.name))
        # one token short of the greedy answer, whatever its length on this CPU: cut off for sure
        short = Generation(max_tokens=max(whole.tokens_out - 1, 1), temperature=0)
        cut = join([d async for d in model.backend.stream(Request(story, short), Call("generate", "x", model.name))])
        return whole, cut, short.max_tokens

    try:
        whole, cut, limit = asyncio.run(main())
    finally:
        model.close()
    assert whole.finish in ("stop", "length") and (whole.finish == "length") == (whole.tokens_out == 60)
    assert cut.finish == "length" and cut.tokens_out == limit and whole.text.startswith(cut.text)
