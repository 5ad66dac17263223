"""Sample indexes. Identical requests at once are distinct samples: each takes the lowest sample
index that no identical request in flight holds, so `asyncio.gather` of ten identical calls keeps
ten answers and a re-run gets the same ten back. `sample_index(n)` sets the index explicitly (the
magics' `* N` copies do)."""

from __future__ import annotations

import contextlib
import itertools
import threading
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
        self._in_flight: dict[str, dict[int, int]] = {}  # base -> {sample index: identical requests holding it}
        self._lock = threading.Lock()

    def claim(self, base: str) -> Claim:
        """The key of one sample of the request whose canonical text hashes to `base`, held until
        the block ends: the lowest free index, unless `sample_index` set one."""
        explicit = _sample.get()
        with self._lock:
            held = self._in_flight.setdefault(base, {})
            n = explicit if explicit is not None else next(i for i in itertools.count() if i not in held)
            held[n] = held.get(n, 0) + 1
        return Claim(self, base, n)

    def release(self, base: str, n: int) -> None:
        with self._lock:
            held = self._in_flight[base]
            held[n] -= 1
            if not held[n]:
                del held[n]
                if not held:
                    del self._in_flight[base]


class Claim:
    """One held sample index: `with claims.claim(base) as key:` (a plain class: a turn enters one
    for every call, and a generator-based context manager costs several times more)."""

    __slots__ = ("claims", "base", "n")

    def __init__(self, claims: Claims, base: str, n: int):
        self.claims, self.base, self.n = claims, base, n

    def __enter__(self) -> str:
        return sample_key(self.base, self.n)

    def __exit__(self, *exc) -> None:
        self.claims.release(self.base, self.n)
