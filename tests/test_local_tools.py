"""Tool calls on the embedded model: one generation under the grammar of llama.cpp's generic format
gives tool calls that fit their tools' signatures, or a plain answer; and the whole tool loop
through `Model`. Whether the model calls a tool, and whether the arguments make sense, is the
135M model's business and differs from CPU to CPU: only what the grammar forces is checked, for
every outcome the contract allows (calls, an answer, or the error of calls cut off at max_tokens)."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest
from embedded import cut_off
from pydantic import BaseModel

from llmnb import MaxStepsError, Models, Timeline
from llmnb.backends.base import Delta, Generation, Request, join
from llmnb.backends.local_tools import ResponseText, answer_schema, chat_messages, read_answer
from llmnb.errors import ConfigError, ModelCallError
from llmnb.events import Call


class Place(BaseModel):
    city: str
    country: str


class Trip(BaseModel):
    start: Place
    end: Place
    days: int


def tool(name: str, description: str, parameters: dict) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


WEATHER = tool("get_weather", "Get the current weather in a city.", {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"]})
ADD = tool("add", "Add two numbers.", {
    "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]})
PLAN = tool("plan_trip", "Plan a trip from one place to another.", Trip.model_json_schema())
TOOLS = (WEATHER, ADD)
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, ADD, PLAN)}
PROMPTS = ["Get the weather in Berlin.", "Add 4 and 9.", "Tell me a joke.", "Is it raining in Tokyo?"]
CHATTY = ["Tell me a joke.", "Write a haiku about the sea."]
GEN = Generation(max_tokens=120, temperature=0)
# Room for MAX_CALLS calls: a tiny model may repeat a call until the grammar's limit
CALLS_GEN = Generation(max_tokens=400, temperature=0)
ANSWER = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


def ask(prompt, tools=TOOLS, choice=None, **fields) -> Request:
    messages = (({"role": "user", "content": prompt},) if isinstance(prompt, str) else tuple(prompt))
    return Request(messages, fields.pop("gen", GEN), tools=tools, tool_choice=choice, **fields)


def call() -> Call:
    return Call("generate", "tools", "llamacpp:smollm2")


async def run_all(backend, requests):
    """Each request's completion, or the error it raised."""
    return await asyncio.gather(*(backend.run(r, call()) for r in requests), return_exceptions=True)


def check_answer(outcome, names, schema=None) -> None:
    """Any outcome the contract allows: tool calls that fit (check_calls), an answer (its text,
    JSON of `schema` when given and complete), or the error of calls cut off at max_tokens."""
    if cut_off(outcome):
        return
    assert not isinstance(outcome, BaseException), outcome
    if outcome.tool_calls:
        check_calls(outcome, names)
        return
    assert outcome.finish in ("stop", "length") and isinstance(outcome.text, str)
    assert not re.match(r'\{\s*"response"', outcome.text)  # the answer's text, not its JSON wrapper
    if schema is not None and outcome.finish == "stop":
        jsonschema.validate(json.loads(outcome.text), schema)


def check_calls(completion, names) -> None:
    """Tool calls only, each of a tool in `names` and with arguments that fit its parameters
    (or the error of calls cut off at max_tokens)."""
    if cut_off(completion):
        return
    assert completion.finish == "tool_calls" and completion.text == ""
    assert completion.tool_calls
    assert len({c.id for c in completion.tool_calls}) == len(completion.tool_calls)
    for c in completion.tool_calls:
        assert c.name in names
        jsonschema.validate(json.loads(c.arguments), PARAMETERS[c.name])


@pytest.fixture(scope="module")
def engines():
    """One embedded model running a task at a time and one running four, for these tests."""
    backends = {n: Models.create("llamacpp:smollm2", parallel=n, temperature=0).backend for n in (1, 4)}
    yield backends
    for backend in backends.values():
        backend.close()


@pytest.fixture(params=[1, 4], ids=["parallel=1", "parallel=4"])
def backend(engines, request):
    return engines[request.param]


@pytest.fixture
def batched(engines):
    return engines[4]


# --- the engine, end to end -------------------------------------------------------------------------
def test_auto_gives_fitting_calls_or_a_plain_answer(backend):
    # that "auto" leaves both branches open is the schema's business: the test of answer_schema
    for a in asyncio.run(run_all(backend, [ask(p) for p in PROMPTS])):
        check_answer(a, {"get_weather", "add"})


def test_required_always_gives_calls(backend):
    for a in asyncio.run(run_all(backend, [ask(p, choice="required", gen=CALLS_GEN) for p in PROMPTS])):
        check_calls(a, {"get_weather", "add"})


def test_a_named_tool_gives_only_that_tool(batched):
    for a in asyncio.run(run_all(batched, [ask(p, choice="add", gen=CALLS_GEN) for p in PROMPTS[:3]])):
        check_calls(a, {"add"})


