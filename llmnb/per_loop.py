"""One object per running event loop: `PerLoop`."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


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
