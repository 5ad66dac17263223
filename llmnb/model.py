"""`Model`: generate, extract and classify. The `_async` methods are the implementation; the
plain names are generic synchronous wrappers made by `sync_twin`."""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from . import cache as answer_cache
from . import sync
from .backends.base import Backend, Completion, Delta, Generation, Request, join
from .events import Call, excerpt, reported
from .partial import partial_values
from .prices import Price
from .structured import Target, labels_type, target_for
from .thread import Thread, label_of, messages_for
from .tool_loop import ToolLoop, checked_retries
from .tools import MAX_STEPS, Toolbox

if TYPE_CHECKING:
    from .registry import Recipe

T = TypeVar("T")
Prompt = str | list[dict] | Thread

# Worded for the 135M embedded model: among the instructions tried, this one most often gave as
# many list items as asked; larger models follow any of them.
EXTRACT_INST = (
    'Reply with JSON only, in the form {"value": answer}. Give exactly what the user asks for, '
    "as many items as asked."
)
CLASSIFY_INST = 'Classify the user\'s text. Answer only with JSON: {{"value": one of {labels}}}.'


def sync_twin(async_method):
    """The blocking version of an `_async` method: same arguments, same result (an async
    generator's twin is a plain iterator), run by `llmnb.sync`."""
    bridge = sync.iterate if inspect.isasyncgenfunction(async_method) else sync.run

    @functools.wraps(async_method)
    def method(self, *args, **kwargs):
        return bridge(async_method(self, *args, **kwargs))

    method.__name__ = method.__qualname__ = async_method.__name__.removesuffix("_async")
    method.__doc__ = (f"Blocking twin of `{async_method.__name__}` (works in scripts and in notebook cells).\n\n"
                      f"{async_method.__doc__}")
    return method


