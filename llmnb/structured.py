"""Target types -> JSON schema -> validated values, all through pydantic.

Every target is wrapped as the single field `value` of an object, because OpenAI structured
outputs (and most grammars) want an object at the root, and it gives one shape for `str`,
`list[str]`, a dataclass or a pydantic model alike. The same adapter builds the schema sent to
the model and validates what comes back.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pydantic

from .errors import ConfigError, ExtractError, SchemaError


@dataclasses.dataclass(frozen=True, eq=False)
class Target:
    """A requested result type with its pydantic wrapper model and JSON schema."""

    type: Any
    wrapper: type[pydantic.BaseModel]
    schema: dict

    @property
    def schema_json(self) -> str:
        return json.dumps(self.schema, sort_keys=True)

    def parse(self, raw: str) -> Any:
        """Validate the model's raw JSON text; raise `ExtractError` (carrying `raw`) if it is not valid."""
        try:
            return self.wrapper.model_validate_json(raw).value
        except pydantic.ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "output"
            msg = (
                f"the model's output is not a valid {type_name(self.type)} ({where}: {first['msg']}); "
                "the raw text is in .raw; try a clearer prompt, retries=, or a larger model"
            )
            raise ExtractError(msg, raw=raw, target=self.type) from e


def type_name(tp: Any) -> str:
    """A type as one would write it: `list[str]`, `Person`, `list[str] (20 items)` for an
    `Annotated[list[str], Field(min_length=20, max_length=20)]` (pydantic prints its FieldInfo)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        limits = _limits(args[0], args[1:])
        return type_name(args[0]) + (f" ({limits})" if limits else "")
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if args and origin is not Literal:
        return f"{type_name(origin)}[{', '.join(type_name(a) for a in args)}]"
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not args:
        return tp.__name__
    return str(tp).replace("typing.", "")


def _limits(tp: Any, metadata: tuple) -> str:
    """The constraints of an Annotated type in words: "20 items", "at least 3 characters", ">= 0"."""
    found: dict[str, Any] = {}
    for item in metadata:  # pydantic's Field(...) holds annotated_types objects in .metadata
        for constraint in getattr(item, "metadata", [item]):
            if dataclasses.is_dataclass(constraint):  # annotated_types' MinLen, Ge, ... are dataclasses
                found.update({f.name: getattr(constraint, f.name) for f in dataclasses.fields(constraint)
                              if getattr(constraint, f.name) is not None})
    unit = "characters" if tp is str else "items"
    low, high = found.get("min_length"), found.get("max_length")
    words = []
    if low is not None and low == high:
        words.append(f"{low} {unit}")
    else:
        words += [f"at least {low} {unit}"] if low is not None else []
        words += [f"at most {high} {unit}"] if high is not None else []
    words += [f"{sign} {found[key]}" for key, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
              if key in found]
    return ", ".join(words)


@functools.lru_cache(maxsize=256)
def _target_cached(tp: Any) -> Target:
    return _build_target(tp)


def target_for(tp: Any) -> Target:
    """The `Target` for a type such as `list[str]`, `Literal["a", "b"]`, a dataclass or a pydantic model."""
    if isinstance(tp, str) or tp is None:
        raise SchemaError(f"extract needs a type such as list[str] or a dataclass, not {tp!r}")
    try:
        hash(tp)
    except TypeError:  # unhashable annotation objects still work, just uncached
        return _build_target(tp)
    return _target_cached(tp)


def _build_target(tp: Any) -> Target:
    try:
        wrapper = pydantic.create_model("Output", value=(tp, ...))
        schema = wrapper.model_json_schema()
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError, NameError) as e:
        reason = str(e).splitlines()[0]
        msg = (
            f"cannot turn {type_name(tp)} into a JSON schema ({reason}); use str, int, float, bool, list[...], "
            "Literal[...], an Enum, a dataclass, a TypedDict or a pydantic model"
        )
        raise SchemaError(msg) from e
    return Target(tp, wrapper, schema)


def labels_type(labels: Any) -> Any:
    """The type `classify` extracts: a `Literal` of the label strings, or the Enum itself."""
    if isinstance(labels, type) and issubclass(labels, enum.Enum):
        if not list(labels):
            raise ConfigError(f"the Enum {labels.__name__} has no members; give it at least two labels")
        return labels
    if isinstance(labels, str) or not hasattr(labels, "__iter__"):
        raise ConfigError(f'labels must be a list of strings such as ["spam", "not spam"], not {labels!r}')
    labels = list(labels)
    if len(labels) < 2:
        raise ConfigError(f"classify needs at least two labels to choose from, got {labels!r}")
    bad = [label for label in labels if not isinstance(label, str) or not label.strip()]
    if bad:
        raise ConfigError(f"labels must be non-empty strings; these are not: {bad!r}")
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise ConfigError(f"labels must be distinct; repeated: {dupes!r}")
    return Literal[tuple(labels)]
