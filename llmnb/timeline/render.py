"""Rows -> SVG and text. Pure: no widgets, no clock; `now` is given for rows still running."""

from __future__ import annotations

import math
from html import escape

from .recorder import Row, summary

# Okabe-Ito colours: distinguishable with the common colour-blindnesses and on dark backgrounds.
# Status is also told by shape (a cross for failed, a dashed outline for cancelled), not colour alone.
COLOURS = {"done": "#0072B2", "running": "#E69F00", "failed": "#D55E00", "cancelled": "#999999", "lag": "#CC79A7"}
MAX_ROWS = 40  # beyond this, the rows in the middle are grouped into one "+N more" row
ROW_H, LABEL_W, PLOT_W, TOP, PAD = 18, 250, 520, 30, 8
TEXT_BAR = 40


def visible(rows: list[Row], max_rows: int = MAX_ROWS) -> tuple[list[Row], list[Row]]:
    """The rows to draw one by one and the hidden middle ones (drawn as one group row)."""
    if len(rows) <= max_rows:
        return rows, []
    head = (max_rows - 1) // 2
    tail = max_rows - 1 - head
    return rows[:head] + rows[-tail:], rows[head:-tail]


def nice_step(span: float, ticks: int = 6) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about `ticks` ticks over `span`."""
    raw = max(span, 1e-3) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _end(row: Row, now: float) -> float:
    return row.end if row.end is not None else now


def summary_line(rows: list[Row], now: float) -> str:
    s = summary(rows, now)
    failed = sum(r.status == "failed" for r in rows)
    cancelled = sum(r.status == "cancelled" for r in rows)
    extra = "".join(f", {n} {what}" for n, what in ((failed, "failed"), (cancelled, "cancelled")) if n)
    return (f"{s['tasks']} tasks{extra} · wall {s['wall']:.2f} s · sum of task times {s['busy']:.2f} s"
            f" · ratio {s['speedup']:.2f}x")


def to_text(rows: list[Row], lags: list[tuple[float, float]], now: float, title: str = "timeline") -> str:
    """A fixed-width picture: '.' waiting, '=' running, then the end state; '#' loop blocked."""
    span = max([now, *(_end(r, now) for r in rows), *(b for _, b in lags)] or [0.0]) or 1.0

    def col(t: float) -> int:
        return min(TEXT_BAR - 1, int(t / span * TEXT_BAR))

    lines = [f"{title} (0 .. {span:.2f} s)"]
    shown, hidden = visible(rows)
    for n, row in enumerate(shown):
        bar = [" "] * TEXT_BAR
        if row.waiting is not None:
            for c in range(col(row.waiting), col(row.started if row.started is not None else _end(row, now)) + 1):
                bar[c] = "."
        if row.started is not None:
            for c in range(col(row.started), col(_end(row, now)) + 1):
                bar[c] = "="
        timing = f"{row.created:6.2f} -> {_end(row, now):6.2f} s" if row.end is not None else f"{row.created:6.2f} ->  ...    "
        error = f"  {row.error}" if row.error else ""
        lines.append(f"{row.name[:38]:<38} |{''.join(bar)}| {timing} {row.status}{error}")
        if hidden and n == len(shown) // 2 - 1:
            lines.append(f"{'+%d more tasks' % len(hidden):<38} |{' ' * TEXT_BAR}|")
    if lags:
        bar = [" "] * TEXT_BAR
        for a, b in lags:
            for c in range(col(a), col(b) + 1):
                bar[c] = "#"
        total = sum(b - a for a, b in lags)
        lines.append(f"{'event loop blocked':<38} |{''.join(bar)}| {total:.2f} s in all")
    lines.append(summary_line(rows, now))
    return "\n".join(lines)


def to_svg(rows: list[Row], lags: list[tuple[float, float]], now: float, title: str = "timeline") -> str:
    """The timeline as a standalone SVG. Text uses currentColor so it follows light and dark themes."""
    shown, hidden = visible(rows)
    span = max([now, *(_end(r, now) for r in rows), *(b for _, b in lags)] or [0.0]) or 1.0
    n_rows = len(shown) + (1 if hidden else 0) + (1 if lags else 0)
    height = TOP + max(n_rows, 1) * ROW_H + 44
    width = LABEL_W + PLOT_W + 2 * PAD

    def x(t: float) -> float:
        return LABEL_W + PAD + t / span * PLOT_W

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        ' font-family="sans-serif" font-size="11" style="color: inherit">',
        '<defs><pattern id="llmnb-wait" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="6" height="6" fill="currentColor" fill-opacity="0.08"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="currentColor" stroke-opacity="0.35" stroke-width="2"/></pattern></defs>',
        f'<text x="{PAD}" y="16" font-size="13" font-weight="bold" fill="currentColor">{escape(_cut(title, 52))}</text>',
    ]
    step = nice_step(span)
    bottom = TOP + max(n_rows, 1) * ROW_H
    for i in range(int(span / step) + 1):
        t = i * step
        out.append(f'<line x1="{x(t):.1f}" y1="{TOP - 4}" x2="{x(t):.1f}" y2="{bottom}" stroke="currentColor" stroke-opacity="0.15"/>')
        out.append(f'<text x="{x(t):.1f}" y="{bottom + 13}" text-anchor="middle" fill="currentColor">{t:g} s</text>')
    for a, b in lags:
        out.append(f'<rect x="{x(a):.1f}" y="{TOP - 4}" width="{max(x(b) - x(a), 1):.1f}" height="{bottom - TOP + 4}"'
                   f' fill="{COLOURS["lag"]}" fill-opacity="0.25"><title>event loop blocked {a:.2f}-{b:.2f} s</title></rect>')
    y = TOP
    for n, row in enumerate(shown):
        out.append(_svg_row(row, y, x, now))
        y += ROW_H
        if hidden and n == len(shown) // 2 - 1:
            start, end = min(r.created for r in hidden), max(_end(r, now) for r in hidden)
            out.append(f'<text x="{PAD}" y="{y + 12}" fill="currentColor" font-style="italic">+{len(hidden)} more tasks</text>'
                       f'<rect x="{x(start):.1f}" y="{y + 4}" width="{max(x(end) - x(start), 1):.1f}" height="{ROW_H - 8}"'
                       f' fill="currentColor" fill-opacity="0.25"><title>{len(hidden)} tasks grouped</title></rect>')
            y += ROW_H
    if lags:
        total = sum(b - a for a, b in lags)
        out.append(f'<text x="{PAD}" y="{y + 12}" fill="{COLOURS["lag"]}">event loop blocked ({total:.2f} s)</text>')
        y += ROW_H
    out.append(f'<text x="{PAD}" y="{bottom + 32}" fill="currentColor">{escape(summary_line(rows, now))}</text>')
    legend_x = width - PAD - 5 * 75  # right-aligned, clear of the title
    for label, colour in (("done", COLOURS["done"]), ("running", COLOURS["running"]), ("failed", COLOURS["failed"]),
                          ("cancelled", COLOURS["cancelled"])):
        out.append(f'<rect x="{legend_x}" y="8" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{legend_x + 13}" y="17" fill="currentColor">{label}</text>')
        legend_x += 75
    out.append(f'<rect x="{legend_x}" y="8" width="10" height="10" fill="url(#llmnb-wait)"/>'
               f'<text x="{legend_x + 13}" y="17" fill="currentColor">waiting</text>')
    out.append("</svg>")
    return "".join(out)


def _svg_row(row: Row, y: float, x, now: float) -> str:
    end = _end(row, now)
    tip = f"{row.name} · {row.status} · {row.created:.2f}-{end:.2f} s"
    if row.tokens_out:
        tip += f" · {row.tokens_out} tokens out"
    if row.error:
        tip += f" · {row.error}"
    parts = [f'<g class="llmnb-row" data-status="{row.status}"><title>{escape(tip)}</title>',
             f'<text x="{PAD}" y="{y + 12}" fill="currentColor">{escape(row.name[:40])}</text>']
    if row.waiting is not None:
        w_end = row.started if row.started is not None else end
        # cancelled while still waiting: the same dashed outline as a cancelled bar
        dash = ' stroke="currentColor" stroke-dasharray="3,2"' if row.status == "cancelled" and row.started is None else ""
        parts.append(f'<rect x="{x(row.waiting):.1f}" y="{y + 3}" width="{max(x(w_end) - x(row.waiting), 1):.1f}"'
                     f' height="{ROW_H - 6}" fill="url(#llmnb-wait)"{dash}/>')
    if row.started is not None:
        colour = COLOURS.get(row.status, COLOURS["running"])
        dash = ' stroke="currentColor" stroke-dasharray="3,2"' if row.status == "cancelled" else ""
        parts.append(f'<rect class="llmnb-bar" x="{x(row.started):.1f}" y="{y + 3}" width="{max(x(end) - x(row.started), 1.5):.1f}"'
                     f' height="{ROW_H - 6}" fill="{colour}"{dash}/>')
    if row.status == "running":  # shape as well as colour: a running bar ends in an arrow head
        cx, cy = x(end), y + ROW_H / 2
        parts.append(f'<path d="M{cx:.1f},{cy - 6:.1f}l6,6l-6,6z" fill="{COLOURS["running"]}"/>')
    if row.status == "failed":
        cx, cy = x(end), y + ROW_H / 2
        parts.append(f'<path d="M{cx - 4:.1f},{cy - 4:.1f}l8,8m0,-8l-8,8" stroke="{COLOURS["failed"]}" stroke-width="2"/>')
    parts.append("</g>")
    return "".join(parts)
