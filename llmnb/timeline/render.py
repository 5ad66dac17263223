"""Views -> SVG and text. Pure: no widgets, no clock; each view carries its own `now`.

A picture holds one or more blocks (a timeline each, with its title, rows and summary) on one
shared time axis, so two runs compared side by side are drawn at the same scale. A block of a big
run (more than BIG_ROWS rows) shows its progress and a strip over time instead (bigrun.py).
"""

from __future__ import annotations

import math
from html import escape

from ..events import JOB
from . import bigrun
from .recorder import Row, View
from .style import CACHED, COLOURS, DASH, DEFS, LABEL_W, PAD, PLOT_W, ROW_H, TEXT_BAR, TOP, cut, money, nested

MAX_ROWS = 40  # beyond this, the rows in the middle are grouped into one "+N more" row
BIG_ROWS = 200  # beyond this, a run is drawn as its progress and a strip over time, not as rows
TEXT_MARKS = {"waiting": ".", "throttled": "~", "before": "-", "running": "=", "tools": ":", "cached": "c"}
TEXT_LEGEND = ("legend: . waiting for a slot  ~ throttled (rate limit)  - running, before the first token"
               "  = running  : waiting for its tools  c from the cache  # event loop blocked")

Block = tuple[str, View]  # a title and what to draw under it


def nice_step(span: float, ticks: int = 6) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about `ticks` ticks over `span`."""
    raw = max(span, 1e-3) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _end(row: Row, now: float) -> float:
    return row.end if row.end is not None else now


def _span(blocks: list[Block]) -> float:
    return max(view.span for _, view in blocks) or 1.0


def pieces(row: Row, now: float) -> list[tuple[str, float, float]]:
    """The row's stretches to draw, in order, with running split at the first token:
    'waiting', 'throttled', 'before' (running, no token yet) and 'running'."""
    out = []
    for phase, a, b in row.stretches(now):
        ft = row.first_token
        if phase == "running" and ft is not None and a < ft:
            out.append(("before", a, min(ft, b)))
            if ft < b:
                out.append(("running", ft, b))
        else:
            out.append((phase, a, b))
    return out


def cost_text(summary: dict) -> str:
    """What the calls cost and what the cache saved ('' when neither is known)."""
    parts = []
    if summary["cost"] is not None:
        parts.append(f"cost {money(summary['cost'])}")
    if summary["cached"]:
        saved = f" (saved {money(summary['saved'])})" if summary["saved"] is not None else ""
        parts.append(f"{summary['cached']:,} from the cache{saved}")
    return " · ".join(parts)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def summary_line(view: View) -> str:
    s, statuses = view.summary, view.statuses
    extra = "".join(f", {statuses[what]} {what}" for what in ("failed", "cancelled") if statuses[what])
    details = ""
    if s["ttft_median"] is not None:
        details += f" · median first token {s['ttft_median']:.2f} s"
    if s["throttled"] > 0:
        details += f" · throttled {s['throttled']:.2f} s"
    if cost_text(s) and view.big is None:  # a big run's progress line says it already
        details += f" · {cost_text(s)}"
    tools = f" and {plural(s['tool_runs'], 'tool run')}" if s.get("tool_runs") else ""
    tools += f" in {plural(s['jobs'], 'batch job')}" if s.get("jobs") else ""
    where = f" on {plural(s['workers'], 'worker')}" if s.get("workers") else ""  # a cluster's run
    return (f"{plural(s['tasks'], 'task')}{tools}{where}{extra} · wall {s['wall']:.2f} s"
            f" · sum of task times {s['busy']:.2f} s{details} · ratio {s['speedup']:.2f}x")


def job_details(row: Row, now: float) -> list[str]:
    """A batch job's row: its phase, the rows it has answered, and whether it is stalled."""
    phase = {"waiting": "validating", "running": "in progress", "tools": "finalizing"}.get(row.phase)
    answered = [f"{row.tokens_out:,} rows answered"] if row.tokens_out is not None else []
    stalled = ["stalled: no progress for long"] if row.stalled and row.end is None else []
    return [*([phase] if phase and row.end is None else []), *answered, *stalled]


