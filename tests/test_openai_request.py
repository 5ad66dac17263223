"""The pure parts of the OpenAI backend: request building, response parsing, backoff."""

from __future__ import annotations

import pytest

from llmnb import ModelCallError
from llmnb.backends.base import Delta, Generation, Request, ToolCall
from llmnb.backends.openai.failures import Failure, retry_delay, tools_refused
from llmnb.backends.openai.wire import (
    StreamedAnswer,
    build_request,
    event_data,
    parse_chunk,
    parse_response,
    stream_request,
)
from llmnb.structured import target_for

SCHEMA = target_for(list[str]).schema


def test_plain_request_omits_unset_settings():
    kwargs = build_request("m", Request(({"role": "user", "content": "hi"},), Generation(temperature=0)), "json_schema")
    assert kwargs == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def test_structured_request_uses_json_schema():
    kwargs = build_request("m", Request(({"role": "user", "content": "hi"},), schema=SCHEMA), "json_schema")
    assert kwargs["response_format"]["type"] == "json_schema"
    assert kwargs["response_format"]["json_schema"]["schema"] == SCHEMA
    assert kwargs["messages"] == [{"role": "user", "content": "hi"}]


def test_fallback_puts_schema_in_json_mode_and_system_message():
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"})
    kwargs = build_request("m", Request(messages, schema=SCHEMA), "json_object")
    assert kwargs["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert kwargs["messages"][0]["content"].startswith("Be brief.\nReply with one JSON object")
    assert '"array"' in kwargs["messages"][0]["content"]
    assert len(kwargs["messages"]) == 2


def test_parse_response_reads_text_and_usage():
    body = {"choices": [{"message": {"content": "hello"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    completion = parse_response(body)
    assert (completion.text, completion.tokens_in, completion.tokens_out) == ("hello", 5, 2)
    assert completion.finish == "length"
    # a server that sends no usage and a null content (a refusal or a tool call)
    bare = parse_response({"choices": [{"message": {"content": None}, "finish_reason": "stop"}]})
    assert (bare.text, bare.tokens_in, bare.tokens_out, bare.finish) == ("", None, None, "stop")
    for empty in ({"choices": [], "usage": None}, {"error": "no such model"}, ["not", "an", "object"]):
        with pytest.raises(ModelCallError, match="no choices"):
            parse_response(empty)


def test_retry_delay_honours_retry_after_and_backs_off():
    assert retry_delay(1, "2") == 2.0
    assert retry_delay(1, "1000") == 30.0  # capped
    first, third = retry_delay(1, None), retry_delay(3, None)
    assert 0.4 <= first <= 0.6 and 1.6 <= third <= 2.4
    assert 0.4 <= retry_delay(1, "Wed, 21 Oct 2015 07:28:00 GMT") <= 0.6


def test_streamed_request_asks_for_usage_unless_refused():
    kwargs = build_request("m", Request(({"role": "user", "content": "hi"},)), "json_schema")
    assert stream_request(kwargs, True) == {**kwargs, "stream": True, "stream_options": {"include_usage": True}}
    assert stream_request(kwargs, False) == {**kwargs, "stream": True}


def test_events_and_chunks_read_text_finish_and_usage():
    assert [event_data(line) for line in ("", ": keep-alive", "event: message", "data: [DONE]")] == [None] * 4
    assert event_data('data: {"choices": []}') == {"choices": []}

    def chunk(delta, finish=None):
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    assert parse_chunk(chunk({"role": "assistant", "content": ""})) == Delta()
    assert parse_chunk(chunk({"content": " word"})) == Delta(" word")
    assert parse_chunk(chunk({}, "length")) == Delta(finish="length")
    usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}
    assert parse_chunk(usage) == Delta(tokens_in=7, tokens_out=3)


CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
WEATHER = {"type": "function", "function": {"name": "weather", "description": "The weather", "parameters": CITY}}
ASK = ({"role": "user", "content": "Weather in Paris?"},)


@pytest.mark.parametrize(("choice", "sent"), [
    (None, None), ("auto", "auto"), ("required", "required"), ("none", "none"),
    ("weather", {"type": "function", "function": {"name": "weather"}}),
])
def test_tools_and_tool_choice_go_as_openai_has_them(choice, sent):
    body = build_request("m", Request(ASK, tools=(WEATHER,), tool_choice=choice), "json_schema")
    assert body["tools"] == [WEATHER] and body.get("tool_choice") == sent
    assert "parallel_tool_calls" not in body  # the server's default
    assert "tools" not in build_request("m", Request(ASK, tool_choice="required"), "json_schema")


def test_tool_turns_pass_through_and_a_call_only_turn_carries_empty_text():
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    turns = (*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
             {"role": "tool", "tool_call_id": "c1", "content": "sunny"})
    messages = build_request("m", Request(turns, tools=(WEATHER,)), "json_schema")["messages"]
    assert messages == [turns[0], {"role": "assistant", "content": "", "tool_calls": [call]}, turns[2]]
    assert turns[1]["content"] is None  # the request itself is left as it was


def test_fields_an_endpoint_refuses_are_left_out():
    body = build_request("m", Request(ASK, Generation(seed=3, temperature=0)), "json_schema", drop=("seed",))
    assert body == {"model": "m", "messages": list(ASK), "temperature": 0}


def test_answers_with_tool_calls_give_them_whole():
    def answer(calls, finish="tool_calls"):
        message = {"role": "assistant", "content": None, "tool_calls": calls}
        return {"choices": [{"message": message, "finish_reason": finish}]}

    calls = [{"id": "a", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}},
             {"id": "b", "type": "function", "function": {"name": "now", "arguments": ""}}]
    completion = parse_response(answer(calls))
    assert completion.text == "" and completion.finish == "tool_calls"
    assert completion.tool_calls == (ToolCall("a", "weather", '{"city": "Oslo"}'), ToolCall("b", "now", "{}"))
    # Servers that say "stop", send the arguments as an object or leave out the id
    odd = parse_response(answer([{"function": {"name": "weather", "arguments": {"city": "Rome"}}}], "stop"))
    assert odd.finish == "tool_calls" and odd.tool_calls == (ToolCall("call_0", "weather", '{"city": "Rome"}'),)
    assert parse_response(answer(calls, "length")).finish == "length"  # cut off: the caller must see it


def test_streamed_tool_calls_are_put_together_by_index():
    def chunk(delta, finish=None):
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def piece(index, arguments, id=None, name=None):  # the first fragment of a call brings its id and name
        call = {"index": index, "function": {"arguments": arguments}}
        if id:
            call.update(id=id, type="function")
            call["function"]["name"] = name
        return chunk({"tool_calls": [call]})

    answer = StreamedAnswer()
    chunks = [chunk({"role": "assistant", "content": None}),
              piece(0, "", id="a", name="weather"), piece(1, '{"ci', id="b", name="weather"),
              piece(0, '{"city"'), piece(1, 'ty": "Rome"}'), piece(0, ': "Oslo"}'), chunk({}, "tool_calls")]
    deltas = [answer.delta(c) for c in chunks]
    assert all(d.tool_calls == () for d in deltas[:-1]) and deltas[-1].finish == "tool_calls"
    assert deltas[-1].tool_calls == (ToolCall("a", "weather", '{"city": "Oslo"}'),
                                     ToolCall("b", "weather", '{"city": "Rome"}'))
    assert answer.rest() is None  # given once
    cut = StreamedAnswer()
    cut.delta(piece(0, "{}", id="z", name="now"))
    assert cut.rest() == Delta(finish="tool_calls", tool_calls=(ToolCall("z", "now", "{}"),))


def test_a_refusal_of_tools_is_told_apart():
    said = tools_refused(Failure("HTTP 400: 'tools' is not supported", 400))
    assert said.startswith("the server does not support tool calls (HTTP 400") and "tools=" in said
    vllm = "HTTP 400: \"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set"
    assert tools_refused(Failure(vllm, 400)) and tools_refused(Failure("HTTP 500: tools param requires --jinja", 500))
    assert tools_refused(Failure("HTTP 400: max_tokens too large", 400)) is None
    assert tools_refused(Failure("HTTP 400: Invalid schema for function 'f': 'required' is missing", 400)) is None
    assert tools_refused(Failure("HTTP 503: tool server overloaded", 503, retryable=True)) is None
