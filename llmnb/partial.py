"""Partial values of a structured answer while its JSON is still being written. Pure.

pydantic reads the unfinished JSON itself (`experimental_allow_partial`: an open string counts
as written so far, an unfinished last item is left out). What it cannot do is accept a value
whose required fields have not arrived yet, so the target type gets a partial twin: every field
of a pydantic model, dataclass or TypedDict optional (None until written), inside lists, dicts
and unions too. A model's or dataclass's twin subclasses it, so `isinstance(part, Person)` holds
and its methods work. The last value of a stream is never partial: it is the full type's, validated.

    reader = PartialReader(target_for(Person))
    reader.feed('{"value": {"name": "Ada')   # -> Person(name='Ada', age=None)
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Annotated, Any, Optional, Union, get_args, get_origin

import pydantic
from typing_extensions import TypedDict, is_typeddict

from .structured import Target

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
