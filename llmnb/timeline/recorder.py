"""Call events -> timeline rows. Pure state, no clock of its own, safe to feed from any thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..events import ENDS, CallEvent

STATUS_OF_END = {"finished": "done", "failed": "failed", "cancelled": "cancelled"}


@dataclass
class Row:
    """One task on the timeline. Times are seconds since the timeline began."""

    key: int
    method: str
    label: str
    model: str
    created: float
    waiting: float | None = None
    started: float | None = None
    end: float | None = None
    status: str = "created"  # created, waiting, running, done, failed, cancelled
    tokens_in: int | None = None
    tokens_out: int | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.method}: {self.label}" if self.method else self.label

    def running_time(self, now: float) -> float:
        """Seconds this task ran (held its slot): the work that concurrency can overlap."""
        if self.started is None:
            return 0.0
        return (self.end if self.end is not None else now) - self.started


class Recorder:
    """Collects rows from call events and loop-lag spans from the probe."""

    def __init__(self, origin: float):
        self.origin = origin
        self._rows: dict[int, Row] = {}
        self.lags: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._tracked = 0
        self.version = 0  # bumped on every change, so a view re-renders only when needed

    def __call__(self, event: CallEvent) -> None:
        self.apply(event)

    def apply(self, event: CallEvent) -> None:
        t = event.time - self.origin
        with self._lock:
            row = self._rows.get(event.call_id)
            if row is None:
                row = self._rows[event.call_id] = Row(event.call_id, event.method, event.label, event.model, created=t)
            if event.kind == "waiting" and row.waiting is None:
                row.waiting, row.status = t, "waiting"
            elif event.kind == "started" and row.started is None:
                row.started, row.status = t, "running"
            elif event.kind in ENDS and row.end is None:
                row.end, row.status, row.error = t, STATUS_OF_END[event.kind], event.error
                row.tokens_in, row.tokens_out = event.tokens_in, event.tokens_out
            self.version += 1

    def add_lag(self, start: float, end: float) -> None:
        with self._lock:
            self.lags.append((start - self.origin, end - self.origin))
            self.version += 1

    def next_tracked_key(self) -> int:
        """Keys for tracked awaitables: negative, so they never meet model call ids."""
        with self._lock:
            self._tracked -= 1
            return self._tracked

    def rows(self) -> list[Row]:
        """A snapshot, in order of creation."""
        with self._lock:
            return sorted((Row(**vars(r)) for r in self._rows.values()), key=lambda r: (r.created, abs(r.key)))

    def has_open_rows(self) -> bool:
        """Whether some task has not ended (its bar still grows), without copying the rows."""
        with self._lock:
            return any(r.end is None for r in self._rows.values())

    def close_open_rows(self, at: float) -> None:
        """Rows still open when the timeline ends never finished: mark them cancelled."""
        with self._lock:
            for row in self._rows.values():
                if row.end is None:
                    row.end, row.status = at - self.origin, "cancelled"
            self.version += 1


def summary(rows: list[Row], now: float) -> dict:
    """Wall time from the first task's creation to the last end, the sum of running times, and
    their ratio: how many tasks' worth of work ran at once (the seed's 5.77 s / 1.39 s)."""
    if not rows:
        return {"tasks": 0, "wall": 0.0, "busy": 0.0, "speedup": 0.0}
    first = min(r.created for r in rows)
    last = max(r.end if r.end is not None else now for r in rows)
    wall = max(last - first, 0.0)
    busy = sum(r.running_time(now) for r in rows)
    return {"tasks": len(rows), "wall": wall, "busy": busy, "speedup": busy / wall if wall > 0 else 0.0}
