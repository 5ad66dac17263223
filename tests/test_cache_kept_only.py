"""`kept_only()`: turns the cache holds are answered, the others raise NotKept and are never sent;
the key a turn is kept under can be computed from its request, and any store can stand in."""

from __future__ import annotations

import asyncio

import pytest
from fault_server import NumberedServer

from llmnb import Model, Models, listen
from llmnb.backends.base import Completion, Generation, Request, ToolCall
from llmnb.cache import (
    MemoryStore,
    completion_from_json,
    completion_to_json,
    kept_only,
    key_for,
    open_cache,
    sample_index,
)
from llmnb.errors import LlmnbError, NotKept


@pytest.fixture
def server():
    with NumberedServer() as s:
        yield s


def model_on(server, cache) -> Model:
    return Models.create("openai:demo", base_url=server.base_url, cache=cache, max_retries=0)


def identity_of(model: Model) -> str:
    return asyncio.run(model.cache.identity(model.backend))


def test_a_kept_answer_passes_and_a_missing_one_raises_without_being_sent(server, tmp_path):
    model = model_on(server, tmp_path / "a.sqlite")
    first = model.generate("hello")
    assert server.requests == 1
    events = []
    with kept_only(), listen(events.append):
        assert model.generate("hello") == first
        with pytest.raises(NotKept) as missing:
            model.generate("something new")
    assert server.requests == 1  # the miss was not sent
    e = missing.value
    assert isinstance(e, LlmnbError) and "not sent" in str(e)
    assert e.request.messages[-1] == {"role": "user", "content": "something new"}
    assert e.key == key_for(identity_of(model), model.name, e.request, 0)
    assert [ev.kind for ev in events if ev.kind in ("finished", "failed")] == ["finished", "failed"]
    assert "NotKept" in [ev for ev in events if ev.kind == "failed"][0].error


def test_an_answer_kept_under_the_missing_key_answers_the_turn(server, tmp_path):
    model = model_on(server, tmp_path / "a.sqlite")
    with kept_only(), sample_index(3), pytest.raises(NotKept) as missing:
        model.generate("batched elsewhere", max_tokens=20)
    e = missing.value
    assert e.key == key_for(identity_of(model), model.name, e.request, 3)
    elsewhere = Completion("kept from elsewhere", 5, 3, "stop")
    asyncio.run(model.cache.keep(e.key, model.name, elsewhere))
    with kept_only(), sample_index(3):
        assert model.generate("batched elsewhere", max_tokens=20) == "kept from elsewhere"
    assert server.requests == 0


def test_without_a_cache_every_turn_raises(server):
    model = Models.create("openai:demo", base_url=server.base_url, cache=False, max_retries=0)
    with kept_only():
        with pytest.raises(NotKept) as missing:
            model.generate("hello")
        with pytest.raises(NotKept):
            asyncio.run(anext(aiter(model.stream_async("hello"))))
    store = MemoryStore()
    assert missing.value.key == key_for(asyncio.run(store.identity(model.backend)), model.name,
                                        missing.value.request, 0)
    assert server.requests == 0
    assert model.generate("hello") == "answer 1"  # outside the block it is sent as before


def test_a_memory_store_records_the_turns_and_a_file_takes_them_over(server, tmp_path):
    store = MemoryStore()
    worker = model_on(server, store)
    answers = [worker.generate(f"item {i}") for i in range(3)]
    assert server.requests == 3 and len(store.answers) == 3
    cache = open_cache(tmp_path / "driver.sqlite")
    for key, (name, completion) in store.answers.items():
        shipped = completion_from_json(completion_to_json(completion))  # as a worker sends it back
        assert shipped == completion and name == "openai:demo"
        asyncio.run(cache.keep(key, name, shipped))
    driver = model_on(server, cache)
    with kept_only():
        assert [driver.generate(f"item {i}") for i in range(3)] == answers
    assert server.requests == 3


def test_a_kept_tool_turn_passes_and_the_next_turn_raises(tmp_path):
    from fault_server import FaultServer

    def stock(item: str = "tea") -> str:
        """How many of an item are in stock."""
        return "3 boxes"

    with FaultServer() as server:
        model = model_on(server, tmp_path / "a.sqlite")
        model.generate("Is tea in stock?", tools=[stock])
        assert server.requests == 2
        with kept_only():
            model.generate("Is tea in stock?", tools=[stock])  # both turns kept
            with pytest.raises(NotKept) as missing:
                model.generate("Is coffee in stock?", tools=[stock])
        assert server.requests == 2
        assert missing.value.request.tools and missing.value.request.tools[0]["function"]["name"] == "stock"


def test_keys_and_stored_answers_keep_their_form():
    """A file written by an earlier llmnb of the same format version must still answer: the key of
    a request and an answer's stored JSON are pinned here."""
    request = Request(({"role": "user", "content": "Héllo"},), Generation(20, 0.0, None), {"type": "object"}, (),
                      "auto")
    assert key_for("url:http://127.0.0.1:8000/v1", "openai:demo", request, 2) == (
        "7e7b15af24262d381f16b71e757eb0ca17ff37855269cc85ae3dbdd90975de36")
    answer = Completion("a", 3, 1, "tool_calls", (ToolCall("c1", "f", "{}"),))
    assert completion_to_json(answer) == ('{"text": "a", "tokens_in": 3, "tokens_out": 1, "finish": "tool_calls", '
                                          '"tool_calls": [{"id": "c1", "name": "f", "arguments": "{}"}]}')
    assert completion_from_json(completion_to_json(answer)) == answer


def test_lookups_and_writes_made_together_each_get_their_own_answer(tmp_path):
    cache = open_cache(tmp_path / "a.sqlite")
    answers = {f"{i:064x}": Completion(f"answer {i}", i, 1, "stop") for i in range(0, 1200, 2)}

    async def main():
        await asyncio.gather(*[cache.keep(key, "m", answer) for key, answer in answers.items()])  # one turn
        keys = [f"{i:064x}" for i in range(1200)]  # every other one kept; more keys than one query takes
        return keys, await asyncio.gather(*[cache.lookup(key) for key in keys])

    keys, found = asyncio.run(main())
    assert [answers.get(key) for key in keys] == found
    assert len(cache) == 600
