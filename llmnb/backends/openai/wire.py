"""The chat completions wire format, as pure functions: the JSON body of a request, the parts of
an answer and of a streamed answer's chunks. No I/O here, so all of it is tested without a server."""

from __future__ import annotations

import json
from typing import Any

from ...errors import ModelCallError
from ..base import Completion, Delta, Request

# Requests go through the SDK client's documented `post(path, cast_to=httpx2.Response, body=...)`
# rather than `chat.completions.create`: the client's auth, headers, timeouts and errors all apply,
# without the SDK converting every request dict against its typed parameters and every answer into
# pydantic models (together a third of the client's CPU time with 300 calls at once; llmnb's
# request is plain JSON already and it reads four fields of the answer).
CHAT_PATH = "/chat/completions"


def build_request(model: str, request: Request, schema_mode: str) -> dict[str, Any]:
    """The JSON body of the chat completions request for `request`.

    schema_mode "json_schema" uses OpenAI structured outputs; "json_object" is the fallback for
    servers without them: JSON mode, with the schema both in the system message (so any model
    knows the shape) and in `response_format` (which llama.cpp's server uses as a grammar).
    """
    body: dict[str, Any] = {"model": model, "messages": list(request.messages)}
    body.update({k: v for k, v in vars(request.gen).items() if v is not None})
    if request.schema is not None:
        if schema_mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.schema, "strict": False},
            }
        else:
            body["response_format"] = {"type": "json_object", "schema": request.schema}
            body["messages"] = with_schema_instruction(body["messages"], request.schema)
    return body


def with_schema_instruction(messages: list[dict], schema: dict) -> list[dict]:
    note = f"Reply with one JSON object that matches this JSON schema: {json.dumps(schema)}"
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n" + note}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def stream_request(body: dict[str, Any], usage: bool) -> dict[str, Any]:
    """`body` for a streamed request; with `usage` the last chunk carries the token counts."""
    return {**body, "stream": True, **({"stream_options": {"include_usage": True}} if usage else {})}


def parse_response(body: Any) -> Completion:
    """A chat completion's JSON body (a dict): its text, token counts and finish reason."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices:
        raise ModelCallError("the server answered with no choices; check that the model name is right")
    choice, usage = choices[0], body.get("usage") or {}
    return Completion(
        text=(choice.get("message") or {}).get("content") or "",
        tokens_in=usage.get("prompt_tokens"),
        tokens_out=usage.get("completion_tokens"),
        finish=choice.get("finish_reason"),
    )


def event_data(line: str) -> dict | None:
    """The JSON of one line of a server-sent event stream, or None for a line that carries none
    (blank, a comment, an `event:` name, the closing `[DONE]`)."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    return None if data == "[DONE]" else json.loads(data)


def parse_chunk(chunk: dict) -> Delta:
    """One streamed chunk: a piece of text, the finish reason, or (last, with include_usage) the counts."""
    choice = (chunk.get("choices") or [{}])[0]
    usage = chunk.get("usage") or {}
    return Delta(
        text=(choice.get("delta") or {}).get("content") or "",
        tokens_in=usage.get("prompt_tokens"),
        tokens_out=usage.get("completion_tokens"),
        finish=choice.get("finish_reason"),
    )
