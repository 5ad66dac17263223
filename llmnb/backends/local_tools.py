"""Tool calls on a local model whose chat template knows no tools, in llama.cpp's "generic" format.

llama.cpp's server answers a request with tools, for templates it has no tool parser for (SmolLM2's
ChatML among them), with one generation under a grammar: the answer is JSON, either
{"tool_calls": [{"name": ..., "arguments": {...}}, ...]} or {"response": "..."}, and a system note
tells the model so. The same here: `answer_schema` is the union (the grammar sees to it that every
call names a tool and its arguments fit that tool's parameters), `chat_messages` adds the note and
writes earlier tool calls and results as turns the template can show, and `read_answer` turns the
JSON back into tool calls or the answer's text. Everything here is pure: no llama.cpp, no asyncio.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from ..errors import ConfigError, ModelCallError
from .base import Request, ToolCall

NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
MAX_CALLS = 8  # calls in one answer: a tiny model may otherwise repeat a call until max_tokens
# The system note, worded for SmolLM2-135M. Shown a placeholder ({"response": "<text>"}, "your
# reply"), it often wrote the placeholder back; the answer described in words it did not. Of the
# wordings tried (llama.cpp's own among them), a sentence on when to call a tool made it pick a
# fitting tool most often, though still not reliably: under "auto" the choice is the model's,
# only the calls' shape is the grammar's.
TOOLS_NOTE = "You have these tools:\n{tools}\n"
CALL_FORMAT = '{{"tool_calls": [{{"name": "{name}", "arguments": {{...}}}}]}}'
AUTO_NOTE = ("When the user asks something a tool can do, call the tool with JSON: {calls}. "
             'For anything else, reply in JSON with your answer to the user as the "response" {what}.')
REPLY = "string"
SCHEMA_REPLY = "value, in the JSON format asked for"
REQUIRED_NOTE = "Call one or more of them with JSON: {calls}."
NAMED_NOTE = "Call the tool {name} with JSON: {calls}."
CALLING = "Calling {calls}."
RESULT = "{call} returned: {content}"
RESULTS = "Tool results:\n{results}\nAnswer my question with these results."


def function(tool: dict) -> dict:
    """The {"name", "description", "parameters"} of an OpenAI-style tool spec."""
    return tool.get("function", tool)


def chosen_tools(request: Request) -> list[dict]:
    """The functions the answer may call: every tool, or only the one `tool_choice` names."""
    functions = [function(tool) for tool in request.tools]
    choice = request.tool_choice
    if choice in (None, "auto", "required"):
        if choice == "required" and not functions:
            raise ConfigError('tool_choice="required" needs tools; pass tools= or drop tool_choice')
        return functions
    named = [f for f in functions if f["name"] == choice]
    if not named:
        names = ", ".join(f["name"] for f in functions) or "none given"
        raise ConfigError(f"tool_choice={choice!r} names no tool of this request (tools: {names}); "
                          'pass one of those names, "auto" or "required"')
    return named


def may_respond(request: Request) -> bool:
    """Whether the answer may be a response instead of tool calls."""
    return request.tool_choice in (None, "auto")


def answer_schema(request: Request) -> dict:
    """The JSON schema of the answer to a request with tools (see the module's docstring). With
    a `schema` too, the response is a value of that schema rather than a string."""
    defs: dict = {}
    calls = []
    for i, f in enumerate(chosen_tools(request)):
        parameters = _strict(f.get("parameters") or NO_PARAMETERS)
        calls.append(_object({"name": {"type": "string", "const": f["name"]},
                              "arguments": _hoist(parameters, f"t{i}_", defs)}))
    call = calls[0] if len(calls) == 1 else {"anyOf": calls}
    schema = _object({"tool_calls": {"type": "array", "items": call, "minItems": 1, "maxItems": MAX_CALLS}})
    if may_respond(request):
        response = {"type": "string"} if request.schema is None else _hoist(request.schema, "r_", defs)
        schema = {"anyOf": [schema, _object({"response": response})]}
    if defs:
        schema["$defs"] = defs
    return schema


def _object(properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _strict(parameters: dict) -> dict:
    """The parameters' schema, closed to arguments it does not name: the grammar otherwise lets a
    tiny model invent keys (the answer still fits the schema as given)."""
    if parameters.get("type") == "object" and "additionalProperties" not in parameters:
        return {**parameters, "additionalProperties": False}
    return parameters


def _hoist(schema: dict, prefix: str, defs: dict) -> dict:
    """`schema` ready to sit inside the answer's schema: its definitions move to the root (where
    "#/$defs/..." references look), renamed with `prefix` so that two tools' never collide."""
    own = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    if not own:
        return schema
    body = {k: v for k, v in schema.items() if k not in ("$defs", "definitions")}
    renamed = _rename_refs({"body": body, "defs": own}, prefix)
    defs.update({prefix + name: value for name, value in renamed["defs"].items()})
    return renamed["body"]


