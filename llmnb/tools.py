"""Tools a model may call: plain functions or `async def`s, typed, their docstring the description.

    async def weather(city: str, days: int = 1) -> dict:
        '''Today's weather in a city.'''
        ...
    answer = await model.generate_async("Weather in Lisbon?", tools=[weather])

A tool's JSON schema comes from its signature through pydantic, as `extract`'s targets do, and
the model's arguments are validated against it before the call. The calls of one model turn run
at once: async tools as tasks, sync tools in worker threads, so a blocking tool never freezes the
event loop (nor a live timeline). `tool(sequential=True)` makes a tool run alone, after the calls
before it in its turn and before those after it; `tool(max_concurrency=N)` lets at most N runs of
it go at once, over every call on the event loop (a rate-limited API, a database).

A tool that raises, arguments that do not fit, or a tool name the model made up: "TypeName:
message" goes back to the model as that call's result, and the loop goes on. Each run is a call
of its own on the call-life hook (method "tool", the tool's name as label, its model call as
parent), so timelines and OpenTelemetry show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import re
import typing
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pydantic
import pydantic_core

from .backends.base import ToolCall
from .errors import ConfigError, SchemaError
from .events import Call, reported
from .per_loop import PerLoop

MAX_STEPS = 10  # model turns of one call's tool loop, as openai-agents' max_turns
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI accepts as a function name
ERROR_WIDTH = 500  # a tool's error goes back to the model, cut to this many characters
# Sync tools run in llmnb's own pool: the loop's default executor has only cores + 4 workers (6 on
# 2 cores), shared with name resolution, and sync tools mostly wait on I/O.
POOL_SIZE = 64
_threads = ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="llmnb-tool")  # its threads start when first needed


class Tool:
    """A function the model may call, with its JSON schema and validation. Calling it calls the
    function, so a decorated function stays usable as before."""

    def __init__(self, fn: Callable, *, name: str | None = None, sequential: bool = False,
                 max_concurrency: int | None = None):
        if not callable(fn):
            raise ConfigError(f"a tool is a function or an async def, not {type(fn).__name__}")
        if isinstance(fn, Tool):  # tool(t, sequential=True): t's function with the new settings
            name = name or fn.name
            fn = fn.fn
        functools.update_wrapper(self, fn)  # first: it copies the function's attributes over ours
        self.fn: Callable = fn
        self.name: str = name or getattr(fn, "__name__", "") or ""
        if not NAME.match(self.name):
            raise ConfigError(f"the tool name {self.name!r} is not valid: use letters, digits, _ and - (at most 64); "
                              "give a def a plain name or pass tool(name=...)")
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(f"max_concurrency of the tool {self.name} must be at least 1, not {max_concurrency}")
        self.description = inspect.getdoc(fn) or ""
        self.sequential = sequential
        self.max_concurrency = max_concurrency
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
        self.arguments = _arguments_model(fn, self.name)
        self.parameters = _parameters(self.arguments)
        self._gates = PerLoop(lambda: asyncio.Semaphore(max_concurrency)) if max_concurrency else None

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<llmnb.Tool {self.name}>"

    @property
    def spec(self) -> dict:
        """The OpenAI-style function spec sent with a request."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def validate(self, arguments: str) -> dict[str, Any]:
        """The keyword arguments for the call, from the model's JSON text (blank counts as `{}`)."""
        values = self.arguments.model_validate_json(arguments.strip() or "{}")
        return {field: getattr(values, field) for field in type(values).model_fields}

    def _gate(self) -> contextlib.AbstractAsyncContextManager:
        """What a run holds: a place under `max_concurrency` (one semaphore per event loop), or nothing."""
        return self._gates.get() if self._gates is not None else contextlib.nullcontext()

    async def _invoke(self, kwargs: dict[str, Any]) -> Any:
        """Run the function: awaited when async, in a worker thread when not (with the caller's context)."""
        if self.is_async:
            return await self.fn(**kwargs)
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(_threads, lambda: context.run(self.fn, **kwargs))


def _arguments_model(fn: Callable, name: str) -> type[pydantic.BaseModel]:
    """A pydantic model of the function's parameters: their annotations and defaults."""
    try:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
    except (TypeError, ValueError, NameError) as e:
        raise SchemaError(f"cannot read the signature of the tool {name} ({e}); annotate every parameter") from e
    fields: dict[str, Any] = {}
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise SchemaError(f"the tool {name} takes *{p.name}: give it named parameters, each with a type")
        if p.name not in hints:
            raise SchemaError(f"the parameter {p.name} of the tool {name} has no type: annotate it, e.g. {p.name}: str")
        fields[p.name] = (hints[p.name], ... if p.default is p.empty else p.default)
    config = pydantic.ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=False)
    try:
        with warnings.catch_warnings():  # a parameter named like a BaseModel method (json, copy) only shadows it
            warnings.simplefilter("ignore")
            return pydantic.create_model(name, __config__=config, **fields)
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError, NameError) as e:
        reason = str(e).splitlines()[0]
        raise SchemaError(f"cannot turn the parameters of the tool {name} into a JSON schema ({reason}); use str, "
                          "int, float, bool, list[...], Literal[...], an Enum, a dataclass or a pydantic model") from e


