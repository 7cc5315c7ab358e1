"""Charts as SVG text, written from their numbers: bars and lines on two axes, nothing else.

The report's charts are simple, so they are written directly rather than drawn by a plotting
library: a few milliseconds each, where importing one and rasterising took most of a second in every
run that draws the report. SVG is text, so a test can read exactly what a chart shows (and that it
names no one); it scales to any screen and is a fraction of a PNG's bytes. Pure Python: no Dagster,
no storage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 700, 360
"""Pixels of every chart (its viewBox: it scales with the page)."""
FONT = "DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif"
SMALL, NORMAL, LARGE = 10, 11, 13
"""Font sizes in pixels: tick and bar labels, axis labels and legends, titles."""
CHAR = 0.6
"""The width of a character in ems, to place a legend (sans-serif digits and letters are about it)."""
INK, GRID, FACE = "#333333", "#e5e5e5", "#ffffff"
LINE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
"""One colour per line, in order (the common categorical palette)."""
BAR_COLOUR = "#1f77b4"


@dataclass(frozen=True)
class Plot:
    """The plotting area of a chart, in pixels from the chart's top left."""

    left: float = 70
    top: float = 34
    right: float = WIDTH - 20
    bottom: float = HEIGHT - 46

    def x(self, fraction: float) -> float:
        return self.left + fraction * (self.right - self.left)

    def y(self, fraction: float) -> float:
        return self.bottom - fraction * (self.bottom - self.top)


def _n(value: float) -> str:
    """A coordinate as SVG text: at most one decimal."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _attributes(extra: dict[str, str]) -> str:
    """SVG attributes from keyword arguments (`fill_opacity` is `fill-opacity`), escaped."""
    return "".join(f' {name.replace("_", "-")}="{escape(value)}"' for name, value in extra.items())


def text(x: float, y: float, words: str, size: int = NORMAL, anchor: str = "start", **extra: str) -> str:
    return (
        f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size}" text-anchor="{anchor}"{_attributes(extra)}>'
        f"{escape(words)}</text>"
    )


def rect(x: float, y: float, width: float, height: float, fill: str, **extra: str) -> str:
    """A rectangle; `extra`: more attributes (see _attributes)."""
    size = f'width="{_n(max(width, 0))}" height="{_n(max(height, 0))}"'
    return f'<rect x="{_n(x)}" y="{_n(y)}" {size} fill="{fill}"{_attributes(extra)}/>'


def line(x1: float, y1: float, x2: float, y2: float, stroke: str = INK) -> str:
    return f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}"/>'


def document(title: str, body: Sequence[str]) -> bytes:
    """A standalone SVG document of the chart's size, titled (for screen readers) and drawn."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" font-family="{FONT}" fill="{INK}">'
        f"<title>{escape(title)}</title>"
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="{FACE}"/>'
        + text(WIDTH / 2, 20, title, LARGE, "middle")
        + "".join(body)
        + "</svg>\n"
    ).encode()


def nothing(title: str, message: str) -> bytes:
    """A chart with nothing to draw: its title and why."""
    return document(title, [text(WIDTH / 2, HEIGHT / 2, message, NORMAL, "middle")])


def ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) from at or below `low` to at or above
    `high`: at most `most` + 2 of them."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else [0.0]
    raw = (high - low) / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    count = math.ceil((high - first) / step - 1e-9)
    return [round(first + i * step, 12) for i in range(count + 1)]


