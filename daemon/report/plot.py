"""The report's drawings, and the only module of ours that imports matplotlib.

- ``render_figure(data)``: the plot, one panel per probe that had a cycle (tip temperature,
  freeze and thaw phases shaded from the cycles table, the -20 and -40 C
  lethal-ice lines, alarm markers) and a supply-pressure panel below on the
  same time axis. Unusable readings (stale, invalid) are stored without a
  value and are drawn as gaps with a tick on the time axis, never as a number.
- ``figure_png(fig)``: a figure as PNG bytes.
- ``TextPage`` and ``pdf_bytes(pages)``: pages of placed text and figures as
  one PDF (the PDF report lays its text out in ``pdf_document``).

matplotlib is an optional extra (``pip install 'cryod[report]'``); it is
imported inside the functions that draw, with the Agg backend, so importing
this module (and the daemon) never loads it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cryod import __version__

from ..figures import LETHAL_C
from .content import axis_label, label, text, utc_short
from .data import ReportData, Series
from .errors import ReportDependencyError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "TextPage",
    "figure_png",
    "figure_size_px",
    "pdf_bytes",
    "render_figure",
    "require_matplotlib",
]

# figure geometry (inches at DPI); figure_size_px() derives the pixel size from it
DPI = 100
WIDTH_IN = 11.0
PROBE_PANEL_IN = 2.6
PRESSURE_PANEL_IN = 1.7
MARGINS_IN = 1.1  # top and bottom margins, axis labels included
HEADER_IN = 1.0  # PNG only: the header text above the plot

PHASE_COLOURS = {"freeze": "#c6dbef", "thaw": "#fdd9b5"}
PRIORITY_COLOURS = {"high": "#d62728", "medium": "#e6a700", "low": "#17becf", "info": "#7f7f7f"}


def require_matplotlib() -> None:
    """Select the Agg backend (no display needed), or say how to install the extra."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ReportDependencyError(
            "the procedure report needs matplotlib: pip install 'cryod[report]'"
        ) from exc
    matplotlib.use("Agg", force=True)


def figure_size_in(n_probes: int, *, header: bool = False) -> tuple[float, float]:
    panels = max(1, n_probes) * PROBE_PANEL_IN + PRESSURE_PANEL_IN
    return WIDTH_IN, panels + MARGINS_IN + (HEADER_IN if header else 0.0)


def figure_size_px(n_probes: int, *, header: bool = False, dpi: int = DPI) -> tuple[int, int]:
    """(width, height) in pixels of the figure for ``n_probes`` probe panels."""
    w, h = figure_size_in(n_probes, header=header)
    return round(w * dpi), round(h * dpi)


def _axis_unit(data: ReportData) -> tuple[float, str]:
    ends = [s.t_s[-1] for s in (*data.tip.values(), data.supply) if s.t_s]
    ends += [t for c in data.cycles if (t := data.rel_s(c.get("ended_at"))) is not None]
    span = max(ends, default=0.0)
    return (60.0, "min") if span > 600 else (1.0, "s")


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def _shade_cycles(ax: Any, data: ReportData, probe: int | None, scale: float) -> None:
    last = max((s.t_s[-1] for s in (*data.tip.values(), data.supply) if s.t_s), default=0.0)
    for c in data.cycles:
        if probe is not None and c["probe"] != probe:
            continue
        start = data.rel_s(c.get("started_at"))
        end = data.rel_s(c.get("ended_at"))
        if start is None:
            continue
        end = max(last, start) if end is None else end  # still running when read
        colour = PHASE_COLOURS.get(str(c.get("phase")), "#eeeeee")
        ax.axvspan(start / scale, end / scale, color=colour, alpha=0.8, lw=0, zorder=0)
        if probe is not None and c.get("phase") == "freeze" and c.get("target_tip_c") is not None:
            ax.hlines(
                c["target_tip_c"],
                start / scale,
                end / scale,
                colors="#08519c",
                linestyles=(0, (2, 2)),
                lw=1.4,
                zorder=1,
            )


