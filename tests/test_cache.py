"""The answer cache against a real HTTP server counting requests, in this process and in new ones."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fault_server import Fault, FaultServer, NumberedServer
from pydantic import BaseModel, field_validator

from llmnb import ConfigError, ExtractError, Model, ModelCallError, Models, listen, use_cache
from llmnb.cache import open_cache, sample_index

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    with NumberedServer() as s:
        yield s


def model_on(server, path, **options) -> Model:
    return Models.create("openai:demo", base_url=server.base_url, cache=str(path), max_retries=0, **options)


def finished(events):
    return [e for e in events if e.kind == "finished"]


def test_a_repeated_call_is_served_from_the_file_and_marked_cached(server, tmp_path):
    model = model_on(server, tmp_path / "a.sqlite", price=(1.0, 2.0))
    events = []
    with listen(events.append):
        first = model.generate("hello")
        again = model.generate("hello")
    assert server.requests == 1 and first == again == "answer 1"
    sent, hit = finished(events)
    assert (sent.cached, hit.cached) == (False, True)
    assert hit.cost == sent.cost and sent.cost > 0  # what the kept answer would have cost
    assert (hit.tokens_in, hit.tokens_out) == (sent.tokens_in, sent.tokens_out)
    assert [e.kind for e in events if e.call_id == hit.call_id] == ["created", "finished"]
    assert len(model.cache) == 1 and model.cache.models() == {"openai:demo": 1}


def test_any_change_of_settings_schema_model_or_server_misses(server, tmp_path):
    path = tmp_path / "a.sqlite"
    model = model_on(server, path)
    variants = [
        lambda m: m.generate("hi"),
        lambda m: m.generate("hi", temperature=1),  # "not set" is not the server's default value
        lambda m: m.generate("hi", temperature=0.5),
        lambda m: m.generate("hi", max_tokens=50),
        lambda m: m.generate("hi", seed=3),
        lambda m: m.generate("hi", inst="Be brief."),
        lambda m: m.generate("hi!"),
        lambda m: m.extract(int, "hi"),
        lambda m: m.extract(list[int], "hi"),
        lambda m: m.classify(["a", "b"], "hi"),
        lambda m: m.classify(["a", "c"], "hi"),
    ]
    for i, call in enumerate(variants, 1):
        call(model)
        assert server.requests == i
    for call in variants:  # each is now kept
        call(model)
    assert server.requests == len(variants)
    model.generate("hi", temperature=1.0)  # the same setting as temperature=1
    assert server.requests == len(variants)
    other_name = Models.create("openai:other", base_url=server.base_url, cache=str(path))
    other_name.generate("hi")
    assert server.requests == len(variants) + 1
    with NumberedServer() as second:
        Models.create("openai:demo", base_url=second.base_url, cache=str(path)).generate("hi")
        assert second.requests == 1


def test_errors_and_cut_off_answers_are_never_kept(server, tmp_path):
    model = model_on(server, tmp_path / "a.sqlite")
    server.script(Fault.http(500))
    with pytest.raises(ModelCallError):
        model.generate("hello")
    assert model.generate("hello") == "answer 1" and server.requests == 2
    cut = model.generate("hello", max_tokens=1)  # the server cuts "answer 2" to one token: finish "length"
    assert cut == "answer"
    model.generate("hello", max_tokens=1)
    assert server.requests == 4
    server.script(Fault.content('{"value": 12 and then many more words'))
    with pytest.raises(ExtractError, match="cut off"):
        model.extract(int, "n?", max_tokens=2)
    assert len(model.cache) == 1  # only the one complete answer


def test_a_new_process_sends_nothing_and_gets_the_same_answers(server, tmp_path):
    script = textwrap.dedent(f"""
        import asyncio, json
        from llmnb import Models
        model = Models.create("openai:demo", base_url={server.base_url!r}, cache={str(tmp_path / "a.sqlite")!r},
                              api_key="sk-secret-key-do-not-keep")
        async def main():
            texts = await asyncio.gather(*[model.generate_async(f"item {{i}}") for i in range(30)])
            samples = await asyncio.gather(*[model.generate_async("again", temperature=0.9) for _ in range(4)])
            number = await model.extract_async(int, "a number")
            pieces = [p async for p in model.stream_async("streamed")]
            return [texts, sorted(samples), number, "".join(pieces)]
        print(json.dumps(asyncio.run(main())))
    """)
    first = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    sent = server.requests
    assert sent == 30 + 4 + 1 + 1
    second = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert server.requests == sent
    assert json.loads(first.stdout) == json.loads(second.stdout)
    texts, samples, _, _ = json.loads(first.stdout)
    assert len(set(texts)) == 30 and len(set(samples)) == 4  # samples at temperature > 0 stay distinct
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"sk-secret" not in on_disk and b"answer" in on_disk


def test_identical_calls_at_once_are_samples_and_come_back_as_such(server, tmp_path):
    model = model_on(server, tmp_path / "a.sqlite", temperature=0.8)

    async def ten():
        return await asyncio.gather(*[model.generate_async("greet") for _ in range(10)])

    first = asyncio.run(ten())
    assert len(set(first)) == 10 and server.requests == 10
    assert sorted(asyncio.run(ten())) == sorted(first) and server.requests == 10
    with sample_index(3):  # an explicit index is one of those samples
        assert model.generate("greet") in first
    with sample_index(10):
        assert model.generate("greet") not in first
    assert server.requests == 11


def test_refresh_asks_again_and_replaces_the_kept_answer(server, tmp_path):
    model = model_on(server, tmp_path / "a.sqlite")
    assert model.generate("hi") == "answer 1"
    assert model.generate("hi", refresh=True) == "answer 2"
    assert model.generate("hi") == "answer 2" and server.requests == 2
    assert model.classify(["a", "b"], "x") == model.classify(["a", "b"], "x", refresh=True)
    assert list(model.stream("s", refresh=True)) and server.requests == 5


def test_a_kept_stream_comes_back_in_one_piece_marked_cached(server, tmp_path):
    model = model_on(server, tmp_path / "a.sqlite")
    events = []
    with listen(events.append):
        pieces = list(model.stream("hello"))
        again = list(model.stream("hello"))
    assert len(pieces) > 1 and again == ["".join(pieces)] and server.requests == 1
    assert [e.cached for e in finished(events)] == [False, True]
    assert finished(events)[1].tokens_out == finished(events)[0].tokens_out
    assert model.generate("hello") == again[0] and server.requests == 1  # the same request, streamed or not


def test_a_stream_left_early_is_not_kept(server, tmp_path):
    model = model_on(server, tmp_path / "a.sqlite")

    async def first_piece():
        async for piece in model.stream_async("hello"):
            return piece

    asyncio.run(first_piece())
    list(model.stream("hello"))
    assert server.requests == 2


def reading_type(strict: bool) -> type[BaseModel]:
    """Two versions of one type: the same JSON schema, the second with a stricter check."""
    class Reading(BaseModel):
        value: int

        if strict:
            @field_validator("value")
            @classmethod
            def not_positive(cls, v):
                if v > 0:
                    raise ValueError("must not be positive")
                return v

    return Reading


def test_a_kept_answer_is_parsed_again_for_the_type_asked_now(server, tmp_path):
    model = model_on(server, tmp_path / "a.sqlite")
    assert model.extract(reading_type(False), "read it").value == 1
    with pytest.raises(ExtractError, match="must not be positive"):
        model.extract(reading_type(True), "read it")
    assert server.requests == 1


def test_cost_known_local_zero_unknown_none(server, tmp_path, embedded_model):
    events = []
    with listen(events.append):
        Models.create("openai:demo", base_url=server.base_url).generate("x")
        Models.create("openai:demo", base_url=server.base_url, price=(0.5, 1.5)).generate("x")
        embedded_model.generate("Say hi.", max_tokens=3)
    unknown, priced, local = finished(events)
    assert unknown.cost is None and local.cost == 0
    assert priced.cost == pytest.approx((priced.tokens_in * 0.5 + priced.tokens_out * 1.5) / 1e6)
    with pytest.raises(ConfigError, match="price="):
        Models.create("openai:demo", base_url=server.base_url, price=(1, -2))


def test_the_cache_object_counts_drops_and_clears(server, tmp_path):
    path = tmp_path / "a.sqlite"
    a, b = model_on(server, path), Models.create("openai:b", base_url=server.base_url, cache=str(path))
    for i in range(3):
        a.generate(f"x{i}")
    b.generate("y")
    assert a.cache is b.cache and len(a.cache) == 4 and "4 answers" in repr(a.cache)
    assert a.cache.drop(a) == 3 and a.cache.models() == {"openai:b": 1}
    assert a.cache.clear() == 1 and len(a.cache) == 0


def test_use_cache_sets_the_file_for_models_made_without_one(server, tmp_path):
    plain = Models.create("openai:demo", base_url=server.base_url)
    off = Models.create("openai:demo", base_url=server.base_url, cache=False)
    try:
        use_cache(tmp_path / "all.sqlite")
        plain.generate("q")
        plain.generate("q")
        off.generate("q")
    finally:
        use_cache(None)
    assert server.requests == 2 and plain.cache is None


@pytest.mark.parametrize("kind", ["text", "other_sqlite", "damaged_cache"])
def test_a_file_that_is_no_cache_or_is_damaged_is_refused_and_left_as_it_was(server, tmp_path, kind):
    path = tmp_path / "x.sqlite"
    if kind == "text":
        path.write_text("name,score\nada,3\n" * 100)
    elif kind == "other_sqlite":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (body TEXT)")
            db.execute("INSERT INTO notes VALUES ('mine')")
    else:
        model = model_on(server, path)
        for i in range(300):
            model.generate(f"fill {i}" * 20)
        model.cache.close()
        data = bytearray(path.read_bytes())
        data[8192:12288] = b"\xff" * 4096  # a few pages of garbage in the middle
        path.write_bytes(bytes(data))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    files = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError, match="x.sqlite"):
        model_on(server, path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files


def test_two_processes_write_one_file_at_once_without_loss(server, tmp_path):
    path = tmp_path / "shared.sqlite"
    script = textwrap.dedent(f"""
        import asyncio, sys
        from llmnb import Models
        model = Models.create("openai:demo", base_url={server.base_url!r}, cache={str(path)!r})
        async def main():
            await asyncio.gather(*[model.generate_async(f"{{sys.argv[1]}} {{i}}") for i in range(150)])
        asyncio.run(main())
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, name], cwd=ROOT) for name in ("first", "second")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(open_cache(path)) == 300 and server.requests == 300