def details(row: Row, now: float) -> list[str]:
    """What a row's hover text and text line say beyond its bar."""
    if row.method == JOB:
        return job_details(row, now) + ([row.error] if row.error else [])
    out = ["from the cache"] if row.cached else []
    if row.cost is not None:
        out.append(("would have cost " if row.cached else "cost ") + money(row.cost))
    if row.tokens_out is not None:
        rate = row.tokens_per_s(now)
        out.append(f"{row.tokens_out} tokens out" + (f" ({rate:.3g}/s after the first)" if rate else ""))
    if row.ttft() is not None:
        out.append(f"first token after {row.ttft():.2f} s")
    throttled = row.time_in("throttled", now)
    if throttled > 0:
        out.append(f"throttled {throttled:.2f} s")
    if row.error:
        out.append(row.error)
    return out


def hover(row: Row, now: float) -> str:
    end = f"{row.end:.2f} s" if row.end is not None else "still running"
    tokens_in = f"{row.tokens_in} tokens in" if row.tokens_in is not None else ""
    lines = [row.name, " · ".join(x for x in (row.model, row.status) if x),
             f"{row.created:.2f} s → {end}",
             f"waited {row.time_in('waiting', now):.2f} s · ran {row.running_time(now):.2f} s",
             *([tokens_in] if tokens_in else []), *details(row, now)]
    return "\n".join(lines)


# -- text -------------------------------------------------------------------------------------
def to_text(view: View, title: str = "timeline") -> str:
    """A fixed-width picture: one line per task, its phases as characters (see TEXT_LEGEND)."""
    return text([(title, view)])


def text(blocks: list[Block]) -> str:
    span = _span(blocks)

    def col(t: float) -> int:
        return min(TEXT_BAR - 1, int(t / span * TEXT_BAR))

    def bar(stretches) -> str:
        cells = [" "] * TEXT_BAR
        for mark, a, b in stretches:
            for c in range(col(a), col(b) + 1):
                cells[c] = mark
        return "".join(cells)

    lines = []
    for title, view in blocks:
        lines.append(f"{title} (0 .. {span:.2f} s)")
        if view.big:
            lines += bigrun.text_lines(view.big, view.summary, span, bar)
        shown, hidden = nested(view.rows), view.hidden
        for n, row in enumerate(shown):
            marks = [(TEXT_MARKS[p], a, b) for p, a, b in pieces(row, view.now)]
            if row.cached:
                marks.append((TEXT_MARKS["cached"], row.created, _end(row, view.now)))
            end = f"{row.end:6.2f} s" if row.end is not None else " ...    "
            extra = "".join(f", {d}" for d in details(row, view.now))
            lines.append(f"{name(row)[:38]:<38} |{bar(marks)}| {row.created:6.2f} -> {end} {row.status}{extra}")
            if hidden and n == len(shown) // 2 - 1:
                group = bar([("*", hidden.start, hidden.end)])
                lines.append(f"{f'+{hidden.count} more tasks':<38} |{group}|")
        if view.lags:
            total = sum(b - a for a, b in view.lags)
            blocked = bar([("#", a, b) for a, b in view.lags])
            lines.append(f"{'event loop blocked':<38} |{blocked}| {total:.2f} s in all")
        lines.append(summary_line(view))
    lines.append(TEXT_LEGEND)
    if any(view.big for _, view in blocks):
        lines.append(bigrun.TEXT_LEGEND)
    return "\n".join(lines)


# -- SVG --------------------------------------------------------------------------------------
def to_svg(view: View, title: str = "timeline") -> str:
    """The timeline as a standalone SVG. Text uses currentColor so it follows light and dark themes."""
    return svg([(title, view)], title)


