"""The HTTP clients of a backend: one `AsyncOpenAI` per event loop, made off the loop, closed on
their own loop (when the backend is dropped or closed, when the loop ends, at exit)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import weakref
from collections.abc import Callable
from typing import Any

from ...per_loop import PerLoop


class Clients:
    """The backend's HTTP clients, one per event loop, made so that no loop waits for one.

    Making an `AsyncOpenAI` client took 0.2-0.4 s the first time (the SDK imports its modules and
    sets up TLS) and 50-100 ms after (TLS again); made on a loop at the first call, that blocked
    every task on the loop and showed on the timeline. So one client is made, its modules loaded,
    with the model; the first loop that calls takes it. Another loop (the private one of the sync
    methods, say) gets its own made in a worker thread, off the loop. Entries are futures, so the
    calls that start together on a new loop share one client.
    """

    def __init__(self, make: Callable[[], Any]):
        self._make = make
        self._spare = [loaded(make())]
        self._per_loop: PerLoop[asyncio.Future] = PerLoop(self._for_this_loop)

    async def get(self) -> Any:
        return await self._per_loop.get()

    def _for_this_loop(self) -> asyncio.Future:
        try:
            client = self._spare.pop()
        except IndexError:  # the spare went to another loop
            made: asyncio.Future = asyncio.ensure_future(asyncio.to_thread(lambda: loaded(self._make())))
        else:
            made = asyncio.get_running_loop().create_future()
            made.set_result(client)
        made.add_done_callback(close_with_its_loop)  # run on this loop, once the client is there
        _client_loops.add(asyncio.get_running_loop())
        return made

    def close(self) -> None:
        """Close every client on its own loop, from any thread; forget them."""
        for loop, made in self._per_loop.drain():
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: its sockets went with it
                    loop.call_soon_threadsafe(made.add_done_callback, close_made)


def close_made(made: asyncio.Future) -> None:
    """Runs on the client's loop, so a loop that stops before running the close leaves no
    never-awaited coroutine behind (a RuntimeWarning at exit)."""
    if not made.cancelled() and made.exception() is None:
        asyncio.ensure_future(made.result().close())


async def _closing_at_loop_end(client: Any):
    try:
        yield
    finally:
        await client.close()


def close_with_its_loop(made: asyncio.Future) -> None:
    """Close the client on its own loop when that loop shuts down (as `asyncio.run` does at its
    end), even if the model was never closed: an aiohttp session left open is reported as
    "Unclosed client session". The hook is the loop's finalisation of async generators: this one
    is started here, on the loop, so the loop knows it; it waits at its `yield` until then."""
    if made.cancelled() or made.exception() is not None:
        return
    client = made.result()
    closer = _closing_at_loop_end(client)
    with contextlib.suppress(StopIteration):
        closer.asend(None).send(None)
    client._llmnb_closer = closer  # alive as long as the client (the loop holds it weakly)


_client_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


@atexit.register
def _close_with_the_loops_left() -> None:
    """At exit, finalise the async generators of the loops that still hold clients (llmnb's sync
    loop, IPython's, any loop never shut down), which closes those clients as above."""
    for loop in list(_client_loops):
        if loop.is_closed():
            continue
        with contextlib.suppress(Exception):  # at exit, a loop that cannot do it now is let go
            if loop.is_running():  # in its own thread
                asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(timeout=2)
            else:
                loop.run_until_complete(loop.shutdown_asyncgens())


def http_client_for_loop(http_client: Any) -> Any:
    """The HTTP client of one `AsyncOpenAI`: by default the SDK's aiohttp transport (about 2.5x
    less CPU per call than its httpx one at a thousand calls at once); a client given to
    `Models.create(http_client=...)` as is; a class or function given there, called, so that each
    event loop gets its own (an aiohttp session belongs to the loop that made it)."""
    if http_client is None:
        import openai

        return openai.DefaultAioHttpClient()
    return http_client() if callable(http_client) else http_client  # a client instance is not callable


def loaded(client: Any) -> Any:
    """`client` with the modules its first request needs already imported (0.1-0.2 s)."""
    client.chat.completions  # noqa: B018 (the SDK imports its resource modules on first access)
    # The network layer loads anyio's asyncio backend at its first request, whoever made the client.
    with contextlib.suppress(ImportError):
        importlib.import_module("anyio._backends._asyncio")
    return client
