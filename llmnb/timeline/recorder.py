"""Call events -> timeline rows. Pure state, no clock of its own, safe to feed from any thread.

A redraw must cost the same with 50 rows or 5,000: rows are kept in the order their calls were
made, as they come (never sorted again), and the summary's totals are kept up to date event by event. A phase total
(seconds waiting, throttled or running, over all rows) is a straight line in `now`: each row
still in that phase adds `now - since`, each finished stretch a constant. So the recorder keeps
two numbers per phase, the count of rows in it (the slope) and a sum (the constant), and reads
any total at any `now` in constant time. The same holds for a big run's picture: its counts, cost
and strip over time (strip.py) are kept as events come, so it is drawn without looking at a row.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

from ..events import ENDS, JOB, CallEvent
from .strip import Strip, StripView

STATUS_OF_END = {"finished": "done", "failed": "failed", "cancelled": "cancelled"}
PHASES = ("waiting", "throttled", "running", "tools")  # what a row is doing between its events; "created" before them


@dataclass
class Row:
    """One task on the timeline. Times are seconds since the timeline began.

    `phases` lists (phase, since) in order: a row waits for a slot, may wait for the rate limit
    (throttled, before or between attempts), runs. `started` is the first start: a call that asks
    again (retries) keeps one row from its first start to the end of its last attempt.
    """

    key: int
    method: str
    label: str
    model: str
    created: float
    waiting: float | None = None
    started: float | None = None
    first_token: float | None = None
    end: float | None = None
    status: str = "created"  # created, waiting, throttled, running, done, failed, cancelled
    tokens_in: int | None = None
    tokens_out: int | None = None
    error: str | None = None
    cached: bool = False  # answered from the cache: nothing was sent
    cost: float | None = None  # USD; for a cached answer, what it would have cost
    phases: list[tuple[str, float]] = field(default_factory=list)
    spent: dict[str, float] = field(default_factory=dict)  # seconds in each phase, stretches already over
    parent: int | None = None  # a tool run: the key of the model call's row that asked for it
    stalled: bool = False  # a batch job that has made no progress for long
    worker: str | None = None  # the cluster worker that made the call (None: this process)

    @property
    def name(self) -> str:
        return f"{self.method}: {self.label}" if self.method else self.label

    @property
    def phase(self) -> str:
        return self.phases[-1][0] if self.phases and self.end is None else "created"

    def time_in(self, phase: str, now: float) -> float:
        """Seconds spent in `phase` up to `now` (the stretch under way counts until `now`)."""
        ongoing = now - self.phases[-1][1] if self.phase == phase else 0.0
        return self.spent.get(phase, 0.0) + max(ongoing, 0.0)

    def running_time(self, now: float) -> float:
        """Seconds this task ran (held its slot, not throttled): the work concurrency can overlap."""
        return self.time_in("running", now)

    def stretches(self, now: float) -> list[tuple[str, float, float]]:
        """(phase, start, end) of each stretch, in order; the last one ends at the row's end or `now`."""
        if not self.phases:  # made, not yet waiting or running
            return []
        ends = [t for _, t in self.phases[1:]] + [self.end if self.end is not None else now]
        return [(phase, since, until) for (phase, since), until in zip(self.phases, ends, strict=True)]

    def ttft(self) -> float | None:
        """Seconds from the (first) start to the first output token, None when unknown."""
        if self.first_token is None or self.started is None:
            return None
        return self.first_token - self.started

    def tokens_per_s(self, now: float) -> float | None:
        """Output tokens over the time after the first token (so far, while it runs)."""
        if self.first_token is None or not self.tokens_out:
            return None
        after = (self.end if self.end is not None else now) - self.first_token
        return self.tokens_out / after if after > 0 else None

    def copy(self) -> Row:
        # a redraw copies the rows it draws: by their __dict__, several times faster than replace()
        row = object.__new__(Row)
        row.__dict__.update(self.__dict__, phases=list(self.phases), spent=dict(self.spent))
        return row


@dataclass
class Group:
    """The rows in the middle of a long timeline, drawn as one row."""

    count: int
    start: float
    end: float


@dataclass
class Progress:
    """A big run, drawn without its rows: how far it is and how it went over time. It counts the
    calls a program made (a tool run, whose call has a parent, is not one of them)."""

    calls: int  # made so far
    expected: int | None  # how many the run will make, when it said so (`Timeline.expect`)
    ended: Counter  # done (sent and answered), cached, failed, cancelled
    open: int  # rows of any kind not ended
    strip: StripView
    failures: list[tuple[str, str]]  # the last few: (row name, error)
    workers: dict[str, StripView] = field(default_factory=dict)  # a cluster's workers: each one's strip

    @property
    def total(self) -> int:
        return max(self.expected or 0, self.calls)

    @property
    def finished(self) -> int:
        return sum(self.ended.values())


