"""The report as a PDF: A4 text pages (metadata and tables), then the plot page.

This module lays the text out (headings, wrapped paragraphs, fixed-width
table columns, page breaks); ``plot`` puts it on paper.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from cryod import __version__

from .content import (
    ACTION_COLUMNS,
    AE_COLUMNS,
    ALARM_COLUMNS,
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
from .plot import TextPage, pdf_bytes, render_figure

__all__ = ["render_pdf"]

A4_IN = (8.27, 11.69)
LINE_IN = 0.19
MARGIN_IN = 0.5  # left
FOOT_IN = 0.6  # top and bottom

# the cycle table in the width of a page: short headers, no UTC start column
PDF_CYCLE_COLUMNS = (
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
)
_UTC_START = 5  # index of "Start (UTC)" in the full cycle rows


class _Layout:
    """Lays out headings, paragraphs and tables on as many A4 pages as needed."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.pages: list[TextPage] = []
        self.y_in = 0.0

    @property
    def _page(self) -> TextPage:
        return self.pages[-1]

    def _new_page(self) -> None:
        self.pages.append(TextPage(*A4_IN))
        self.y_in = FOOT_IN
        number = len(self.pages)
        self._put(
            MARGIN_IN,
            self.title + (f" (page {number})" if number > 1 else ""),
            size=8,
            colour="#666666",
        )
        self.y_in += LINE_IN * 1.5

    def _room(self, lines: float) -> None:
        if not self.pages or self.y_in + lines * LINE_IN > A4_IN[1] - FOOT_IN:
            self._new_page()

    def _put(
        self,
        x_in: float,
        line: str,
        *,
        size: float = 8,
        weight: str = "normal",
        colour: str = "#1f1f1f",
    ) -> None:
        self._page.text(x_in, self.y_in, line, size=size, weight=weight, colour=colour)

    def heading(self, line: str, size: float = 12) -> None:
        self._room(3)
        self.y_in += LINE_IN * 0.6
        self._put(MARGIN_IN, line, size=size, weight="bold")
        self.y_in += LINE_IN * (size / 8.0)

    def paragraph(
        self, para: str, *, width: int = 110, colour: str = "#1f1f1f", weight: str = "normal"
    ) -> None:
        for line in textwrap.wrap(para, width) or [""]:
            self._room(1)
            self._put(MARGIN_IN, line, colour=colour, weight=weight)
            self.y_in += LINE_IN

    def table(
        self, columns: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[float]
    ) -> None:
        """Columns at fixed widths (inches); long cells are cut with an ellipsis."""
        if not rows:
            self.paragraph("None.")
            return

        def line(cells: Sequence[str], weight: str) -> None:
            self._room(1)
            x = MARGIN_IN
            for cell, w in zip(cells, widths, strict=True):
                limit = max(3, int(w * 17))
                shown = cell if len(cell) <= limit else cell[: limit - 1] + "…"
                self._put(x, shown, size=7, weight=weight)
                x += w
            self.y_in += LINE_IN * 0.9

        line(columns, "bold")
        for row in rows:
            if self.y_in + LINE_IN > A4_IN[1] - FOOT_IN:
                self._new_page()
                line(columns, "bold")
            line(row, "normal")
        self.y_in += LINE_IN * 0.5


def render_pdf(data: ReportData) -> bytes:
    """The report as PDF bytes: text pages, then the plot with its header."""
    m = data.metadata
    title = (
        f"cryod procedure report: procedure {m['procedure_id']}, study {text(m.get('study_id'))}"
    )
    doc = _Layout(title)
    doc.heading(f"Cryoablation procedure report: procedure {m['procedure_id']}", size=15)
    doc.heading(f"Study identifier: {text(m.get('study_id'))}", size=13)
    doc.paragraph(RESEARCH_USE, colour="#b30000", weight="bold")
    if not m.get("study_id"):
        doc.paragraph(NO_STUDY_TEXT, colour="#b30000", weight="bold")
    if m.get("host_only_limits"):
        doc.paragraph(HOST_ONLY_TEXT, colour="#b30000", weight="bold")
    if not m.get("closed_at"):
        doc.paragraph(STILL_OPEN_TEXT, colour="#b30000")
    sim = simulated_warning(data)
    if sim is not None:
        doc.paragraph(sim, colour="#b30000", weight="bold")
    doc.heading("Procedure")
    doc.table(("Field", "Value"), metadata_rows(data), (2.6, 4.7))
    if data.study is not None:
        doc.heading("Study record")
        doc.table(("Field", "Value"), study_rows(data), (2.6, 4.7))
    doc.heading("Adverse events")
    if data.adverse_events:
        doc.table(
            AE_COLUMNS,
            adverse_event_rows(data),
            (0.25, 1.2, 1.3, 0.6, 0.6, 0.35, 0.5, 0.9, 0.8, 0.8),
        )
    else:
        doc.paragraph("None recorded as rows.")
    doc.heading("Cycles")
    doc.paragraph(clock_note(data))
    doc.table(
        PDF_CYCLE_COLUMNS,
        [r[:_UTC_START] + r[_UTC_START + 1 :] for r in cycle_rows(data)],
        (0.3, 0.25, 0.45, 0.35, 0.45, 0.45, 0.45, 0.5, 0.55, 0.5, 0.45, 0.45, 0.5, 1.5),
    )
    doc.heading("Alarms")
    doc.table(ALARM_COLUMNS, alarm_rows(data), (0.5, 0.75, 0.55, 1.35, 0.45, 2.1, 1.0, 0.55))
    doc.heading("Operator actions")
    doc.table(ACTION_COLUMNS, action_rows(data), (0.6, 1.0, 1.4, 0.7, 3.6))
    doc.heading("Data quality")
    doc.table(DATA_QUALITY_COLUMNS, data_quality_rows(data), (1.6, 0.8, 0.9, 4.0))
    unplotted = unplotted_note(data)
    if unplotted is not None:
        doc.paragraph(unplotted)
    doc.paragraph(
        f"Generated {data.generated_at} by cryod {__version__} from {data.source}.",
        colour="#666666",
    )
    metadata = {
        "Title": title,
        "Subject": "Research use only (NICE IPG747 / HTG652)",
        "Creator": f"cryod {__version__}",
    }
    return pdf_bytes([*doc.pages, render_figure(data, header=True)], metadata)