def _rename_refs(node, prefix: str):
    if isinstance(node, dict):
        return {k: (re.sub(r"^#/(\$defs|definitions)/", "#/$defs/" + prefix, v) if k == "$ref" and isinstance(v, str)
                    else _rename_refs(v, prefix)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename_refs(v, prefix) for v in node]
    return node


# --- the prompt -----------------------------------------------------------------------------------
def note(request: Request) -> str:
    """The system note that tells the model the tools and the answer's format."""
    functions = chosen_tools(request)
    tools = "\n".join(f"- {_signature(f)}" + (f": {f['description'].strip()}" if f.get("description") else "")
                      for f in functions)
    if may_respond(request):
        reply = REPLY if request.schema is None else SCHEMA_REPLY
        how = AUTO_NOTE.format(calls=CALL_FORMAT.format(name="tool name"), what=reply)
    elif request.tool_choice == "required":
        how = REQUIRED_NOTE.format(calls=CALL_FORMAT.format(name="tool name"))
    else:
        name = functions[0]["name"]
        how = NAMED_NOTE.format(name=name, calls=CALL_FORMAT.format(name=name))
    return TOOLS_NOTE.format(tools=tools) + how


def _signature(f: dict) -> str:
    """A tool as the model reads it: name(argument: type, ...)."""
    properties = (f.get("parameters") or NO_PARAMETERS).get("properties", {})
    return f"{f['name']}(" + ", ".join(f"{name}: {_type(p)}" for name, p in properties.items()) + ")"


def _type(p: dict) -> str:
    if "enum" in p:
        return " | ".join(json.dumps(v) for v in p["enum"])
    if p.get("type") == "array":
        return f"list of {_type(p.get('items', {}))}"
    if isinstance(p.get("type"), str):
        return p["type"]
    if "anyOf" in p:
        return " | ".join(_type(q) for q in p["anyOf"])
    return "object" if "$ref" in p else "value"


def chat_messages(request: Request) -> list[dict]:
    """The request's messages as the chat template can show them: with tools, the note joins the
    system message (or makes one); assistant tool calls become the JSON the model would have
    written, and a turn's tool results one user turn that names each call."""
    calls = {c.get("id"): function(c) for m in request.messages for c in m.get("tool_calls") or ()}
    messages: list[dict] = []
    for m in request.messages:
        if m["role"] != "tool":
            messages.append(_plain(m))
        elif messages and messages[-1].get("results"):
            messages[-1]["results"].append(_result(m, calls))
        else:
            messages.append({"role": "user", "results": [_result(m, calls)]})
    messages = [{"role": "user", "content": RESULTS.format(results="\n".join(m["results"]))} if "results" in m else m
                for m in messages]
    if request.tools:
        text = note(request)
        if messages and messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{text}"}
        else:
            messages.insert(0, {"role": "system", "content": text})
    return messages


def _plain(message: dict) -> dict:
    """A message with text content. An assistant's tool calls are told in words, not as the JSON
    the model wrote: shown its own JSON again, SmolLM2-135M wrote the same calls once more after
    their results, in every conversation tried, where in words it answered."""
    text = _text(message.get("content"))
    if message["role"] == "assistant" and message.get("tool_calls"):
        calls = ", ".join(_call(function(c)) for c in message["tool_calls"])
        text = f"{text}\n{CALLING.format(calls=calls)}".strip()
    return {"role": message["role"], "content": text}


def _result(message: dict, calls: dict[str, dict]) -> str:
    """One tool result as a line: the call (name and arguments) and what it returned."""
    call = calls.get(message.get("tool_call_id") or "") or {"name": message.get("name", "tool")}
    return RESULT.format(call=_call(call), content=_text(message.get("content")))


def _call(f: dict) -> str:
    """A call as the model reads it: name(argument=value, ...)."""
    arguments = _arguments(f.get("arguments"))
    shown = (", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())
             if isinstance(arguments, dict) else str(arguments))
    return f"{f['name']}({shown})"


def _arguments(arguments):
    """A call's arguments as a value (the wire carries them as JSON text)."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return arguments
    return {} if arguments is None else arguments


def _text(content) -> str:
    """Message content as text: OpenAI's content parts are joined, None is empty."""
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


# --- the answer -----------------------------------------------------------------------------------
def read_answer(raw: str, request: Request, finish: str) -> tuple[str, tuple[ToolCall, ...], str]:
    """(text, tool calls, finish) of the JSON answer the grammar allowed: a response's text, or the
    tool calls with finish "tool_calls". A response to a request with a `schema` is JSON text of
    that schema. An answer cut off at max_tokens gives what it has of a response (finish
    "length"); cut off in its tool calls, it cannot be run and fails."""
    if finish == "length":
        return _cut_answer(raw, request), (), finish
    answer = json.loads(raw)
    if "tool_calls" in answer:
        return "", tuple(ToolCall(f"call_{uuid.uuid4().hex[:24]}", c["name"],
                                  json.dumps(c["arguments"], ensure_ascii=False))
                         for c in answer["tool_calls"]), "tool_calls"
    response = answer["response"]
    return (response if request.schema is None else json.dumps(response, ensure_ascii=False)), (), finish


def _cut_answer(raw: str, request: Request) -> str:
    branch = _BRANCH.match(raw)
    if branch is None:
        return ""
    if branch.group(1) == "tool_calls":
        raise ModelCallError(f"the answer was cut off at max_tokens={request.gen.max_tokens} in the middle of its "
                             "tool calls; pass a larger max_tokens")
    if request.schema is not None:
        return raw[branch.end():]
    return ResponseText().feed(raw)


_BRANCH = re.compile(r'\{\s*"(tool_calls|response)"\s*:\s*')
_START = re.compile(r'\{\s*"response"\s*:\s*"')
_ESCAPE = re.compile(r'\\(["\\/bfnrt]|u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u[0-9a-fA-F]{4})')


class ResponseText:
    """The text of a {"response": "..."} answer, decoded while its JSON arrives piece by piece,
    so that a streamed answer shows as it is generated. Nothing comes out for tool calls."""

    def __init__(self, decode: bool = True):
        self.decode = decode  # False: only gather the raw JSON (a response that is not a string)
        self.raw = ""
        self._at: int | None = None  # where the response string's next character is in `raw`
        self._closed = False

    def feed(self, piece: str) -> str:
        """The response text that `piece` completes (empty while undecided or inside an escape)."""
        self.raw += piece
        if not self.decode:
            return ""
        if self._at is None:
            start = _START.match(self.raw)
            if start is None:
                return ""
            self._at = start.end()
        out, raw, at = [], self.raw, self._at
        while not self._closed and at < len(raw):
            ch = raw[at]
            if ch == '"':
                self._closed = True
            elif ch != "\\":
                out.append(ch)
                at += 1
            elif (escape := _ESCAPE.match(raw, at)) and not _may_pair(raw, at, escape):
                out.append(json.loads(f'"{escape.group()}"'))
                at = escape.end()
            else:
                break  # an escape not complete yet
        self._at = at
        return "".join(out)


def _may_pair(raw: str, at: int, escape: re.Match) -> bool:
    """Whether a high surrogate escape may still get its low half from the pieces to come."""
    text = escape.group()
    return (len(text) == 6 and text[2] in "dD" and text[3] in "89abAB"
            and len(raw) - at < 12 and "\\u".startswith(raw[at + 6:at + 8]))
