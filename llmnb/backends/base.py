"""What every backend shares: the request and completion records, the per-loop helper and the
slot/start protocol that reports a call's waiting and running phases."""

from __future__ import annotations

import asyncio
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..events import Call

T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    """One chat completion to make. `schema` (a JSON schema) asks for structured output."""

    messages: tuple[dict, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    schema: dict | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    tokens_in: int | None = None
    tokens_out: int | None = None


class PerLoop(Generic[T]):
    """One object per running event loop, made on first use.

    asyncio locks, semaphores and HTTP clients belong to the loop that first uses them; llmnb may
    serve the kernel's loop and its private sync loop at once, so each gets its own. Entries go
    away with their loop.
    """

    def __init__(self, factory: Callable[[], T]):
        self._factory = factory
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        try:
            return self._items[loop]
        except KeyError:
            item = self._items[loop] = self._factory()
            return item

    def drain(self) -> list[tuple[asyncio.AbstractEventLoop, T]]:
        """Remove and return every (loop, item) pair, e.g. to close the items."""
        pairs = list(self._items.items())
        self._items.clear()
        return pairs


class Backend(ABC):
    """A model server. Subclasses give a slot (what a call waits for) and `complete` (the I/O)."""

    name: str

    async def run(self, request: Request, call: Call) -> Completion:
        call.emit("waiting")
        async with self.slot():
            call.emit("started")
            return await self.complete(request)

    @abstractmethod
    def slot(self) -> AbstractAsyncContextManager:
        """What a call must hold to run: a concurrency semaphore, or a local model's lock."""

    def close(self) -> None:
        """Free what the backend holds (a local model's weights and threads); remote ones hold nothing."""

    @abstractmethod
    async def complete(self, request: Request) -> Completion:
        """Make one completion. Raise `ModelCallError` for failures the caller cannot fix by retrying."""
