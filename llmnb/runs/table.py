"""A grid of results drawn as a table: tasks down, models across, each cell the answer cut short,
its latency and cost, or the failure. Pure: strings in, strings out (HTML for a notebook cell,
text for a terminal)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

WIDTH = 48  # characters of an answer shown in a cell


def short(value: Any, width: int = WIDTH) -> str:
    """A value on one line, cut with an ellipsis; a failure as "failed: Type: message"."""
    error = getattr(value, "error", None)
    text = f"failed: {type(error).__name__}: {error}" if isinstance(error, BaseException) else repr(value)
    if isinstance(value, str):
        text = value
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def measures(latency: float | None, cost: float | None) -> str:
    """"1.24 s · $0.00031", or what is known of it ("free" for a cost of 0)."""
    parts = [] if latency is None else [f"{latency:.2f} s"]
    if cost is not None:
        parts.append("free" if cost == 0 else money(cost))
    return " · ".join(parts)


def money(usd: float) -> str:
    """USD with two significant digits however small: $0.42, $0.0031, $0.0000015."""
    decimals = max(2, 1 - math.floor(math.log10(usd)))
    return f"${usd:.{decimals}f}"


def to_html(tasks: Sequence[str], models: Sequence[str], cells: dict[tuple[str, str], tuple[str, str, bool]]) -> str:
    """The grid as an HTML table; `cells[(task, model)]` is (answer, measures, failed); a cell
    missing from it (cancelled, or still running) shows as empty."""
    head = "".join(f'<th style="text-align:left">{html.escape(m)}</th>' for m in models)
    rows = []
    for task in tasks:
        tds = []
        for model in models:
            answer, measured, failed = cells.get((task, model), ("", "", False))
            style = ' style="color:#b91c1c"' if failed else ""
            note = f'<br><small style="opacity:0.7">{html.escape(measured)}</small>' if measured else ""
            tds.append(f'<td style="text-align:left;vertical-align:top"><span{style}>{html.escape(answer)}</span>'
                       f"{note}</td>")
        rows.append(f'<tr><th style="text-align:left">{html.escape(task)}</th>{"".join(tds)}</tr>')
    return (f'<table class="llmnb-grid"><thead><tr><th></th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def to_text(tasks: Sequence[str], models: Sequence[str], cells: dict[tuple[str, str], tuple[str, str, bool]]) -> str:
    """The grid as text: one line per task and model."""
    lines = []
    for task in tasks:
        for model in models:
            answer, measured, _ = cells.get((task, model), ("<cancelled>", "", False))
            lines.append(f"  {task} @ {model}: {answer}" + (f"  ({measured})" if measured else ""))
    return "\n".join(lines)
