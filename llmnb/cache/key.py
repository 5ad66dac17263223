"""The cache's key and the answer's stored form: pure functions, no state.

The key is the request as sent, normalised: the model, the messages, every generation setting
("not set" is not any value), the schema, the tools and tool_choice, plus the backend's identity
(its base URL, or the GGUF file's content hash), a format version and a sample index. API keys,
timeouts and retries are not in it. The answer is kept raw, as JSON: text, tool calls, token
counts, finish.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from ..backends.base import Completion, Generation, Request, ToolCall

VERSION = 1  # of the key and the stored answer; a change makes older entries miss
# read field by field: dataclasses.asdict copies deeply and costs more than the rest of the key
GENERATION = tuple(f.name for f in dataclasses.fields(Generation))
COMPLETION = tuple(f.name for f in dataclasses.fields(Completion) if f.name != "tool_calls")


def request_text(identity: str, model: str, request: Request) -> str:
    """The request as a canonical JSON text: sorted keys, tuples as lists, whole floats as ints
    (temperature 0 and 0.0 are one setting); a setting left unset is null, unlike any value."""
    gen = {k: int(v) if isinstance(v, float) and v.is_integer() else v
           for k in GENERATION for v in (getattr(request.gen, k),)}
    body = {"format": VERSION, "backend": identity, "model": model, "messages": request.messages, "gen": gen,
            "schema": request.schema, "tools": request.tools, "tool_choice": request.tool_choice}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)


def base_key(identity: str, model: str, request: Request) -> str:
    """The hash of the request's canonical text: the key of every sample of that request."""
    # a local model is its file: the same weights under another path or alias give the same answers
    text = request_text(identity, "" if identity.startswith("gguf:") else model, request)
    return hashlib.sha256(text.encode()).hexdigest()


def sample_key(base: str, sample: int) -> str:
    """The key of sample `sample` of the request whose `base_key` is `base`."""
    return hashlib.sha256(f"{base}/{sample}".encode()).hexdigest()


def key_for(identity: str, model: str, request: Request, sample: int = 0) -> str:
    """The cache key of sample `sample` of `request` to the model named `model` (e.g.
    "openai:gpt-4o-mini") on a backend of identity `identity` (`await cache.identity(backend)`)."""
    return sample_key(base_key(identity, model, request), sample)


def completion_to_json(completion: Completion) -> str:
    """A completion as the JSON text the cache keeps (and a worker can send back)."""
    record = {k: getattr(completion, k) for k in COMPLETION}
    record["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in completion.tool_calls]
    return json.dumps(record, ensure_ascii=False)


def completion_from_json(text: str) -> Completion:
    """The Completion that `completion_to_json` wrote."""
    record = json.loads(text)
    calls = tuple(ToolCall(**c) for c in record.pop("tool_calls", ()))
    return Completion(**record, tool_calls=calls)
