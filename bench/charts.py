"""Inline SVG charts for the bench report (pure: numbers in, an ``<svg>`` string out).

Three shapes cover the report: overlaid histogram bars on a log axis (latency), lines over
time with shaded rounds (throughput), and x/y points (memory samples). Every label is
escaped; the output is well-formed XML so it can also be saved as a standalone .svg.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

W, H = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 40


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi - lo <= 1e-9 * max(1.0, abs(lo)):  # empty or denormal span: one unit around lo
        hi = lo + 1
    raw = (hi - lo) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    for k in range(64):  # bounded whatever floating point does
        value = first + k * step
        if value > hi + step * 1e-9:
            break
        if value >= lo - step * 1e-9:
            ticks.append(round(value, 12))
    return ticks or [lo]


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _frame(body: list[str], title_x: str, title_y: str, legend: list[tuple[str, str]]) -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%"'
        f' role="img" aria-label="{escape(title_y)} by {escape(title_x)}">',
        f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>',
        *body,
        f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}"'
        ' stroke="#9ca3af"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="#9ca3af"/>',
        f'<text x="{W - RIGHT}" y="{H - 6}" text-anchor="end">{escape(title_x)}</text>',
        f'<text x="8" y="{TOP - 12}">{escape(title_y)}</text>',
    ]
    x = W - RIGHT
    for name, color in reversed(legend):
        label = escape(name[:40])
        width = 7 * len(name[:40]) + 24
        x -= width
        parts.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{x + 14}" y="15">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _y_axis(ymax: float) -> tuple[list[str], float]:
    ticks = nice_ticks(0, ymax if ymax > 0 else 1)
    top = max(ticks[-1], ymax, 1e-12)
    out = []
    for tick in ticks:
        y = _y(tick, top)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#f1f5f9"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(tick)}</text>')
    return out, top


def _y(value: float, top: float) -> float:
    return H - BOTTOM - (H - TOP - BOTTOM) * (value / top if top else 0)


def _x(value: float, lo: float, hi: float) -> float:
    span = hi - lo if hi > lo else 1
    return LEFT + (W - LEFT - RIGHT) * (value - lo) / span


def bar_chart(
    edges: Sequence[float],
    series: Sequence[tuple[str, str, Sequence[int]]],
    title_x: str,
    title_y: str,
) -> str:
    """Overlaid translucent bars, one equal-width slot per bin (bins are log-spaced)."""
    bins = len(edges) - 1
    ymax = max((max(counts) for _, _, counts in series if counts), default=0)
    body, top = _y_axis(ymax)
    slot = (W - LEFT - RIGHT) / max(bins, 1)
    for _, color, counts in series:
        for k, count in enumerate(counts):
            if not count:
                continue
            y = _y(count, top)
            body.append(
                f'<rect x="{LEFT + k * slot + 1:.1f}" y="{y:.1f}" width="{max(slot - 2, 1):.1f}"'
                f' height="{H - BOTTOM - y:.1f}" fill="{color}" fill-opacity="0.55">'
                f"<title>{_num(edges[k])} to {_num(edges[k + 1])} {escape(title_x)}: {count}"
                "</title></rect>"
            )
    step = max(1, bins // 8)
    for k in range(0, bins + 1, step):
        x = LEFT + k * slot
        body.append(
            f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{_num(edges[k])}</text>'
        )
    return _frame(body, title_x, title_y, [(name, color) for name, color, _ in series])


def line_chart(
    width: float,
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    title_x: str,
    title_y: str,
    spans: Sequence[tuple[float, float, str]] = (),
) -> str:
    """Values per time bucket as lines; ``None`` breaks a line (the target was not running).

    ``spans`` shade the rounds in their target's colour, so A/B alternation is visible.
    """
    buckets = max((len(values) for _, _, values in series), default=1)
    end = buckets * width
    ymax = max((v for _, _, values in series for v in values if v is not None), default=0)
    body, top = _y_axis(ymax)
    for start, stop, color in spans:
        x0, x1 = _x(start, 0, end), _x(min(stop, end), 0, end)
        body.append(
            f'<rect x="{x0:.1f}" y="{TOP}" width="{max(x1 - x0, 0.5):.1f}"'
            f' height="{H - TOP - BOTTOM}" fill="{color}" fill-opacity="0.06"/>'
        )
    for _, color, values in series:
        for run in _runs(values):
            points = " ".join(
                f"{_x((k + 0.5) * width, 0, end):.1f},{_y(v, top):.1f}" for k, v in run
            )
            if len(run) == 1:
                k, v = run[0]
                body.append(
                    f'<circle cx="{_x((k + 0.5) * width, 0, end):.1f}" cy="{_y(v, top):.1f}"'
                    f' r="2" fill="{color}"/>'
                )
            else:
                body.append(
                    f'<polyline points="{points}" fill="none" stroke="{color}"'
                    ' stroke-width="1.6" stroke-linejoin="round"/>'
                )
    for tick in nice_ticks(0, end, 8):
        if tick <= end:
            body.append(
                f'<text x="{_x(tick, 0, end):.1f}" y="{H - BOTTOM + 16}"'
                f' text-anchor="middle">{_num(tick)}</text>'
            )
    return _frame(body, title_x, title_y, [(name, color) for name, color, _ in series])


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for k, v in enumerate(values):
        if v is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((k, v))
    if current:
        runs.append(current)
    return runs


def xy_chart(
    series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    title_x: str,
    title_y: str,
) -> str:
    """Measured points joined by lines (irregular x, e.g. memory samples over time)."""
    xs = [x for _, _, pts in series for x, _ in pts]
    ys = [y for _, _, pts in series for _, y in pts]
    lo, hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1
    body, top = _y_axis(max(ys, default=0))
    for _, color, pts in series:
        coords = [(_x(x, lo, hi), _y(y, top)) for x, y in pts]
        if len(coords) > 1:
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            body.append(
                f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.6"/>'
            )
        body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in coords]
    for tick in nice_ticks(lo, hi, 8):
        body.append(
            f'<text x="{_x(tick, lo, hi):.1f}" y="{H - BOTTOM + 16}"'
            f' text-anchor="middle">{_num(tick)}</text>'
        )
    return _frame(body, title_x, title_y, [(name, color) for name, color, _ in series])
