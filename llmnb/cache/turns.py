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
from collections.abc import Iterator
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
    """One model turn through a store (or through none), as `async with turn(...) as t:`. Entering
    looks the request up (unless refreshing) and holds its sample index until the block ends;
    `hit` is the kept answer, if any; `keep(completion)` keeps a complete answer just received.
    Under `kept_only`, entering a turn without a kept answer raises NotKept (without a store:
    every turn). `call` hears when the turn waits to keep its answer. A plain class: every model
    call enters one, and a generator-based context manager costs several times more."""

    def __init__(self, store: Store | None, backend: Backend, request: Request, refresh: bool = False,
                 call: Call | None = None):
        self.store, self.backend, self.request, self.refresh, self.call = store, backend, request, refresh, call
        self.key, self.model = "", backend.name
        self.hit: Completion | None = None
        self._claim: contextlib.AbstractContextManager[str] | None = None

    async def __aenter__(self) -> Turn:
        only_kept = _kept_only.get()
        if self.store is None:
            if not only_kept:
                return self
            self.store = MemoryStore()  # nothing kept: every key misses
        base = base_key(await self.store.identity(self.backend), self.model, self.request)
        self._claim = claim = self.store.claim(base)
        self.key = claim.__enter__()
        try:
            if not (self.refresh or _refresh.get()):
                self.hit = await self.store.lookup(self.key)
            if self.hit is None and only_kept:
                raise NotKept(self.request, self.key)
        except BaseException:
            self._claim = None
            claim.__exit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        if self._claim is not None:
            self._claim.__exit__(*exc)

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


turn = Turn  # `async with turn(store, backend, request, refresh, call) as t:`
