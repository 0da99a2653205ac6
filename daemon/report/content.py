"""The report's words: the statements it must carry, how a stored value reads,
and the rows of its tables, as plain text shared by the HTML, PDF and PNG.

Pure: takes a ``ReportData`` and returns strings.
"""

from __future__ import annotations

import math
from typing import Any

from ..store.models import parse_utc
from .data import ReportData

__all__ = [
    "ACTION_COLUMNS",
    "AE_COLUMNS",
    "ALARM_COLUMNS",
    "CYCLE_COLUMNS",
    "DATA_QUALITY_COLUMNS",
    "HOST_ONLY_TEXT",
    "MISSING",
    "NO_STUDY_TEXT",
    "RESEARCH_USE",
    "STILL_OPEN_TEXT",
    "action_rows",
    "adverse_event_rows",
    "alarm_rows",
    "axis_label",
    "clock_note",
    "cycle_rows",
    "data_quality_rows",
    "label",
    "metadata_rows",
    "simulated_warning",
    "speed",
    "study_rows",
    "text",
    "unplotted_note",
    "utc_short",
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
STILL_OPEN_TEXT = "The procedure was still open when this report was made."
MISSING = "—"
_FIGURE_COLUMNS = "Duration, Planned, To target, < -20 °C, < -40 °C and Thaw to 0 °C"


# ---- one value as a reader sees it --------------------------------------------------
def num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return f"{float(value):.{digits}f}"


def clock(seconds: float | None) -> str:
    """Time since the procedure opened as +m:ss."""
    if seconds is None:
        return MISSING
    sign = "-" if seconds < 0 else "+"
    total = round(abs(seconds))
    return f"{sign}{total // 60}:{total % 60:02d}"


def utc_short(iso_utc: str | None) -> str:
    if iso_utc is None:
        return MISSING
    return parse_utc(iso_utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_time(iso_utc: str | None) -> str:
    if iso_utc is None:
        return MISSING
    return parse_utc(iso_utc).strftime("%H:%M:%S")


def text(value: Any) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


_LABELS = {"mortons_neuroma": "Morton's neuroma", "ct": "CT", "mri": "MRI", "na": "n/a"}


def label(code: str | None) -> str:
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
        note = e.get("text")
        parts.append(label(e.get("code")) + (f": {note}" if note else ""))
    return "; ".join(parts)


# ---- the console's clock ------------------------------------------------------------------
def speed(data: ReportData) -> str:
    """The console's time as a reader needs to know it: real or simulated, and how known."""
    ts = data.time_scale
    if ts.factor is None:
        return f"not known ({ts.basis})"
    if not ts.simulated:
        return f"real time ({ts.basis})"
    return f"simulated time ×{ts.factor:g} ({ts.basis})"


def simulated_warning(data: ReportData) -> str | None:
    """The banner of a procedure run at simulated speed (None at real time)."""
    ts = data.time_scale
    if not ts.simulated:
        return None
    return (
        f"Simulated time ×{ts.factor:g}: this procedure ran on a simulated console "
        f"{ts.factor:g} times faster than real time. Cycle durations and figures are "
        "simulated seconds; the UTC times, the Start, alarm and action times and the "
        f"plot's time axis are wall clock (1 s of wall clock is {ts.factor:g} simulated s)."
    )


def clock_note(data: ReportData) -> str:
    """Which clock each time in the cycle table is on."""
    ts = data.time_scale
    wall = "Times are seconds. Start times are wall clock (since the procedure opened, and UTC). "
    if ts.simulated:
        return (
            wall + f"{_FIGURE_COLUMNS} are simulated seconds (simulated time ×{ts.factor:g}), "
            "recorded by cryod when each cycle closed."
        )
    if ts.factor is None:
        return (
            wall + f"{_FIGURE_COLUMNS} are seconds on cryod's engine clock, recorded when "
            "each cycle closed; on a simulated console that clock runs at the simulated "
            "speed, which is not known for this procedure."
        )
    return wall + "Figures are those recorded by cryod when each cycle closed."


def axis_label(data: ReportData, unit: str) -> str:
    """The plot's time axis: wall clock, and the simulated speed when there was one."""
    ts = data.time_scale
    if ts.simulated:
        return f"wall-clock time since procedure opened ({unit})  ·  simulated time ×{ts.factor:g}"
    return f"time since procedure opened ({unit})"


def unplotted_note(data: ReportData) -> str | None:
    """The probes left out of the plot because they had no cycle (None if none)."""
    if not data.unplotted_probes:
        return None
    probes = ", ".join(str(p) for p in data.unplotted_probes)
    one = len(data.unplotted_probes) == 1
    return (
        f"Probe{'' if one else 's'} {probes} had no cycle in this procedure: "
        f"{'its' if one else 'their'} readings are kept in the database (samples), "
        "not in this report's plot or data-quality table."
    )


# ---- tables ---------------------------------------------------------------------------
def metadata_rows(data: ReportData) -> list[tuple[str, str]]:
    """(label, text) pairs, in the order a reader looks for them."""
    m = data.metadata
    indication = label(m.get("indication"))
    if m.get("indication_other"):
        indication += f" ({m['indication_other']})"
    console = " / ".join(
        text(m.get(k)) for k in ("console", "console_model", "console_serial", "console_firmware")
    )
    probe = f"{text(m.get('probe_model'))}, lot {text(m.get('probe_lot'))}"
    return [
        ("Study identifier", text(m.get("study_id"))),
        ("Procedure", f"{m.get('procedure_id')} ({m.get('uuid')})"),
        ("Patient reference (pseudonym)", text(m.get("patient_ref"))),
        ("Indication", indication),
        ("Site / side", f"{text(m.get('site'))} / {label(m.get('side'))}"),
        ("Imaging guidance", label(m.get("imaging"))),
        ("Anaesthesia", label(m.get("anaesthesia"))),
        ("Operator", text(m.get("operator"))),
        ("Probe model, lot", probe),
        ("Console (name / model / serial / firmware)", console),
        ("Software version", text(m.get("software_version"))),
        ("Opened", utc_short(m.get("opened_at"))),
        ("Closed", utc_short(m.get("closed_at")) if m.get("closed_at") else "still open"),
        ("Closed by", text(m.get("closed_by"))),
        ("Host-only limits", "YES" if m.get("host_only_limits") else "no"),
        ("Console time", speed(data)),
        ("Adverse events", _adverse_events(m.get("adverse_events"))),
        ("Notes", text(m.get("notes"))),
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
        outcome = text(c.get("outcome") or "running")
        if c.get("outcome_reason"):
            outcome += f" ({c['outcome_reason']})"
        if c.get("host_only_limits"):
            outcome += " [host-only limits]"
        if c.get("figures_note"):
            outcome += f"; figures: {c['figures_note']}"
        rows.append(
            [
                str(c["cycle_id"]),
                str(c["probe"]),
                text(c.get("phase")),
                str(c.get("step_index", "")),
                clock(data.rel_s(c.get("started_at"))),
                utc_time(c.get("started_at")),
                num(c.get("duration_s")),
                num(c.get("planned_s")),
                num(c.get("target_tip_c")),
                num(c.get("min_tip_c")),
                num(c.get("time_to_target_s")),
                num(below.get("-20")),
                num(below.get("-40")),
                num(c.get("thaw_to_0_s")),
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
            acked = f"{utc_time(a['acked_at'])} by {text(a.get('acked_by'))}"
        rows.append(
            [
                clock(data.rel_s(a.get("raised_at"))),
                utc_time(a.get("raised_at")),
                text(a.get("priority")),
                text(a.get("code")),
                text(a.get("probe") or "console"),
                text(a.get("message")),
                acked,
                utc_time(a.get("cleared_at")) if a.get("cleared_at") else MISSING,
            ]
        )
    return rows


ACTION_COLUMNS = ("At", "Who", "Action", "Accepted", "Reason")


def action_rows(data: ReportData) -> list[list[str]]:
    return [
        [
            clock(data.rel_s(a.get("at"))),
            text(a.get("who")),
            text(a.get("action")),
            "yes" if a.get("accepted") else "REFUSED",
            text(a.get("reason")),
        ]
        for a in data.actions
    ]


DATA_QUALITY_COLUMNS = ("Channel", "Samples", "Not usable", "Detail")


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


# ---- the study record (issue 19) ------------------------------------------------------------
def _vocabulary_labels() -> dict[str, str]:
    """Every code of the study record's code lists with its display label."""
    from cryod.research import vocab

    out: dict[str, str] = {}
    for name in vocab.__all__:
        cls = getattr(vocab, name)
        if isinstance(cls, type) and issubclass(cls, vocab.Coded) and cls is not vocab.Coded:
            for member in cls:
                out.setdefault(member.value, member.label)
    return out


_VOCABULARY = _vocabulary_labels()


def code_label(code: str | None) -> str:
    """A study code with its label from the code lists (``unspecified_migrated`` ->
    unspecified (migrated))."""
    if code is None:
        return MISSING
    return _VOCABULARY.get(code) or label(code)


def _coded(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(code_label(str(v)) for v in value) if value else "none"
    if isinstance(value, float):
        return num(value)
    return code_label(value) if isinstance(value, str) else str(value)


#: (field, label) of the selection and the procedure details, in the order shown
SELECTION_LABELS = (
    ("indication", "Indication (study code)"),
    ("symptom_duration_months", "Symptom duration (months)"),
    ("prior_treatments", "Prior treatments"),
    ("aetiology", "Aetiology"),
    ("nerve", "Nerve"),
    ("web_space", "Web space"),
    ("neuroma_size_mm", "Neuroma size (mm)"),
)
DETAIL_LABELS = (
    ("imaging", "Imaging modalities"),
    ("technical_success", "Technical success"),
    ("anaesthesia", "Anaesthesia"),
    ("anaesthetic_agent", "Anaesthetic agent"),
    ("setting", "Setting"),
    ("probe_model", "Probe model"),
    ("probe_gauge", "Probe gauge"),
    ("probe_count", "Probe count"),
    ("probe_lot", "Probe lot"),
    ("probe_udi", "Probe UDI"),
    ("gas", "Gas"),
    ("treatment_number", "Treatment number"),
    ("repeat_of", "Repeat of"),
)


def study_rows(data: ReportData) -> list[tuple[str, str]]:
    """The study record: the profile, consent, patient selection, procedure details and
    baseline pain (empty without a study profile)."""
    st = data.study
    if st is None:
        return []
    prof = st["profile"]
    consent = st.get("consent") or {}
    sel, det = st.get("selection") or {}, st.get("details") or {}
    rows = [
        (
            "Study profile",
            f"{prof['profile_id']} v{prof['version']} ({prof['content_hash'][:19]}…)",
        ),
        (
            "Consent",
            MISSING
            if consent.get("confirmed") is None
            else ("confirmed" if consent["confirmed"] else "NOT confirmed")
            + (f", form {consent['form_version']}" if consent.get("form_version") else ""),
        ),
    ]
    elig = sel.get("eligibility")
    if elig:
        items = elig.get("items") or {}
        met = sum(1 for v in items.values() if v)
        rows.append(
            (
                "Eligibility",
                f"{elig.get('checklist_id')} v{elig.get('checklist_version')}: "
                f"{met} of {len(items)} items confirmed",
            )
        )
    rows += [(f"Selection: {lbl}", _coded(sel.get(name))) for name, lbl in SELECTION_LABELS]
    rows += [(f"Procedure: {lbl}", _coded(det.get(name))) for name, lbl in DETAIL_LABELS]
    pain = st.get("baseline_pain")
    rows.append(
        (
            "Baseline pain",
            "not recorded"
            if pain is None
            else f"{num(pain['score'], 0 if pain['scale'] == 'nrs_0_10' else 1)} on "
            f"{code_label(pain['scale'])}, {code_label(pain['recall_period']).lower()}, "
            f"taken {utc_short(_iso(pain['assessed_at']))}",
        )
    )
    return rows


def _iso(value: str) -> str:
    """An assessment time (ISO 8601 with offset) as the report's UTC text."""
    import datetime as dt

    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


AE_COLUMNS = (
    "#",
    "Category / subcategory",
    "Verbatim term",
    "Onset",
    "Resolution",
    "Grade",
    "Serious",
    "Related (device / procedure)",
    "Outcome",
    "Action",
)


def adverse_event_rows(data: ReportData) -> list[list[str]]:
    rows = []
    for e in data.adverse_events:
        serious = _coded(e.get("serious"))
        if e.get("seriousness_criteria"):
            serious += f" ({_coded(e['seriousness_criteria'])})"
        term = text(e.get("verbatim_term"))
        if e.get("migration_reason"):
            term += f" [{e['migration_reason']}]"
        rows.append(
            [
                str(e["ae_id"]),
                f"{code_label(e.get('category'))} / {code_label(e.get('subcategory'))}",
                term,
                text(e.get("onset")),
                text(e.get("resolution")),
                text(e.get("ctcae_grade")),
                serious,
                f"{_coded(e.get('relatedness_device'))} / {_coded(e.get('relatedness_procedure'))}",
                _coded(e.get("outcome")),
                _coded(e.get("action_taken")),
            ]
        )
    return rows
