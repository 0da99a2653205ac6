"""The study page's data, shaped for its template; pure (no I/O, no web framework).

- **Scope**: a reader (coordinator, investigator, monitor) sees a study's
  summary and downloads its exports for the scope their grants cover: the
  whole study (a grant without a site) or one of their sites (a site-scoped
  grant: only that site's subjects, the collector's ``snapshot(site=...)``).
  An admin grant alone covers no study (no subject data).
- **Summary**: ``cryod.hub.summary.Summary`` as table rows of text; a figure
  that cannot be computed shows "—" with its reason, never 0.
- **Downloads**: one export format as one file (JSON, FHIR) or, for the
  multi-file formats (CSV, REDCap, SDTM), a zip of its files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..access import Grant
from ..summary import Figure, Summary
from .scope import READER_ROLES

__all__ = [
    "FORMATS",
    "Download",
    "covers",
    "digests",
    "download",
    "parse_on",
    "scope_choices",
    "scope_label",
    "summary_tables",
]

FORMATS: Final = ("json", "csv", "fhir", "redcap", "sdtm")
FORMAT_NAMES: Final = {
    "json": "JSON",
    "csv": "CSV (zip)",
    "fhir": "FHIR R4 bundle",
    "redcap": "REDCap (zip)",
    "sdtm": "SDTM (zip)",
}
_SINGLE_MEDIA: Final = {"json": "application/json", "fhir": "application/fhir+json"}


def covers(grants: Iterable[Grant], study: str, site: str | None) -> bool:
    """A reader grant covering ``study`` at ``site`` (None: every site of the study)."""
    return any(g.role in READER_ROLES and g.covers_scope(study, site) for g in grants)


def scope_choices(grants: Iterable[Grant], study: str) -> list[str | None]:
    """The scopes a reader may choose for ``study``: [None] (the whole study) when a grant
    covers every site, else each of their sites; [] when no reader grant covers it."""
    grants = list(grants)
    if covers(grants, study, None):
        return [None]
    sites = {
        g.site
        for g in grants
        if g.role in READER_ROLES and g.study in (None, study) and g.site is not None
    }
    return [*sorted(sites)]


def scope_label(site: str | None) -> str:
    return "every site" if site is None else f"site {site}"


def parse_on(text: str | None, today: dt.date) -> tuple[dt.date, str | None]:
    """The summary's "as of" date from the form (default ``today``); an error for the
    field when the text is not a date."""
    text = (text or "").strip()
    if not text:
        return today, None
    try:
        return dt.date.fromisoformat(text), None
    except ValueError:
        return today, "a date is YYYY-MM-DD"


def _fig(f: Figure, fmt: str = "{:g}") -> dict[str, str | None]:
    return {"text": f.text(fmt), "why": f.reason}


def summary_tables(s: Summary) -> dict[str, Any]:
    """The summary's tables as the template shows them."""

    def ae(rows: Sequence[Any], signed: bool) -> list[dict[str, Any]]:
        return [
            {
                "category": a.category,
                "grade": a.grade,
                "procedure": a.relatedness_procedure,
                "device": a.relatedness_device,
                "events": a.events,
                "subjects": a.subjects,
                **({"signed": a.signed} if signed else {}),
            }
            for a in rows
        ]

    return {
        "heading": {
            "study": s.study,
            "on": s.on.isoformat(),
            "subjects": s.subjects,
            "procedures": s.procedures,
            "withdrawn": s.withdrawn_excluded,
            "scale": s.scale,
            "lost": s.lost_subjects,
        },
        "pain": [
            {
                "time_point": r.time_point,
                "label": r.label,
                "n": r.n,
                "median": _fig(r.median),
                "iqr": {
                    "text": "—" if r.q1.value is None else f"{r.q1.text()}–{r.q3.text()}",
                    "why": r.q1.reason,
                },
                "change_n": r.change_n,
                "change_median": _fig(r.change_median, "{:+g}"),
            }
            for r in s.pain
        ],
        "procedure_day_events": ae(s.procedure_day_events, signed=False),
        "adverse_events": ae(s.adverse_events, signed=True),
        "completeness": [
            {
                "time_point": c.time_point,
                "expected": c.expected,
                "done": c.done,
                "missed": c.missed,
                "lost": c.lost_to_follow_up,
                "withdrawn": c.withdrawn,
                "died": c.died,
                "not_recorded": c.not_recorded,
                "percent": {
                    "text": "—" if c.completeness.value is None else f"{c.completeness.text()}%",
                    "why": c.completeness.reason,
                },
            }
            for c in s.completeness
        ],
        "has_pain_plot": any(r.median.value is not None for r in s.pain),
    }


@dataclass(frozen=True, slots=True)
class Download:
    filename: str
    media_type: str
    body: bytes


def download(
    study: str, site: str | None, fmt: str, files: Mapping[str, str], generated_at: dt.datetime
) -> Download:
    """One export as the browser receives it: the file itself, or a zip of its files."""
    scope = "all-sites" if site is None else site
    if fmt in _SINGLE_MEDIA and len(files) == 1:
        ((name, text),) = files.items()
        stem, _, ext = name.partition(".")
        return Download(f"{stem}-{scope}.{ext}", _SINGLE_MEDIA[fmt], text.encode("utf-8"))
    buf = io.BytesIO()
    stamp = generated_at.astimezone(dt.UTC).timetuple()[:6]
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, files[name].encode("utf-8"))
    return Download(f"{study}-{scope}-{fmt}.zip", "application/zip", buf.getvalue())


def digests(files: Mapping[str, str]) -> dict[str, str]:
    """File name -> SHA-256 of its text (what the export's audit entry keeps)."""
    return {n: hashlib.sha256(t.encode("utf-8")).hexdigest() for n, t in files.items()}