def label(value: float) -> str:
    """A tick value as text: whole numbers with thousands separators, others as short as exact."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.6f}".rstrip("0").rstrip(".")


def axes(plot: Plot, x_ticks: Sequence[tuple[float, str]], y_ticks: Sequence[tuple[float, str]]) -> list[str]:
    """Grid lines, tick labels and the frame of a plot; ticks are (fraction of the axis, label)."""
    drawn = []
    for at, words in y_ticks:
        y = plot.y(at)
        drawn += [line(plot.left, y, plot.right, y, GRID), text(plot.left - 6, y + 3.5, words, SMALL, "end")]
    for at, words in x_ticks:
        x = plot.x(at)
        drawn += [line(x, plot.bottom, x, plot.bottom + 4), text(x, plot.bottom + 16, words, SMALL, "middle")]
    drawn.append(
        rect(plot.left, plot.top, plot.right - plot.left, plot.bottom - plot.top, "none", stroke=INK)
    )
    return drawn


def axis_labels(plot: Plot, x_label: str, y_label: str = "") -> list[str]:
    drawn = [text((plot.left + plot.right) / 2, HEIGHT - 10, x_label, NORMAL, "middle")]
    if y_label:
        middle = (plot.top + plot.bottom) / 2
        drawn.append(text(16, middle, y_label, NORMAL, "middle", transform=f"rotate(-90 16 {_n(middle)})"))
    return drawn


def legend(right: float, top: float, entries: Sequence[tuple[str, str]], size: int = NORMAL) -> list[str]:
    """A boxed legend whose top right corner is at (right, top): a swatch and a label per entry."""
    if not entries:
        return []
    width = 28 + CHAR * size * max(len(words) for _, words in entries)
    height = 8 + (size + 6) * len(entries)
    left = right - width
    drawn = [rect(left, top, width, height, FACE, fill_opacity="0.85", stroke=GRID)]
    for n, (colour, words) in enumerate(entries):
        y = top + 6 + (size + 6) * n
        drawn += [rect(left + 6, y + 2, 12, size - 2, colour), text(left + 22, y + size - 1, words, size)]
    return drawn


def histogram(
    title: str,
    starts: Sequence[float],
    ends: Sequence[float],
    counts: Sequence[int],
    x_label: str,
    y_label: str,
) -> bytes:
    """Bars from each start to its end, as high as its count."""
    plot = Plot()
    low, high = min(starts), max(ends)
    span = high - low or 1.0
    y_values = ticks(0, max(counts) or 1)
    top = y_values[-1] or 1
    x_values = [v for v in ticks(low, high) if low - 1e-9 <= v <= high + 1e-9]
    body = axes(
        plot,
        [((v - low) / span, label(v)) for v in x_values],
        [(v / top, label(v)) for v in y_values],
    )
    for start, end, count in zip(starts, ends, counts, strict=True):
        x0, x1, y = plot.x((start - low) / span), plot.x((end - low) / span), plot.y(count / top)
        body.append(rect(x0 + 0.5, y, x1 - x0 - 1, plot.bottom - y, BAR_COLOUR))
    return document(title, body + axis_labels(plot, x_label, y_label))


def lines(
    title: str, series: Sequence[tuple[str, Sequence[float], Sequence[float]]], x_label: str, y_label: str
) -> bytes:
    """One line with dots per (name, xs, ys), coloured in turn, with a legend of the names."""
    xs = [x for _, values, _ in series for x in values]
    ys = [y for _, _, values in series for y in values]
    plot = Plot()
    x_values, y_values = ticks(min(xs), max(xs)), ticks(min(0.0, min(ys)), max(ys))
    x_low, x_span = x_values[0], (x_values[-1] - x_values[0]) or 1.0
    y_low, y_span = y_values[0], (y_values[-1] - y_values[0]) or 1.0
    body = axes(
        plot,
        [((v - x_low) / x_span, label(v)) for v in x_values],
        [((v - y_low) / y_span, label(v)) for v in y_values],
    )
    entries = []
    for n, (name, x_points, y_points) in enumerate(series):
        colour = LINE_COLOURS[n % len(LINE_COLOURS)]
        points = [
            (plot.x((x - x_low) / x_span), plot.y((y - y_low) / y_span))
            for x, y in zip(x_points, y_points, strict=True)
        ]
        path = " ".join(f"{_n(x)},{_n(y)}" for x, y in points)
        dot = f"dot{n}"  # a dot at every point, drawn by the line itself (a few bytes a point)
        body.append(
            f'<defs><marker id="{dot}" viewBox="0 0 4 4" refX="2" refY="2" markerWidth="4" '
            f'markerHeight="4" markerUnits="userSpaceOnUse"><circle cx="2" cy="2" r="1.6" fill="{colour}"/>'
            f'</marker></defs><polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1" '
            f'marker-start="url(#{dot})" marker-mid="url(#{dot})" marker-end="url(#{dot})"/>'
        )
        entries.append((colour, name))
    body += legend(plot.right - 6, plot.top + 6, entries, SMALL)
    return document(title, body + axis_labels(plot, x_label, y_label))


def log_bars(
    title: str,
    bars: Sequence[tuple[str, int, str]],
    x_label: str,
    keys: Sequence[tuple[str, str]],
) -> bytes:
    """Horizontal bars (name, value, colour), the first at the top, on a logarithmic scale that
    still places zero (values up to 1 linear), each labelled with its value; a legend of `keys`
    (colour, words) beside the plot."""
    plot = Plot(left=8 + CHAR * SMALL * max((len(name) for name, _, _ in bars), default=1), right=WIDTH - 110)

    def decades(value: float) -> float:
        return 0.3 * value if value <= 1 else 0.3 + math.log10(value)

    top = max([value for _, value, _ in bars] + [1])
    end = decades(top * 8)
    powers = [10**p for p in range(len(str(top)) + 1) if decades(10**p) <= end]  # those on the axis
    body = axes(plot, [(decades(p) / end, short(p)) for p in powers], [])
    slot = (plot.bottom - plot.top) / max(len(bars), 1)
    for n, (name, value, colour) in enumerate(bars):
        y = plot.top + slot * n
        width = plot.x(decades(value) / end) - plot.left
        body += [
            rect(plot.left, y + slot * 0.15, width, slot * 0.7, colour),
            text(plot.left - 6, y + slot / 2 + 3.5, name, SMALL, "end"),
            text(plot.left + width + 4, y + slot / 2 + 3.5, f"{value:,}", SMALL),
        ]
    body += legend(WIDTH - 8, plot.top, keys)
    return document(title, body + axis_labels(plot, x_label))


def short(number: int) -> str:
    """1, 10, 100, 1k, 10k, 100k, 1M, ...: a power of ten as a tick label."""
    for size, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if number >= size:
            return f"{number // size:,}{suffix}"
    return str(number)
