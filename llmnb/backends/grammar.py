"""JSON schema -> llama.cpp GBNF grammar, shared by the local backends."""

from __future__ import annotations

import functools
import json

# llama-cpp-python's converter lets raw control characters (a newline, say) into JSON strings,
# which no JSON parser accepts; llama.cpp's own converter excludes them. Narrow the rule so
# the model must close the string or escape the character instead.
LOOSE_CHAR = 'char ::= [^"\\\\]'
JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F]'


@functools.cache
def converter():
    """llama-cpp-python's JSON schema converter. A local model loads it when it is made: the first
    import takes about 0.3 s, which at the first structured call would hold the GIL while the
    event loop waits."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf


@functools.lru_cache(maxsize=128)
def _gbnf(schema_json: str) -> str:
    return converter()(schema_json).replace(LOOSE_CHAR, JSON_CHAR)


def schema_to_gbnf(schema: dict, *, sort_keys: bool = True) -> str:
    """The GBNF grammar (root rule "root") whose strings are exactly the JSON texts valid for `schema`.
    An object's properties come in the order of its schema's keys: sorted, unless `sort_keys` is False."""
    return _gbnf(json.dumps(schema, sort_keys=sort_keys))
