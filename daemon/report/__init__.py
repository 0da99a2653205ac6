"""The procedure report: what a researcher files after a procedure.

``write_report(db, procedure_id, out)`` reads the procedure log read-only (so
it works on a copy, or beside a running daemon) and writes HTML, PDF or PNG,
chosen by the extension of ``out``:

- HTML: one self-contained file (inline CSS, the figure as a base64 PNG, no
  external reference); every value from the database is HTML-escaped.
- PDF: a metadata and tables section, then the plot page.
- PNG: the plot with a header naming the procedure and the research-use status.

One job per module:

- ``data``: query the record into plain data (``ReportData``);
- ``content``: the statements, value formats and table rows (pure text);
- ``plot``: the drawings, and the only module that imports matplotlib;
- ``html_document``, ``pdf_document``: the two documents (``render_html``,
  ``render_pdf``); the PNG is the plot;
- ``write``: the format from the extension, and the atomic file write.

matplotlib is an optional extra (``pip install 'cryod[report]'``), loaded
only when a report is drawn: importing this package does not load it.
"""

from __future__ import annotations

from .content import HOST_ONLY_TEXT, NO_STUDY_TEXT, RESEARCH_USE
from .data import ReportData, Series, TimeScale, load_report_data, time_scale_from_clocks
from .errors import ReportDependencyError, ReportError
from .html_document import render_html
from .pdf_document import render_pdf
from .plot import figure_size_px, render_figure
from .write import render_png, write_report

__all__ = [
    "HOST_ONLY_TEXT",
    "NO_STUDY_TEXT",
    "RESEARCH_USE",
    "ReportData",
    "ReportDependencyError",
    "ReportError",
    "Series",
    "TimeScale",
    "figure_size_px",
    "load_report_data",
    "render_figure",
    "render_html",
    "render_pdf",
    "render_png",
    "time_scale_from_clocks",
    "write_report",
]
