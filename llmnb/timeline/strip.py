"""A run over time in a fixed number of bins, kept event by event: how many calls were in flight
and throttled (averaged over each bin) and how many ended in it (sent and answered, answered from
the cache, failed). Pure state, no clock: the recorder feeds it under its lock.

Memory and the cost of a redraw stay the same for 100 calls or 100,000: the strip has `BINS` bins;
when the run outgrows them, neighbours are merged in pairs and each bin covers twice the time.
A level (calls in a phase) is a step function of time, so each bin keeps its integral (seconds
times calls); its mean is the integral over the bin's width, exact whatever the events' rate.
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
        self.counts = dict.fromkeys(LEVELS, 0)  # calls in each phase now
        self.area = {name: [0.0] * BINS for name in LEVELS}  # per bin: seconds x calls
        self.ends = {name: [0] * BINS for name in ENDS}
        self.at = 0.0  # the integrals are complete up to here

    def move(self, t: float, old: str | None, new: str | None) -> None:
        """A call left phase `old` and entered `new` (either may be a phase not drawn, or None)."""
        self._advance(t)
        if old in self.counts:
            self.counts[old] -= 1
        if new in self.counts:
            self.counts[new] += 1

    def end(self, t: float, how: str) -> None:
        self._advance(t)
        self.ends[how][self._bin(max(t, 0.0))] += 1

    def _bin(self, t: float) -> int:
        return min(int(t / self.width), BINS - 1)

    def _advance(self, t: float) -> None:
        """Add the current levels from `at` up to `t` into the bins (a late event from another
        thread, a little before `at`, counts at `at`)."""
        if t <= self.at:
            return
        while t >= BINS * self.width:
            self._coarsen()
        levels = [(self.area[name], n) for name, n in self.counts.items() if n]
        while self.at < t:
            b = self._bin(self.at)
            until = min(t, (b + 1) * self.width)
            if until <= self.at:  # float rounding at a bin's edge: the next bin
                until = min(t, (b + 2) * self.width)
                b = min(b + 1, BINS - 1)
            for area, n in levels:
                area[b] += n * (until - self.at)
            self.at = until

    def _coarsen(self) -> None:
        def pairs(values):
            merged = [values[i] + values[i + 1] for i in range(0, BINS, 2)]
            return merged + [type(values[0])()] * (BINS - len(merged))

        self.area = {name: pairs(v) for name, v in self.area.items()}
        self.ends = {name: pairs(v) for name, v in self.ends.items()}
        self.width *= 2

    def snapshot(self, now: float) -> StripView:
        """The strip up to `now` (levels still held count until then), as plain lists."""
        self._advance(now)
        used = min(self._bin(max(self.at, 0.0)) + 1, BINS)
        return StripView(self.width, used, max(self.at, now),
                         {name: v[:used] for name, v in self.area.items()},
                         {name: v[:used] for name, v in self.ends.items()})


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
        cols = [[0.0, 0.0, dict.fromkeys(ENDS, 0)] for _ in range(n)]
        step = span / n
        for i in range(self.used):
            a, b = self.span(i)
            for c in range(min(int(a / step), n - 1), min(int(b / step), n - 1) + 1):
                overlap = min(b, (c + 1) * step) - max(a, c * step)
                if overlap > 0:
                    cols[c][0] += self.area["running"][i] * overlap / (b - a) / step
                    cols[c][1] += self.area["throttled"][i] * overlap / (b - a) / step
            middle = cols[min(int((a + b) / 2 / step), n - 1)][2]
            for name in ENDS:
                middle[name] += self.ends[name][i]
        return [(running, throttled, ends) for running, throttled, ends in cols]
