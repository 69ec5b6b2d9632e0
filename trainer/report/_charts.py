"""Inline SVG charts: static markup, no scripts, no fonts to fetch, readable without colour.

Each chart is an ``<svg class="chart" role="img">`` labelled by its own
``<title>`` and ``<desc>``, sized by its ``viewBox`` so it scales down on
narrow screens and in print. Every mark carries a direct text label (a name
and a number), and the two kinds of bars that colour alone would tell apart
(above / below average, within / over a threshold) also differ by a hatch
pattern and by their side of the axis. The functions take plain numbers and
labels, not manifests, so other reports can reuse them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgepersona.trainer.report._html import MINUS, SIGMA, esc

__all__ = ["Bar", "Bubble", "Change", "Release", "bar_chart", "bubble_map", "budget_chart",
           "diverging_bars", "dumbbell_chart"]

INK = "#1f2328"
ABOVE = "#0072B2"
BELOW = "#D55E00"
CHAR_WIDTH = 7.6  # px: a generous average glyph width of 13 px bold system-ui text


@dataclass(frozen=True)
class Bar:
    """One horizontal bar: its label, length, shown value and look."""

    label: str
    value: float
    text: str
    colour: str = ABOVE
    hatched: bool = False


@dataclass(frozen=True)
class Bubble:
    """One labelled point of a map; ``size`` (0..1) sets its area."""

    x: float
    y: float
    size: float
    label: str
    colour: str


@dataclass(frozen=True)
class Change:
    """One row of a before/after chart; ``None`` means absent in that version."""

    label: str
    before: float | None
    after: float | None


@dataclass(frozen=True)
class Release:
    """One bar of a budget chart: its date label, its own ε and the running total after it."""

    label: str
    epsilon: float
    total: float


def _open(chart_id: str, width: int, height: float, title: str, desc: str) -> str:
    """The ``<svg>`` start tag with its accessible name and description."""
    h = math.ceil(height)
    return (f'<svg class="chart" id="{esc(chart_id)}" viewBox="0 0 {width} {h}" width="{width}"'
            f' height="{h}" role="img" aria-labelledby="{esc(chart_id)}-t {esc(chart_id)}-d">'
            f'<title id="{esc(chart_id)}-t">{esc(title)}</title>'
            f'<desc id="{esc(chart_id)}-d">{esc(desc)}</desc>')


def _hatch(chart_id: str, colour: str) -> tuple[str, str]:
    """A diagonal hatch pattern definition and the fill that uses it."""
    pid = f"{chart_id}-hatch"
    pattern = (f'<defs><pattern id="{esc(pid)}" width="6" height="6" patternUnits="userSpaceOnUse"'
               f' patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff"/>'
               f'<rect width="3" height="6" fill="{esc(colour)}"/></pattern></defs>')
    return pattern, f"url(#{pid})"


def _text(x: float, y: float, content: str, *, anchor: str = "start", cls: str = "") -> str:
    """A text element (content escaped)."""
    klass = f' class="{cls}"' if cls else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>'
            f"{esc(content)}</text>")


def _clip(label: str, limit: int) -> str:
    """Shorten a label to ``limit`` characters with an ellipsis."""
    return label if len(label) <= limit else label[:limit - 1].rstrip() + "…"


def bar_chart(chart_id: str, bars: Sequence[Bar], *, title: str, desc: str,
              marker: float | None = None, marker_label: str = "", width: int = 480) -> str:
    """Horizontal bars, each with its label above it and its value at its end.

    Args:
        chart_id: a document-unique id (prefixes the ids inside the chart).
        bars: the bars, drawn top to bottom; values must be >= 0.
        title: the chart's accessible name.
        desc: a one-sentence summary for screen readers.
        marker: draw a dashed reference line at this value (e.g. a threshold).
        marker_label: the reference line's label.
        width: the chart width in px.

    Returns:
        The SVG markup.
    """
    top, row, left, room = (24 if marker is not None else 6), 46, 2, 96
    span = max([b.value for b in bars] + [marker or 0.0]) or 1.0
    scale = (width - left - room) / span
    parts = [_open(chart_id, width, top + row * len(bars) + 4, title, desc)]
    pattern, hatch = _hatch(chart_id, BELOW)
    if any(b.hatched for b in bars):
        parts.append(pattern)
    for i, bar in enumerate(bars):
        y = top + i * row
        length = max(bar.value * scale, 1.5)
        parts.append(_text(left, y + 14, _clip(bar.label, int((width - left) / CHAR_WIDTH))))
        fill = hatch if bar.hatched else esc(bar.colour)
        parts.append(f'<rect x="{left}" y="{y + 21}" width="{length:.1f}" height="18" fill="{fill}"'
                     f' stroke="{esc(bar.colour if not bar.hatched else BELOW)}"/>')
        parts.append(_text(left + length + 6, y + 35, bar.text, cls="strong"))
    if marker is not None:
        x = left + marker * scale
        parts.append(f'<line class="marker" x1="{x:.1f}" y1="14" x2="{x:.1f}"'
                     f' y2="{top + row * len(bars):.1f}"/>')
        parts.append(_text(x, 11, marker_label, anchor="middle", cls="small"))
    return "".join(parts) + "</svg>"


def diverging_bars(chart_id: str, labels: Sequence[str], values: Sequence[float], *,
                   limit: float, title: str, desc: str, centre_label: str = "population average",
                   unit: str = SIGMA, width: int = 520) -> str:
    """Bars left or right of a centre line: solid above it, hatched below it.

    Args:
        chart_id: a document-unique id.
        labels: one label per row.
        values: one signed value per row (e.g. a z-score).
        limit: the largest absolute value the axis shows (shared between charts
            so they compare at a glance); larger values are drawn at the edge.
        title: the chart's accessible name.
        desc: a one-sentence summary for screen readers.
        centre_label: what the centre line stands for.
        unit: appended to the tick labels.
        width: the chart width in px.

    Returns:
        The SVG markup.
    """
    label_col, top, row = 170, 22, 24
    zero = label_col + (width - label_col) / 2
    half = (width - label_col) / 2 - 42  # room for the value text beyond the longest bar
    scale = half / max(limit, 1e-9)
    height = top + row * len(labels) + 22
    pattern, hatch = _hatch(chart_id, BELOW)
    parts = [_open(chart_id, width, height, title, desc), pattern]
    ticks = [t for t in range(-math.floor(limit), math.floor(limit) + 1)]
    for t in ticks:
        x = zero + t * scale
        parts.append(f'<line class="{"axis" if t == 0 else "grid"}" x1="{x:.1f}" y1="{top - 4}"'
                     f' x2="{x:.1f}" y2="{height - 18}"/>')
        tick = "0" if t == 0 else f"{t:+d}{unit}".replace("-", MINUS)
        parts.append(_text(x, height - 5, tick, anchor="middle", cls="small"))
    parts.append(_text(zero, 12, centre_label, anchor="middle", cls="small"))
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        parts.append(_text(label_col - 8, y + 15, _clip(label, 25), anchor="end"))
        shown = max(-limit, min(limit, value)) if math.isfinite(value) else 0.0
        length = max(abs(shown) * scale, 1.0)
        x = zero if shown >= 0 else zero - length
        fill = esc(ABOVE) if shown >= 0 else hatch
        stroke = ABOVE if shown >= 0 else BELOW
        parts.append(f'<rect x="{x:.1f}" y="{y + 4}" width="{length:.1f}" height="15" fill="{fill}"'
                     f' stroke="{stroke}"/>')
        text = ("n/a" if not math.isfinite(value) else "0.0" if abs(value) < 0.05
                else f"{value:+.1f}".replace("-", MINUS))
        end = zero + length + 5 if shown >= 0 else zero - length - 5
        parts.append(_text(end, y + 16, text, anchor="start" if shown >= 0 else "end",
                           cls="strong"))
    return "".join(parts) + "</svg>"


def _place_labels(wanted: list[float], gap: float, low: float, high: float) -> list[float]:
    """Push label baselines apart (keeping their order) so no two overlap."""
    order = sorted(range(len(wanted)), key=lambda i: wanted[i])
    placed = [0.0] * len(wanted)
    last = low - gap
    for i in order:
        placed[i] = max(wanted[i], last + gap)
        last = placed[i]
    overflow = last - high
    if overflow > 0:  # shift everything up as one block, never above the top edge
        for i in order:
            placed[i] = max(low, placed[i] - overflow)
    return placed


def _frame(bubbles: Sequence[Bubble], width: int, room: float, max_height: int
           ) -> tuple[float, float, float, float]:
    """Scale, origin and plot height: equal units on both axes, the origin always in view."""
    r_max, top = 36.0, 14.0
    xs, ys = [b.x for b in bubbles] + [0.0], [b.y for b in bubbles] + [0.0]
    x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
    scale = (width - 2 * room - 2 * r_max) / ((x_hi - x_lo) or 1.0)
    plot = min(max((y_hi - y_lo) * scale + 2 * r_max, 200.0), max_height - top - 50.0)
    scale = min(scale, (plot - 2 * r_max) / ((y_hi - y_lo) or 1.0))
    cx = width / 2 - scale * (x_hi + x_lo) / 2
    cy = top + plot / 2 + scale * (y_hi + y_lo) / 2
    return scale, cx, cy, top + plot


def bubble_map(chart_id: str, bubbles: Sequence[Bubble], *, x_label: str, y_label: str,
               title: str, desc: str, width: int = 960, max_height: int = 480) -> str:
    """A labelled bubble map with equal scales on both axes (distances are honest).

    Labels sit on the outer side of each bubble (right of the centre: right),
    pushed apart vertically so none overlap; the axis descriptions are written
    under the plot.

    Args:
        chart_id: a document-unique id.
        bubbles: the points; ``size`` in 0..1 sets the area.
        x_label: what the horizontal axis means.
        y_label: what the vertical axis means.
        title: the chart's accessible name.
        desc: a one-sentence summary for screen readers.
        width: the chart width in px.
        max_height: the tallest the chart may be, in px.

    Returns:
        The SVG markup.
    """
    room = 300.0  # px each side for labels
    scale, cx, cy, bottom = _frame(bubbles, width, room, max_height)
    radii = [max(4.0, 36.0 * math.sqrt(max(b.size, 0.0))) for b in bubbles]
    points = [(cx + b.x * scale, cy - b.y * scale) for b in bubbles]
    parts = [_open(chart_id, width, bottom + 48, title, desc),
             f'<line class="axis" x1="{room / 2}" y1="{cy:.1f}" x2="{width - room / 2}" y2="{cy:.1f}"/>',
             f'<line class="axis" x1="{cx:.1f}" y1="8" x2="{cx:.1f}" y2="{bottom:.1f}"/>',
             _text(cx + 5, bottom - 4, "average user", cls="small"),
             _text(width / 2, bottom + 22, "→ " + x_label, anchor="middle", cls="small"),
             _text(width / 2, bottom + 40, "↑ " + y_label, anchor="middle", cls="small")]
    for (px, py), radius, bubble in sorted(zip(points, radii, bubbles, strict=True),
                                           key=lambda item: -item[1]):  # small ones on top
        parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{radius:.1f}" fill="{esc(bubble.colour)}"'
                     ' fill-opacity="0.6" stroke="#1f2328" stroke-width="1"/>')
    for side in (True, False):  # right-hand labels, then left-hand ones
        chosen = [i for i, (px, _) in enumerate(points) if (px >= cx) == side]
        wanted = [points[i][1] + 4 for i in chosen]
        for i, ly in zip(chosen, _place_labels(wanted, 17.0, 14.0, bottom - 4), strict=True):
            (px, py), radius = points[i], radii[i]
            lx = px + radius + 6 if side else px - radius - 6
            text = _clip(bubbles[i].label, int((width - lx if side else lx) / CHAR_WIDTH))
            if abs(ly - (py + 4)) > radius * 0.6:
                parts.append(f'<line class="leader" x1="{px:.1f}" y1="{py:.1f}" x2="{lx:.1f}"'
                             f' y2="{ly - 4:.1f}"/>')
            parts.append(_text(lx, ly, text, anchor="start" if side else "end", cls="strong"))
    return "".join(parts) + "</svg>"


def dumbbell_chart(chart_id: str, rows: Sequence[Change], *, title: str, desc: str,
                   width: int = 480) -> str:
    """Before (hollow dot) and after (filled dot) values joined by a line, labelled.

    Args:
        chart_id: a document-unique id.
        rows: one row per item; values are shares in 0..1 (or None when absent).
        title: the chart's accessible name.
        desc: a one-sentence summary for screen readers.
        width: the chart width in px.

    Returns:
        The SVG markup.
    """
    left, top, row, room = 8, 26, 44, 110
    values = [v for r in rows for v in (r.before, r.after) if v is not None]
    scale = (width - left - room) / (max([*values, 0.0]) or 1.0)
    parts = [_open(chart_id, width, top + row * len(rows) + 4, title, desc),
             f'<circle cx="{left + 6}" cy="10" r="5" fill="#ffffff" stroke="{INK}" stroke-width="2"/>',
             _text(left + 16, 14, "previous version", cls="small"),
             f'<circle cx="{left + 136}" cy="10" r="5" fill="{ABOVE}" stroke="{INK}"/>',
             _text(left + 146, 14, "this version", cls="small")]
    for i, item in enumerate(rows):
        y = top + i * row
        parts.append(_text(left, y + 14, _clip(item.label, int((width - left) / CHAR_WIDTH))))
        xs = [left + 6 + v * scale if v is not None else None for v in (item.before, item.after)]
        dot = y + 29
        if xs[0] is not None and xs[1] is not None:
            parts.append(f'<line class="axis" x1="{xs[0]:.1f}" y1="{dot}" x2="{xs[1]:.1f}" y2="{dot}"'
                         ' stroke-width="3"/>')
        if xs[0] is not None:
            parts.append(f'<circle cx="{xs[0]:.1f}" cy="{dot}" r="5.5" fill="#ffffff" stroke="{INK}"'
                         ' stroke-width="2"/>')
        if xs[1] is not None:
            parts.append(f'<circle cx="{xs[1]:.1f}" cy="{dot}" r="5.5" fill="{ABOVE}" stroke="{INK}"/>')
        end = max([x for x in xs if x is not None] + [float(left)])
        parts.append(_text(end + 12, dot + 4, _change_text(item), cls="strong"))
    return "".join(parts) + "</svg>"


def _change_text(item: Change) -> str:
    """``24% → 31%``, ``24% → gone`` or ``new: 12%``."""
    if item.before is None:
        return f"new: {item.after or 0.0:.0%}"
    if item.after is None:
        return f"{item.before:.0%} → gone"
    return f"{item.before:.0%} → {item.after:.0%}"


def _tick_step(limit: float) -> float:
    """A round axis step (1, 2, 2.5 or 5 times a power of ten) giving at most six ticks."""
    raw = limit / 6
    power = 10.0 ** math.floor(math.log10(raw))
    return next(f * power for f in (1.0, 2.0, 2.5, 5.0, 10.0) if f * power >= raw * (1 - 1e-9))


def _legend(swatches: Sequence[tuple[str, str, str]]) -> list[str]:
    """A row of (fill, stroke, name) swatches along the top edge, so no mark relies on colour."""
    parts, x = [], 2.0
    for fill, stroke, name in swatches:
        parts.append(f'<rect x="{x:.1f}" y="3" width="12" height="12" fill="{fill}" stroke="{stroke}"/>')
        parts.append(_text(x + 17, 13, name, cls="small"))
        x += 17 + len(name) * 6.8 + 16
    return parts


def _value_grid(limit: float, x1: float, x2: float, y: Callable[[float], float]) -> list[str]:
    """Horizontal grid lines at round values (the zero line solid), labelled on the left."""
    parts, step, i = [], _tick_step(limit), 0
    while i * step <= limit * (1 + 1e-9):
        ty = y(i * step)
        parts.append(f'<line class="{"axis" if i == 0 else "grid"}" x1="{x1}" y1="{ty:.1f}"'
                     f' x2="{x2}" y2="{ty:.1f}"/>')
        parts.append(_text(x1 - 6, ty + 4, f"{i * step:g}", anchor="end", cls="small"))
        i += 1
    return parts


def budget_chart(chart_id: str, releases: Sequence[Release], *, budget: float | None,
                 ledger_total: float | None, limit: float, title: str, desc: str,
                 width: int = 640) -> str:
    """Cumulative spending as stacked bars, one per release, against a dashed budget line.

    Each bar is outlined up to what earlier releases spent and solid for the release's own
    part (hatched when the total passes the budget), its total written above it. A dotted
    line after the last bar marks a separately computed total (e.g. an exact composition).

    Args:
        chart_id: a document-unique id.
        releases: the bars, in order; ``total`` includes ``epsilon``.
        budget: the budget line's value (None: no budget, no line).
        ledger_total: the separately computed total, if any.
        limit: the top of the value axis (shared between charts so they compare).
        title: the chart's accessible name.
        desc: a one-sentence summary for screen readers.
        width: the chart width in px.

    Returns:
        The SVG markup.
    """
    left, right, top, plot_h, limit = 48, 150, 44, 190, limit if limit > 0 else 1.0
    plot_w, bottom, scale = width - left - right, top + plot_h, plot_h / limit

    def y(value: float) -> float:
        return bottom - min(max(value, 0.0), limit) * scale

    pattern, hatch = _hatch(chart_id, BELOW)
    over = [budget is not None and r.total > budget * (1 + 1e-9) for r in releases]
    parts = [_open(chart_id, width, bottom + 40, title, desc), pattern]
    parts += _legend((("#ffffff", INK, "earlier releases"), (ABOVE, ABOVE, "this release"),
                      (hatch, BELOW, "over budget"))[:3 if any(over) else 2])
    parts.append(_text(2, top - 12, "cumulative ε", cls="small"))
    parts += _value_grid(limit, left, left + plot_w, y)
    slot = plot_w / max(len(releases), 1)
    bar_w, every = max(1.5, min(slot * 0.6, 48.0)), max(1, math.ceil(84 / slot))
    for i, (release, past) in enumerate(zip(releases, over, strict=True)):
        cx = left + slot * (i + 0.5)
        before = release.total - release.epsilon
        if before > 0:
            parts.append(f'<rect x="{cx - bar_w / 2:.1f}" y="{y(before):.1f}" width="{bar_w:.1f}"'
                         f' height="{bottom - y(before):.1f}" fill="#ffffff" stroke="{INK}"/>')
        own = max(y(before) - y(release.total), 1.0)
        parts.append(f'<rect x="{cx - bar_w / 2:.1f}" y="{y(release.total):.1f}" width="{bar_w:.1f}"'
                     f' height="{own:.1f}" fill="{hatch if past else ABOVE}"'
                     f' stroke="{BELOW if past else ABOVE}"/>')
        if slot >= 40 or i == len(releases) - 1:
            text = (f"+{release.epsilon:.2g} → {release.total:.3g}" if slot >= 100
                    else f"{release.total:.3g}")
            parts.append(_text(cx, y(release.total) - 5, text, anchor="middle", cls="strong"))
        if i % every == 0:
            parts.append(_text(cx, bottom + 16, release.label, anchor="middle", cls="small"))
    parts.append(_text(left + plot_w / 2, bottom + 34, "releases in ledger order, dated",
                       anchor="middle", cls="small"))
    wanted: list[tuple[float, str]] = []
    if budget is not None:
        parts.append(f'<line class="marker" x1="{left}" y1="{y(budget):.1f}" x2="{left + plot_w + 6}"'
                     f' y2="{y(budget):.1f}"/>')
        wanted.append((y(budget) + 4, f"budget ε = {budget:g}"))
    if ledger_total is not None and releases:
        start = left + slot * (len(releases) - 0.5) - bar_w / 2
        parts.append(f'<line class="axis" x1="{start:.1f}" y1="{y(ledger_total):.1f}"'
                     f' x2="{left + plot_w + 6}" y2="{y(ledger_total):.1f}" stroke-dasharray="2 2"'
                     ' stroke-width="2"/>')
        wanted.append((y(ledger_total) + 4, f"ledger total {ledger_total:.3g}"))
    placed = _place_labels([w for w, _ in wanted], 16.0, top, bottom + 30)
    for ly, (_, text) in zip(placed, wanted, strict=True):
        parts.append(_text(left + plot_w + 10, ly, text, cls="small"))
    return "".join(parts) + "</svg>"
