"""The report as one self-contained HTML document.

Inline CSS, the figure as a base64 PNG, no external reference; every value
from the database is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

from cryod import __version__

from .content import (
    ACTION_COLUMNS,
    AE_COLUMNS,
    ALARM_COLUMNS,
    CYCLE_COLUMNS,
    DATA_QUALITY_COLUMNS,
    HOST_ONLY_TEXT,
    NO_STUDY_TEXT,
    RESEARCH_USE,
    STILL_OPEN_TEXT,
    action_rows,
    adverse_event_rows,
    alarm_rows,
    clock_note,
    cycle_rows,
    data_quality_rows,
    metadata_rows,
    simulated_warning,
    study_rows,
    text,
    unplotted_note,
)
from .data import ReportData
from .plot import figure_png, render_figure

__all__ = ["render_html"]

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


def _table(
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


def _alt_text(data: ReportData) -> str:
    mins = [c["min_tip_c"] for c in data.cycles if c.get("min_tip_c") is not None]
    coldest = f"; coldest tip {min(mins):.1f} °C" if mins else ""
    return (
        f"Tip temperature over time for probes {', '.join(map(str, data.probes)) or 'none'}, "
        f"with freeze and thaw phases shaded and supply pressure below{coldest}"
    )


def _study_section(data: ReportData) -> str:
    """Selection, procedure details and baseline pain of the study record."""
    rows = study_rows(data)
    if not rows:
        return ""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<h2>Study record</h2><table class="meta study-record"><tbody>{body}</tbody></table>'


def render_html(data: ReportData) -> str:
    """The report as one self-contained HTML document (all DB text escaped)."""
    m = data.metadata
    png = base64.b64encode(figure_png(render_figure(data))).decode("ascii")
    meta = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in metadata_rows(data))
    host_only = f'<div class="warn">{_e(HOST_ONLY_TEXT)}</div>' if m.get("host_only_limits") else ""
    no_study = "" if m.get("study_id") else f'<div class="warn">{_e(NO_STUDY_TEXT)}</div>'
    open_note = "" if m.get("closed_at") else f'<div class="warn">{_e(STILL_OPEN_TEXT)}</div>'
    sim = simulated_warning(data)
    simulated = "" if sim is None else f'<div class="warn simulated">{_e(sim)}</div>'
    unplotted = unplotted_note(data)
    alarm_cls = [str(a.get("priority") or "") for a in data.alarms]
    title = f"Procedure {m['procedure_id']} report, study {text(m.get('study_id'))}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Cryoablation procedure report: procedure {_e(m['procedure_id'])}</h1>",
        f'<div class="study">Study identifier: {_e(text(m.get("study_id")))}</div>',
        f'<div class="research">{_e(RESEARCH_USE)}</div>',
        no_study,
        host_only,
        open_note,
        simulated,
        "<h2>Procedure</h2>",
        f'<table class="meta"><tbody>{meta}</tbody></table>',
        _study_section(data),
        "<h2>Adverse events</h2>",
        _table(AE_COLUMNS, adverse_event_rows(data), css_class="adverse-events")
        if data.adverse_events
        else "<p>None recorded as rows.</p>",
        "<h2>Tip temperature and supply pressure</h2>",
        f'<img alt="{_e(_alt_text(data))}" src="data:image/png;base64,{png}">',
        "" if unplotted is None else f'<p class="unplotted">{_e(unplotted)}</p>',
        "<h2>Cycles</h2>",
        f'<p class="clock">{_e(clock_note(data))}</p>',
        _table(CYCLE_COLUMNS, cycle_rows(data), numeric=range(6, 14), css_class="cycles"),
        "<h2>Alarms</h2>",
        _table(ALARM_COLUMNS, alarm_rows(data), row_class=alarm_cls, css_class="alarms"),
        "<h2>Operator actions</h2>",
        _table(ACTION_COLUMNS, action_rows(data), css_class="actions"),
        "<h2>Data quality</h2>",
        "<p>Readings that were stale or invalid are stored without a value and shown as "
        "gaps in the plot.</p>",
        _table(DATA_QUALITY_COLUMNS, data_quality_rows(data), numeric=(1, 2)),
        f"<footer>Generated {_e(data.generated_at)} by cryod {_e(__version__)} from "
        f"{_e(data.source)}. {_e(RESEARCH_USE)}</footer>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)
