"""The Batch API's files, read and written without a server: both forms servers write (OpenAI's,
OGX's), failed lines with and without a status, input files cut at the provider's limits."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from llmnb.backends.base import Completion, Generation, Request
from llmnb.runs.batch_lines import Failure, file_text, files_of, line_for, read_lines, validation_errors

BODY = {"choices": [{"finish_reason": "stop", "message": {"content": "hi"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def test_a_line_names_its_request_by_the_cache_key_and_carries_the_chat_body():
    line = json.loads(line_for("k1", "gpt-4o-mini", Request(({"role": "user", "content": "hi"},), Generation(5))))
    assert line["custom_id"] == "k1" and line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    assert line["body"] == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.mark.parametrize("body", [BODY, json.dumps(BODY)], ids=["object (OpenAI)", "JSON string (OGX)"])
def test_an_answer_is_read_whether_its_body_is_an_object_or_a_string(body):
    text = json.dumps({"custom_id": "k", "response": {"status_code": 200, "body": body}, "error": None})
    assert read_lines(text) == {"k": Completion("hi", 3, 1, "stop")}


def test_failed_lines_keep_the_servers_message_with_or_without_a_status():
    lines = [
        {"custom_id": "a", "error": {"type": "request_failed", "message": "Error code: 400 - bad"}},  # OGX
        {"custom_id": "b", "response": {"status_code": 429, "body": {"error": {"message": "slow down"}}}},  # OpenAI
        {"custom_id": "c", "response": {"status_code": 200, "body": {"choices": []}}},
    ]
    found = read_lines("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert found["a"] == Failure("Error code: 400 - bad")
    assert found["b"] == Failure("slow down", 429)
    assert isinstance(found["c"], Failure) and "no choices" in found["c"].message


def test_input_files_are_cut_at_the_line_and_byte_limits_in_order():
    lines = [f"line {i:03}" for i in range(10)]  # 8 bytes and a newline each
    assert files_of(lines, 4, 10_000) == [lines[:4], lines[4:8], lines[8:]]
    assert files_of(lines, 100, 27) == [lines[:3], lines[3:6], lines[6:9], lines[9:]]
    assert all(len(file_text(f)) <= 27 for f in files_of(lines, 100, 27))
    with pytest.raises(ValueError, match="over the provider's 5 bytes"):
        files_of(lines, 100, 5)


def test_a_job_that_failed_validation_says_which_line_and_why():
    errors = SimpleNamespace(data=[SimpleNamespace(code="invalid", line=3, message="model not found")])
    assert validation_errors(errors) == "line 3: model not found"
    assert validation_errors({"data": [{"code": "empty_file"}]}) == "empty_file"
    assert validation_errors(None) == "the server gave no reason"
