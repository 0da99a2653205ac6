"""Write a procedure's report to a file: the format follows the file's extension,
and a reader never sees half a report (written beside it, then renamed)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .data import ReportData, load_report_data
from .errors import ReportError
from .html_document import render_html
from .pdf_document import render_pdf
from .plot import figure_png, render_figure, require_matplotlib

__all__ = ["FORMATS", "render_png", "write_report"]


def render_png(data: ReportData) -> bytes:
    """The PNG report: the plot with a header naming the procedure and the
    research-use status."""
    return figure_png(render_figure(data, header=True))


def _html_bytes(data: ReportData) -> bytes:
    return render_html(data).encode("utf-8")


FORMATS: dict[str, Callable[[ReportData], bytes]] = {
    ".html": _html_bytes,
    ".htm": _html_bytes,
    ".pdf": render_pdf,
    ".png": render_png,
}


def write_report(
    db_path: str | os.PathLike[str], procedure_id: int, out: str | os.PathLike[str]
) -> Path:
    """Write the report for one procedure; the format follows ``out``'s extension."""
    target = Path(out)
    render = FORMATS.get(target.suffix.lower())
    if render is None:
        raise ReportError(
            f"cannot tell the report format from {target.name!r}: use .html, .pdf or .png"
        )
    if not target.parent.is_dir():
        raise ReportError(f"output directory {target.parent} does not exist")
    require_matplotlib()  # fail on a missing extra before reading anything
    data = load_report_data(db_path, procedure_id)
    content = render(data)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(content)
        tmp.replace(target)  # a reader never sees half a report
    finally:
        tmp.unlink(missing_ok=True)
    return target