def test_the_embedded_model_keys_by_its_file_content(embedded_model, tmp_path):
    cache = open_cache(tmp_path / "local.sqlite")
    model = Model(embedded_model.backend, cache=cache)
    events = []
    with listen(events.append):
        first = model.classify(["cat", "dog"], "It says meow.")  # constrained: complete, never cut off
        again = model.classify(["cat", "dog"], "It says meow.")
    assert first == again and [e.cached for e in finished(events)] == [False, True]
    digest = hashlib.sha256(Path(embedded_model.backend.path).read_bytes()).hexdigest()
    with sqlite3.connect(cache.path) as db:
        assert db.execute("SELECT sha256 FROM file_hashes").fetchall() == [(digest,)]
    copy = tmp_path / "same-weights.gguf"  # another path, the same content: the same answers
    shutil.copyfile(embedded_model.backend.path, copy)
    with Models.create(f"llamacpp:{copy}", cache=cache) as moved:
        events.clear()
        with listen(events.append):
            assert moved.classify(["cat", "dog"], "It says meow.") == first
    assert [e.cached for e in finished(events)] == [True]


def test_an_answer_that_cannot_be_written_is_still_returned(server, tmp_path):
    model = model_on(server, tmp_path / "a.sqlite")
    model.cache._do(lambda db: db.execute("PRAGMA query_only = ON")).result()  # every write now fails
    with pytest.warns(RuntimeWarning, match="could not keep an answer"):
        assert model.generate("hello") == "answer 1"
    assert len(model.cache) == 0


