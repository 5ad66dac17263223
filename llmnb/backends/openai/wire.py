"""The chat completions wire format, as pure functions: the JSON body of a request, the parts of
an answer and of a streamed answer's chunks. No I/O here, so all of it is tested without a server."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ...errors import ModelCallError
from ..base import Completion, Delta, Request, ToolCall

# Requests go through the SDK client's documented `post(path, cast_to=httpx2.Response, body=...)`
# rather than `chat.completions.create`: the client's auth, headers, timeouts and errors all apply,
# without the SDK converting every request dict against its typed parameters and every answer into
# pydantic models (together a third of the client's CPU time with 300 calls at once; llmnb's
# request is plain JSON already and it reads four fields of the answer).
CHAT_PATH = "/chat/completions"


# Request.tool_choice values sent as they are; any other is the name of the one tool to call.
TOOL_MODES = ("auto", "none", "required")


def build_request(model: str, request: Request, schema_mode: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON body of the chat completions request for `request`, without the fields in `drop`
    (those an endpoint refuses).

    schema_mode "json_schema" uses OpenAI structured outputs; "json_object" is the fallback for
    servers without them: JSON mode, with the schema both in the system message (so any model
    knows the shape) and in `response_format` (which llama.cpp's server uses as a grammar).
    Tools go as OpenAI's `tools` and `tool_choice`; `parallel_tool_calls` is left to the server.
    """
    body: dict[str, Any] = {"model": model, "messages": [with_text(m) for m in request.messages]}
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
    if request.tools:
        body["tools"] = list(request.tools)
        if request.tool_choice is not None:
            body["tool_choice"] = tool_choice(request.tool_choice)
    for field in drop:
        body.pop(field, None)
    return body


def tool_choice(choice: str) -> str | dict[str, Any]:
    """OpenAI's `tool_choice` for a Request's: a mode as it is, a tool's name as that one function."""
    return choice if choice in TOOL_MODES else {"type": "function", "function": {"name": choice}}


def with_text(message: dict) -> dict:
    """`message` as sent: an assistant turn of only tool calls carries "" as its content, not
    None. OpenAI takes either; llama-cpp-python's server refuses None (HTTP 500, "Input should be
    a valid string") and its chat templates fail without the field."""
    if message.get("content") is None and message.get("tool_calls"):
        return {**message, "content": ""}
    return message


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
    message = choice.get("message") or {}
    calls = tuple(tool_call(c.get("id"), c.get("function") or {}, i)
                  for i, c in enumerate(message.get("tool_calls") or ()))
    return Completion(
        text=message.get("content") or "",
        tokens_in=usage.get("prompt_tokens"),
        tokens_out=usage.get("completion_tokens"),
        finish=tool_finish(choice.get("finish_reason"), calls),
        tool_calls=calls,
    )


def tool_call(call_id: str | None, function: dict, index: int) -> ToolCall:
    """One tool call of an answer. Some servers send the arguments as a JSON object rather than
    its text, none at all, or no id: the arguments become text ("{}" for none) and the id the
    call's place in the turn."""
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {})
    if not arguments.strip():  # a tool without parameters, its arguments left out
        arguments = "{}"
    return ToolCall(id=call_id or f"call_{index}", name=function.get("name") or "", arguments=arguments)


def tool_finish(finish: str | None, calls: tuple[ToolCall, ...]) -> str | None:
    """The finish reason: "tool_calls" when the answer asks for tools (some servers say "stop"),
    unless it was cut off at max_tokens, which the caller must see."""
    return "tool_calls" if calls and finish != "length" else finish


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



class StreamedAnswer:
    """Reads the chunks of one streamed answer in order. Text passes as it comes; tool calls are
    put together from their fragments (each chunk's `delta.tool_calls` holds pieces keyed by
    `index`: the id and name with a call's first piece, its arguments in pieces to join) and given
    whole, with the finish reason."""

    def __init__(self) -> None:
        self._parts: dict[int, dict[str, Any]] = {}

    def delta(self, chunk: dict) -> Delta:
        self._add(chunk)
        delta = parse_chunk(chunk)
        if delta.finish and self._parts:
            calls = self._take()
            delta = replace(delta, finish=tool_finish(delta.finish, calls), tool_calls=calls)
        return delta

    def rest(self) -> Delta | None:
        """The tool calls of a stream that ended without a finish reason, if any."""
        calls = self._take()
        return Delta(finish="tool_calls", tool_calls=calls) if calls else None

    def _add(self, chunk: dict) -> None:
        choice = (chunk.get("choices") or [{}])[0]
        for piece in (choice.get("delta") or {}).get("tool_calls") or ():
            part = self._parts.setdefault(piece.get("index", len(self._parts)), {"id": None, "name": "", "args": []})
            function = piece.get("function") or {}
            part["id"] = part["id"] or piece.get("id")
            part["name"] = part["name"] or function.get("name") or ""
            if function.get("arguments") is not None:
                part["args"].append(str(function["arguments"]))

    def _take(self) -> tuple[ToolCall, ...]:
        calls = tuple(tool_call(p["id"], {"name": p["name"], "arguments": "".join(p["args"])}, i)
                      for i, p in sorted(self._parts.items()))
        self._parts.clear()
        return calls