@dataclass
class View:
    """What one redraw needs: the rows drawn, the group of hidden ones, the loop's blocked
    stretches and the summary, all at one `now`; for a big run, its progress instead of rows."""

    rows: list[Row]
    hidden: Group | None
    lags: list[tuple[float, float]]
    now: float
    summary: dict
    statuses: Counter
    big: Progress | None = None

    @property
    def span(self) -> float:
        """The time the picture must cover: up to now, the last end and the last blocked stretch."""
        ends = [self.now, *(r.end for r in self.rows if r.end is not None), *(b for _, b in self.lags)]
        if self.hidden:
            ends.append(self.hidden.end)
        if self.big:
            ends.append(self.big.strip.until)
        return max(ends)


class Median:
    """The running median: two heaps, O(log n) to add, O(1) to read."""

    def __init__(self):
        self.low: list[float] = []  # negated, the smaller half (one more when odd)
        self.high: list[float] = []

    def add(self, x: float) -> None:
        heapq.heappush(self.low, -heapq.heappushpop(self.high, x))
        if len(self.low) > len(self.high) + 1:
            heapq.heappush(self.high, -heapq.heappop(self.low))

    def value(self) -> float | None:
        if not self.low:
            return None
        if len(self.low) > len(self.high):
            return -self.low[0]
        return (-self.low[0] + self.high[0]) / 2


