"""Prompts a local model has read, kept in memory after their sequence moves on.

A sequence's KV cells hold one prompt: with one sequence (`parallel=1`) a prompt that starts like
the one before it skips reading that start again, but a prompt that starts like one read two
calls ago is read in full. The engine keeps a copy of the cells a sequence is about to give up
(llama.cpp's sequence state, a plain copy) and puts them back when a later prompt starts the
same way, as llama-server keeps its slots' prompts in memory (its `--cache-ram`). So a cell run
again, or calls that take turns between two instructions, read only what is new.

Everything here runs in the engine's one thread.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict

# The memory the kept cells may take: SmolLM2-135M needs 23 KB a token, so about 11,000 tokens,
# a few hundred short prompts; a model of a few billion parameters needs 100-200 KB a token.
BUDGET_BYTES = 256 * 2**20


def common_prefix(a, b) -> int:
    """How many tokens two token sequences share from their start."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class PromptCache:
    """Prompt tokens -> the saved KV cells of those tokens (bytes), the least recently used dropped
    first beyond `budget` bytes."""

    def __init__(self, budget: int = BUDGET_BYTES):
        self.budget = budget
        self._kept: OrderedDict[tuple[int, ...], ctypes.Array] = OrderedDict()  # least recently used first
        self._size = 0

    def __len__(self) -> int:
        return len(self._kept)

    def best(self, prompt: list[int]) -> tuple[tuple[int, ...], int]:
        """The kept tokens that share the longest start with `prompt`, and how many they share."""
        found: tuple[int, ...] = ()
        most = 0
        for tokens in self._kept:
            n = common_prefix(tokens, prompt)
            if n > most:
                found, most = tokens, n
        return found, most

    def take(self, tokens: tuple[int, ...]) -> ctypes.Array:
        """The cells kept for `tokens` (which `best` found), now the most recently used."""
        self._kept.move_to_end(tokens)
        return self._kept[tokens]

    def holds(self, tokens: list[int]) -> bool:
        """Whether the cells of all of `tokens` are kept (for them or for a longer prompt)."""
        key, n = tuple(tokens), len(tokens)
        return any(len(kept) >= n and kept[:n] == key for kept in self._kept)

    def clear(self) -> None:
        self._kept.clear()
        self._size = 0

    def put(self, tokens: list[int], data: ctypes.Array) -> None:
        """Keep `data`, the cells of `tokens`; a kept prompt that `tokens` starts with is dropped:
        these cells hold it too."""
        key = tuple(tokens)
        if not key:
            return
        for kept in [k for k in self._kept if len(k) <= len(key) and key[:len(k)] == k]:
            self._size -= len(self._kept.pop(kept))
        if len(data) > self.budget:
            return
        self._kept[key] = data
        self._size += len(data)
        while self._size > self.budget:
            self._size -= len(self._kept.popitem(last=False)[1])
