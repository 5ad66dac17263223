"""The tool loop of one model call: model turn -> the turn's tool calls, run at once -> their
results back as "tool" messages -> the next model turn, until the model answers without tools.

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
from typing import Any

from .backends.base import Completion, Delta, Generation, Request, ToolCall
from .errors import ConfigError, MaxStepsError
from .events import Call
from .thread import Thread
from .tools import Toolbox, run_calls

MAX_STEPS = 10  # model turns of one call's tool loop, as openai-agents' max_turns
_ids = itertools.count(1)


class ToolLoop:
    """One call's turns: the messages so far, the tools, and what the model asked for."""

    def __init__(self, prompt: Any, tools: Any = (), tool_choice: str = "auto", max_steps: int = MAX_STEPS):
        """Checks the tools and settings before the call is made."""
        self.toolbox = Toolbox(tools or ())
        if max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1 (model turns in the tool loop), not {max_steps}")
        self.choice = self.toolbox.choice(tool_choice)
        self.max_steps = max_steps
        self.thread = prompt if isinstance(prompt, Thread) else None
        self.thread_length = len(prompt) if self.thread is not None else 0
        self.messages: tuple[dict, ...] = ()
        self.start = 0
        self.call: Call | None = None  # the model call: the tools' parent
        self.steps = 0
        self.asked: Counter[str] = Counter()

    def begin(self, messages: tuple[dict, ...], call: Call) -> Call:
        """Start from the prompt's `messages`, as the model call `call`."""
        self.messages, self.start, self.call = messages, len(messages), call
        return call

    @property
    def exchange(self) -> tuple[dict, ...]:
        """The messages the call added: assistant turns asking for tools, the tools' results (and
        the re-asks of `retries=`)."""
        return self.messages[self.start:]

    def request(self, gen: Generation, schema: dict | None) -> Request:
        return Request(self.messages, gen, schema=schema, tools=self.toolbox.specs,
                       tool_choice=self.choice if self.steps == 0 else None)

    async def complete(self, send: Callable[[Request], Awaitable[Completion]], gen: Generation,
                       schema: dict | None, tally) -> Completion:
        """Model turns until one answers without tools; that turn's completion. Token counts of
        every turn add up in `tally`."""
        while True:
            completion = await send(self.request(gen, schema))
            count(tally, completion.tokens_in, completion.tokens_out)
            if not await self.ran_tools(completion):
                return completion

    async def stream(self, send: Callable[[Request], AsyncGenerator[Delta, None]], gen: Generation,
                     tally) -> AsyncGenerator[str, None]:
        """`complete` for a stream: the text of every turn as it arrives. A turn that asks for
        tools seldom writes text; when it does (a preamble), a blank line parts it from the next."""
        apart = False
        while True:
            text: list[str] = []
            calls: list[ToolCall] = []
            sizes: tuple[int | None, int | None] = (None, None)  # the turn's counts so far: the last hold
            async with contextlib.aclosing(send(self.request(gen, None))) as deltas:
                async for delta in deltas:
                    if delta.tokens_in is not None or delta.tokens_out is not None:
                        sizes = (delta.tokens_in, delta.tokens_out)
                    calls.extend(delta.tool_calls)
                    if delta.text:
                        if apart:
                            yield "\n\n"
                            apart = False
                        text.append(delta.text)
                        yield delta.text
            count(tally, *sizes)
            if not await self.ran_tools(Completion("".join(text), tool_calls=tuple(calls))):
                return
            apart = apart or bool(text)

    async def ran_tools(self, completion: Completion) -> bool:
        """Run the tools `completion` asks for and add the turn and the results to the messages;
        False when it asks for none (the answer)."""
        if not completion.tool_calls or not self.toolbox:
            return False
        self.steps += 1
        calls = [c if c.id else ToolCall(f"call_{next(_ids)}", c.name, c.arguments) for c in completion.tool_calls]
        self.asked.update(c.name for c in calls)
        if self.steps >= self.max_steps:
            asked = ", ".join(f"{name} ({n}x)" for name, n in self.asked.most_common())
            raise MaxStepsError(f"the model still asked for tools at its turn {self.steps} of max_steps="
                                f"{self.max_steps} (it asked for {asked}); raise max_steps=, or check what the "
                                "tools return", asked=dict(self.asked), messages=self.messages)
        assert self.call is not None, "begin() makes the call first"
        self.call.emit("tools")  # the call's row shows the wait between its turns
        results = await run_calls(calls, self.toolbox, self.call)
        turn = {"role": "assistant", "content": completion.text or None,
                "tool_calls": [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                               for c in calls]}
        self.messages += (turn, *({"role": "tool", "tool_call_id": c.id, "content": r}
                                  for c, r in zip(calls, results, strict=True)))
        return True

    def record(self) -> None:
        """Append the exchange to the prompt when it is a Thread (see `Thread`)."""
        if self.thread is None or not self.steps:
            return
        if len(self.thread) != self.thread_length:
            warnings.warn("the Thread changed while a call with tools ran on it, so its tool turns were not added; "
                          "run one call at a time on a Thread", RuntimeWarning, stacklevel=3)
            return
        self.thread._extend(self.exchange)


def count(tally, tokens_in: int | None, tokens_out: int | None) -> None:
    """Add a turn's token counts to the call's (a count stays None while no turn reported one)."""
    if tokens_in is not None:
        tally.tokens_in = (tally.tokens_in or 0) + tokens_in
    if tokens_out is not None:
        tally.tokens_out = (tally.tokens_out or 0) + tokens_out
