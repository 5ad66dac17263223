"""A big run's picture: instead of thousands of rows, how far it is (ended of expected, failed,
from the cache), how fast (calls a second, the time left), what it cost, and a strip over time of
the calls in flight, throttled and finishing, where a 429 storm (throttled up, finishing down) or a
stall (nothing finishing) shows at a glance. Pure, like render.py, and drawn in its style
(style.py): everything here reads the recorder's counters and strip, never a row.
"""

from __future__ import annotations

import math
from html import escape

from .recorder import Progress
from .strip import ENDS, StripView
from .style import CACHED, COLOURS, LABEL_W, PAD, PLOT_W, ROW_H, TEXT_BAR, cut, money

RATE_WINDOW = 10.0  # seconds: the rate (and the time left) of a live run is that of its recent calls
SPARK = " ▁▂▃▄▅▆▇█"
PROGRESS_MARKS = {"done": "=", "cached": "c", "failed": "x", "cancelled": "/"}
TEXT_LEGEND = ("big run: progress = answered  c from the cache  x failed  / cancelled; strips over time:"
               " calls in flight (running) and throttled (mean at once), finishing (a second), x a call failed")
STRIP_H = 2 * ROW_H
STRIPS = (("in flight", "running", "at once"), ("throttled", "throttled", "at once"),
          ("finishing", "finishing", "a second"))
FILLS = {"done": f'fill="{COLOURS["done"]}"', "cached": CACHED,
         "failed": f'fill="{COLOURS["failed"]}"', "cancelled": f'fill="{COLOURS["cancelled"]}"',
         "running": f'fill="{COLOURS["running"]}"',
         "throttled": f'fill="url(#llmnb-throttle)" stroke="{COLOURS["throttled"]}" stroke-width="0.5"'}


def amount(x: float) -> str:
    """3 significant digits, never in exponent form: 0.25, 42.5, 1,830."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def rate(progress: Progress, summary: dict) -> float:
    """Calls ended a second: over the last RATE_WINDOW seconds while calls run, else over the run."""
    if progress.open:
        return progress.strip.rate(RATE_WINDOW)
    return progress.finished / summary["wall"] if summary["wall"] > 0 else 0.0


def headline(progress: Progress) -> str:
    """'6,512 / 10,000 (65 %)': calls ended of those expected (or made, when the run did not say)."""
    pct = f" ({100 * progress.finished / progress.total:.0f} %)" if progress.total else ""
    return f"{progress.finished:,} / {progress.total:,}{pct}"


def counts(progress: Progress) -> list[str]:
    ended = progress.ended
    out = [f"{ended[how]:,} {what}" for how, what in (("failed", "failed"), ("cached", "from the cache"),
                                                      ("cancelled", "cancelled")) if ended[how]]
    under_way = progress.calls - progress.finished  # running, or waiting for a slot or the rate limit
    return out + ([f"{under_way:,} under way"] if under_way else [])


def pace(progress: Progress, summary: dict) -> list[str]:
    """The rate, the time left (live) or taken, and the cost so far."""
    per_s = rate(progress, summary)
    out = [f"{amount(per_s)} calls/s"]
    left = progress.total - progress.finished
    if progress.open and progress.expected and left > 0:
        out.append(f"about {duration(left / per_s)} left" if per_s > 0 else
                   f"stalled: nothing ended in the last {RATE_WINDOW:g} s")
    elif not progress.open:
        out.append(f"took {duration(summary['wall'])}" + (f", {left:,} never started" if left > 0 else ""))
    if summary["cost"] is not None:
        saved = f" (saved {money(summary['saved'])})" if summary["cached"] else ""
        out.append(f"cost {money(summary['cost'])}{' so far' if progress.open else ''}{saved}")
    return out


# -- text -------------------------------------------------------------------------------------
def text_lines(progress: Progress, summary: dict, span: float, bar) -> list[str]:
    """The big run's lines in the text form, on the block's time axis (`bar` draws one)."""
    width = TEXT_BAR
    cells, edge, done = [" "] * width, 0, 0
    for how, mark in PROGRESS_MARKS.items():
        done += progress.ended[how]
        stop = round(done / progress.total * width) if progress.total else 0
        cells[edge:stop] = mark * (stop - edge)
        edge = stop
    lines = [f"{'progress':<38} |{''.join(cells)}| {' · '.join([headline(progress), *counts(progress)])}",
             f"{'':<38}  {' · '.join(pace(progress, summary))}"]
    columns = progress.strip.columns(span, width)
    seconds = span / width
    series = {"running": [c[0] for c in columns], "throttled": [c[1] for c in columns],
              "finishing": [sum(c[2].values()) / seconds for c in columns]}
    for label, name, unit in STRIPS:
        top = max(series[name])
        lines.append(f"{label:<38} |{spark(series[name], top)}| up to {amount(top)} {unit}")
    failed = [("x", (i + 0.2) * seconds, (i + 0.8) * seconds) for i, c in enumerate(columns) if c[2]["failed"]]
    for worker, strip in progress.workers.items():
        flight = [c[0] for c in strip.columns(span, width)]
        lines.append(f"{cut(f'in flight on {worker}', 38):<38} |{spark(flight, max(flight))}| up to "
                     f"{amount(max(flight))} at once")
    if failed:
        lines.append(f"{'failed':<38} |{bar(failed)}| {progress.ended['failed']:,} in all")
    lines += [f"failed: {cut(f'{name}: {error}', 110)}" for name, error in progress.failures]
    return lines


def spark(values: list[float], top: float) -> str:
    """One character a column, its height the value's share of `top` (blank only at 0)."""
    if top <= 0:
        return " " * len(values)
    return "".join(SPARK[max(1, math.ceil(v / top * 8))] if v > 0 else " " for v in values)


