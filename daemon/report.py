"""The procedure report: what a researcher files after a procedure.

One function, ``write_report(db, procedure_id, out)``, reads the procedure
log read-only (so it works on a copy, or beside a running daemon) and writes
HTML, PDF or PNG, chosen by the extension of ``out``:

- HTML: one self-contained file (inline CSS, the figure as a base64 PNG, no
  external reference); every value from the database is HTML-escaped.
- PDF: a metadata and tables section, then the plot page.
- PNG: the plot with a header naming the procedure and the research-use status.

The plot has one panel per probe (tip temperature, freeze and thaw phases
shaded from the cycles table, the -20 and -40 C lethal-ice lines, alarm
markers) and a supply-pressure panel below on the same time axis.
Unusable readings (stale, invalid) are stored without a value and are drawn
as gaps with a tick on the time axis, never as a number.

matplotlib is an optional extra (``pip install 'cryod[report]'``); it is
imported inside the functions that draw, with the Agg backend, so the daemon
never loads it.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cryod import __version__

from .figures import LETHAL_C
from .store import audit
from .store.db import open_readonly
from .store.models import Sample, parse_utc, utcnow
from .store.queries import NotFound, load_procedure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "HOST_ONLY_TEXT",
    "NO_STUDY_TEXT",
    "RESEARCH_USE",
    "ReportData",
    "ReportDependencyError",
    "ReportError",
    "figure_size_px",
    "load_report_data",
    "render_figure",
    "render_html",
    "write_report",
]

RESEARCH_USE = (
    "For research use only. NICE IPG747 / HTG652: percutaneous image-guided "
    "cryoablation of peripheral neuroma for chronic pain has inadequate evidence "
    "of efficacy and is to be used only in the context of research."
)
HOST_ONLY_TEXT = (
    "Host-only limits: this procedure ran on a console without its own hardware "
    "temperature/time limits; the limits were enforced by cryod on the host only."
)
NO_STUDY_TEXT = (
    "No study identifier was recorded for this procedure: NICE IPG747 / HTG652 allow it "
    "only within research; link it to its study before filing."
)
FORMATS = {".html": "html", ".htm": "html", ".pdf": "pdf", ".png": "png"}

# figure geometry (inches at DPI); figure_size_px() derives the pixel size from it
DPI = 100
WIDTH_IN = 11.0
PROBE_PANEL_IN = 2.6
PRESSURE_PANEL_IN = 1.7
MARGINS_IN = 1.1  # top and bottom margins, axis labels included
HEADER_IN = 1.0  # PNG only: the header text above the plot

TIP_CHANNEL = "tip_c"
SUPPLY_CHANNEL = "supply_kpa"
CYLINDER_CHANNEL = "cylinder_kpa"
PHASE_COLOURS = {"freeze": "#c6dbef", "thaw": "#fdd9b5"}
PRIORITY_COLOURS = {"high": "#d62728", "medium": "#e6a700", "low": "#17becf", "info": "#7f7f7f"}
MISSING = "—"


class ReportError(ValueError):
    """The report could not be made; the message says why and what to do (a ValueError,
    so CLIs that report ValueError/LookupError cleanly handle it)."""


class ReportDependencyError(ReportError, ImportError):
    """matplotlib (the ``report`` extra) is not installed."""


@dataclass(frozen=True, slots=True)
class Series:
    """One channel over time: seconds since the procedure opened, value or None."""

    t_s: list[float] = field(default_factory=list)
    value: list[float | None] = field(default_factory=list)
    validity: list[str] = field(default_factory=list)

    def unusable_t_s(self) -> list[float]:
        return [t for t, v in zip(self.t_s, self.value, strict=True) if v is None]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.validity:
            out[v] = out.get(v, 0) + 1
        return out


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the report shows, read from the log in one read-only session."""

    metadata: dict[str, Any]
    cycles: list[dict[str, Any]]
    alarms: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    tip: dict[int, Series]
    supply: Series
    cylinder: Series
    t0_utc: float  # epoch seconds of opened_at: x = 0
    audit_status: str
    generated_at: str
    source: str  # database file name (not its full path)

    @property
    def probes(self) -> list[int]:
        found = set(self.tip) | {int(c["probe"]) for c in self.cycles}
        return sorted(found)

    def rel_s(self, iso_utc: str | None) -> float | None:
        if iso_utc is None:
            return None
        return parse_utc(iso_utc).timestamp() - self.t0_utc


