"""How the timeline looks, shared by the row picture (render.py), the big-run picture (bigrun.py)
and the trace (trace.py): colours, sizes, the SVG patterns and marks, the few text formats, and
the order rows are shown in (a tool run right under the model call that asked for it)."""

from __future__ import annotations

import math

from .recorder import Row

# Okabe-Ito colours: distinguishable with the common colour-blindnesses and on dark backgrounds.
# Every state is also told by shape, not colour alone: waiting is hatched, throttled striped and
# outlined, the time to the first token a thinner, lighter bar ending in a tick, a running bar
# ends in an arrow head, a failed one in a cross, a cancelled one is dashed, an answer from the
# cache is a pale hatched block.
COLOURS = {"done": "#0072B2", "running": "#E69F00", "failed": "#D55E00", "cancelled": "#999999", "lag": "#CC79A7",
           "throttled": "#009E73", "tool": "#56B4E9"}
ROW_H, LABEL_W, PLOT_W, PAD = 18, 250, 520, 8
TOP = 46  # title line, legend line
TEXT_BAR = 40
DASH = ' stroke="currentColor" stroke-dasharray="3,2"'  # a cancelled call's outline

# The SVG patterns the bars are filled with: waiting hatched, throttled striped, the cache pale-hatched.
DEFS = (
    '<defs><pattern id="llmnb-wait" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
    '<rect width="6" height="6" fill="currentColor" fill-opacity="0.08"/>'
    '<line x1="0" y1="0" x2="0" y2="6" stroke="currentColor" stroke-opacity="0.35" stroke-width="2"/></pattern>'
    f'<pattern id="llmnb-throttle" width="4" height="4" patternUnits="userSpaceOnUse">'
    f'<rect width="4" height="4" fill="{COLOURS["throttled"]}" fill-opacity="0.25"/>'
    f'<line x1="1" y1="0" x2="1" y2="4" stroke="{COLOURS["throttled"]}" stroke-width="1.5"/></pattern>'
    '<pattern id="llmnb-cache" width="5" height="5" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)">'
    f'<rect width="5" height="5" fill="{COLOURS["done"]}" fill-opacity="0.25"/>'
    f'<line x1="0" y1="0" x2="0" y2="5" stroke="{COLOURS["done"]}" stroke-width="1.5"/></pattern></defs>')
CACHED = f'fill="url(#llmnb-cache)" stroke="{COLOURS["done"]}" stroke-width="0.75"'  # an answer from the cache


def money(usd: float) -> str:
    """Dollars with enough digits to see a small run's cost: $12.34, $0.0123, $0.000045."""
    if usd >= 1 or usd == 0:
        return f"${usd:,.2f}"
    return f"${usd:.{min(max(2, 1 - math.floor(math.log10(usd)) + 1), 8)}f}"


def cut(text: str, width: int) -> str:
    """`text` at most `width` characters long, an ellipsis marking a cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def nested(rows: list[Row]) -> list[Row]:
    """`rows` with each tool run moved to follow its model call's row (after the runs before it),
    when that row is drawn too; other rows keep their order."""
    keys = {row.key for row in rows}
    children: dict[int, list[Row]] = {}
    for row in rows:
        if row.parent in keys:
            children.setdefault(row.parent, []).append(row)
    if not children:
        return rows
    out: list[Row] = []
    for row in rows:
        if row.parent not in keys:
            out += [row, *children.get(row.key, ())]
    return out