def svg(blocks: list[Block], heading: str) -> str:
    """Blocks one under another on a shared axis; a block's own title line only when there are several."""
    span = _span(blocks)
    width = LABEL_W + PLOT_W + 2 * PAD

    def x(t: float) -> float:
        return LABEL_W + PAD + t / span * PLOT_W

    body: list[str] = []
    y: float = TOP
    for title, view in blocks:
        if len(blocks) > 1:
            body.append(f'<text x="{PAD}" y="{y + 13}" font-weight="bold" fill="currentColor">{escape(cut(title, 90))}'
                        '</text>')
            y += ROW_H
        y = _block(body, view, y, x)
    height = y + 22
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
           ' font-family="sans-serif" font-size="11" style="color: inherit">', DEFS,
           f'<text x="{PAD}" y="16" font-size="13" font-weight="bold" fill="currentColor">'
           f'{escape(cut(heading, 100))}</text>',
           _legend()]
    step = nice_step(span)
    for i in range(int(span / step) + 1):
        t = i * step
        out.append(f'<line x1="{x(t):.1f}" y1="{TOP - 4}" x2="{x(t):.1f}" y2="{y}" stroke="currentColor"'
                   ' stroke-opacity="0.15"/>'
                   f'<text x="{x(t):.1f}" y="{y + 13}" text-anchor="middle" fill="currentColor">{t:g} s</text>')
    out += body
    out.append("</svg>")
    return "".join(out)


def _legend() -> str:
    """One line of swatches, each drawn as its bars are: (label, markup at x=0)."""
    bar = 'x="0" y="24" width="10" height="10"'
    items = [("waiting", f'<rect {bar} fill="url(#llmnb-wait)"/>'),
             ("throttled", f'<rect {bar} fill="url(#llmnb-throttle)" stroke="{COLOURS["throttled"]}"/>'),
             ("to first token", f'<rect x="0" y="26" width="10" height="6" fill="{COLOURS["done"]}"'
                                ' fill-opacity="0.45"/>'
                                '<line x1="10" y1="23" x2="10" y2="35" stroke="currentColor" stroke-width="1.5"/>'),
             ("running", f'<rect {bar} fill="{COLOURS["running"]}"/>'),
             ("done", f'<rect {bar} fill="{COLOURS["done"]}"/>'),
             ("tool", f'<rect {bar} fill="{COLOURS["tool"]}"/>'),
             ("from the cache", f'<rect {bar} {CACHED}/>'),
             ("failed", f'<rect {bar} fill="{COLOURS["failed"]}"/>'),
             ("cancelled", f'<rect {bar} fill="{COLOURS["cancelled"]}"{DASH}/>'),
             ("loop blocked", f'<rect {bar} fill="{COLOURS["lag"]}" fill-opacity="0.4"/>')]
    out, lx = ['<g class="llmnb-legend">'], PAD
    for label, markup in items:
        out.append(f'<g transform="translate({lx},0)">{markup}'
                   f'<text x="14" y="33" fill="currentColor">{label}</text></g>')
        lx += 26 + 6 * len(label)  # room for the label at 11 px
    out.append("</g>")
    return "".join(out)


def _block(out: list[str], view: View, y: float, x) -> float:
    """Append one timeline's rows (or a big run's progress), lag row and summary line from `y`;
    return the y below them."""
    top, first = y, len(out)
    if view.big:
        y = bigrun.svg_rows(out, view.big, view.summary, y, x)
    y = _rows(out, view, y, x)
    if view.lags:
        total = sum(b - a for a, b in view.lags)
        out.append(f'<text x="{PAD}" y="{y + 12}" fill="{COLOURS["lag"]}">event loop blocked ({total:.2f} s)</text>')
        y += ROW_H
    out[first:first] = [f'<rect x="{x(a):.1f}" y="{top}" width="{max(x(b) - x(a), 1):.1f}" height="{y - top}"'
                        f' fill="{COLOURS["lag"]}" fill-opacity="0.25">'
                        f'<title>event loop blocked {a:.2f}-{b:.2f} s</title></rect>' for a, b in view.lags]
    out.append(f'<text x="{PAD}" y="{y + 13}" fill="currentColor">{escape(summary_line(view))}</text>')
    return y + ROW_H + 4


def _rows(out: list[str], view: View, y: float, x) -> float:
    shown, hidden = nested(view.rows), view.hidden
    for n, row in enumerate(shown):
        out.append(_svg_row(row, y, x, view.now))
        y += ROW_H
        if hidden and n == len(shown) // 2 - 1:
            out.append(f'<text x="{PAD}" y="{y + 12}" fill="currentColor" font-style="italic">'
                       f'+{hidden.count} more tasks</text>'
                       f'<rect x="{x(hidden.start):.1f}" y="{y + 4}"'
                       f' width="{max(x(hidden.end) - x(hidden.start), 1):.1f}" height="{ROW_H - 8}"'
                       f' fill="currentColor" fill-opacity="0.25"><title>{hidden.count} tasks grouped</title></rect>')
            y += ROW_H
    return y


