"""What the demo server answers, without a server: a request's JSON in, the answer's JSON or stream
chunks out (llmnb.demo_answers). The server around it is tested through llmnb's clients."""

from __future__ import annotations

import json

import jsonschema

from llmnb.demo_answers import PROMPT_TOKENS, REPLY, Answers, tokens

ASK = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "default": "Lisbon"}, "days": {"type": "integer"}}}}}
NOW = {"type": "function", "function": {"name": "now"}}


def test_a_plain_answer_whole_and_streamed():
    answer = Answers().answer({"model": "m", "messages": ASK}, 7)
    whole = answer.completion()
    assert whole["id"] == "demo-7" and whole["model"] == "m" and whole["object"] == "chat.completion"
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": REPLY}
    assert whole["choices"][0]["finish_reason"] == "stop"
    n = len(tokens(REPLY))
    assert whole["usage"] == {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": n, "total_tokens": PROMPT_TOKENS + n}
    chunks = answer.chunks(include_usage=True)
    assert len(chunks) == 1 + n + 1 + 1  # role, a chunk per token, the finish, the usage
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == REPLY
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"] == whole["usage"]
    assert len(answer.chunks()) == len(chunks) - 1  # no usage unless asked


def test_max_tokens_cuts_the_answer():
    answer = Answers().answer({"messages": ASK, "max_tokens": 3}, 1)
    assert answer.pieces == tokens(REPLY)[:3] and answer.finish == "length"


def test_a_schema_gets_a_value_of_it():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "tags": {"type": "array", "items": {
        "$ref": "#/$defs/Tag"}}}, "required": ["n", "tags"], "$defs": {"Tag": {"enum": ["a", "b"]}}}
    body = {"messages": ASK, "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
    jsonschema.validate(json.loads(Answers().text(body)), schema)


def test_tools_are_asked_for_then_their_results_answered():
    answers = Answers(tool_rounds=2)
    first = answers.answer({"messages": ASK, "tools": [WEATHER, NOW]}, 1)
    message = first.completion()["choices"][0]["message"]
    assert first.finish == "tool_calls" and first.pieces == [] and message["content"] is None
    assert message["tool_calls"] == first.tool_calls
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in first.tool_calls] == [
        ("call_1_0", "weather", {"city": "Lisbon", "days": 1}), ("call_1_1", "now", {})]
    turn = [*ASK, {"role": "assistant", "tool_calls": first.tool_calls},
            *({"role": "tool", "tool_call_id": c["id"], "content": f"r{i}"} for i, c in enumerate(first.tool_calls))]
    assert answers.answer({"messages": turn, "tools": [WEATHER, NOW]}, 2).tool_calls  # tool_rounds=2: asks again
    twice = [*turn, {"role": "assistant", "tool_calls": first.tool_calls}, {"role": "tool", "content": "r2"}]
    last = answers.answer({"messages": twice, "tools": [WEATHER, NOW]}, 3)
    assert last.tool_calls == [] and "".join(last.pieces) == "The tools said: r2"
    named = {"type": "function", "function": {"name": "now"}}
    assert [c["function"]["name"] for c in answers.tool_calls({"messages": ASK, "tools": [WEATHER, NOW],
                                                               "tool_choice": named}, 4)] == ["now"]
    assert answers.tool_calls({"messages": ASK, "tools": [WEATHER], "tool_choice": "none"}, 5) == []


def test_streamed_tool_calls_come_in_fragments_that_join_by_index():
    answer = Answers().answer({"messages": ASK, "tools": [WEATHER, NOW]}, 1)
    fragments = [d for c in answer.chunks() for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert len(fragments) > len(answer.tool_calls)  # arguments in pieces
    joined: dict[int, dict] = {}
    for f in fragments:
        call = joined.setdefault(f["index"], {"id": f.get("id"), "name": f["function"].get("name"), "arguments": ""})
        call["arguments"] += f["function"]["arguments"]
    assert [(c["id"], c["name"], c["arguments"]) for c in joined.values()] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in answer.tool_calls]
