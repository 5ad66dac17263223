"""The one place that runs a coroutine from synchronous code.

Why a private event loop in a daemon thread, for scripts and notebooks alike:
- In a notebook cell the kernel's loop is already running, so `asyncio.run()` fails ("cannot be
  called from a running event loop") and the cell cannot wait on that loop without returning.
- nest-asyncio(2) would re-enter the kernel's loop, but measured in a real kernel its
  interrupted tasks kept running after the cell ended, and it
  breaks other libraries (no `current_task()` on 3.14, "Cannot enter into task", hangs).
- A private loop keeps working on interrupt: KeyboardInterrupt cancels the task there and we wait
  for it to end, so nothing outlives the call. Widget updates still flow while it runs.
- One loop for every sync call (instead of `asyncio.run` per call in scripts) means one HTTP
  client and one lock per model for all of them, and no "Event loop is closed" from clients
  outliving a loop.
The context (`contextvars`) of the caller is carried into the task, so a `Timeline` open around a
sync call sees it.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import AsyncGenerator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _private_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(target=_loop.run_forever, name="llmnb-sync-loop", daemon=True)
            _thread.start()
            atexit.register(_stop)
        return _loop


def _stop() -> None:
    if _loop is not None and _thread is not None:
        _loop.call_soon_threadsafe(_loop.stop)
        _thread.join(timeout=2)


class _Raised:
    """A KeyboardInterrupt or SystemExit the coroutine raised, carried out as a value."""

    def __init__(self, error: BaseException):
        self.error = error


async def _carrying_interrupts(coro: Coroutine[Any, Any, T]) -> T | _Raised:
    # asyncio re-raises KeyboardInterrupt and SystemExit out of run_forever, which would end the
    # private loop's thread and leave the caller waiting forever (a magic raises its one-line
    # `Interrupted`, a KeyboardInterrupt, when cancelled). They go back to the caller instead.
    try:
        return await coro
    except (KeyboardInterrupt, SystemExit) as e:
        return _Raised(e)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to the end on the private loop and return its result (or raise its error).

    Ctrl-C / the notebook's interrupt cancels the coroutine and waits until it has stopped.
    """
    loop = _private_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("a synchronous llmnb method was called inside llmnb's own loop; "
                           "use the _async method with await")
    done = threading.Event()
    box: list[asyncio.Task] = []

    def start() -> None:  # runs on the private loop, in a copy of the caller's context
        task = loop.create_task(_carrying_interrupts(coro))
        task.add_done_callback(lambda _: done.set())
        box.append(task)

    loop.call_soon_threadsafe(start)  # call_soon_threadsafe copies the caller's contextvars
    try:
        # Short waits in a loop: a KeyboardInterrupt raised without a real signal
        # (_thread.interrupt_main, some kernels) is only seen when a wait returns.
        while not done.wait(0.05):
            pass
    except KeyboardInterrupt:
        loop.call_soon_threadsafe(lambda: box[0].cancel())
        done.wait()
        task = box[0]
        # the interrupt wins, unless the coroutine turned it into its own KeyboardInterrupt
        if task.cancelled() or task.exception() is not None or not isinstance(task.result(), _Raised):
            raise
    outcome = box[0].result()
    if isinstance(outcome, _Raised):
        raise outcome.error
    return outcome


def iterate(agen: AsyncGenerator[T, None]) -> Iterator[T]:
    """The items of an async generator, from synchronous code: each step runs on the private loop
    through `run` (so Ctrl-C cancels it the same way). Leaving the loop early (break, an exception,
    or the iterator dropped) closes the async generator there, which ends its work."""

    async def step() -> T | _End:
        return await anext(agen, END)

    try:
        while not isinstance(item := run(step()), _End):
            yield item
    finally:
        if threading.current_thread() is _thread:  # dropped and collected on the private loop itself
            asyncio.ensure_future(agen.aclose())
        else:
            run(agen.aclose())


class _End:
    """The end of an async generator, told apart from any item it yields."""


END = _End()


def private_loop_tasks() -> int:
    """How many tasks are alive on the private loop (0 between sync calls); for tests and leak checks."""
    if _loop is None:
        return 0
    return len(asyncio.all_tasks(_loop))
