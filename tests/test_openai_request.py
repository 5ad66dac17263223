"""The pure parts of the OpenAI backend: request building, response parsing, backoff."""

from __future__ import annotations

import pytest

from llmnb import ModelCallError
from llmnb.backends.base import Delta, Generation, Request
from llmnb.backends.openai.failures import retry_delay
from llmnb.backends.openai.wire import (
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