def _mark_alarms(ax: Any, data: ReportData, probe: int | None, scale: float) -> None:
    """Alarms for this probe (console-level alarms on every panel)."""
    for a in data.alarms:
        if probe is not None and a.get("probe") not in (None, 0, probe):
            continue
        if probe is None and a.get("probe") not in (None, 0):
            continue
        x = data.rel_s(a.get("raised_at"))
        if x is None:
            continue
        colour = PRIORITY_COLOURS.get(str(a.get("priority")), "#7f7f7f")
        ax.axvline(x / scale, color=colour, lw=1.2, ls="--", zorder=3)
        trans = ax.get_xaxis_transform()
        ax.plot([x / scale], [1.0], marker="v", ms=8, color=colour, transform=trans, clip_on=False)
        ax.annotate(
            str(a.get("code")),
            (x / scale, 0.96),
            xycoords=trans,
            xytext=(3, 0),
            textcoords="offset points",
            rotation=90,
            va="top",
            fontsize=7,
            color=colour,
        )


def _legend(ax: Any, data: ReportData) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [
        Line2D([], [], color="#1f1f1f", lw=1.4, label="tip temperature"),
        Patch(color=PHASE_COLOURS["freeze"], label="freeze"),
        Patch(color=PHASE_COLOURS["thaw"], label="thaw"),
        Line2D([], [], color="#08519c", ls=(0, (2, 2)), label="freeze target"),
    ]
    for c in LETHAL_C:
        handles.append(
            Line2D([], [], color=_lethal_colour(c), ls="-.", label=f"{c:.0f} °C lethal ice")
        )
    for prio in ("high", "medium", "low", "info"):
        if any(a.get("priority") == prio for a in data.alarms):
            colour = PRIORITY_COLOURS[prio]
            handles.append(Line2D([], [], color=colour, ls="--", label=f"alarm ({prio})"))
    if any(s.unusable_t_s() for s in data.tip.values()):
        handles.append(
            Line2D([], [], color="#7f7f7f", marker="|", ls="", label="no usable reading")
        )
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def _lethal_colour(threshold_c: float) -> str:
    return "#7b3294" if threshold_c <= -40 else "#a57dbf"