# ---- reading the log --------------------------------------------------------------
def _load_series(
    session: Session, procedure_id: int, t0: float
) -> tuple[dict[int, Series], Series, Series]:
    rows = session.execute(
        select(Sample.probe, Sample.channel, Sample.t_utc, Sample.value, Sample.validity)
        .where(
            Sample.procedure_id == procedure_id,
            Sample.channel.in_((TIP_CHANNEL, SUPPLY_CHANNEL, CYLINDER_CHANNEL)),
        )
        .order_by(Sample.probe, Sample.channel, Sample.t_utc, Sample.id)
    ).all()
    tip: dict[int, Series] = {}
    supply, cylinder = Series(), Series()
    for probe, channel, t_utc, value, validity in rows:
        if channel == TIP_CHANNEL and probe >= 1:
            series = tip.setdefault(int(probe), Series())
        elif channel == SUPPLY_CHANNEL and probe == 0:
            series = supply
        elif channel == CYLINDER_CHANNEL and probe == 0:
            series = cylinder
        else:
            continue
        series.t_s.append(float(t_utc) - t0)
        # a reading that was not usable is stored without a value; never plot one
        series.value.append(float(value) if value is not None and validity == "valid" else None)
        series.validity.append(str(validity))
    return tip, supply, cylinder


def _audit_status(session: Session) -> str:
    try:
        result = audit.verify(session)
    except Exception as exc:  # noqa: BLE001 - the report still shows the rest
        return f"not checked ({type(exc).__name__}: {exc})"
    if result.ok:
        return f"intact ({result.rows} entries verified)"
    return f"BROKEN at entry {result.first_bad_seq}: {result.reason}"


def load_report_data(db_path: str | os.PathLike[str], procedure_id: int) -> ReportData:
    """Read one procedure, its cycles, alarms, actions and plotted samples."""
    path = Path(db_path)
    if not path.is_file():
        raise ReportError(f"database {path} does not exist")
    engine = open_readonly(path)
    try:
        with Session(engine) as session:
            try:
                detail = load_procedure(session, int(procedure_id))
            except NotFound as exc:
                raise NotFound(
                    f"procedure {procedure_id} does not exist in {path.name} "
                    "(list them with `cryoctl procedures`)"
                ) from exc
            t0 = parse_utc(detail.metadata["opened_at"]).timestamp()
            tip, supply, cylinder = _load_series(session, int(procedure_id), t0)
            audit_status = _audit_status(session)
    finally:
        engine.dispose()
    return ReportData(
        metadata=detail.metadata,
        cycles=detail.cycles,
        alarms=detail.alarms,
        actions=detail.actions,
        tip=tip,
        supply=supply,
        cylinder=cylinder,
        t0_utc=t0,
        audit_status=audit_status,
        generated_at=utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        source=path.name,
    )


# ---- formatting ---------------------------------------------------------------------
def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return f"{float(value):.{digits}f}"


def _clock(seconds: float | None) -> str:
    """Time since the procedure opened as +m:ss."""
    if seconds is None:
        return MISSING
    sign = "-" if seconds < 0 else "+"
    total = round(abs(seconds))
    return f"{sign}{total // 60}:{total % 60:02d}"


