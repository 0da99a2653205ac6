"""A procedure's per-probe tip temperature plot, as SVG; pure.

Every sample is kept in the record, a plot has a few hundred pixel columns:
``decimate`` reduces each probe's series to the minimum and maximum of the
valid values falling in each column, so the envelope drawn is exactly what
the full series would draw at that width (a spike is never averaged away).
A column with no valid value is a gap (stale or invalid data is not a
number). Freeze and thaw cycles are shaded; the -20 °C and -40 °C lines drawn.

The SVG holds only numbers and fixed labels, coloured with presentation
attributes (no ``style``, no script), served as ``image/svg+xml``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

__all__ = ["Column", "Shade", "decimate", "plot_svg"]

PANEL_H: Final = 170
MARGIN_L: Final = 56
MARGIN_R: Final = 16
MARGIN_T: Final = 40
AXIS_H: Final = 46
FREEZE_FILL: Final = "#cfe3ff"
THAW_FILL: Final = "#ffe1c4"
LINE: Final = "#1a1a1a"
GUIDE: Final = "#8a2be2"
#: samples further apart than this are not joined by the line
SILENCE_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Column:
    index: int
    lo: float
    hi: float
    gap_before: bool = False  # an invalid value or a silence since the previous column


@dataclass(frozen=True, slots=True)
class Shade:
    probe: int
    start_s: float
    end_s: float
    phase: str  # freeze | thaw


def decimate(
    points: Sequence[tuple[float, float | None]],
    t0: float,
    t1: float,
    columns: int,
    *,
    silence_s: float = SILENCE_S,
) -> list[Column]:
    """Min and max of the valid values per column of ``[t0, t1]``, in time order.

    ``points`` are (time, value) in time order, ``None`` for a value that was
    not valid. The line breaks (``gap_before``) after an invalid value and
    across a silence longer than ``silence_s``; columns without a sample
    between two valid ones are bridged.
    """
    if columns < 1 or not t1 > t0:
        return []
    span = t1 - t0
    out: list[Column] = []
    index = lo = hi = None
    gap = False
    pending_gap = False
    last_t: float | None = None
    for t, v in points:
        if t < t0 or t > t1:
            continue
        if v is None or not math.isfinite(v):
            pending_gap = True
            last_t = t
            continue
        if last_t is not None and t - last_t > silence_s:
            pending_gap = True
        last_t = t
        i = min(columns - 1, int((t - t0) / span * columns))
        if i == index and not pending_gap:
            assert lo is not None
            assert hi is not None
            lo, hi = min(lo, v), max(hi, v)
            continue
        if index is not None and lo is not None and hi is not None:
            out.append(Column(index, lo, hi, gap))
        index, lo, hi, gap = i, v, v, pending_gap
        pending_gap = False
    if index is not None and lo is not None and hi is not None:
        out.append(Column(index, lo, hi, gap))
    return out


def _y_range(series: Mapping[int, list[Column]]) -> tuple[float, float]:
    values = [c.lo for cols in series.values() for c in cols] + [
        c.hi for cols in series.values() for c in cols
    ]
    low = min([*values, -50.0])
    high = max([*values, 30.0])
    return math.floor(low / 10.0) * 10.0 - 10.0, math.ceil(high / 10.0) * 10.0


def _mmss(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def plot_svg(
    series: Mapping[int, list[Column]],
    shades: Sequence[Shade],
    *,
    duration_s: float,
    columns: int,
    title: str = "",
) -> str:
    """One panel per probe, ``columns`` pixels wide for ``duration_s`` seconds."""
    probes = sorted(series) or sorted({s.probe for s in shades})
    width = MARGIN_L + columns + MARGIN_R
    height = MARGIN_T + max(1, len(probes)) * (PANEL_H + AXIS_H) + 4
    y_lo, y_hi = _y_range(series)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{MARGIN_L}" y="16" font-size="13">{escape(title)}</text>',
    ]
    if not probes:
        out.append(f'<text x="{MARGIN_L}" y="{MARGIN_T + 40}">no samples received</text></svg>')
        return "".join(out)
    span = duration_s if duration_s > 0 else 1.0

    def x_of(t: float) -> float:
        return MARGIN_L + max(0.0, min(1.0, t / span)) * columns

    for n, probe in enumerate(probes):
        top = MARGIN_T + n * (PANEL_H + AXIS_H)

        def y_of(v: float, top: float = top) -> float:
            return top + (y_hi - v) / (y_hi - y_lo) * PANEL_H

        out.append(
            f'<rect x="{MARGIN_L}" y="{top}" width="{columns}" height="{PANEL_H}" '
            'fill="#fafafa" stroke="#999999"/>'
        )
        for s in shades:
            if s.probe != probe:
                continue
            x0, x1 = x_of(s.start_s), x_of(s.end_s)
            fill = FREEZE_FILL if s.phase == "freeze" else THAW_FILL
            out.append(
                f'<rect x="{x0:.1f}" y="{top}" width="{max(1.0, x1 - x0):.1f}" '
                f'height="{PANEL_H}" fill="{fill}"><title>{escape(s.phase)}</title></rect>'
            )
        for guide in (-20.0, -40.0):
            y = y_of(guide)
            out.append(
                f'<line x1="{MARGIN_L}" x2="{MARGIN_L + columns}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="{GUIDE}" stroke-dasharray="4 3"/>'
                f'<text x="{MARGIN_L + columns - 4}" y="{y - 3:.1f}" text-anchor="end" '
                f'fill="{GUIDE}">{guide:.0f} °C</text>'
            )
        step = 20.0 if y_hi - y_lo <= 160 else 40.0
        v = math.ceil(y_lo / step) * step
        while v <= y_hi:
            out.append(
                f'<text x="{MARGIN_L - 4}" y="{y_of(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>'
            )
            v += step
        out.append(
            f'<text x="{MARGIN_L}" y="{top - 7}" font-weight="bold">probe {probe}: tip °C</text>'
        )
        path = []
        prev = None
        for c in series.get(probe, []):
            x = MARGIN_L + c.index + 0.5
            verb = "L" if prev is not None and not c.gap_before else "M"
            path.append(f"{verb}{x:.1f},{y_of(c.hi):.1f}L{x:.1f},{y_of(c.lo):.1f}")
            prev = c.index
        if path:
            out.append(
                f'<path d="{"".join(path)}" fill="none" stroke="{LINE}" stroke-width="1.2"/>'
            )
        axis_y = top + PANEL_H + 14
        ticks = 6
        for i in range(ticks + 1):
            t = span * i / ticks
            out.append(
                f'<text x="{x_of(t):.1f}" y="{axis_y}" text-anchor="middle">{_mmss(t)}</text>'
            )
    out.append("</svg>")
    return "".join(out)
