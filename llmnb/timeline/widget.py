"""`Timeline`: subscribes to call events for a block of code and shows them, live.

In a kernel with ipywidgets it displays an `ipywidgets.HTML` holding the SVG and refreshes it from
a small render thread at most `FPS` times a second (fewer when a redraw is slow), only when
something changed. A thread, not a loop callback, because the kernel's loop may itself be blocked
(a synchronous model call in the cell), and that is exactly when the picture should keep moving.
When the block ends the output is replaced by the static final picture (text/html SVG +
text/plain), so saved notebooks, nbconvert and GitHub show it without widget state.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import warnings
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from .. import events
from ..errors import ConfigError
from . import lag, render, trace
from .compare import Comparison, Static
from .recorder import Recorder, View

FPS = 10
DRAW_SHARE = 100  # the pause after a redraw, in multiples of the redraw's own time
HINT = "(install ipywidgets and run in Jupyter for the live picture: pip install ipywidgets)"

expect_calls = events.expect_calls  # a task runner's word to the timelines open in its context


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Timeline:
    """A live picture of the tasks run inside `with Timeline():` (or `async with`).

    Every llmnb model call made in the block (and in tasks created there) becomes a row; add any
    other awaitable with `await timeline.track(aw, name=...)`. Afterwards: `records()`, `summary()`,
    `to_svg()`, `to_text()`, `save_trace(path)` for Perfetto, and `Timeline.compare(a, b)`.
    Past 200 rows it draws the run instead of its rows: progress, pace, cost and a strip over
    time; `timeline.expect(n)` gives it the total (the magics' task runner does).
    """

    def __init__(self, title: str | None = None, *, display: bool | None = None):
        self.title = title or "llmnb timeline"
        self._display = display  # None: display when running in a kernel
        self._recorder: Recorder | None = None
        self._listening: AbstractContextManager | None = None
        self._probe: lag.Probe | None = None
        self._probe_task: asyncio.Task | None = None
        self._widget: Any = None  # an ipywidgets.HTML (ipywidgets has no annotations)
        self._handle: Any = None
        self._stop = threading.Event()
        self._painter: threading.Thread | None = None
        self._closed_at: float | None = None
        self._expecting: AbstractContextManager | None = None

    # -- the block ---------------------------------------------------------------------------
    def __enter__(self) -> Timeline:
        show = self._display if self._display is not None else _in_kernel()
        self._widget = self._handle = None
        if show:  # first-use costs (importing ipywidgets, the first widget) before the clock and the probe start
            self._make_widget()
        self._recorder = Recorder(time.perf_counter())
        self._closed_at = None
        self._listening = events.listen(self._recorder)
        self._listening.__enter__()
        self._expecting = events.expecting(self._recorder.expect)
        self._expecting.__enter__()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._probe = lag.Probe(self._recorder.add_lag)
            self._probe_task = loop.create_task(self._probe.run(), name="llmnb-timeline-probe")
        if show:
            self._show()
        return self

    def __exit__(self, *exc) -> None:
        self._closed_at = time.perf_counter()
        if self._probe is not None and self._probe_task is not None:
            self._probe.finish(self._closed_at)  # the loop may have been blocked up to here
            self._probe_task.cancel()
            self._probe = self._probe_task = None
        assert self._listening is not None and self._recorder is not None  # set by __enter__
        self._listening.__exit__(*exc)
        if self._expecting is not None:
            self._expecting.__exit__(None, None, None)
        self._recorder.close_open_rows(self._closed_at)
        self._stop.set()
        if self._painter is not None:
            self._painter.join()
            self._painter = None
        if self._widget is not None:
            self._widget.value = self.to_svg()  # the guaranteed final render
        if self._handle is not None:  # also without ipywidgets, where only this picture is shown
            self._handle.update(Static(self))

    async def __aenter__(self) -> Timeline:
        return self.__enter__()

    async def __aexit__(self, *exc) -> None:
        self.__exit__(*exc)

    async def track(self, awaitable, name: str | None = None):
        """Await `awaitable` and record it as a row named `name`; returns its result. It is reported
        as a call (no method, no model) to every listener, this timeline's and any other."""
        if self._recorder is None:
            raise RuntimeError("track() records into an open timeline: use it inside `with Timeline() as tl:`")
        label = name or getattr(awaitable, "__qualname__", None) or type(awaitable).__name__
        with events.listen(self._recorder):  # also when awaited from a task made before the block
            call = events.Call("", label, "")
        call.emit("started")
        with events.reported(call):
            return await awaitable

    def expect(self, n: int) -> None:
        """Say that `n` more calls are coming (e.g. `tl.expect(len(items))` before a gather), so a
        big run's picture shows done / total and the time left."""
        if self._recorder is None:
            raise RuntimeError("expect() tells an open timeline: use it inside `with Timeline() as tl:`")
        if not isinstance(n, int) or n < 0:
            raise ConfigError(f"expect takes a number of calls (0 or more), not {n!r}")
        self._recorder.expect(n)

    # -- data out ----------------------------------------------------------------------------
    def _now(self) -> float:
        end = self._closed_at if self._closed_at is not None else time.perf_counter()
        return end - self._recorder.origin if self._recorder else 0.0

    def records(self) -> list[dict]:
        """One dict per task: name, method, model, created/start/end (seconds from the timeline's
        start; start is the first attempt's), wait (seconds waiting for a slot), throttled (seconds
        waiting for the rate limit), tool_wait (seconds a model call waited for its tools),
        status, tokens_in, tokens_out, error, ttft (seconds from start to
        the first token, None when unknown), tokens_per_s (output tokens over the time after the
        first token), cached (answered from the cache), cost (USD, None when the price is unknown;
        for a cached answer, what it would have cost), id, parent (for a tool run, the id of the
        model call that asked for it) and worker (the cluster worker that made the call; None: this
        process)."""
        if self._recorder is None:
            return []
        now = self._now()
        return [{"name": r.label, "method": r.method, "model": r.model, "created": r.created, "start": r.started,
                 "end": r.end, "wait": r.time_in("waiting", now), "throttled": r.time_in("throttled", now),
                 "tool_wait": r.time_in("tools", now),
                 "status": r.status, "tokens_in": r.tokens_in, "tokens_out": r.tokens_out, "error": r.error,
                 "ttft": r.ttft(), "tokens_per_s": r.tokens_per_s(now), "cached": r.cached, "cost": r.cost,
                 "id": r.key, "parent": r.parent, "worker": r.worker}
                for r in self._recorder.rows()]

    def summary(self) -> dict:
        """tasks (model calls), tool_runs, and jobs (batch jobs, when there were some); wall (first
        creation to last end); busy (sum of running times) and speedup (busy / wall); ttft_median
        (seconds, None when no call reported its first token); throttled (seconds, summed); cached
        (calls answered from the cache); cost (USD of the calls sent) and saved (what the cached
        answers would have cost), both None when no call reported a cost."""
        return self._view().summary

    @property
    def lags(self) -> list[tuple[float, float]]:
        """Stretches (start, end), in seconds from the timeline's start, when the event loop was blocked."""
        return list(self._recorder.lags) if self._recorder else []

    def _view(self) -> View:
        """What a redraw needs, touching only the rows drawn (none, for a big run)."""
        recorder = self._recorder or Recorder(0.0)
        return recorder.view(self._now(), render.MAX_ROWS, render.BIG_ROWS)

    def to_text(self) -> str:
        """The picture as text: a bar per task, the summary line and a legend."""
        return render.to_text(self._view(), self.title)

    def to_svg(self) -> str:
        """The picture as an SVG document (what the notebook shows)."""
        return render.to_svg(self._view(), self.title)

    def save_svg(self, path) -> Path:
        """Write `to_svg()` to `path`; returns the path."""
        path = Path(path)
        path.write_text(self.to_svg(), encoding="utf-8")
        return path

    def trace(self) -> dict:
        """The timeline as Chrome trace-event JSON data (see `save_trace`)."""
        rows = self._recorder.rows() if self._recorder else []
        return trace.to_trace(rows, self.lags, self._now(), self.title, self.summary())

    def save_trace(self, path) -> Path:
        """Write a trace file that Perfetto (ui.perfetto.dev, Open trace file) and chrome://tracing
        open: a track per task with its phases nested, and the event loop's blocked stretches."""
        path = Path(path)
        path.write_text(json.dumps(self.trace()), encoding="utf-8")
        return path

    @staticmethod
    def compare(*timelines: Timeline, title: str | None = None) -> Comparison:
        """One picture of several timelines on one shared time axis, each a block with its title
        and summary: runs compared at the same scale."""
        return Comparison(timelines, title)

    # -- display -----------------------------------------------------------------------------
    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = {"text/plain": self.to_text(), "text/html": self.to_svg()}
        if self._widget is not None and self._closed_at is None:
            bundle["application/vnd.jupyter.widget-view+json"] = {
                "version_major": 2, "version_minor": 0, "model_id": self._widget.model_id}
        return bundle

    def __repr__(self) -> str:  # terminals and plain IPython: the text form, and how to get the picture
        return f"{self.to_text()}\n{HINT}"

    def _make_widget(self) -> None:
        try:
            import ipywidgets
        except ImportError:
            warnings.warn(f"the timeline is drawn when the block ends {HINT}", stacklevel=3)
            return
        self._widget = ipywidgets.HTML()

    def _show(self) -> None:
        from IPython.display import display

        if self._widget is None:  # no ipywidgets: the final picture replaces this one
            self._handle = display(Static(self), display_id=True)
            return
        self._widget.value = self.to_svg()
        self._handle = display(self, display_id=True)
        self._stop.clear()
        self._painter = threading.Thread(target=self._paint, name="llmnb-timeline", daemon=True)
        self._painter.start()

    def _paint(self) -> None:
        """Redraw on change, at most FPS times a second, until the block ends. A redraw holds the
        GIL that the calls' event loop needs, so the pause after one is at least DRAW_SHARE times
        its length: with thousands of rows (2 ms a redraw) the picture moves 5 times a second and
        drawing keeps to about 1 % of the time."""
        assert self._recorder is not None  # _show starts the painter inside the block
        drawn, pause = -1, 1 / FPS
        while not self._stop.wait(pause):
            # running bars grow with time even without new events
            if self._recorder.version != drawn or self._recorder.has_open_rows():
                start = time.perf_counter()
                drawn = self._recorder.version
                self._widget.value = self.to_svg()
                pause = max(1 / FPS, DRAW_SHARE * (time.perf_counter() - start))
