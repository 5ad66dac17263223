"""Sample indexes. Identical requests at once are distinct samples: each takes the lowest sample
index that no identical request in flight holds, so `asyncio.gather` of ten identical calls keeps
ten answers and a re-run gets the same ten back. `sample_index(n)` sets the index explicitly (the
magics' `* N` copies do)."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar

from .key import sample_key

_sample: ContextVar[int | None] = ContextVar("llmnb_sample_index", default=None)


@contextlib.contextmanager
def sample_index(n: int) -> Iterator[None]:
    """The calls made in this block (and its tasks) are sample `n` of their request."""
    token = _sample.set(n)
    try:
        yield
    finally:
        _sample.reset(token)


class Claims:
    """The sample indexes held by the identical requests in flight, for one store."""

    def __init__(self):
        self._in_flight: dict[str, Counter] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def claim(self, base: str) -> Iterator[str]:
        """The key of one sample of the request whose canonical text hashes to `base`, held until
        the block ends: the lowest free index, unless `sample_index` set one."""
        explicit = _sample.get()
        with self._lock:
            held = self._in_flight.setdefault(base, Counter())
            n = explicit if explicit is not None else next(i for i in range(len(held) + 1) if not held[i])
            held[n] += 1
        try:
            yield sample_key(base, n)
        finally:
            with self._lock:
                held[n] -= 1
                if not +held:
                    self._in_flight.pop(base, None)
