"""What a test of the embedded model may rely on.

The model's floating point differs from CPU to CPU, and so do its greedy answers: which label it
picks, whether it calls a tool, how long it writes. A test asserts what the contract guarantees
for every outcome it allows (types, schemas, labels in the allowed set, counts the type forces),
never what one CPU's model happened to write. One allowed outcome of any answer with a bound is
running into it: `cut_off` tells the documented error of that from any other failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmnb.errors import ExtractError, ModelCallError

LABELS = ("spam", "not spam")


@dataclass(frozen=True)
class CutOff:
    """An answer cut off at max_tokens, as a value: two runs of one greedy call agree on it too."""

    raw: str


async def outcome(awaitable):
    """What `awaitable` gives, or CutOff(raw text) when it raises the error of a cut-off answer."""
    try:
        return await awaitable
    except (ExtractError, ModelCallError) as e:
        if not cut_off(e):
            raise
        return CutOff(getattr(e, "raw", "") or "")


def cut_off(outcome: object) -> bool:
    """Whether `outcome` (a call's value, or the exception it raised) is the documented failure of
    an answer cut off at max_tokens: ExtractError for a structured value, ModelCallError for tool
    calls cut in the middle. A cut-off plain answer is no error: it ends with finish "length"."""
    return isinstance(outcome, (ExtractError, ModelCallError)) and "cut off at max_tokens" in str(outcome)