def _utc_short(iso_utc: str | None) -> str:
    if iso_utc is None:
        return MISSING
    return parse_utc(iso_utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _utc_time(iso_utc: str | None) -> str:
    if iso_utc is None:
        return MISSING
    return parse_utc(iso_utc).strftime("%H:%M:%S")


def _text(value: Any) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


_LABELS = {"mortons_neuroma": "Morton's neuroma", "ct": "CT", "mri": "MRI", "na": "n/a"}


def _label(code: str | None) -> str:
    """A stored code as a reader expects it (``mortons_neuroma`` -> Morton's neuroma)."""
    if code is None:
        return MISSING
    return _LABELS.get(str(code), str(code).replace("_", " "))


def _adverse_events(events: list[dict[str, Any]] | None) -> str:
    if events is None:
        return "not recorded"
    if not events:
        return "none"
    parts = []
    for e in events:
        text = e.get("text")
        parts.append(_label(e.get("code")) + (f": {text}" if text else ""))
    return "; ".join(parts)


def metadata_rows(data: ReportData) -> list[tuple[str, str]]:
    """(label, text) pairs, in the order a reader looks for them."""
    m = data.metadata
    indication = _label(m.get("indication"))
    if m.get("indication_other"):
        indication += f" ({m['indication_other']})"
    console = " / ".join(
        _text(m.get(k)) for k in ("console", "console_model", "console_serial", "console_firmware")
    )
    probe = f"{_text(m.get('probe_model'))}, lot {_text(m.get('probe_lot'))}"
    return [
        ("Study identifier", _text(m.get("study_id"))),
        ("Procedure", f"{m.get('procedure_id')} ({m.get('uuid')})"),
        ("Patient reference (pseudonym)", _text(m.get("patient_ref"))),
        ("Indication", indication),
        ("Site / side", f"{_text(m.get('site'))} / {_label(m.get('side'))}"),
        ("Imaging guidance", _label(m.get("imaging"))),
        ("Anaesthesia", _label(m.get("anaesthesia"))),
        ("Operator", _text(m.get("operator"))),
        ("Probe model, lot", probe),
        ("Console (name / model / serial / firmware)", console),
        ("Software version", _text(m.get("software_version"))),
        ("Opened", _utc_short(m.get("opened_at"))),
        ("Closed", _utc_short(m.get("closed_at")) if m.get("closed_at") else "still open"),
        ("Closed by", _text(m.get("closed_by"))),
        ("Host-only limits", "YES" if m.get("host_only_limits") else "no"),
        ("Adverse events", _adverse_events(m.get("adverse_events"))),
        ("Notes", _text(m.get("notes"))),
        ("Audit chain", data.audit_status),
    ]


CYCLE_COLUMNS = (
    "#",
    "Probe",
    "Phase",
    "Step",
    "Start",
    "Start (UTC)",
    "Duration s",
    "Planned s",
    "Target °C",
    "Min tip °C",
    "To target s",
    "< -20 °C s",
    "< -40 °C s",
    "Thaw to 0 °C s",
    "Outcome",
)


def cycle_rows(data: ReportData) -> list[list[str]]:
    rows = []
    for c in data.cycles:
        below = c.get("time_below_c") or {}
        outcome = _text(c.get("outcome") or "running")
        if c.get("outcome_reason"):
            outcome += f" ({c['outcome_reason']})"
        if c.get("host_only_limits"):
            outcome += " [host-only limits]"
        rows.append(
            [
                str(c["cycle_id"]),
                str(c["probe"]),
                _text(c.get("phase")),
                str(c.get("step_index", "")),
                _clock(data.rel_s(c.get("started_at"))),
                _utc_time(c.get("started_at")),
                _num(c.get("duration_s")),
                _num(c.get("planned_s")),
                _num(c.get("target_tip_c")),
                _num(c.get("min_tip_c")),
                _num(c.get("time_to_target_s")),
                _num(below.get("-20")),
                _num(below.get("-40")),
                _num(c.get("thaw_to_0_s")),
                outcome,
            ]
        )
    return rows


ALARM_COLUMNS = (
    "Raised",
    "Raised (UTC)",
    "Priority",
    "Code",
    "Probe",
    "Message",
    "Acked",
    "Cleared",
)


def alarm_rows(data: ReportData) -> list[list[str]]:
    rows = []
    for a in data.alarms:
        acked = MISSING
        if a.get("acked_at"):
            acked = f"{_utc_time(a['acked_at'])} by {_text(a.get('acked_by'))}"
        rows.append(
            [
                _clock(data.rel_s(a.get("raised_at"))),
                _utc_time(a.get("raised_at")),
                _text(a.get("priority")),
                _text(a.get("code")),
                _text(a.get("probe") or "console"),
                _text(a.get("message")),
                acked,
                _utc_time(a.get("cleared_at")) if a.get("cleared_at") else MISSING,
            ]
        )
    return rows


ACTION_COLUMNS = ("At", "Who", "Action", "Accepted", "Reason")


def action_rows(data: ReportData) -> list[list[str]]:
    return [
        [
            _clock(data.rel_s(a.get("at"))),
            _text(a.get("who")),
            _text(a.get("action")),
            "yes" if a.get("accepted") else "REFUSED",
            _text(a.get("reason")),
        ]
        for a in data.actions
    ]


def data_quality_rows(data: ReportData) -> list[list[str]]:
    """Per plotted channel: samples, and how many were not usable (gaps in the plot)."""
    named = [(f"probe {p} tip_c", s) for p, s in sorted(data.tip.items())]
    named += [("supply_kpa", data.supply), ("cylinder_kpa", data.cylinder)]
    rows = []
    for name, s in named:
        counts = s.counts()
        bad = sum(n for v, n in counts.items() if v != "valid")
        detail = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()) if k != "valid")
        rows.append([name, str(len(s.t_s)), str(bad), detail or MISSING])
    return rows


