"""The per-turn protocol: each model turn is looked up before it is sent (`Model._send`), holds its
sample index while it runs, and a complete answer is kept before the turn returns.

Only complete answers are kept (no errors, nothing cut off at max_tokens), raw: a typed answer is
parsed again on a hit. `refreshing()` asks again and replaces what is kept; `kept_only()` answers
only what is kept and raises NotKept for any other turn instead of sending it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import warnings
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Protocol

from ..backends.base import Backend, Completion, Request
from ..errors import NotKept
from ..events import Call
from .claims import Claims
from .key import base_key
from .store import Identities

INCOMPLETE = frozenset({"length", "content_filter"})

_refresh: ContextVar[bool] = ContextVar("llmnb_cache_refresh", default=False)
_kept_only: ContextVar[bool] = ContextVar("llmnb_cache_kept_only", default=False)


@contextlib.contextmanager
def refreshing(on: bool = True) -> Iterator[None]:
    """The calls made in this block ask the model again and replace what the cache holds
    (`refreshing(False)`: they read it again, inside a block that refreshes)."""
    token = _refresh.set(on)
    try:
        yield
    finally:
        _refresh.reset(token)


@contextlib.contextmanager
def kept_only() -> Iterator[None]:
    """In this block (and its tasks) a model turn whose answer the cache does not hold raises
    `llmnb.errors.NotKept` (with the turn's request and cache key) instead of being sent. Without
    a cache nothing is kept, so every turn raises it."""
    token = _kept_only.set(True)
    try:
        yield
    finally:
        _kept_only.reset(token)


class Store(Protocol):
    """What a model turn looks answers up in and keeps them in: a Cache, a MemoryStore, or any
    object with these methods."""

    async def lookup(self, key: str) -> Completion | None: ...

    async def keep(self, key: str, model: str, completion: Completion) -> None: ...

    def claim(self, base: str) -> contextlib.AbstractContextManager[str]: ...

    async def identity(self, backend: Backend) -> str: ...


class MemoryStore:
    """Answers kept in memory, used like a Cache: `Model(backend, cache=MemoryStore())`. `answers`
    maps each key to (model name, Completion), e.g. to record the turns a worker made and keep
    them in a Cache elsewhere (`cache.keep(key, model, completion)`)."""

    def __init__(self, answers: dict[str, tuple[str, Completion]] | None = None):
        self.answers = dict(answers or {})
        self._claims = Claims()
        self._identities = Identities(None)

    def __repr__(self) -> str:
        return f"<llmnb.cache.MemoryStore: {len(self.answers):,} answers>"

    def __bool__(self) -> bool:  # an empty store is still a store
        return True

    async def lookup(self, key: str) -> Completion | None:
        """The answer kept under `key`, or None."""
        found = self.answers.get(key)
        return None if found is None else found[1]

    async def keep(self, key: str, model: str, completion: Completion) -> None:
        """Keep `completion` under `key`."""
        self.answers[key] = (model, completion)

    def claim(self, base: str) -> contextlib.AbstractContextManager[str]:
        """As `Cache.claim`: the key of one sample of a request, held until the block ends."""
        return self._claims.claim(base)

    async def identity(self, backend: Backend) -> str:
        """As `Cache.identity` (a model file's hash is remembered in this process only)."""
        return await self._identities.of(backend)


class Turn:
    """One model turn through a store (or through none): `hit` is the kept answer, if any;
    `keep(completion)` keeps a complete answer that was just received."""

    def __init__(self, store: Store | None, key: str = "", model: str = "", call: Call | None = None):
        self.store, self.key, self.model, self.call = store, key, model, call
        self.hit: Completion | None = None

    async def keep(self, completion: Completion) -> None:
        if self.store is None or self.hit is not None or completion.finish in INCOMPLETE:
            return
        if self.call is not None:
            self.call.emit("keeping")  # the slot is free: the call waits for the store, not the model
        try:
            await self.store.keep(self.key, self.model, completion)
        except sqlite3.Error as e:  # a full disk, say: the answer was paid for, so the caller still gets it
            warnings.warn(f"llmnb could not keep an answer in {self.store} ({e}); it is returned, not kept",
                          RuntimeWarning, stacklevel=2)


@contextlib.asynccontextmanager
async def turn(store: Store | None, backend: Backend, request: Request, refresh: bool = False,
               call: Call | None = None) -> AsyncIterator[Turn]:
    """Look the request up (unless refreshing) and hold its sample index for the block. Under
    `kept_only`, a turn without a kept answer raises NotKept instead (without a store: every turn).
    `call` hears when the turn waits to keep its answer."""
    only_kept = _kept_only.get()
    if store is None and not only_kept:
        yield Turn(None)
        return
    store = store if store is not None else MemoryStore()  # nothing kept: every key misses
    base = base_key(await store.identity(backend), backend.name, request)
    with store.claim(base) as key:
        here = Turn(store, key, backend.name, call)
        if not (refresh or _refresh.get()):
            here.hit = await store.lookup(key)
        if here.hit is None and only_kept:
            raise NotKept(request, key)
        yield here
