"""Running a magic's coroutine: on the kernel's own loop when that is safe, else on llmnb's loop.

IPython has no async magics. A cell starting with %%llm_parallel or %%llm_extract is rewritten
by an input transformer into one top-level `await` of the magic's coroutine, so ipykernel runs
it on its own loop: the timeline stays live and Interrupt arrives as CancelledError in our tasks
(tests/test_kernel.py checks both). The rewrite is unsafe when autoawait is off, when a
non-asyncio loop runner is set, or inside a nested synchronous run_cell (%%capture,
get_ipython().run_cell), where it would fail with "This event loop is already running"; then
the magic runs its coroutine on llmnb's private loop (llmnb.sync), which cancels on interrupt too.
"""

from __future__ import annotations

import asyncio
import sys
from types import FrameType

from .. import sync

ASYNC_MAGICS = ("llm_parallel", "llm_extract")


def rewrite_is_safe(shell) -> bool:
    from IPython.core.async_helpers import _asyncio_runner

    if not getattr(shell, "autoawait", False) or shell.loop_runner is not _asyncio_runner:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True  # IPython's runner will run the loop itself
    # A loop is running here: fine at the top of a kernel cell (run_cell_async is awaited),
    # not inside a synchronous run_cell, which would try to run the running loop again.
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        filename = frame.f_code.co_filename.replace("\\", "/").split("/")[-1]
        if frame.f_code.co_name == "_run_cell" and "shell" in filename:
            return False
        frame = frame.f_back
    return True


def make_transformer(shell):
    """An input transformer (lines -> lines) that turns our async cell magics into an await."""

    def transform(lines: list[str]) -> list[str]:
        if not lines:
            return lines
        first = lines[0].strip()
        for name in ASYNC_MAGICS:
            if (first == f"%%{name}" or first.startswith(f"%%{name} ")) and rewrite_is_safe(shell):
                line = first[len(name) + 2:].strip()
                body = "".join(lines[1:])
                magics = "get_ipython().magics_manager.registry['LlmMagics']"
                return [f"await {magics}.{name}_async({line!r}, {body!r})\n"]
        return lines

    return transform


def run_blocking(coro):
    """The fallback: run the magic's coroutine on llmnb's private loop until it ends."""
    return sync.run(coro)