class Recorder:
    """Collects rows from call events and loop-lag spans from the probe."""

    def __init__(self, origin: float):
        self.origin = origin
        self._rows: dict[int, Row] = {}
        self._order: list[Row] = []  # creation order (events arrive in it, up to threads' interleaving)
        self._ends: list[float] = []  # their ends (inf while open), for the hidden group's extent
        self._position: dict[int, int] = {}  # key -> index in both lists
        self.lags: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._slope: Counter[str] = Counter()  # per phase: rows in it now
        # per phase: finished stretches minus the starts of those under way
        self._sum: defaultdict[str, float] = defaultdict(float)
        self._statuses: Counter[str] = Counter()
        self._open = 0
        self._last_end = 0.0
        self._ttfts = Median()
        self._strip = Strip()
        self._workers: dict[str, Strip] = {}  # a cluster's workers: each one's calls over time
        self._tool_runs = 0  # rows of calls with a parent: not counted as the program's calls
        self._jobs = 0  # rows of batch jobs: not the program's calls either
        self._ended: Counter[str] = Counter()  # the program's calls, by how they ended
        self._money = {"spent": 0.0, "saved": 0.0}
        self._priced = False  # some call reported a cost
        self._failures: deque[tuple[str, str]] = deque(maxlen=3)
        self.expected: int | None = None
        self.version = 0  # bumped on every change, so a view re-renders only when needed

    def __call__(self, event: CallEvent) -> None:
        self.apply(event)

    def apply(self, event: CallEvent) -> None:
        t = event.time - self.origin
        with self._lock:
            row = self._rows.get(event.call_id) or self._add(event, t)
            if row.end is not None:
                return
            kind = event.kind
            if kind == "waiting" and row.started is None and row.phase != "waiting":
                row.waiting = row.waiting if row.waiting is not None else t
                self._enter(row, "waiting", t)
            elif kind == "throttled" and row.phase != "throttled":
                self._enter(row, "throttled", t)
            elif kind == "started" and row.phase != "running":
                row.started = row.started if row.started is not None else t
                self._enter(row, "running", t)
            elif kind == "keeping" and row.phase == "running":  # its slot is free: no longer in flight
                self._enter(row, "waiting", t)
            elif kind == "tools" and row.started is not None and row.phase in ("running", "waiting"):
                self._enter(row, "tools", t)
            elif kind == "first_token" and row.first_token is None:
                row.first_token = t
                if row.started is not None:
                    self._ttfts.add(t - row.started)
            elif kind == "progress" and event.tokens_out is not None:
                row.tokens_out = event.tokens_out
                row.stalled = False
            elif kind == "stalled":
                row.stalled = True
            elif kind in ENDS:
                tokens_out = event.tokens_out if event.tokens_out is not None else row.tokens_out
                row.cached, row.cost = event.cached, event.cost
                self._finish(row, t, STATUS_OF_END[kind], event.error, event.tokens_in, tokens_out)
            self.version += 1

    def expect(self, n: int) -> None:
        """`n` more calls are coming (the progress of a big run counts up to the total)."""
        with self._lock:
            self.expected = (self.expected or 0) + n
            self.version += 1

    def _add(self, event: CallEvent, t: float) -> Row:
        row = self._rows[event.call_id] = Row(event.call_id, event.method, event.label, event.model, created=t,
                                              parent=event.parent, worker=event.worker)
        if event.worker is not None and event.worker not in self._workers:
            self._workers[event.worker] = Strip()
        self._position[event.call_id] = len(self._order)
        self._order.append(row)
        self._ends.append(math.inf)
        self._statuses["created"] += 1
        self._open += 1
        if event.parent is not None:
            self._tool_runs += 1
        self._jobs += event.method == JOB
        return row

    def _enter(self, row: Row, phase: str | None, t: float) -> None:
        """Move `row` into `phase` at `t` (or out of every phase, when `phase` is None)."""
        old = None
        if row.phases:
            old, since = row.phases[-1]
            row.spent[old] = row.spent.get(old, 0.0) + (t - since)
            self._slope[old] -= 1
            self._sum[old] += t  # its line was now - since; the stretch is over: t - since
        self._strip.move(t, old, phase)
        if row.worker is not None:
            self._workers[row.worker].move(t, old, phase)
        if phase is not None:
            row.phases.append((phase, t))
            self._slope[phase] += 1
            self._sum[phase] -= t
            self._set_status(row, phase)

    def _set_status(self, row: Row, status: str) -> None:
        self._statuses[row.status] -= 1
        self._statuses[status] += 1
        row.status = status

    def _finish(self, row: Row, t: float, status: str, error: str | None = None, tokens_in: int | None = None,
                tokens_out: int | None = None) -> None:
        if row.phases:
            self._enter(row, None, t)
        row.end, row.error, row.tokens_in, row.tokens_out = t, error, tokens_in, tokens_out
        self._set_status(row, status)
        self._ends[self._position[row.key]] = t
        self._open -= 1
        self._last_end = max(self._last_end, t)
        if row.cost is not None:
            self._priced = True
            self._money["saved" if row.cached else "spent"] += row.cost
        if row.parent is not None or row.method == JOB:  # a tool run, a batch job
            return
        how = "cached" if row.cached and status == "done" else status
        self._ended[how] += 1
        if how in self._strip.ends:
            self._strip.end(t, how)
            if row.worker is not None:
                self._workers[row.worker].end(t, how)
        if status == "failed":
            self._failures.append((row.name, error or "failed"))

    def add_lag(self, start: float, end: float) -> None:
        with self._lock:
            self.lags.append((start - self.origin, end - self.origin))
            self.version += 1

    def rows(self) -> list[Row]:
        """A snapshot of every row, in order of creation."""
        with self._lock:
            return [r.copy() for r in self._order]

    def has_open_rows(self) -> bool:
        """Whether some task has not ended (its bar still grows)."""
        return self._open > 0

    def close_open_rows(self, at: float) -> None:
        """Rows still open when the timeline ends never finished: mark them cancelled."""
        with self._lock:
            for row in self._order:
                if row.end is None:
                    self._finish(row, at - self.origin, "cancelled", tokens_out=row.tokens_out)
            self.version += 1

    def total(self, phase: str, now: float) -> float:
        """Seconds all rows spent in `phase` up to `now`."""
        return self._slope[phase] * now + self._sum[phase]

    def summary(self, now: float) -> dict:
        """Wall time from the first task's creation to the last end, the sum of running times, and
        their ratio: how many tasks' worth of work ran at once (LangChain's async guide: 5.77 s / 1.39 s); the
        median time to first token (None when no call reported one) and the throttled seconds; how
        many calls were answered from the cache, the cost of the calls sent (USD) and what the
        cached answers would have cost (both None when no call reported a cost)."""
        with self._lock:
            return self._summary(now)

    def _summary(self, now: float) -> dict:
        money = {name: value if self._priced else None for name, value in self._money.items()}
        out = {"tasks": len(self._order) - self._tool_runs - self._jobs, "tool_runs": self._tool_runs, "wall": 0.0,
               "busy": 0.0, "speedup": 0.0, "ttft_median": None, "throttled": 0.0, "cached": self._ended["cached"],
               "cost": money["spent"], "saved": money["saved"], **({"jobs": self._jobs} if self._jobs else {})}
        if self._workers:  # a cluster's run: how many workers made its calls
            out["workers"] = len(self._workers)
        if not self._order:
            return out
        last = max(self._last_end, now) if self._open else self._last_end
        wall = max(last - self._order[0].created, 0.0)
        busy = self.total("running", now)
        return {**out, "wall": wall, "busy": busy, "speedup": busy / wall if wall > 0 else 0.0,
                "ttft_median": self._ttfts.value(), "throttled": self.total("throttled", now)}

    def view(self, now: float, max_rows: int, big_rows: int | None = None) -> View:
        """The rows to draw one by one (copies) and the middle ones grouped, when there are more than
        `max_rows`; with more than `big_rows`, no rows but the run's progress. Touches only what is
        drawn, whatever the number of rows."""
        with self._lock:
            n = len(self._order)
            if big_rows is not None and n > big_rows:
                return View([], None, list(self.lags), now, self._summary(now), +self._statuses, self._progress(now))
            if n <= max_rows:
                shown, hidden = [r.copy() for r in self._order], None
            else:
                head = (max_rows - 1) // 2
                tail = max_rows - 1 - head
                shown = [r.copy() for r in self._order[:head]] + [r.copy() for r in self._order[n - tail:]]
                end = max(self._ends[head:n - tail])
                hidden = Group(n - head - tail, self._order[head].created, now if end == math.inf else end)
            return View(shown, hidden, list(self.lags), now, self._summary(now), +self._statuses)

    def _progress(self, now: float) -> Progress:
        calls = len(self._order) - self._tool_runs - self._jobs
        return Progress(calls, self.expected, +self._ended, self._open, self._strip.snapshot(now), list(self._failures),
                        {worker: strip.snapshot(now) for worker, strip in self._workers.items()})