def render_figure(data: ReportData, *, header: bool = False, dpi: int = DPI) -> Figure:
    """The plot: one tip-temperature panel per probe, supply pressure below.

    With ``header`` the figure carries the procedure and research-use text
    above the plot (the PNG report). The size is ``figure_size_px``.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    probes = data.probes or [0]
    width_in, height_in = figure_size_in(len(data.probes), header=header)
    fig = Figure(figsize=(width_in, height_in), dpi=dpi, facecolor="white")
    top_in = (HEADER_IN if header else 0.0) + 0.45
    grid = fig.add_gridspec(
        len(probes) + 1,
        1,
        height_ratios=[PROBE_PANEL_IN] * len(probes) + [PRESSURE_PANEL_IN],
        left=0.095,
        right=0.80,
        top=1.0 - top_in / height_in,
        bottom=0.65 / height_in,
        hspace=0.12,
    )
    scale, unit = _axis_unit(data)
    axes: list[Any] = []
    for i, probe in enumerate(probes):
        ax = fig.add_subplot(grid[i, 0], sharex=axes[0] if axes else None)
        axes.append(ax)
        series = data.tip.get(probe, Series())
        _shade_cycles(ax, data, probe, scale)
        for threshold in LETHAL_C:
            ax.axhline(threshold, color=_lethal_colour(threshold), ls="-.", lw=1, zorder=2)
            ax.annotate(
                f"{threshold:.0f} °C lethal ice",
                (0.005, threshold),
                xycoords=ax.get_yaxis_transform(),
                xytext=(0, 2),
                textcoords="offset points",
                fontsize=7,
                color=_lethal_colour(threshold),
            )
        ax.axhline(0.0, color="#bdbdbd", lw=0.8, zorder=2)
        if series.t_s:
            ax.plot(
                [t / scale for t in series.t_s],
                _nan(series.value),
                color="#1f1f1f",
                lw=1.4,
                zorder=4,
            )
            gaps = series.unusable_t_s()
            if gaps:
                trans = ax.get_xaxis_transform()
                ax.plot(
                    [t / scale for t in gaps],
                    [0.02] * len(gaps),
                    ls="",
                    marker="|",
                    color="#7f7f7f",
                    transform=trans,
                )
        else:
            ax.text(
                0.5,
                0.5,
                "no tip temperature samples recorded" if probe else "no cycle: no probe to plot",
                transform=ax.transAxes,
                ha="center",
                color="#7f7f7f",
            )
        usable = [v for v in series.value if v is not None]
        lo = min([*usable, min(LETHAL_C)]) - 10.0
        hi = max([*usable, 0.0]) + 10.0
        ax.set_ylim(lo, hi)
        _mark_alarms(ax, data, probe if probe else None, scale)
        ax.set_ylabel(f"probe {probe}\ntip (°C)" if probe else "tip (°C)")
        ax.grid(True, axis="y", color="#eeeeee", lw=0.6)
        ax.tick_params(labelbottom=False)
    pax = fig.add_subplot(grid[len(probes), 0], sharex=axes[0])
    _shade_cycles(pax, data, None, scale)
    if data.supply.t_s:
        pax.plot(
            [t / scale for t in data.supply.t_s],
            _nan(data.supply.value),
            color="#1f77b4",
            lw=1.2,
            label="supply",
        )
    if data.cylinder.t_s:
        pax.plot(
            [t / scale for t in data.cylinder.t_s],
            _nan(data.cylinder.value),
            color="#7f7f7f",
            lw=1.0,
            ls="--",
            label="cylinder",
        )
    if data.supply.t_s or data.cylinder.t_s:
        pax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    else:
        pax.text(
            0.5,
            0.5,
            "no pressure samples recorded",
            transform=pax.transAxes,
            ha="center",
            color="#7f7f7f",
        )
    _mark_alarms(pax, data, None, scale)
    pax.set_ylabel("pressure (kPa)")
    pax.set_xlabel(axis_label(data, unit))
    pax.grid(True, axis="y", color="#eeeeee", lw=0.6)
    axes[0].set_xlim(left=0.0)
    _legend(axes[0], data)
    m = data.metadata
    axes[0].set_title(
        f"Procedure {m['procedure_id']}: tip temperature per probe, supply pressure below",
        fontsize=10,
        loc="left",
    )
    if data.time_scale.simulated:
        axes[0].set_title(
            f"simulated time ×{data.time_scale.factor:g}",
            fontsize=10,
            loc="right",
            color="#b30000",
            fontweight="bold",
        )
    if header:
        _header(fig, data)
    return fig


def _header(fig: Figure, data: ReportData) -> None:
    m = data.metadata
    h = fig.get_figheight()
    fig.text(
        0.095,
        1.0 - 0.25 / h,
        f"Study {text(m.get('study_id'))}  ·  procedure {m['procedure_id']}  ·  "
        f"patient ref {text(m.get('patient_ref'))}",
        fontsize=14,
        fontweight="bold",
        va="top",
    )
    fig.text(
        0.095,
        1.0 - 0.62 / h,
        f"{label(m.get('indication'))}, {text(m.get('site'))} ({label(m.get('side'))}); "
        f"{label(m.get('imaging'))} guidance; opened {utc_short(m.get('opened_at'))}; "
        f"operator {text(m.get('operator'))}; cryod {text(m.get('software_version'))}",
        fontsize=9,
        va="top",
    )
    statement = "RESEARCH USE ONLY (NICE IPG747 / HTG652)"
    if not m.get("study_id"):
        statement += "  ·  NO STUDY IDENTIFIER RECORDED"
    if m.get("host_only_limits"):
        statement += "  ·  HOST-ONLY LIMITS"
    if data.time_scale.simulated:
        statement += f"  ·  SIMULATED TIME ×{data.time_scale.factor:g}"
    fig.text(
        0.095, 1.0 - 0.88 / h, statement, fontsize=9, color="#b30000", fontweight="bold", va="top"
    )


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": f"cryod {__version__}"})
    return buf.getvalue()


# ---- PDF pages --------------------------------------------------------------------------
class TextPage:
    """A blank page on which text is placed by its top-left corner, in inches."""

    def __init__(self, width_in: float, height_in: float) -> None:
        require_matplotlib()
        from matplotlib.figure import Figure

        self.width_in = width_in
        self.height_in = height_in
        self.figure = Figure(figsize=(width_in, height_in))

    def text(
        self,
        x_in: float,
        y_in: float,
        line: str,
        *,
        size: float,
        weight: str = "normal",
        colour: str = "#1f1f1f",
    ) -> None:
        self.figure.text(
            x_in / self.width_in,
            1.0 - y_in / self.height_in,
            line,
            fontsize=size,
            fontweight=weight,
            color=colour,
            va="top",
        )


def pdf_bytes(pages: Sequence[TextPage | Figure], metadata: Mapping[str, str]) -> bytes:
    """The pages, in order, as one PDF document."""
    require_matplotlib()
    from matplotlib.backends.backend_pdf import PdfPages

    buf = io.BytesIO()
    with PdfPages(buf, metadata=dict(metadata)) as pdf:
        for page in pages:
            pdf.savefig(page.figure if isinstance(page, TextPage) else page)
    return buf.getvalue()
