"""%%llm_extract --stream: the value as it fills in, in one display updated in place."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from IPython.display import display
from IPython.lib.pretty import pretty

EVERY = 0.1  # seconds between redraws: a token arrives every few ms, a browser needs far fewer frames


class Filling:
    """One display of a value that fills in; `show` redraws it at most every `EVERY` seconds."""

    def __init__(self):
        self.handle: Any = None
        self.shown_at = 0.0
        self.waiting: Any = None  # a value not drawn yet (the redraw was too soon after the last)

    def show(self, value: Any, *, now: bool = False) -> None:
        """Draw `value` unless the last redraw was less than `EVERY` ago (`now`: draw anyway)."""
        if not now and time.perf_counter() - self.shown_at < EVERY:
            self.waiting = value
            return
        self.waiting = None
        self.shown_at = time.perf_counter()
        data = {"text/plain": pretty(value)}
        if self.handle is None:
            self.handle = display(data, raw=True, display_id=True)
        else:
            self.handle.update(data, raw=True)

    def end(self, line: str) -> None:
        """Replace the value by one line: the cell's result shows the final value itself."""
        if self.handle is not None:
            self.handle.update({"text/plain": line}, raw=True)


async def fill_in(values: AsyncIterator[Any]) -> Any:
    """Show each partial value of `values` (an async generator) as it comes, throttled; return
    the last one, the complete value. A stream that breaks, or an Interrupt, ends the call and
    leaves its last value on show."""
    filling, count, start = Filling(), 0, time.perf_counter()
    value = None
    try:
        async for value in values:
            count += 1
            filling.show(value)
    except BaseException:
        if filling.waiting is not None:
            filling.show(filling.waiting, now=True)
        raise
    finally:
        await values.aclose()  # type: ignore[attr-defined]  # an Interrupt ends the call at once
    filling.end(f"filled in over {count} value{'s' if count != 1 else ''} in {time.perf_counter() - start:.1f} s")
    return value
