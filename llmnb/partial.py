"""Partial values of a structured answer while its JSON is still being written.

pydantic reads the unfinished JSON itself (`experimental_allow_partial`: an open string counts
as written so far, an unfinished last item is left out). What it cannot do is accept a value
whose required fields have not arrived yet, so the target type gets a partial twin: every field
of a pydantic model, dataclass or TypedDict optional (None until written), inside lists, dicts
and unions too. A model's or dataclass's twin subclasses it, so `isinstance(part, Person)` holds
and its methods work. The last value of a stream is never partial: it is the full type's, validated.

    reader = PartialReader(target_for(Person))
    reader.feed('{"value": {"name": "Ada')   # -> Person(name='Ada', age=None)

`PartialReader` is pure; `partial_values` runs a call's turns (`Model.extract_stream_async`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import types
import typing
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any, Optional, Union, get_args, get_origin

import pydantic
from typing_extensions import TypedDict, is_typeddict

from .backends.base import Completion, Delta, Generation, Request
from .errors import ExtractError, ModelCallError
from .structured import Target
from .tool_loop import ToolLoop, parse

Send = Callable[[Request], AsyncGenerator[Delta | Completion, None]]

DIGITS = tuple("0123456789")
UNCHANGED: Any = object()  # what `feed` gives when the text adds nothing new to the value
_GENERICS = (list, dict, set, frozenset, Union, types.UnionType)


class PartialReader:
    """The partial values of one answer: `feed` it the text as it arrives."""

    def __init__(self, target: Target):
        self.adapter = partial_adapter(target)
        self.text = ""
        self.value: Any = None  # the last partial value given (None: none yet)

    def feed(self, piece: str) -> Any:
        """The value the text so far gives, or UNCHANGED when it is the same as the last one (or
        nothing can be read yet, e.g. in the middle of a number or of one of a Literal's words)."""
        self.text += piece
        if self.text[-1:] in DIGITS:  # maybe a number still being written: 3 of 36 would show as 3
            return UNCHANGED
        try:
            wrapped = self.adapter.validate_json(self.text, experimental_allow_partial="trailing-strings")
        except (pydantic.ValidationError, ValueError, TypeError):
            # ValueError/TypeError: a type's own validator that does not expect None yet
            return UNCHANGED
        value = wrapped.value
        if value is None or value == self.value:
            return UNCHANGED
        self.value = value
        return value


@functools.lru_cache(maxsize=256)
def partial_adapter(target: Target) -> pydantic.TypeAdapter:
    """The adapter of `target`'s wrapper with its value made partial (None until it begins)."""
    value = partial_type(target.type)
    wrapper = pydantic.create_model("Output", value=(Optional[value], None))  # noqa: UP045 (a runtime type)
    return pydantic.TypeAdapter(wrapper)


def partial_type(tp: Any, _seen: frozenset = frozenset()) -> Any:
    """`tp` with every field of its models, dataclasses and TypedDicts optional (None until
    written), also inside containers. A type that refers to itself keeps its inner reference whole."""
    if tp in _seen:
        return tp
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:  # constraints such as min_length cannot hold while a list is growing
        return partial_type(args[0], _seen)
    if origin in _GENERICS and args:
        inner = tuple(partial_type(a, _seen) for a in args)
        return Union[inner] if origin is types.UnionType else origin[inner]  # noqa: UP007 (built from a tuple)
    if not isinstance(tp, type):
        return tp
    seen = _seen | {tp}
    try:
        if issubclass(tp, pydantic.BaseModel):
            fields = {name: (Optional[partial_type(f.annotation, seen)], None)  # noqa: UP045
                      for name, f in tp.model_fields.items()}
            return pydantic.create_model(tp.__name__, __base__=tp, **fields)  # type: ignore[call-overload]
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            loose = [(f.name, Optional[partial_type(hints[f.name], seen)], dataclasses.field(default=None))  # noqa: UP045
                     for f in dataclasses.fields(tp) if f.init]
            return dataclasses.make_dataclass(tp.__name__, loose, bases=(tp,),
                                              frozen=tp.__dataclass_params__.frozen)  # type: ignore[attr-defined]
        if is_typeddict(tp):
            hints = typing.get_type_hints(tp)
            return TypedDict(tp.__name__, {k: partial_type(v, seen) for k, v in hints.items()}, total=False)  # type: ignore[operator]
    except (TypeError, pydantic.PydanticUserError):
        return tp  # a type this cannot loosen: its values show once they are complete
    return tp


async def partial_values(turns: ToolLoop, send: Send, gen: Generation, target: Target,
                         retries: int = 0) -> AsyncGenerator[Any, None]:
    """A structured call's values as its answer is written: partial ones while the JSON arrives,
    then the validated value (what `ToolLoop.answer` would return). `send` yields a turn's
    deltas, then the `Completion` they add up to. A value is given once more text follows it, so
    an answer that comes whole (a kept one) gives only its final value. An answer that does not
    validate is asked for again, as `retries=` allows, and fills in again from the start."""
    for attempt in range(retries + 1):
        async with contextlib.aclosing(_answer(turns, send, gen, target)) as parts:
            async for part in parts:
                if isinstance(part, Completion):
                    completion = part
                else:
                    yield part
        try:
            value = parse(target, completion, gen)
        except ExtractError as e:
            if attempt == retries:
                raise
            turns.reask(completion, e)
            continue
        yield value
        return


async def _answer(turns: ToolLoop, send: Send, gen: Generation, target: Target) -> AsyncGenerator[Any, None]:
    """Model turns until one answers without tools: the partial values of each turn's text, then
    the answering turn's `Completion`. A stream that breaks raises its `ModelCallError` with the
    value read so far in `.partial_value`."""
    while True:
        reader, pending = PartialReader(target), UNCHANGED
        try:
            async with contextlib.aclosing(send(turns.request(gen, target.schema))) as pieces:
                async for piece in pieces:
                    if isinstance(piece, Completion):
                        turn = piece
                    elif piece.text:
                        if pending is not UNCHANGED:  # more text came after it: not the last
                            yield pending
                        pending = reader.feed(piece.text)
        except ModelCallError as e:
            e.partial_value = reader.value
            raise
        turns.tally.add(turn)
        if not turns.wants_tools(turn):
            yield turn
            return
        await turns.run_tools(turn)