def _svg_row(row: Row, y: float, x, now: float) -> str:
    end = _end(row, now)
    cached = ' data-cached="true"' if row.cached else ""
    parts = [f'<g class="llmnb-row" data-status="{row.status}"{cached}><title>{escape(hover(row, now))}</title>',
             f'<text x="{PAD}" y="{y + 12}" fill="currentColor">{escape(cut(name(row), 30))}</text>']
    if row.tokens_out is not None:  # grows while the call runs, from its progress events
        parts.append(f'<text class="llmnb-tokens" x="{LABEL_W}" y="{y + 12}" text-anchor="end" fill="currentColor"'
                     f' fill-opacity="0.7">{row.tokens_out} tok</text>')
    dash = DASH if row.status == "cancelled" else ""
    colour = COLOURS[row.status] if row.status in ("done", "failed", "cancelled") else COLOURS["running"]
    colour = COLOURS["tool"] if row.method == "tool" and row.status == "done" else colour
    for piece, a, b in pieces(row, now):
        left, w = f"{x(a):.1f}", f"{max(x(b) - x(a), 1):.1f}"
        if piece == "waiting":
            parts.append(f'<rect class="llmnb-wait" x="{left}" y="{y + 3}" width="{w}" height="{ROW_H - 6}"'
                         f' fill="url(#llmnb-wait)"{dash}/>')
        elif piece == "throttled":
            parts.append(f'<rect class="llmnb-throttled" x="{left}" y="{y + 2}" width="{w}" height="{ROW_H - 4}"'
                         f' fill="url(#llmnb-throttle)" stroke="{COLOURS["throttled"]}"/>')
        elif piece == "tools":  # between two turns: a thin line, the tool rows below show the work
            parts.append(f'<rect class="llmnb-tools" x="{left}" y="{y + ROW_H / 2 - 1}" width="{w}" height="2"'
                         f' fill="{COLOURS["tool"]}"/>')
        elif piece == "before":
            parts.append(f'<rect class="llmnb-before" x="{left}" y="{y + 6}" width="{w}" height="{ROW_H - 12}"'
                         f' fill="{colour}" fill-opacity="0.45"{dash}/>')
        else:
            parts.append(f'<rect class="llmnb-bar" x="{left}" y="{y + 3}" width="{max(x(b) - x(a), 1.5):.1f}"'
                         f' height="{ROW_H - 6}" fill="{colour}"{dash}/>')
    if row.cached:  # a few milliseconds: widened to be seen, back from the plot's right edge
        left = min(x(row.created), x(end) - 4)
        parts.append(f'<rect class="llmnb-cached" x="{left:.1f}" y="{y + 3}"'
                     f' width="{max(x(end) - left, 4):.1f}" height="{ROW_H - 6}" {CACHED}/>')
    if row.first_token is not None:
        tick = f"{x(row.first_token):.1f}"
        parts.append(f'<line class="llmnb-first-token" x1="{tick}" y1="{y + 1}" x2="{tick}"'
                     f' y2="{y + ROW_H - 1}" stroke="currentColor" stroke-width="1.5"/>')
    cx, cy = x(end), y + ROW_H / 2
    if row.status == "running":  # shape as well as colour: a running bar ends in an arrow head
        parts.append(f'<path d="M{cx:.1f},{cy - 6:.1f}l6,6l-6,6z" fill="{COLOURS["running"]}"/>')
    if row.status == "failed":
        parts.append(f'<path d="M{cx - 4:.1f},{cy - 4:.1f}l8,8m0,-8l-8,8" stroke="{COLOURS["failed"]}"'
                     ' stroke-width="2"/>')
    parts.append("</g>")
    return "".join(parts)


# -- a tool run's label: marked as under its model call's row ------------------------------
def name(row: Row) -> str:
    """A row's label: a tool run's marked as under its model call's row."""
    return f"↳ {row.name}" if row.parent is not None else row.name
