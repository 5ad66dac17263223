"""Target types -> JSON schema -> validated values, all through pydantic.

Every target is wrapped as the single field `value` of an object, because OpenAI structured
outputs (and most grammars) want an object at the root, and it gives one shape for `str`,
`list[str]`, a dataclass or a pydantic model alike. The same adapter builds the schema sent to
the model and validates what comes back.
"""

from __future__ import annotations

import enum
import functools
import json
from dataclasses import dataclass
from typing import Any, Literal

import pydantic

from .errors import ConfigError, ExtractError, SchemaError


@dataclass(frozen=True, eq=False)
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
    return getattr(tp, "__name__", None) if isinstance(tp, type) else str(tp).replace("typing.", "")


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
