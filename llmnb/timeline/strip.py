"""A run over time in a fixed number of bins, kept event by event: how many calls were in flight
and throttled (averaged over each bin) and how many ended in it (sent and answered, answered from
the cache, failed). Pure state, no clock: the recorder feeds it under its lock.

Memory and the cost of a redraw stay the same for 100 calls or 100,000: the strip has `BINS` bins;
when the run outgrows them, neighbours are merged in pairs and each bin covers twice the time.
A level (calls in a phase) is a step function of time; each bin keeps the sum of its changes and
of each change times the time from it to the bin's end, which gives the bin's integral (seconds
times calls) exactly, whatever the events' rate and order (threads may deliver them a little out
of order); the mean over a bin is that integral over its width.
"""

from __future__ import annotations

from dataclasses import dataclass

BINS = 120
FIRST_WIDTH = 0.05  # seconds a bin covers at first: a 6 s run fills the strip once
LEVELS = ("running", "throttled")  # the phases whose counts over time are drawn
ENDS = ("done", "cached", "failed")  # how calls end, counted per bin ("done": sent and answered)


class Strip:
    def __init__(self):
        self.width = FIRST_WIDTH
        self.changes = {name: [0] * BINS for name in LEVELS}  # per bin: calls in, less calls out
        self.tails = {name: [0.0] * BINS for name in LEVELS}  # per bin: each change x (bin's end - its time)
        self.ends = {name: [0] * BINS for name in ENDS}
        self.until = 0.0  # the latest time seen

    def move(self, t: float, old: str | None, new: str | None) -> None:
        """A call left phase `old` and entered `new` (either may be a phase not drawn, or None)."""
        for name, change in ((old, -1), (new, 1)):
            if name in self.changes:
                b = self._bin(t)
                self.changes[name][b] += change
                self.tails[name][b] += change * ((b + 1) * self.width - max(t, 0.0))

    def end(self, t: float, how: str) -> None:
        b = self._bin(t)  # first: finding the bin may merge bins into new lists
        self.ends[how][b] += 1

    def _bin(self, t: float) -> int:
        t = max(t, 0.0)
        while t >= BINS * self.width:
            self._coarsen()
        self.until = max(self.until, t)
        return min(int(t / self.width), BINS - 1)

    def _coarsen(self) -> None:
        """Merge bins in pairs. A change in the first of a pair now also holds through the second."""
        w = self.width
        self.tails = {name: [tails[i] + tails[i + 1] + w * self.changes[name][i] for i in range(0, BINS, 2)]
                      + [0.0] * (BINS // 2) for name, tails in self.tails.items()}
        for counts in (self.changes, self.ends):
            for name, v in counts.items():
                counts[name] = [v[i] + v[i + 1] for i in range(0, BINS, 2)] + [0] * (BINS // 2)
        self.width *= 2

    def snapshot(self, now: float) -> StripView:
        """The strip up to `now` (or the latest event, if later): each bin's integral, as lists."""
        used = self._bin(max(now, self.until)) + 1
        until, w = self.until, self.width
        area = {}
        for name in LEVELS:
            level, out = 0, []
            for b in range(used):
                stop = min((b + 1) * w, until)
                changes = self.changes[name][b]
                out.append(self.tails[name][b] - changes * ((b + 1) * w - stop) + level * (stop - b * w))
                level += changes
            area[name] = out
        return StripView(w, used, until, area, {name: v[:used] for name, v in self.ends.items()})


@dataclass
class StripView:
    """The bins in use: bin i covers [i * width, (i + 1) * width), the last one up to `until`."""

    width: float
    used: int
    until: float
    area: dict[str, list[float]]
    ends: dict[str, list[int]]

    def span(self, i: int) -> tuple[float, float]:
        return i * self.width, min((i + 1) * self.width, self.until)

    def mean(self, name: str, i: int) -> float:
        """Calls in phase `name` on average over bin i."""
        a, b = self.span(i)
        return self.area[name][i] / (b - a) if b > a else 0.0

    def ended(self, i: int) -> int:
        return sum(self.ends[name][i] for name in ENDS)

    def rate(self, window: float) -> float:
        """Calls ended a second over the last `window` seconds (the bins they cover, the first one
        in part)."""
        start, count = max(self.until - window, 0.0), 0.0
        for i in range(self.used - 1, -1, -1):
            a, b = self.span(i)
            if b <= start:
                break
            share = 1.0 if a >= start else (b - start) / (b - a)
            count += self.ended(i) * share
        seconds = self.until - start
        return count / seconds if seconds > 0 else 0.0

    def columns(self, span: float, n: int) -> list[tuple[float, float, dict[str, int]]]:
        """The strip resampled to `n` columns over [0, span): per column the mean calls running
        and throttled (weighted by overlap) and the ends of the bins whose middle falls in it."""
        running, throttled = [0.0] * n, [0.0] * n
        ends = [dict.fromkeys(ENDS, 0) for _ in range(n)]
        step = span / n
        for i in range(self.used):
            a, b = self.span(i)
            for c in range(min(int(a / step), n - 1), min(int(b / step), n - 1) + 1):
                overlap = min(b, (c + 1) * step) - max(a, c * step)
                if overlap > 0:
                    running[c] += self.area["running"][i] * overlap / (b - a) / step
                    throttled[c] += self.area["throttled"][i] * overlap / (b - a) / step
            middle = ends[min(int((a + b) / 2 / step), n - 1)]
            for name in ENDS:
                middle[name] += self.ends[name][i]
        return list(zip(running, throttled, ends, strict=True))