DATA_QUALITY_COLUMNS = ("Channel", "Samples", "Not usable", "Detail")


# ---- the figure ----------------------------------------------------------------------
def _matplotlib() -> None:
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


def _time_scale(data: ReportData) -> tuple[float, str]:
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
    _matplotlib()
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
    scale, unit = _time_scale(data)
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
                "no tip temperature samples recorded",
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
    pax.set_xlabel(f"time since procedure opened ({unit})")
    pax.grid(True, axis="y", color="#eeeeee", lw=0.6)
    axes[0].set_xlim(left=0.0)
    _legend(axes[0], data)
    m = data.metadata
    axes[0].set_title(
        f"Procedure {m['procedure_id']}: tip temperature per probe, supply pressure below",
        fontsize=10,
        loc="left",
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
        f"Study {_text(m.get('study_id'))}  ·  procedure {m['procedure_id']}  ·  "
        f"patient ref {_text(m.get('patient_ref'))}",
        fontsize=14,
        fontweight="bold",
        va="top",
    )
    fig.text(
        0.095,
        1.0 - 0.62 / h,
        f"{_label(m.get('indication'))}, {_text(m.get('site'))} ({_label(m.get('side'))}); "
        f"{_label(m.get('imaging'))} guidance; opened {_utc_short(m.get('opened_at'))}; "
        f"operator {_text(m.get('operator'))}; cryod {_text(m.get('software_version'))}",
        fontsize=9,
        va="top",
    )
    statement = "RESEARCH USE ONLY (NICE IPG747 / HTG652)"
    if not m.get("study_id"):
        statement += "  ·  NO STUDY IDENTIFIER RECORDED"
    if m.get("host_only_limits"):
        statement += "  ·  HOST-ONLY LIMITS"
    fig.text(
        0.095, 1.0 - 0.88 / h, statement, fontsize=9, color="#b30000", fontweight="bold", va="top"
    )


def _png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": f"cryod {__version__}"})
    return buf.getvalue()