def test_nested_parameters_fit_their_model(batched):
    trip = ask("Plan a trip from Lyon to Rome for 3 days.", (PLAN, ADD), "plan_trip", gen=CALLS_GEN)
    (a,) = asyncio.run(run_all(batched, [trip]))
    check_calls(a, {"plan_trip"})
    if not cut_off(a):
        assert all(isinstance(Trip.model_validate_json(c.arguments), Trip) for c in a.tool_calls)


def test_with_a_schema_the_answer_is_json_of_it(batched):
    requests = [ask(p, schema=ANSWER) for p in ("What is 2 plus 3?", "How many legs has a cat?")]
    for a in asyncio.run(run_all(batched, requests)):
        check_answer(a, {"get_weather", "add"}, schema=ANSWER)


CONVERSATION = [
    {"role": "user", "content": "What is 2 plus 3 and 10 plus 4?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}},
        {"id": "call_2", "type": "function", "function": {"name": "add", "arguments": '{"a": 10, "b": 4}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    {"role": "tool", "tool_call_id": "call_2", "content": "14"},
]


def test_a_conversation_with_tool_results_goes_on(batched):
    with_tools, without = asyncio.run(run_all(batched, [ask(CONVERSATION), ask(CONVERSATION, tools=())]))
    check_answer(with_tools, {"get_weather", "add"})
    # no tools now: a plain answer (history shown), which may run to max_tokens but never fails
    assert not isinstance(without, BaseException), without
    assert isinstance(without.text, str) and not without.tool_calls and without.finish in ("stop", "length")
    assert (without.finish == "length") == (without.tokens_out == GEN.max_tokens)


def test_streaming_gives_the_response_as_decoded_and_calls_whole(backend):
    async def stream(request):
        return [d async for d in backend.run_stream(request, call())]

    async def outcome(awaitable):
        try:
            return await awaitable
        except ModelCallError as e:
            assert cut_off(e), e
            return e

    async def main():
        calls = await outcome(stream(ask(PROMPTS[0], choice="required", gen=CALLS_GEN)))
        answers = [(await outcome(stream(ask(p))), await outcome(backend.run(ask(p), call()))) for p in CHATTY]
        return calls, answers

    calls, answers = asyncio.run(main())
    if not cut_off(calls):
        assert all(isinstance(d, Delta) for d in calls)
        assert [d.text for d in calls] == [""] and calls[-1].finish == "tool_calls"
        check_calls(join(calls), {"get_weather", "add"})
    for deltas, whole in answers:  # calls, or an answer in words: the model's choice
        if cut_off(whole):
            assert cut_off(deltas)  # streamed or not, the same greedy answer
            continue
        assert join(deltas) == whole  # the pieces add up to the answer given whole
        if not whole.tool_calls and len(whole.text.split()) > 1:  # a response shows as it is decoded
            assert len([d for d in deltas if d.text]) > 1 and deltas[-1].finish in ("stop", "length")


def test_an_answer_cut_in_its_calls_fails_and_says_so(batched):
    short = Generation(max_tokens=6, temperature=0)
    with pytest.raises(ModelCallError, match="max_tokens=6") as info:
        asyncio.run(batched.run(ask(PROMPTS[0], choice="required", gen=short), call()))
    assert cut_off(info.value)  # what the other tests allow as this outcome


def test_a_tool_choice_naming_no_tool_is_refused(batched):
    with pytest.raises(ConfigError, match="tool_choice='search' names no tool"):
        asyncio.run(batched.run(ask(PROMPTS[0], choice="search"), call()))


# --- the format, without the model ----------------------------------------------------------------
def test_the_schema_is_the_union_and_narrows_with_tool_choice():
    auto = answer_schema(ask("hi"))
    calls, response = auto["anyOf"]
    assert response["properties"] == {"response": {"type": "string"}}
    items = calls["properties"]["tool_calls"]
    assert items["minItems"] == 1 and len(items["items"]["anyOf"]) == 2
    jsonschema.validate({"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}, auto)
    jsonschema.validate({"response": "hello"}, auto)
    for bad in ({"tool_calls": []}, {"tool_calls": [{"name": "add", "arguments": {"a": 1}}]},
                {"tool_calls": [{"name": "nope", "arguments": {}}]}, {"response": 3}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, auto)
    required = answer_schema(ask("hi", choice="required"))
    assert "anyOf" not in required and len(required["properties"]["tool_calls"]["items"]["anyOf"]) == 2
    named = answer_schema(ask("hi", choice="add"))
    assert named["properties"]["tool_calls"]["items"]["properties"]["name"]["const"] == "add"
    with_schema = answer_schema(ask("hi", schema=ANSWER))
    assert with_schema["anyOf"][1]["properties"]["response"] == ANSWER


def test_definitions_of_two_tools_never_collide():
    other = tool("book", "Book a place.", Place.model_json_schema() | {"$defs": {"Place": {"type": "integer"}}})
    schema = answer_schema(ask("hi", tools=(PLAN, other)))
    jsonschema.validate({"tool_calls": [
        {"name": "plan_trip", "arguments": {"start": {"city": "a", "country": "b"},
                                            "end": {"city": "c", "country": "d"}, "days": 2}},
        {"name": "book", "arguments": {"city": "a", "country": "b"}}]}, schema)
    assert {"t0_Place", "t1_Place"} <= set(schema["$defs"])


def test_tool_turns_are_rendered_for_a_template_without_tools():
    messages = chat_messages(ask([{"role": "system", "content": "Be brief."}, *CONVERSATION]))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert all(isinstance(m["content"], str) for m in messages)
    assert messages[0]["content"].startswith("Be brief.\n\nYou have these tools:\n- get_weather(city: string")
    assert messages[2]["content"] == "Calling add(a=2, b=3), add(a=10, b=4)."
    assert "add(a=2, b=3) returned: 5\nadd(a=10, b=4) returned: 14" in messages[3]["content"]
    assert chat_messages(ask("hi"))[0]["role"] == "system"  # the note makes its own system turn
    assert chat_messages(ask(CONVERSATION, tools=()))[0]["role"] == "user"  # no tools: no note


def test_a_response_is_decoded_piece_by_piece():
    raw = '{ "response": "caf\\u00e9 \\"ok\\" \\ud83d\\ude00\\nend" }'
    expected = json.loads(raw)["response"]
    for size in (1, 2, 5):
        reader = ResponseText()
        text = "".join(reader.feed(raw[i:i + size]) for i in range(0, len(raw), size))
        assert text == expected
    reader = ResponseText()
    assert reader.feed('{ "tool_calls": [{"name": "a"') == "" and reader.feed(', "arguments": {}}]}') == ""


def test_answers_are_read_back():
    text, calls, finish = read_answer('{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}',
                                      ask("hi"), "stop")
    assert (text, finish) == ("", "tool_calls") and calls[0].name == "add"
    assert json.loads(calls[0].arguments) == {"a": 1, "b": 2} and calls[0].id.startswith("call_")
    assert read_answer('{"response": "hi"}', ask("hi"), "stop") == ("hi", (), "stop")
    assert read_answer('{"response": {"answer": 5}}', ask("hi", schema=ANSWER), "stop") == ('{"answer": 5}', (), "stop")
    assert read_answer('{"response": "cut he', ask("hi"), "length") == ("cut he", (), "length")
    assert read_answer('{"resp', ask("hi"), "length") == ("", (), "length")


def test_a_tool_without_parameters_takes_an_empty_object():
    now = {"type": "function", "function": {"name": "now", "description": "The time."}}
    schema = answer_schema(ask("hi", tools=(now,), choice="required"))
    jsonschema.validate({"tool_calls": [{"name": "now", "arguments": {}}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tool_calls": [{"name": "now", "arguments": {"x": 1}}]}, schema)
    with pytest.raises(ConfigError, match='tool_choice="required" needs tools'):
        answer_schema(ask("hi", tools=(), choice="required"))


# --- the tool loop through Model ------------------------------------------------------------------
def test_the_embedded_model_calls_a_tool_whose_arguments_fit(embedded_model):
    seen: list[tuple[str, int]] = []

    def forecast(city: str, days: int) -> str:
        """The weather forecast for a city, for a number of days."""
        seen.append((city, days))
        return "sunny, 24 C"

    async def main():
        async with Timeline(display=False) as tl:
            try:
                answer = await embedded_model.generate_async("What will the weather be in Paris for 3 days?",
                                                             tools=[forecast], tool_choice="required", max_tokens=256,
                                                             temperature=0, max_steps=3)
            except (MaxStepsError, ModelCallError) as e:  # a tiny model may keep calling; each call must still fit
                answer = e
        return answer, tl

    answer, tl = asyncio.run(main())
    assert isinstance(answer, (str, MaxStepsError)) or cut_off(answer), answer
    assert seen or cut_off(answer)  # "required": the first turn calls, unless cut off in its calls
    assert all(isinstance(city, str) and isinstance(days, int) for city, days in seen)
    tools = [r for r in tl.records() if r["method"] == "tool"]
    assert len(tools) == len(seen) and all(r["status"] == "done" and r["name"] == "forecast" for r in tools)


def test_the_embedded_model_streams_an_answer_after_a_tool(embedded_model):
    def now() -> str:
        """The current time."""
        return "12:30"

    async def main():
        pieces, ended = [], None
        async with Timeline(display=False) as tl:
            try:
                async for piece in embedded_model.stream_async("What time is it?", tools=[now], tool_choice="now",
                                                               max_tokens=256, temperature=0, max_steps=3):
                    pieces.append(piece)
            except (MaxStepsError, ModelCallError) as e:  # a tiny model may keep calling
                ended = e
        return pieces, ended, tl

    pieces, ended, tl = asyncio.run(main())
    assert ended is None or isinstance(ended, MaxStepsError) or cut_off(ended), ended
    assert all(isinstance(p, str) for p in pieces)
    tools = [r["status"] for r in tl.records() if r["method"] == "tool"]
    assert tools[:1] == ["done"] or cut_off(ended)  # the named tool is called first, unless cut off in its calls
    assert "tool_calls" not in "".join(pieces)  # the tool turn is not shown as text
