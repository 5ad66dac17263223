"""Tool calls on the wire, over real HTTP to the fault server on 127.0.0.1: the backend sends
`tools` and `tool_choice`, reads the calls of an answer (whole, or streamed in fragments), sends
tool results back, and says so plainly when a server takes no tools."""

from __future__ import annotations

import asyncio
import json

import pytest

from llmnb import ModelCallError, Models
from llmnb.backends.base import Generation, Request, ToolCall, join
from llmnb.backends.openai.limits import estimate_tokens
from llmnb.backends.openai.wire import build_request
from llmnb.events import Call


def tool(name: str, properties: dict) -> dict:
    parameters = {"type": "object", "properties": properties, "required": list(properties)}
    return {"type": "function", "function": {"name": name, "description": f"The {name} tool", "parameters": parameters}}


WEATHER = tool("weather", {"city": {"type": "string"}, "days": {"type": "integer"}})
ADD = tool("add", {"a": {"type": "number"}, "b": {"type": "number"}})
TOOLS = (WEATHER, ADD)
ASK = ({"role": "user", "content": "Weather in Oslo, and 2 + 3?"},)
TYPES = {"string": str, "integer": int, "number": (int, float)}


def backend(server):
    return Models.create("openai:test", base_url=server.base_url, api_key="k").backend


def complete(server, request: Request):
    return asyncio.run(backend(server).run(request, Call("generate", "tools", "openai:test")))


def streamed(server, request: Request):
    async def go():
        return [d async for d in backend(server).run_stream(request, Call("stream", "tools", "openai:test"))]
    return asyncio.run(go())


def fits(call: ToolCall, spec: dict) -> bool:
    """Whether the call's arguments are a JSON object of the tool's parameter types."""
    arguments, properties = json.loads(call.arguments), spec["function"]["parameters"]["properties"]
    return set(arguments) == set(properties) and all(
        isinstance(arguments[k], TYPES[p["type"]]) for k, p in properties.items())


def results_for(calls: tuple[ToolCall, ...]) -> tuple[dict, ...]:
    """The follow-up turn: the assistant's calls, then one result per call."""
    asked = {"role": "assistant", "content": None, "tool_calls": [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]}
    return (*ASK, asked, *({"role": "tool", "tool_call_id": c.id, "content": f"result of {c.name}"} for c in calls))


def test_a_turn_asks_for_several_tools_with_arguments_that_fit(fault_server):
    completion = complete(fault_server, Request(ASK, tools=TOOLS))
    assert completion.finish == "tool_calls" and completion.text == ""
    assert [c.name for c in completion.tool_calls] == ["weather", "add"]
    assert all(fits(c, spec) for c, spec in zip(completion.tool_calls, TOOLS, strict=True))
    assert len({c.id for c in completion.tool_calls}) == 2
    sent = fault_server.bodies[-1]
    assert sent["tools"] == list(TOOLS) and "tool_choice" not in sent and "parallel_tool_calls" not in sent


def test_tool_results_reach_the_server_and_the_answer_is_text(fault_server):
    calls = complete(fault_server, Request(ASK, tools=TOOLS)).tool_calls
    answer = complete(fault_server, Request(results_for(calls), tools=TOOLS))
    assert answer.finish == "stop" and answer.tool_calls == ()
    assert answer.text == f"Tool results: {calls[0].id}=result of weather; {calls[1].id}=result of add"
    sent = fault_server.bodies[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert sent[1]["tool_calls"][1]["function"] == {"name": "add", "arguments": calls[1].arguments}


def test_tool_choice_forces_one_tool_or_none(fault_server):
    forced = complete(fault_server, Request(ASK, tools=TOOLS, tool_choice="add"))
    assert [c.name for c in forced.tool_calls] == ["add"]
    assert fault_server.bodies[-1]["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    complete(fault_server, Request(ASK, tools=TOOLS, tool_choice="required"))
    assert fault_server.bodies[-1]["tool_choice"] == "required"
    assert complete(fault_server, Request(ASK, tools=TOOLS, tool_choice="none")).tool_calls == ()


def test_scripted_turns_give_many_calls_of_one_tool(fault_server):
    fault_server.script_tools([("add", {"a": n, "b": 1}) for n in range(5)])
    calls = complete(fault_server, Request(ASK, tools=TOOLS)).tool_calls
    assert [json.loads(c.arguments)["a"] for c in calls] == list(range(5)) and len({c.id for c in calls}) == 5


def test_streamed_calls_come_whole_in_one_delta(fault_server):
    deltas = streamed(fault_server, Request(ASK, Generation(max_tokens=50), tools=TOOLS))
    with_calls = [d for d in deltas if d.tool_calls]
    assert len(with_calls) == 1 and all(d.text == "" for d in deltas)
    whole = join(deltas)
    assert whole.finish == "tool_calls" and whole.tokens_out is not None
    assert [c.name for c in whole.tool_calls] == ["weather", "add"]
    assert all(fits(c, spec) for c, spec in zip(whole.tool_calls, TOOLS, strict=True))
    # The final answer after the results streams as text, piece by piece
    answer = streamed(fault_server, Request(results_for(whole.tool_calls), tools=TOOLS))
    assert sum(bool(d.text) for d in answer) > 3 and join(answer).text.startswith("Tool results: ")


def test_streamed_fragments_of_long_arguments_join_up(fault_server):
    long = "a city whose name takes many fragments to send " * 5
    fault_server.answers.tool_arguments["weather"] = {"city": long, "days": 3}
    calls = join(streamed(fault_server, Request(ASK, tools=TOOLS))).tool_calls
    assert json.loads(calls[0].arguments) == {"city": long, "days": 3} and fits(calls[1], ADD)


@pytest.mark.parametrize("stream", [False, True])
def test_a_server_without_tool_calls_says_so(fault_server, stream):
    fault_server.refuse_tools = True
    request = Request(ASK, tools=TOOLS)
    with pytest.raises(ModelCallError, match="does not support tool calls") as info:
        streamed(fault_server, request) if stream else complete(fault_server, request)
    assert info.value.status == 400 and "tools=" in str(info.value)
    assert complete(fault_server, Request(ASK)).text == fault_server.reply  # without tools it still answers


def test_tools_count_in_the_rate_limit_estimate():
    calls = (ToolCall("c1", "weather", json.dumps({"city": "x" * 400})),)
    plain, with_tools = (estimate_tokens(build_request("m", Request(m, tools=t), "json_schema"))
                         for m, t in ((ASK, ()), (results_for(calls), TOOLS)))
    assert with_tools > plain + 100  # the specs and the 400-character arguments are read as prompt