# ---- writers --------------------------------------------------------------------------
def _write_png(data: ReportData, out: Path) -> None:
    out.write_bytes(_png_bytes(render_figure(data, header=True)))


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1150px;color:#1f1f1f;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;
border-bottom:1px solid #ccc}
.study{font-size:1.3em;font-weight:bold;background:#eef3fb;padding:.4em .7em;display:inline-block;
border-left:5px solid #1f4e99}
.research{background:#fff3cd;border:2px solid #b8860b;padding:.7em 1em;font-weight:bold;
margin:1em 0}
.warn{background:#fde2e1;border:2px solid #b30000;padding:.6em 1em;font-weight:bold;margin:1em 0}
table{border-collapse:collapse;font-size:.88em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
table.meta th{width:16em}
.high{color:#b30000;font-weight:bold}.medium{color:#8a6d00;font-weight:bold}.low{color:#007c89}
img{max-width:100%;height:auto;border:1px solid #ddd}
footer{margin-top:2em;color:#666;font-size:.85em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _html_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric: Sequence[int] = (),
    row_class: Sequence[str] | None = None,
    css_class: str = "",
) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{_e(row_class[i])}"' if row_class and row_class[i] else ""
        cells = "".join(
            f'<td class="n">{_e(v)}</td>' if j in numeric else f"<td>{_e(v)}</td>"
            for j, v in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    table_cls = f' class="{css_class}"' if css_class else ""
    return f"<table{table_cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(data: ReportData) -> str:
    """The report as one self-contained HTML document (all DB text escaped)."""
    m = data.metadata
    png = base64.b64encode(_png_bytes(render_figure(data))).decode("ascii")
    meta = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in metadata_rows(data))
    host_only = f'<div class="warn">{_e(HOST_ONLY_TEXT)}</div>' if m.get("host_only_limits") else ""
    no_study = "" if m.get("study_id") else f'<div class="warn">{_e(NO_STUDY_TEXT)}</div>'
    open_note = (
        ""
        if m.get("closed_at")
        else '<div class="warn">The procedure was still open when this report was made.</div>'
    )
    alarm_cls = [str(a.get("priority") or "") for a in data.alarms]
    title = f"Procedure {m['procedure_id']} report, study {_text(m.get('study_id'))}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Cryoablation procedure report: procedure {_e(m['procedure_id'])}</h1>",
        f'<div class="study">Study identifier: {_e(_text(m.get("study_id")))}</div>',
        f'<div class="research">{_e(RESEARCH_USE)}</div>',
        no_study,
        host_only,
        open_note,
        "<h2>Procedure</h2>",
        f'<table class="meta"><tbody>{meta}</tbody></table>',
        "<h2>Tip temperature and supply pressure</h2>",
        f'<img alt="{_e(_alt_text(data))}" src="data:image/png;base64,{png}">',
        "<h2>Cycles</h2>",
        "<p>Times are seconds; start is time since the procedure opened. Figures are "
        "those recorded by cryod when each cycle closed.</p>",
        _html_table(CYCLE_COLUMNS, cycle_rows(data), numeric=range(6, 14), css_class="cycles"),
        "<h2>Alarms</h2>",
        _html_table(ALARM_COLUMNS, alarm_rows(data), row_class=alarm_cls, css_class="alarms"),
        "<h2>Operator actions</h2>",
        _html_table(ACTION_COLUMNS, action_rows(data), css_class="actions"),
        "<h2>Data quality</h2>",
        "<p>Readings that were stale or invalid are stored without a value and shown as "
        "gaps in the plot.</p>",
        _html_table(DATA_QUALITY_COLUMNS, data_quality_rows(data), numeric=(1, 2)),
        f"<footer>Generated {_e(data.generated_at)} by cryod {_e(__version__)} from "
        f"{_e(data.source)}. {_e(RESEARCH_USE)}</footer>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _alt_text(data: ReportData) -> str:
    mins = [c["min_tip_c"] for c in data.cycles if c.get("min_tip_c") is not None]
    coldest = f"; coldest tip {min(mins):.1f} °C" if mins else ""
    return (
        f"Tip temperature over time for probes {', '.join(map(str, data.probes)) or 'none'}, "
        f"with freeze and thaw phases shaded and supply pressure below{coldest}"
    )


def _write_html(data: ReportData, out: Path) -> None:
    out.write_text(render_html(data), encoding="utf-8")


# PDF: text pages laid out top to bottom on A4, then the plot page
_A4_IN = (8.27, 11.69)
_LINE_IN = 0.19


class _PdfText:
    """Lays out headings, paragraphs and tables on as many A4 pages as needed."""

    def __init__(self, pdf: Any, title: str) -> None:
        self.pdf = pdf
        self.title = title
        self.fig: Any = None
        self.y_in = 0.0
        self.page = 0

    def _new_page(self) -> None:
        from matplotlib.figure import Figure

        self.flush()
        self.fig = Figure(figsize=_A4_IN)
        self.page += 1
        self.y_in = 0.6
        self._put(
            0.5,
            self.title + (f" (page {self.page})" if self.page > 1 else ""),
            size=8,
            colour="#666666",
        )
        self.y_in += _LINE_IN * 1.5

    def _room(self, lines: float) -> None:
        if self.fig is None or self.y_in + lines * _LINE_IN > _A4_IN[1] - 0.6:
            self._new_page()

    def _put(
        self,
        x_in: float,
        text: str,
        *,
        size: float = 8,
        weight: str = "normal",
        colour: str = "#1f1f1f",
    ) -> None:
        self.fig.text(
            x_in / _A4_IN[0],
            1.0 - self.y_in / _A4_IN[1],
            text,
            fontsize=size,
            fontweight=weight,
            color=colour,
            va="top",
        )

    def heading(self, text: str, size: float = 12) -> None:
        self._room(3)
        self.y_in += _LINE_IN * 0.6
        self._put(0.5, text, size=size, weight="bold")
        self.y_in += _LINE_IN * (size / 8.0)

    def paragraph(
        self, text: str, *, width: int = 110, colour: str = "#1f1f1f", weight: str = "normal"
    ) -> None:
        import textwrap

        for line in textwrap.wrap(text, width) or [""]:
            self._room(1)
            self._put(0.5, line, colour=colour, weight=weight)
            self.y_in += _LINE_IN

    def table(
        self, columns: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[float]
    ) -> None:
        """Columns at fixed widths (inches); long cells are cut with an ellipsis."""
        if not rows:
            self.paragraph("None.")
            return

        def line(cells: Sequence[str], weight: str) -> None:
            self._room(1)
            x = 0.5
            for cell, w in zip(cells, widths, strict=True):
                limit = max(3, int(w * 17))
                shown = cell if len(cell) <= limit else cell[: limit - 1] + "…"
                self._put(x, shown, size=7, weight=weight)
                x += w
            self.y_in += _LINE_IN * 0.9

        line(columns, "bold")
        for row in rows:
            if self.y_in + _LINE_IN > _A4_IN[1] - 0.6:
                self._new_page()
                line(columns, "bold")
            line(row, "normal")
        self.y_in += _LINE_IN * 0.5

    def flush(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            self.fig = None


def _write_pdf(data: ReportData, out: Path) -> None:
    _matplotlib()
    from matplotlib.backends.backend_pdf import PdfPages

    m = data.metadata
    title = (
        f"cryod procedure report: procedure {m['procedure_id']}, study {_text(m.get('study_id'))}"
    )
    with PdfPages(
        out,
        metadata={
            "Title": title,
            "Subject": "Research use only (NICE IPG747 / HTG652)",
            "Creator": f"cryod {__version__}",
        },
    ) as pdf:
        doc = _PdfText(pdf, title)
        doc.heading(f"Cryoablation procedure report: procedure {m['procedure_id']}", size=15)
        doc.heading(f"Study identifier: {_text(m.get('study_id'))}", size=13)
        doc.paragraph(RESEARCH_USE, colour="#b30000", weight="bold")
        if not m.get("study_id"):
            doc.paragraph(NO_STUDY_TEXT, colour="#b30000", weight="bold")
        if m.get("host_only_limits"):
            doc.paragraph(HOST_ONLY_TEXT, colour="#b30000", weight="bold")
        if not m.get("closed_at"):
            doc.paragraph(
                "The procedure was still open when this report was made.", colour="#b30000"
            )
        doc.heading("Procedure")
        doc.table(("Field", "Value"), metadata_rows(data), (2.6, 4.7))
        doc.heading("Cycles (times in seconds)")
        doc.table(
            (
                "#",
                "Pr",
                "Phase",
                "Step",
                "Start",
                "Dur",
                "Plan",
                "Target",
                "Min tip",
                "To tgt",
                "<-20",
                "<-40",
                "Thaw 0",
                "Outcome",
            ),
            [r[:5] + r[6:] for r in cycle_rows(data)],
            (0.3, 0.25, 0.45, 0.35, 0.45, 0.45, 0.45, 0.5, 0.55, 0.5, 0.45, 0.45, 0.5, 1.5),
        )
        doc.heading("Alarms")
        doc.table(ALARM_COLUMNS, alarm_rows(data), (0.5, 0.75, 0.55, 1.35, 0.45, 2.1, 1.0, 0.55))
        doc.heading("Operator actions")
        doc.table(ACTION_COLUMNS, action_rows(data), (0.6, 1.0, 1.4, 0.7, 3.6))
        doc.heading("Data quality")
        doc.table(DATA_QUALITY_COLUMNS, data_quality_rows(data), (1.6, 0.8, 0.9, 4.0))
        doc.paragraph(
            f"Generated {data.generated_at} by cryod {__version__} from {data.source}.",
            colour="#666666",
        )
        doc.flush()
        pdf.savefig(render_figure(data, header=True))


def write_report(
    db_path: str | os.PathLike[str], procedure_id: int, out: str | os.PathLike[str]
) -> Path:
    """Write the report for one procedure; the format follows ``out``'s extension."""
    target = Path(out)
    kind = FORMATS.get(target.suffix.lower())
    if kind is None:
        raise ReportError(
            f"cannot tell the report format from {target.name!r}: use .html, .pdf or .png"
        )
    if not target.parent.is_dir():
        raise ReportError(f"output directory {target.parent} does not exist")
    _matplotlib()  # fail on a missing extra before reading anything
    data = load_report_data(db_path, procedure_id)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        {"html": _write_html, "pdf": _write_pdf, "png": _write_png}[kind](data, tmp)
        tmp.replace(target)  # a reader never sees half a report
    finally:
        tmp.unlink(missing_ok=True)
    return target
