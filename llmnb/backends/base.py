"""What every backend shares: the request and completion records and the slot/start protocol that
reports a call's waiting and running phases."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, fields
from pathlib import Path

from ..events import Call


@dataclass(frozen=True)
class Generation:
    """How an answer is generated. None means "not set here": a call's settings are laid over the
    model's (`Models.create(temperature=...)`), then over the backend's own defaults."""

    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None

    def over(self, base: Generation) -> Generation:
        """These settings, with the ones left None taken from `base`."""
        return Generation(**{f.name: getattr(base, f.name) if getattr(self, f.name) is None else getattr(self, f.name)
                             for f in fields(self)})


@dataclass(frozen=True)
class ToolCall:
    """One tool call the model asked for: `arguments` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Request:
    """One chat completion to make. `schema` (a JSON schema) asks for structured output. `tools`
    are OpenAI-style function specs ({"type": "function", "function": {"name", "description",
    "parameters"}}); `tool_choice` is None (the server's default, "auto"), "required" or a tool's
    name. Messages may hold assistant turns with "tool_calls" and "tool" results, as OpenAI's."""

    messages: tuple[dict, ...]
    gen: Generation = Generation()
    schema: dict | None = None
    tools: tuple[dict, ...] = ()
    tool_choice: str | None = None


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer. The last one may carry no text, only the counts and the finish.
    A backend assembles streamed tool calls itself and gives them whole, in one delta."""

    text: str = ""
    tokens_in: int | None = None
    tokens_out: int | None = None
    finish: str | None = None  # "stop", "length" (cut off at max_tokens), "tool_calls", or None when unknown
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Completion(Delta):
    """A whole answer: a `Delta` with all its text (what a stream of deltas adds up to, see `join`)."""

    text: str  # a whole answer always says what its text is


def join(deltas: Iterable[Delta]) -> Completion:
    """The completion a stream of deltas adds up to (counts and finish: the last ones given)."""
    text: list[str] = []
    calls: list[ToolCall] = []
    tokens_in, tokens_out, finish = None, None, None
    for d in deltas:
        text.append(d.text)
        calls.extend(d.tool_calls)
        tokens_in = d.tokens_in if d.tokens_in is not None else tokens_in
        tokens_out = d.tokens_out if d.tokens_out is not None else tokens_out
        finish = d.finish or finish
    return Completion("".join(text), tokens_in, tokens_out, finish, tuple(calls))


class Backend(ABC):
    """A model server. Subclasses give a slot (what a call waits for), `complete` and `stream` (the work).

    Both receive the call's reporter: they emit `first_token` once, with the first piece of text,
    and may emit `progress` (output tokens so far) as pieces arrive; `run` and `run_stream` emit
    the rest of the call's life around them.
    """

    name: str
    # What the answers and the price depend on besides the model's name (the answer cache's key,
    # the price table): a local model's weights file (free to run; the cache keys by its content),
    # or a remote model's server.
    path: Path | None = None
    url: str | None = None
    defaults = Generation()  # the backend's own generation defaults, under the model's and the call's

    async def run(self, request: Request, call: Call) -> Completion:
        call.emit("waiting")
        async with self.slot():
            call.emit("started")
            return await self.complete(request, call)

    async def run_stream(self, request: Request, call: Call) -> AsyncGenerator[Delta, None]:
        """`run` for a streamed call: the slot is held for the whole stream. Leaving early
        (`aclose()`) closes the backend's stream, which ends the request or frees the sequence."""
        call.emit("waiting")
        async with self.slot():
            call.emit("started")
            async with contextlib.aclosing(self.stream(request, call)) as deltas:
                async for delta in deltas:
                    yield delta

    @abstractmethod
    def slot(self) -> AbstractAsyncContextManager:
        """What a call must hold to run: a concurrency semaphore, or a local model's lock."""

    def close(self) -> None:  # noqa: B027 (a backend that holds nothing needs no close)
        """Free what the backend holds (a local model's weights and threads); remote ones hold nothing."""

    @abstractmethod
    async def complete(self, request: Request, call: Call) -> Completion:
        """Make one completion, with its `finish`. Raise `ModelCallError` for failures the caller
        cannot fix by retrying."""

    @abstractmethod
    def stream(self, request: Request, call: Call) -> AsyncGenerator[Delta, None]:
        """Make one completion as an async generator of `Delta`s (`async def` with `yield`); the
        last one carries the token counts and `finish` when known. Closed before its end
        (`aclose()`), it stops the work: the connection closes, the sequence is freed. A failure
        after text was yielded raises `ModelCallError` with `.partial`, never a silent retry."""