def _parameters(model: type[pydantic.BaseModel]) -> dict:
    schema = model.model_json_schema()
    schema.pop("title", None)  # the tool's name, already in the spec
    return schema


def tool(fn: Callable | None = None, *, name: str | None = None, sequential: bool = False,
         max_concurrency: int | None = None):
    """Make `fn` a `Tool` (usable as `@tool` or `@tool(sequential=True)`): `name` instead of the
    function's, `sequential` to run alone in its turn, `max_concurrency` to cap its runs at once.
    A plain function in `tools=[...]` needs no decorator."""
    if fn is None:
        return lambda f: Tool(f, name=name, sequential=sequential, max_concurrency=max_concurrency)
    return Tool(fn, name=name, sequential=sequential, max_concurrency=max_concurrency)


@functools.lru_cache(maxsize=256)
def _tool_of(fn: Callable) -> Tool:
    return Tool(fn)


def as_tool(item: Any) -> Tool:
    """A `Tool` for a tool or a function (built once per function)."""
    if isinstance(item, Tool):
        return item
    try:
        return _tool_of(item)
    except TypeError:  # an unhashable callable: built each time
        return Tool(item)


class Toolbox:
    """The tools of one call, by name, and how its tool loop may use them, checked before anything
    is sent: unique names, `max_steps` (model turns), `first_choice` (the first turn's tool_choice)."""

    def __init__(self, tools: Iterable[Any] | None, tool_choice: str = "auto", max_steps: int = MAX_STEPS):
        if isinstance(tools, str) or callable(tools):
            raise ConfigError("tools= takes a list of functions, e.g. tools=[weather, search]")
        self.tools: dict[str, Tool] = {}
        for item in tools or ():
            t = as_tool(item)
            if t.name in self.tools:
                raise ConfigError(f"two tools are named {t.name}; rename one, or pass tool(f, name=...)")
            self.tools[t.name] = t
        self.specs = tuple(t.spec for t in self.tools.values())
        if max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1 (model turns in the tool loop), not {max_steps}")
        self.max_steps = max_steps
        self.first_choice = self.choice(tool_choice)

    def __bool__(self) -> bool:
        return bool(self.tools)

    def choice(self, tool_choice: str) -> str | None:
        """The request's tool_choice for `tool_choice` ("auto", "required" or a tool's name)."""
        if tool_choice == "auto":
            return None
        if not self.tools:
            raise ConfigError(f"tool_choice={tool_choice!r} needs tools: pass tools=[...]")
        if tool_choice == "required" or tool_choice in self.tools:
            return tool_choice
        raise ConfigError(f"tool_choice must be 'auto', 'required' or a tool's name ({', '.join(self.tools)}), "
                          f"not {tool_choice!r}")


def error_text(e: BaseException) -> str:
    """What the model reads when a tool fails: "TypeName: message", short."""
    if isinstance(e, pydantic.ValidationError):
        where = [f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in e.errors()[:3]]
        text = f"ValidationError: {'; '.join(where)}"
    else:
        text = f"{type(e).__name__}: {e}"
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"


def result_text(value: Any) -> str:
    """A tool's return value as a tool message's content: text as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return pydantic_core.to_json(value, fallback=str).decode()


class UnknownTool(LookupError):
    """The model asked for a tool it was not given."""


async def run_one(call: ToolCall, toolbox: Toolbox, parent: Call) -> str:
    """One tool call, reported as a call of its own; its result or error as text for the model."""
    reporter = Call("tool", call.name, parent.model, parent=parent.id)
    try:
        with reported(reporter, error=error_text):
            return await _run(call, toolbox, reporter)
    except Exception as e:  # the model reads what went wrong and may try again
        return error_text(e)


async def _run(call: ToolCall, toolbox: Toolbox, reporter: Call) -> str:
    t = toolbox.tools.get(call.name)
    if t is None:
        raise UnknownTool(f"no tool is named {call.name!r}; the tools are {', '.join(toolbox.tools)}")
    kwargs = t.validate(call.arguments)
    if t.max_concurrency:
        reporter.emit("waiting")
    async with t._gate():
        reporter.emit("started")
        value = await t._invoke(kwargs)
    return result_text(value)


async def run_calls(calls: Sequence[ToolCall], toolbox: Toolbox, parent: Call) -> list[str]:
    """The results of one turn's calls, in the calls' order. They run at once, except that a
    sequential tool waits for the calls before it and runs alone."""
    results: list[str] = [""] * len(calls)
    batch: list[int] = []

    async def flush() -> None:
        for i, text in zip(batch, await asyncio.gather(*(run_one(calls[i], toolbox, parent) for i in batch)),
                           strict=True):
            results[i] = text
        batch.clear()

    for i, call in enumerate(calls):
        t = toolbox.tools.get(call.name)
        if t is not None and t.sequential:
            await flush()
            results[i] = await run_one(call, toolbox, parent)
        else:
            batch.append(i)
    await flush()
    return results