# -- SVG --------------------------------------------------------------------------------------
def svg_rows(out: list[str], progress: Progress, summary: dict, y: float, x) -> float:
    """Append the progress bar, the pace line, the strips and the last failures from `y`."""
    left, w = LABEL_W + PAD, PLOT_W
    out.append(f'<g class="llmnb-progress"><text x="{PAD}" y="{y + 13}" font-weight="bold"'
               f' fill="currentColor">{headline(progress)}</text>'
               f'<rect x="{left}" y="{y + 3}" width="{w}" height="{ROW_H - 6}" fill="none"'
               ' stroke="currentColor" stroke-opacity="0.35"/>')
    edge = 0.0
    parts = [(how, progress.ended[how]) for how in PROGRESS_MARKS] + [("running", progress.calls - progress.finished)]
    for how, n in parts:
        share = n / progress.total * w if progress.total else 0
        if share > 0:
            out.append(f'<rect class="llmnb-progress-{how}" x="{left + edge:.1f}" y="{y + 3}" width="{share:.1f}"'
                       f' height="{ROW_H - 6}" {FILLS[how]}><title>{n:,} {how}</title></rect>')
        edge += share
    out.append("</g>")
    y += ROW_H
    line = " · ".join([*counts(progress), *pace(progress, summary)])
    out.append(f'<text class="llmnb-pace" x="{PAD}" y="{y + 13}" fill="currentColor">{escape(line)}</text>')
    y += ROW_H
    for label, name, unit in STRIPS:
        y = _strip(out, progress.strip, label, name, unit, y, x)
    for worker, strip in progress.workers.items():  # a cluster's run: a strip per worker
        y = _strip(out, strip, escape(cut(f"on {worker}", 30)), "running", "at once", y, x)
    for name, error in progress.failures:
        out.append(f'<text x="{PAD}" y="{y + 12}" fill="{COLOURS["failed"]}">'
                   f'{escape(cut(f"failed: {name}: {error}", 120))}</text>')
        y += ROW_H
    return y


def _strip(out: list[str], strip: StripView, label: str, name: str, unit: str, y: float, x) -> float:
    """One strip: a bar a bin, its height the bin's mean (stacked by how calls ended, for finishing)."""
    bins = []
    for i in range(strip.used):
        a, b = strip.span(i)
        if name == "finishing":
            bins.append((a, b, [(how, strip.ends[how][i] / (b - a) if b > a else 0.0) for how in ENDS]))
        else:
            bins.append((a, b, [(name, strip.mean(name, i))]))
    top = max((sum(v for _, v in stack) for _, _, stack in bins), default=0.0)
    bottom, room = y + STRIP_H - 3, STRIP_H - 6
    out.append(f'<g class="llmnb-strip" data-name="{name}"><title>{label}: calls {unit}, over bins of'
               f' {strip.width:g} s</title>'
               f'<text x="{PAD}" y="{y + 14}" fill="currentColor">{label}</text>'
               f'<text x="{PAD}" y="{y + 28}" fill="currentColor" fill-opacity="0.7">up to {amount(top)} {unit}'
               f'</text><line x1="{x(0):.1f}" y1="{bottom}" x2="{x(strip.until):.1f}" y2="{bottom}"'
               ' stroke="currentColor" stroke-opacity="0.3"/>')
    for a, b, stack in bins:
        base = bottom
        for how, value in stack:
            if value <= 0 or top <= 0:
                continue
            h = value / top * room
            out.append(f'<rect x="{x(a):.1f}" y="{base - h:.1f}" width="{max(x(b) - x(a), 1):.1f}" height="{h:.1f}"'
                       f' {FILLS[how]}/>')
            base -= h
    out.append("</g>")
    return y + STRIP_H