def test_prices_come_from_the_table_for_known_providers():
    pytest.importorskip("genai_prices")
    known = Models.create("openai:gpt-4o-mini", api_key="sk-unused")
    assert known.price is not None and known.price.input > 0 and known.price.output > known.price.input
    assert Models.create("openai:no-such-model-here", api_key="sk-unused").price is None
    assert Models.create("groq:llama-3.3-70b-versatile", api_key="k").price.input > 0  # known by its URL
    assert Models.create("ollama:llama3").price.cost(1000, 1000) == 0  # a server on this machine
    assert Models.create("openai:gpt-4o-mini", api_key="sk-unused", price=(1, 2)).price.cost(1_000_000, 0) == 1.0


def test_with_tools_each_turn_is_kept_and_the_tools_run_again(tmp_path):
    runs = []

    def stock(item: str = "tea") -> str:
        """How many of an item are in stock."""
        runs.append(item)
        return "7 boxes" if len(runs) > 2 else "3 boxes"

    with FaultServer() as server:
        model = model_on(server, tmp_path / "a.sqlite")
        first = model.generate("Is tea in stock?", tools=[stock])
        assert server.requests == 2 and len(runs) == 1  # the turn asking for the tool, then the answer
        assert model.generate("Is tea in stock?", tools=[stock]) == first
        assert server.requests == 2 and len(runs) == 2  # both turns kept; the tool ran for real
        model.generate("Is tea in stock?", tools=[stock])  # the tool's result changed: a new last turn
        assert server.requests == 3 and len(runs) == 3
