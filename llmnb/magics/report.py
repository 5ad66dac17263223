"""What the magics print: a line per finished task, the summary line, an interrupted cell's line."""

from __future__ import annotations

from ..runs import Done
from ..runs.results import key_name

RESULT_WIDTH = 70


class Interrupted(KeyboardInterrupt):
    """The cell was interrupted; IPython shows this one line instead of a traceback. Still an
    error to the kernel, so "Run All" stops here as after any interrupt."""

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


def cache_note(model, sources) -> str:
    """"; 1,400 from the cache, 600 sent" when the model keeps answers."""
    return f"; {sources.line()}" if model.cache is not None else ""


def report(done: Done) -> None:
    """One printed line per completed task: when it began and ended, and its value, cut short."""
    if done.began is None:
        when = f"failed at {done.ended:5.1f} s"
    else:
        when = f"begin {done.began:5.1f} s, done {done.ended:5.1f} s"
    text = " ".join(repr(done.value).split())
    if len(text) > RESULT_WIDTH:
        text = text[: RESULT_WIDTH - 1] + "…"
    print(f"{key_name(done.name):<12} {when}: {text}", flush=True)
