"""What the demo server answers, with no server around it: a chat request's JSON in, the answer's
JSON out (a whole completion, or the chunks of a stream), as an OpenAI-compatible server sends
them. Pure and deterministic, so the server (llmnb.demo_server) only adds time and HTTP.

A plain request gets a fixed sentence; a request with a JSON schema (`response_format`) a small
value of that schema. Sent `tools`, it asks for every tool once in one turn (or only the one
`tool_choice` names), with arguments made from each tool's parameter schema (a parameter's
default where it has one), and answers the next turn with what the tools returned;
`tool_rounds=N` makes it ask N turns in a row. Streamed, the tool calls come as OpenAI sends
them: in fragments, by index.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

REPLY = "I'm doing well, thank you. How about you?"
PROMPT_TOKENS = 10  # what every answer reports as the prompt's size


def tokens(text: str) -> list[str]:
    """The demo's tokens: each word with the space before it, so they join back into the text."""
    return re.findall(r"\s*\S+", text)


@dataclass
class Answer:
    """One answer: the tokens of its text (or the tool calls it asks for instead) and its finish
    ("stop", "length" when cut at max_tokens, "tool_calls"), as OpenAI's JSON or stream chunks."""

    id: str
    model: str
    pieces: list[str]
    finish: str
    tool_calls: list[dict] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def usage(self) -> dict:
        n = len(self.pieces)
        return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": n, "total_tokens": PROMPT_TOKENS + n}

    def completion(self) -> dict:
        """The answer whole: a chat.completion."""
        message = {"role": "assistant", "content": None if self.tool_calls else "".join(self.pieces),
                   **({"tool_calls": self.tool_calls} if self.tool_calls else {})}
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "finish_reason": self.finish, "message": message}], "usage": self.usage}

    def chunks(self, include_usage: bool = False) -> list[dict]:
        """The answer streamed: a role chunk, one chunk per token (or per tool-call fragment), the
        finish, and the usage when asked (`stream_options.include_usage`). [DONE] is the server's."""
        base = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        chunks = [chunk({"role": "assistant", "content": ""}), *(chunk({"content": p}) for p in self.pieces),
                  *(chunk({"tool_calls": [piece]}) for piece in call_fragments(self.tool_calls)),
                  chunk({}, self.finish)]
        return chunks + ([{**base, "choices": [], "usage": self.usage}] if include_usage else [])


class Answers:
    """The demo's answers to chat requests.

    `answer` is the one entry point. A subclass (a test server that scripts its answers) may
    override `text` (what a plain answer says) and `tool_calls` (which calls a turn asks for, made
    with `calls`); they run on the server's event loop, so they must return at once, never block."""

    def __init__(self, reply: str = REPLY, tool_rounds: int = 1):
        self.reply, self.tool_rounds = reply, tool_rounds

    def answer(self, body: dict, number: int, text: str | None = None) -> Answer:
        """The answer to request `body`, the server's request `number` (it names the answer and its
        calls); `text` says this instead of `self.text(body)` (for servers that misbehave on purpose)."""
        calls = self.tool_calls(body, number)
        pieces = [] if calls else tokens(self.text(body) if text is None else text)
        finish = "tool_calls" if calls else "stop"
        if body.get("max_tokens") is not None and len(pieces) > body["max_tokens"]:
            pieces, finish = pieces[: body["max_tokens"]], "length"
        return Answer(f"demo-{number}", body.get("model", "demo"), pieces, finish, calls)

    def text(self, body: dict) -> str:
        """The reply text: a fixed sentence (after tool results: what they said), or a small JSON
        value of the requested schema."""
        fmt = body.get("response_format") or {}
        schema = fmt.get("schema") or fmt.get("json_schema", {}).get("schema")
        if schema is None:
            results = tool_results(body.get("messages") or [])
            return f"The tools said: {' | '.join(results)}" if results else self.reply
        return json.dumps(self.example(schema, schema.get("$defs", {})))

    def tool_calls(self, body: dict, number: int) -> list[dict]:
        """The tool calls to ask for: every tool once (or the one tool_choice names), until
        `tool_rounds` turns have asked."""
        tools, choice = body.get("tools") or [], body.get("tool_choice")
        asked = sum(1 for m in body.get("messages") or [] if m.get("role") == "assistant" and m.get("tool_calls"))
        if not tools or choice == "none" or asked >= self.tool_rounds:
            return []
        named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        functions = [t["function"] for t in tools if named in (None, t["function"]["name"])]
        return calls(number, [(f["name"], self.arguments_for(f)) for f in functions])

    def arguments_for(self, function: dict):
        """Arguments that fit a tool's parameter schema (its parameters' defaults where given)."""
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        return self.example(schema, schema.get("$defs", {}))

    def example(self, schema: dict, defs: dict):
        """A small value of `schema` (`defs`: its $defs)."""
        if "default" in schema:
            return schema["default"]
        if "$ref" in schema:
            return self.example(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        if "enum" in schema:
            return schema["enum"][0]
        if "anyOf" in schema:
            return self.example(schema["anyOf"][0], defs)
        kind = schema.get("type")
        if kind == "object":
            return {k: self.example(v, defs) for k, v in schema.get("properties", {}).items()}
        if kind == "array":
            return [self.example(schema.get("items", {}), defs)]
        return {"integer": 1, "number": 1.0, "boolean": True, "null": None}.get(str(kind), self.reply)


def calls(number: int, named: list[tuple[str, object]]) -> list[dict]:
    """Tool calls of request `number`, one per (name, arguments), with ids that never repeat."""
    return [{"id": f"call_{number}_{i}", "type": "function",
             "function": {"name": name, "arguments": json.dumps(arguments)}}
            for i, (name, arguments) in enumerate(named)]


def tool_results(messages: list[dict]) -> list[str]:
    """The contents of the tool results after the last assistant turn that asked for tools."""
    results: list[str] = []
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            results = []
        elif m.get("role") == "tool":
            results.append(str(m.get("content")))
    return results


def call_fragments(calls: list[dict], parts: int = 3) -> list[dict]:
    """Streamed tool-call deltas as OpenAI sends them: each call's id and name first, then its
    arguments in `parts` fragments, the calls' fragments interleaved (told apart by index)."""
    out = [{"index": i, "id": c["id"], "type": "function", "function": {"name": c["function"]["name"], "arguments": ""}}
           for i, c in enumerate(calls)]
    for k in range(parts):
        for i, c in enumerate(calls):
            text = c["function"]["arguments"]
            size = -(-len(text) // parts)
            if text[k * size:(k + 1) * size]:
                out.append({"index": i, "function": {"arguments": text[k * size:(k + 1) * size]}})
    return out