class Model:
    """A chat model. Make one with `Models.create(...)`.

    Every method takes `tools=[f, g]`: functions the model may call (plain or `async def`, typed,
    their docstrings the descriptions; see `llmnb.tool`). The calls of one turn run at once, their
    results go back to the model, and so on until it answers without tools; a tool's error goes
    back as its result. `tool_choice` ("auto", "required" or a tool's name) holds for the first
    turn. A model still asking for tools at its `max_steps`-th turn raises `MaxStepsError`. On a
    `Thread` prompt, the tool turns are appended to the thread (see `Thread`).
    """

    def __init__(self, backend: Backend, *, defaults: Generation | None = None,
                 cache: answer_cache.Store | Literal[False] | None = None, price: Price | None = None):
        self.backend = backend
        self.name = backend.name
        self.defaults = defaults or Generation()  # Models.create(temperature=...): under each call's own settings
        # a Cache (Models.create opens its cache= option), False (none), or None: whatever
        # llmnb.use_cache set when a call is made
        self._cache = cache
        self.price = price  # USD per million tokens; None: not known
        self.recipe: Recipe | None = None  # how to make it again elsewhere: Models.create sets it
        # pydantic builds its schema machinery at its first use (0.15 s): here, with the model,
        # rather than on the event loop at the first extract or classify, blocking every task.
        target_for(str)

    def __repr__(self) -> str:
        return f"<llmnb.Model {self.name}>"

    @property
    def cache(self) -> answer_cache.Store | None:
        """The answer cache this model's calls use (Models.create(cache=...) or llmnb.use_cache), or None."""
        return answer_cache.default() if self._cache is None else None if self._cache is False else self._cache

    def close(self) -> None:
        """Free a local model's memory and threads now rather than when the model is dropped;
        later calls fail. Also `with Models.create(...) as model:`."""
        self.backend.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def generate_async(self, prompt: Prompt, *, inst: str | None = None, max_tokens: int | None = None,
                             temperature: float | None = None, seed: int | None = None, tools: Sequence = (),
                             max_steps: int = MAX_STEPS, tool_choice: str = "auto", refresh: bool = False) -> str:
        """Free text answer to `prompt`: a str, a list of {"role": ..., "content": ...} messages, or
        an `llmnb.Thread`. `inst` is a system instruction. `refresh=True` (on every method) asks
        the model again even when the answer cache holds an answer, and keeps the new one."""
        return await self._run("generate", prompt, inst=inst, gen=Generation(max_tokens, temperature, seed),
                               toolbox=Toolbox(tools, tool_choice, max_steps), refresh=refresh)

    async def extract_async(self, target: type[T] | Any, prompt: Prompt, *, inst: str | None = None,
                            retries: int = 0, max_tokens: int | None = None, temperature: float | None = None,
                            seed: int | None = None, tools: Sequence = (), max_steps: int = MAX_STEPS,
                            tool_choice: str = "auto", refresh: bool = False) -> T:
        """A value of type `target` (str, int, list[str], a dataclass, a pydantic model, ...) from `prompt`.

        The output is constrained to the type's JSON schema where the model allows and always
        validated; invalid output (or an answer cut off at max_tokens) raises `ExtractError` with
        the raw text. `retries=N` asks the model again up to N times, telling it what was wrong.
        With tools, the type is that of the final answer.
        """
        toolbox = Toolbox(tools, tool_choice, max_steps)
        return await self._run("extract", prompt, inst=inst, gen=Generation(max_tokens, temperature, seed),
                               toolbox=toolbox, retries=retries, refresh=refresh, target=target_for(target),
                               guide=EXTRACT_INST)

    async def classify_async(self, labels: Any, prompt: Prompt, *, inst: str | None = None,
                             retries: int = 0, max_tokens: int | None = None, temperature: float | None = None,
                             seed: int | None = None, tools: Sequence = (), max_steps: int = MAX_STEPS,
                             tool_choice: str = "auto", refresh: bool = False) -> Any:
        """One of `labels` (a list of strings, or an Enum class) for `prompt`.

        Unless a temperature is given (here or to Models.create), the most likely label is taken
        (temperature 0): a classification should not change from run to run.
        """
        label_type = labels_type(labels)
        is_enum = isinstance(label_type, type) and issubclass(label_type, enum.Enum)
        names = [m.value for m in label_type] if is_enum else get_args(label_type)
        guide = CLASSIFY_INST.format(labels=", ".join(f'"{n}"' for n in names))
        gen = Generation(max_tokens, temperature, seed).over(self.defaults).over(Generation(temperature=0))
        toolbox = Toolbox(tools, tool_choice, max_steps)
        return await self._run("classify", prompt, inst=inst, gen=gen, toolbox=toolbox, retries=retries,
                               refresh=refresh, target=target_for(label_type), guide=guide)

    async def stream_async(self, prompt: Prompt, *, inst: str | None = None, max_tokens: int | None = None,
                           temperature: float | None = None, seed: int | None = None, tools: Sequence = (),
                           max_steps: int = MAX_STEPS, tool_choice: str = "auto",
                           refresh: bool = False) -> AsyncIterator[str]:
        """The answer to `prompt` as it is written: an async iterator of text pieces.

        `async for piece in model.stream_async("..."): print(piece, end="")`. Leaving the loop
        early (break, an exception, aclose()) ends the call: a remote request's connection is
        closed, a local sequence stops. A remote model retries only before the first piece; a
        failure after it raises `ModelCallError` with the text so far in `.partial`. A remote
        model's `timeout=` bounds the wait for the first piece and each wait for the next. With
        tools, the turns that ask for tools run them and the answer streams.
        """
        turns = self._start("stream", prompt, inst, Toolbox(tools, tool_choice, max_steps))
        gen = self._over_defaults(Generation(max_tokens, temperature, seed))
        with reported(turns.call, turns.tally):
            pieces_of = turns.stream(lambda r: self._send_stream(r, turns.call, refresh), gen)
            async with contextlib.aclosing(pieces_of) as pieces:
                async for piece in pieces:
                    yield piece
            turns.record()

    async def extract_stream_async(self, target: type[T] | Any, prompt: Prompt, *, inst: str | None = None,
                                   retries: int = 0, max_tokens: int | None = None, temperature: float | None = None,
                                   seed: int | None = None, tools: Sequence = (), max_steps: int = MAX_STEPS,
                                   tool_choice: str = "auto", refresh: bool = False) -> AsyncIterator[T]:
        """`extract_async` as the answer is written: an async iterator of partial values of
        `target` (the fields written so far, the others None), the last one the complete,
        validated value, equal to what `extract_async` returns for the same request (the same
        cache key: a kept answer gives only that value).

        `async for person in model.extract_stream_async(Person, "..."): print(person)`. A partial
        value of a pydantic model or dataclass is an instance of a subclass with every field
        optional; lists grow item by item and strings letter by letter, and a number or a
        Literal's word shows once whole. A stream that breaks raises `ModelCallError` with the
        value read so far in `.partial_value` (and its text in `.partial`). With `retries=`, an
        answer that does not validate is asked for again and fills in again from the start.
        """
        toolbox, wanted, retries = Toolbox(tools, tool_choice, max_steps), target_for(target), checked_retries(retries)
        turns = self._start("extract", prompt, inst, toolbox, EXTRACT_INST)
        gen = self._over_defaults(Generation(max_tokens, temperature, seed))
        with reported(turns.call, turns.tally):
            values_of = partial_values(turns, lambda r: self._send_stream(r, turns.call, refresh), gen, wanted,
                                       retries)
            async with contextlib.aclosing(values_of) as values:
                async for value in values:
                    yield value
            turns.record()

    generate = sync_twin(generate_async)
    extract = sync_twin(extract_async)
    classify = sync_twin(classify_async)
    stream = sync_twin(stream_async)
    extract_stream = sync_twin(extract_stream_async)

    def __call__(self, prompt: Prompt, **kwargs) -> str:
        return self.generate(prompt, **kwargs)

    async def _send(self, request: Request, call: Call, refresh: bool = False) -> Completion:
        """One model turn: the one place a request reaches the backend. The answer cache sits here,
        inside any tool loop (tools always run for real) and above the backend's slots, rate
        limits and retries (a kept answer costs none of them)."""
        async with answer_cache.turn(self.cache, self.backend, request, refresh, call) as turn:
            completion = turn.hit or await self.backend.run(request, call)
            await turn.keep(completion)
        self._count(call, completion, cached=turn.hit is not None)
        return completion

    async def _send_stream(self, request: Request, call: Call,
                           refresh: bool = False) -> AsyncGenerator[Delta, None]:
        """`_send` for a streamed turn: its deltas as they come, then the `Completion` they add up
        to. A kept answer comes as one piece; a streamed answer is kept once it is complete,
        before the stream ends."""
        async with answer_cache.turn(self.cache, self.backend, request, refresh, call) as turn:
            if turn.hit is not None:
                completion = turn.hit
                yield Delta(completion.text)
            else:
                deltas = []
                async with contextlib.aclosing(self.backend.run_stream(request, call)) as stream:
                    async for delta in stream:
                        deltas.append(delta)
                        yield delta
                completion = join(deltas)
                await turn.keep(completion)
        self._count(call, completion, cached=turn.hit is not None)
        yield completion

    def _count(self, call: Call, completion: Completion, cached: bool) -> None:
        """Add one turn to the call's sources and cost (reported with its `finished` event)."""
        if cached:
            call.from_cache += 1
        else:
            call.sent += 1
        cost = None if self.price is None else self.price.cost(completion.tokens_in, completion.tokens_out)
        call.cost = None if cost is None or call.cost is None else call.cost + cost

    def _start(self, method: str, prompt: Prompt, inst: str | None, toolbox: Toolbox,
               guide: str | None = None) -> ToolLoop:
        """The call's tool loop, from the messages to send and the call's reporter."""
        messages = messages_for(prompt, inst, guide)
        call = Call(method, excerpt(label_of(messages)), self.name)
        return ToolLoop(messages, call, toolbox, thread=prompt if isinstance(prompt, Thread) else None,
                        streamed=method == "stream")

    def _over_defaults(self, gen: Generation) -> Generation:
        """A call's settings, laid over the model's defaults and the backend's."""
        return gen.over(self.defaults).over(self.backend.defaults)

    async def _run(self, method: str, prompt: Prompt, *, inst: str | None, gen: Generation, toolbox: Toolbox,
                   retries: int = 0, refresh: bool = False, target: Target | None = None,
                   guide: str | None = None) -> Any:
        """A call answered whole: its text, or with a `target` its validated value. `toolbox` holds
        the tools, tool_choice and max_steps, checked; `retries` re-asks an answer that does not
        validate; `refresh` asks again even when the answer cache holds the answer."""
        retries = checked_retries(retries)
        turns = self._start(method, prompt, inst, toolbox, guide)
        with reported(turns.call, turns.tally):
            value = await turns.answer(lambda r: self._send(r, turns.call, refresh), self._over_defaults(gen),
                                       target, retries)
            turns.record()
        return value
