"""The tool loop of one model call: model turn -> the turn's tool calls, run at once -> their
results back as "tool" messages -> the next model turn, until the model answers without tools;
then, for `extract` and `classify`, the answer's validation and the re-asks of `retries=`.

Each turn is its own request, sent through the model's `_send` / `_send_stream`, so an answer
cache there sees every turn as the request it is (tools run for real each time). `tool_choice`
holds for the first turn only, so a forced call cannot repeat forever. A model still asking for
tools at its `max_steps`-th turn raises `MaxStepsError` instead of running them.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .backends.base import Completion, Delta, Generation, Request, ToolCall
from .errors import ConfigError, ExtractError, MaxStepsError
from .events import Call
from .structured import Target
from .thread import Thread
from .tools import Toolbox, run_calls

REASK = "That answer was not valid: {error}. Answer again, only with JSON that matches the schema."
_ids = itertools.count(1)


@dataclass
class Tally:
    """A call's token counts so far (None: not known)."""

    tokens_in: int | None = None
    tokens_out: int | None = None

    def add(self, turn: Delta) -> None:
        """Add a turn's counts (a count stays None while no turn reported one)."""
        if turn.tokens_in is not None:
            self.tokens_in = (self.tokens_in or 0) + turn.tokens_in
        if turn.tokens_out is not None:
            self.tokens_out = (self.tokens_out or 0) + turn.tokens_out


class ToolLoop:
    """One call's turns: the messages so far, the tools, what the model asked for and the tokens
    its turns took."""

    asked: Counter[str]  # how often the model asked for each tool: made at the first tool turn, not for every call

    def __init__(self, messages: tuple[dict, ...], call: Call, toolbox: Toolbox, *, thread: Thread | None = None,
                 streamed: bool = False):
        """Start from the prompt's `messages`, as the model call `call` (the tools' parent). With
        a `thread` (the prompt), the exchange is appended to it by `record`."""
        self.messages, self.start, self.call, self.toolbox = messages, len(messages), call, toolbox
        self.thread = thread
        self.thread_length = len(thread) if thread is not None else 0
        self.steps = 0
        # a call answered whole counts from 0; a stream's counts stay None until a turn gives one
        self.tally = Tally() if streamed else Tally(0, 0)

    @property
    def exchange(self) -> tuple[dict, ...]:
        """The messages the call added: assistant turns asking for tools, the tools' results (and
        the re-asks of `retries=`)."""
        return self.messages[self.start:]

    def request(self, gen: Generation, schema: dict | None) -> Request:
        return Request(self.messages, gen, schema=schema, tools=self.toolbox.specs,
                       tool_choice=self.toolbox.first_choice if self.steps == 0 else None)

    async def answer(self, send: Callable[[Request], Awaitable[Completion]], gen: Generation,
                     target: Target | None = None, retries: int = 0) -> Any:
        """The call's value: the text of the turn that answers without tools or, with a `target`,
        its validated value. An answer that does not validate goes back to the model with what was
        wrong, up to `retries` times, and the loop runs again from there."""
        schema = target.schema if target else None
        for attempt in range(retries + 1):
            while True:  # model turns until one answers without tools
                completion = await send(self.request(gen, schema))
                self.tally.add(completion)
                if not self.wants_tools(completion):
                    break
                await self.run_tools(completion)
            if target is None:
                return completion.text
            try:
                return parse(target, completion, gen)
            except ExtractError as e:
                if attempt == retries:
                    raise
                self.reask(completion, e)
        raise AssertionError("unreachable: checked_retries allows no count below 0")

    def reask(self, completion: Completion, error: ExtractError) -> None:
        """Send the answer that did not validate back with what was wrong (`retries=`)."""
        self.messages += ({"role": "assistant", "content": completion.text},
                          {"role": "user", "content": REASK.format(error=error)})

    async def stream(self, send: Callable[[Request], AsyncGenerator[Delta, None]],
                     gen: Generation) -> AsyncGenerator[str, None]:
        """`answer` for a stream: the text of every turn as it arrives. `send` yields a turn's
        deltas, then the `Completion` they add up to. A turn that asks for tools seldom writes
        text; when it does (a preamble), a blank line parts it from the next."""
        apart = False
        while True:
            wrote = False
            async with contextlib.aclosing(send(self.request(gen, None))) as pieces:
                async for piece in pieces:
                    if isinstance(piece, Completion):  # the turn, whole, after its pieces
                        turn = piece
                    elif piece.text:
                        if apart:
                            yield "\n\n"
                            apart = False
                        wrote = True
                        yield piece.text
            self.tally.add(turn)
            if not self.wants_tools(turn):
                return
            await self.run_tools(turn)
            apart = apart or wrote

    def wants_tools(self, completion: Completion) -> bool:
        """Whether the turn asks for tools; if not, it is the answer."""
        return bool(completion.tool_calls) and bool(self.toolbox)

    async def run_tools(self, completion: Completion) -> None:
        """Run the tools `completion` asks for and add the turn and the results to the messages."""
        if not self.steps:
            self.asked = Counter()
        self.steps += 1
        calls = [c if c.id else ToolCall(f"call_{next(_ids)}", c.name, c.arguments) for c in completion.tool_calls]
        self.asked.update(c.name for c in calls)
        if self.steps >= self.toolbox.max_steps:
            asked = ", ".join(f"{name} ({n}x)" for name, n in self.asked.most_common())
            raise MaxStepsError(f"the model still asked for tools at its turn {self.steps} of max_steps="
                                f"{self.toolbox.max_steps} (it asked for {asked}); raise max_steps=, or check what "
                                "the tools return", asked=dict(self.asked), messages=self.messages)
        self.call.emit("tools")  # the call's row shows the wait between its turns
        results = await run_calls(calls, self.toolbox, self.call)
        turn = {"role": "assistant", "content": completion.text or None,
                "tool_calls": [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                               for c in calls]}
        self.messages += (turn, *({"role": "tool", "tool_call_id": c.id, "content": r}
                                  for c, r in zip(calls, results, strict=True)))

    def record(self) -> None:
        """Append the exchange to the prompt when it is a Thread (see `Thread`)."""
        if self.thread is None or not self.steps:
            return
        if len(self.thread) != self.thread_length:
            warnings.warn("the Thread changed while a call with tools ran on it, so its tool turns were not added; "
                          "run one call at a time on a Thread", RuntimeWarning, stacklevel=3)
            return
        self.thread._extend(self.exchange)


def parse(target: Target, completion: Completion, gen: Generation) -> Any:
    """The validated value of a structured answer. An answer cut off at max_tokens is said to be
    so: its JSON error ("EOF while parsing") would not tell what to change."""
    try:
        return target.parse(completion.text)
    except ExtractError as e:
        if completion.finish != "length":
            raise
        limit = f"max_tokens={gen.max_tokens}" if gen.max_tokens is not None else "the server's length limit"
        raise ExtractError(f"the answer was cut off at {limit} before it was complete; raise max_tokens= "
                           "(the raw text is in .raw)", raw=e.raw, target=e.target) from e


def checked_retries(retries: Any) -> int:
    """`retries=`, checked before anything is sent: a count below 0 would ask the model nothing."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be a whole number of 0 or more (times to ask again), not {retries!r}")
    return retries
