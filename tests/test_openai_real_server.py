"""The OpenAI path against a real OpenAI-compatible server: llama.cpp's own, on the embedded model.

llama.cpp's server refuses `response_format` json_schema (HTTP 500) but accepts JSON mode with a
schema, so this also proves the structured-output fallback on a server we did not write.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass

import pytest
from embedded import LABELS, cut_off
from servers import free_port, start, stop

from llmnb import ExtractError, Models, Thread, listen
from llmnb.backends.base import Completion, Generation, Request, join
from llmnb.events import Call
from llmnb.registry import embedded_path


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_path("smollm2")),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--model_alias", "smollm2"]
    base = f"http://127.0.0.1:{port}/v1"
    proc = start(cmd, f"{base}/models", tmp_path_factory.mktemp("llama_server") / "server.log", seconds=60)
    yield base
    stop(proc)


@dataclass
class Person:
    name: str
    age: int


def test_generate_through_llama_cpp_server(llama_server):
    model = Models.create("openai:smollm2", base_url=llama_server, temperature=0, seed=1)
    assert isinstance(model.generate("Say hello.", max_tokens=20), str)


def test_structured_output_round_trips_with_fallback(llama_server):
    model = Models.create("openai:smollm2", base_url=llama_server, temperature=0, seed=1)
    assert model.backend.schema_mode is None
    try:
        person = model.extract(Person, "Alice is 31 years old.", max_tokens=100)
        assert isinstance(person, Person) and isinstance(person.age, int)
    except ExtractError as e:  # a string may run on to max_tokens: the one error allowed
        assert cut_off(e), e
    assert model.backend.schema_mode == "json_object"  # json_schema was refused, JSON mode worked
    label = model.classify(list(LABELS), "I am a Nigerian prince and will make you very rich!")
    assert label in LABELS
    try:
        names = asyncio.run(model.extract_async(list[str], "Name three colours.", max_tokens=100))
        assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    except ExtractError as e:
        assert cut_off(e), e


def test_streams_threads_and_message_lists_through_llama_cpp_server(llama_server):
    model = Models.create("openai:smollm2", base_url=llama_server, temperature=0, seed=1)
    events = []
    with listen(events.append):
        pieces = list(model.stream("Say hello.", max_tokens=20))
    assert all(isinstance(p, str) for p in pieces)
    assert len(pieces) > 1 or len("".join(pieces).split()) < 2  # piece by piece, not one block
    kinds = [e.kind for e in events]
    assert kinds.count("first_token") == 1 and kinds.count("progress") == len(pieces) and kinds[-1] == "finished"
    assert model.backend.stream_usage is not None  # found out whether the server takes stream_options
    thread = Thread("Answer briefly.").user("My name is Ada.").assistant("Hello, Ada!").user("What is my name?")
    assert isinstance(model.generate(thread, max_tokens=20), str)
    assert all(isinstance(p, str) for p in model.stream([{"role": "user", "content": "Say yes."}],
                                                        inst="Be brief.", max_tokens=10))


def test_an_answer_cut_off_by_a_real_server_says_so(llama_server):
    model = Models.create("openai:smollm2", base_url=llama_server, temperature=0, seed=1)
    with pytest.raises(ExtractError, match="cut off at max_tokens=3"):
        model.extract(list[str], "Name twenty colours.", max_tokens=3)


WEATHER = {"type": "function", "function": {
    "name": "weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TOOLS = (WEATHER,)


def tool_turn(llama_server, request: Request, stream: bool) -> Completion:
    backend = Models.create("openai:smollm2", base_url=llama_server, temperature=0, seed=1, max_retries=0).backend
    call = Call("stream" if stream else "generate", "tools", backend.name)

    async def go():
        if stream:
            return join([d async for d in backend.run_stream(request, call)])
        return await backend.run(request, call)
    return asyncio.run(go())


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_through_llama_cpp_server(llama_server, stream):
    """llama-cpp-python's server calls a tool when tool_choice names it (a grammar of the tool's
    parameters); with tool_choice left to it, this model's chat format answers in text."""
    ask = ({"role": "user", "content": "What is the weather in Paris?"},)
    forced = tool_turn(llama_server, Request(ask, Generation(100), tools=TOOLS, tool_choice="weather"), stream)
    assert forced.finish == "tool_calls" and [c.name for c in forced.tool_calls] == ["weather"]
    assert isinstance(json.loads(forced.tool_calls[0].arguments)["city"], str)
    free = tool_turn(llama_server, Request(ask, Generation(20), tools=TOOLS), stream)
    assert free.finish in ("stop", "length", "tool_calls") and isinstance(free.text, str)
    # The results go back; the assistant turn of only tool calls is sent with "" as its text
    asked = {"role": "assistant", "content": None, "tool_calls": [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in forced.tool_calls]}
    result = {"role": "tool", "tool_call_id": forced.tool_calls[0].id, "content": "sunny, 21 C"}
    answer = tool_turn(llama_server, Request((*ask, asked, result), Generation(20), tools=TOOLS), stream)
    assert answer.finish in ("stop", "length") and isinstance(answer.text, str)
