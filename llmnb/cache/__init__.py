"""The answer cache: one kept answer per distinct request, in a SQLite file.

    model = Models.create("openai:gpt-4o-mini", cache="answers.sqlite")   # or cache=True
    llmnb.use_cache("answers.sqlite")     # every model made without cache= in this process

    key.py     the key (the request, normalised and hashed) and the answer's JSON form: pure
    claims.py  sample indexes: identical requests at once are distinct samples
    store.py   Cache: the SQLite file, its one thread, its set-up and checks, backend identities
    turns.py   the per-turn protocol (lookup, claim, keep; refreshing, kept_only) and MemoryStore
    jobs.py    the batch jobs whose answers the cache awaits (a table of its own)
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..errors import ConfigError
from .claims import sample_index
from .key import completion_from_json, completion_to_json, key_for, request_text
from .store import Cache
from .turns import MemoryStore, Store, Turn, kept_only, refreshing, turn

__all__ = ["Cache", "MemoryStore", "Store", "Turn", "use_cache", "default", "open_cache", "sample_index",
           "refreshing", "kept_only", "turn", "key_for", "request_text", "completion_to_json",
           "completion_from_json"]

DEFAULT_FILE = "llmnb-cache.sqlite"

_open: dict[str, Cache] = {}
_open_lock = threading.Lock()
_default: Store | None = None


def use_cache(path: str | os.PathLike | bool | Store | None = True) -> Store | None:
    """Keep the answers of every model made without `cache=` in this file, from now on (True: a file
    llmnb-cache.sqlite in the working directory). `use_cache(None)` stops. Returns the cache."""
    global _default
    _default = None if path is None or path is False else open_cache(path)
    return _default


def default() -> Store | None:
    """The cache set by `use_cache`, if any."""
    return _default


def open_cache(option: str | os.PathLike | bool | Store) -> Store:
    """The cache for a `cache=` option: a path, True (the default file), a Cache or a MemoryStore.
    One Cache per file in a process, so models sharing a file share its thread."""
    if isinstance(option, (Cache, MemoryStore)):
        return option
    if option is True:
        option = DEFAULT_FILE
    if isinstance(option, bool) or not isinstance(option, (str, os.PathLike)):
        raise ConfigError(f'cache= takes a file path such as "answers.sqlite", True or False, not {option!r}')
    path = Path(option).expanduser().resolve()
    with _open_lock:
        cache = _open.get(str(path))
        if cache is None or cache.closed:
            cache = _open[str(path)] = Cache(path)
        return cache
