"""A longitudinal REDCap project generated from a study profile (docs/redcap-mapping.md).

Longitudinal from the start, so the study collector adds rows, never a new
design: ``record_id`` is the subject pseudonym; one arm; the events are the
profile's baseline time point, ``procedure`` (the procedure day) and each
follow-up time point. Procedures, cycles and adverse events are repeating
instruments; when the profile restarts follow-up after a repeat procedure,
the assessments (pain, quality of life, function, visit) repeat too, one
instance per procedure followed.

Files (REDCap's own import formats): the data dictionary (18 columns),
arms, events, the instrument-event mapping and the repeating instruments;
``redcap_records`` writes the records CSV. Choices are the record's
vocabularies (narrowed where the profile narrows them); field and form names
are REDCap-safe (lower case, digits, underscores, at most 26 characters).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .profile import StudyProfile
from .record import ProcedureDetails, Selection
from .vocab import (
    ActionTaken,
    AeCategory,
    AeOutcome,
    AeSubcategory,
    Coded,
    CycleOutcome,
    CyclePhase,
    FurtherIntervention,
    PainScale,
    Relatedness,
    SeriousnessCriterion,
    VisitMode,
    VisitStatus,
)

__all__ = [
    "ARM",
    "ARMS_FILE",
    "DICTIONARY_COLUMNS",
    "DICTIONARY_FILE",
    "EVENTS_FILE",
    "MAPPING_FILE",
    "PROCEDURE_EVENT",
    "RECORDS_FILE",
    "REPEATING_FILE",
    "Design",
    "Event",
    "Form",
    "RedcapField",
    "design_files",
    "design_for",
    "to_csv",
]

#: REDCap's data dictionary columns, in order
DICTIONARY_COLUMNS = (
    "Variable / Field Name",
    "Form Name",
    "Section Header",
    "Field Type",
    "Field Label",
    "Choices, Calculations, OR Slider Labels",
    "Field Note",
    "Text Validation Type OR Show Slider Number",
    "Text Validation Min",
    "Text Validation Max",
    "Identifier?",
    "Branching Logic (Show field only if...)",
    "Required Field?",
    "Custom Alignment",
    "Question Number (surveys only)",
    "Matrix Group Name",
    "Matrix Ranking?",
    "Field Annotation",
)
DICTIONARY_FILE = "data_dictionary.csv"
ARMS_FILE = "arms.csv"
EVENTS_FILE = "events.csv"
MAPPING_FILE = "instrument_event_mapping.csv"
REPEATING_FILE = "repeating_instruments.csv"
RECORDS_FILE = "records.csv"

ARM = 1
PROCEDURE_EVENT = "procedure"


@dataclass(frozen=True, slots=True)
class RedcapField:
    name: str
    form: str
    type: str  # text, notes, dropdown, radio, checkbox, yesno
    label: str
    choices: tuple[tuple[str, str], ...] = ()
    note: str = ""
    validation: str = ""  # integer, number, date_ymd, datetime_seconds_ymd
    vmin: str = ""
    vmax: str = ""
    section: str = ""
    branching: str = ""
    required: bool = False
    annotation: str = ""

    def row(self) -> list[str]:
        choices = " | ".join(f"{code}, {label}" for code, label in self.choices)
        return [
            self.name,
            self.form,
            self.section,
            self.type,
            self.label,
            choices,
            self.note,
            self.validation,
            self.vmin,
            self.vmax,
            "",
            self.branching,
            "y" if self.required else "",
            "",
            "",
            "",
            "",
            self.annotation,
        ]


@dataclass(frozen=True, slots=True)
class Form:
    name: str
    label: str
    fields: tuple[RedcapField, ...]


@dataclass(frozen=True, slots=True)
class Event:
    name: str  # REDCap's event_name; the unique name is <name>_arm_1
    label: str
    day_offset: int
    offset_min: int
    offset_max: int

    @property
    def unique_name(self) -> str:
        return f"{self.name}_arm_{ARM}"


@dataclass(frozen=True, slots=True)
class Design:
    forms: tuple[Form, ...]
    events: tuple[Event, ...]
    mapping: tuple[tuple[str, str], ...]  # (unique event name, form)
    repeating: tuple[tuple[str, str], ...]  # (unique event name, form)
    field_index: dict[str, RedcapField] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for form in self.forms:
            for f in form.fields:
                self.field_index[f.name] = f

    def form(self, name: str) -> Form:
        return next(f for f in self.forms if f.name == name)

    def event(self, name: str) -> Event:
        """An event by its name (``d7``) or unique name (``d7_arm_1``)."""
        return next(e for e in self.events if name in (e.name, e.unique_name))

    def is_repeating(self, event: str, form: str) -> bool:
        return (self.event(event).unique_name, form) in self.repeating


# ---- field helpers -----------------------------------------------------------------
def _choices(vocab: type[Coded], only: Sequence[str] | None = None) -> tuple[tuple[str, str], ...]:
    keep = set(only) if only is not None else None
    return tuple((m.value, m.label) for m in vocab if keep is None or m.value in keep)


class _FormBuilder:
    def __init__(self, name: str, label: str) -> None:
        self.name, self.label = name, label
        self.fields: list[RedcapField] = []
        self._section = ""

    def section(self, title: str) -> None:
        self._section = title

    def add(self, name: str, type_: str, label: str, **kw: object) -> None:
        section, self._section = self._section, ""
        self.fields.append(
            RedcapField(name=name, form=self.name, type=type_, label=label, section=section, **kw)  # type: ignore[arg-type]
        )

    def text(self, name: str, label: str, **kw: object) -> None:
        self.add(name, "text", label, **kw)

    def integer(self, name: str, label: str, lo: int, hi: int, **kw: object) -> None:
        self.add(name, "text", label, validation="integer", vmin=str(lo), vmax=str(hi), **kw)

    def number(
        self, name: str, label: str, lo: float | None = None, hi: float | None = None, **kw: object
    ) -> None:
        self.add(
            name,
            "text",
            label,
            validation="number",
            vmin="" if lo is None else f"{lo:g}",
            vmax="" if hi is None else f"{hi:g}",
            **kw,
        )

    def datetime(self, name: str, label: str, tz: str, **kw: object) -> None:
        self.add(
            name,
            "text",
            label,
            validation="datetime_seconds_ymd",
            note=f"site local time ({tz})",
            **kw,
        )

    def coded(
        self,
        name: str,
        label: str,
        choices: tuple[tuple[str, str], ...],
        type_: str = "dropdown",
        **kw: object,
    ) -> None:
        self.add(name, type_, label, choices=choices, **kw)

    def build(self) -> Form:
        return Form(self.name, self.label, tuple(self.fields))


_PARTIAL_NOTE = "ISO 8601: YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm (site local time)"


def _enrolment(profile: StudyProfile) -> Form:
    f = _FormBuilder("enrolment", "Enrolment")
    f.text("record_id", "Subject (study pseudonym)", required=True)
    f.text("enr_study_id", "Study id", annotation=f'@DEFAULT="{profile.study.id}" @READONLY')
    f.coded("enr_consent", "Consent confirmed", (), type_="yesno")
    versions = ", ".join(profile.consent.form_versions) or "any"
    f.text(
        "enr_consent_form",
        "Consent form version",
        note=f"allowed: {versions}",
        branching="[enr_consent] = '1'",
    )
    return f.build()


def _procedure(profile: StudyProfile) -> Form:
    tz = profile.site.time_zone
    f = _FormBuilder("procedure", "Procedure")
    f.text("proc_uuid", "Procedure uuid", required=True)
    f.datetime("proc_opened_at", "Procedure opened", tz)
    f.datetime("proc_closed_at", "Procedure closed", tz)
    f.integer("proc_treatment_no", "Treatment number (1 = first)", 1, 99)
    f.text(
        "proc_repeat_of", "Repeat of (earlier procedure uuid)", branching="[proc_treatment_no] > 1"
    )
    f.text("proc_profile_id", "Study profile id")
    f.text("proc_profile_version", "Study profile version")
    f.text("proc_profile_hash", "Study profile content hash")

    def allowed(section: str, name: str) -> list[str]:
        return profile.allowed_values(section, name)  # type: ignore[arg-type]

    def vocab(model: type[Selection] | type[ProcedureDetails], name: str) -> type[Coded]:
        from .record import field_element_type

        elem = field_element_type(model, name)
        if not (isinstance(elem, type) and issubclass(elem, Coded)):
            raise TypeError(f"{name} is not a coded field")
        return elem

    f.section("Patient selection")
    f.coded(
        "sel_indication",
        "Indication",
        tuple((c.key, c.display) for c in profile.codes.indications),
    )
    checklist = profile.eligibility
    if checklist is not None:
        f.text(
            "sel_elig_checklist",
            "Eligibility checklist id",
            annotation=f'@DEFAULT="{checklist.checklist_id}"',
        )
        f.text(
            "sel_elig_version",
            "Eligibility checklist version",
            annotation=f'@DEFAULT="{checklist.version}"',
        )
        for item in checklist.items:
            f.coded(f"elig_{item.id}", item.text, (), type_="yesno")
    f.integer("sel_symptom_months", "Symptom duration (months)", 0, 1200)
    for name, field_name, label, type_ in (
        ("prior_treatments", "sel_prior_tx", "Prior treatments that failed", "checkbox"),
        ("aetiology", "sel_aetiology", "Aetiology", "dropdown"),
        ("nerve", "sel_nerve", "Nerve", "dropdown"),
        ("web_space", "sel_web_space", "Web space", "dropdown"),
    ):
        f.coded(
            field_name,
            label,
            _choices(vocab(Selection, name), allowed("selection", name)),
            type_=type_,
        )
    f.number("sel_neuroma_mm", "Neuroma size on imaging (mm)", 0, 200)

    f.section("Procedure details")
    f.coded(
        "proc_imaging",
        "Image guidance",
        _choices(vocab(ProcedureDetails, "imaging"), allowed("procedure", "imaging")),
        type_="checkbox",
    )
    f.coded(
        "proc_tech_success", "Technical success (ice ball covers the target)", (), type_="yesno"
    )
    for name, field_name, label in (
        ("anaesthesia", "proc_anaesthesia", "Anaesthesia"),
        ("setting", "proc_setting", "Setting"),
        ("gas", "proc_gas", "Gas"),
    ):
        f.coded(
            field_name, label, _choices(vocab(ProcedureDetails, name), allowed("procedure", name))
        )
    f.text("proc_agent", "Anaesthetic agent")
    f.text("proc_probe_model", "Probe model")
    f.integer("proc_probe_gauge", "Probe gauge", 8, 30)
    f.integer("proc_probe_count", "Probe count", 1, 25)
    f.text("proc_probe_lot", "Probe lot")
    f.text("proc_probe_udi", "Probe UDI")

    f.section("Console and site")
    f.text("proc_console_model", "Console model")
    f.text("proc_console_serial", "Console serial number")
    f.text("proc_console_fw", "Console firmware")
    f.text("proc_body_site", "Anatomical site")
    f.text("proc_side", "Side")
    return f.build()


def _cycle(profile: StudyProfile) -> Form:
    tz = profile.site.time_zone
    f = _FormBuilder("cycle", "Freeze and thaw cycles")
    f.text("cyc_procedure_uuid", "Procedure uuid", required=True)
    f.integer("cyc_probe", "Probe (as printed on the console)", 1, 25)
    f.coded("cyc_phase", "Phase", _choices(CyclePhase), type_="radio")
    f.integer("cyc_step", "Step of the protocol (0-based)", 0, 999)
    f.text("cyc_protocol", "Protocol")
    blank = "blank: could not be computed (never 0)"
    f.number("cyc_planned_s", "Planned duration (s)", 0)
    f.number("cyc_target_tip_c", "Target tip temperature (°C)")
    f.datetime("cyc_started_at", "Started", tz)
    f.datetime("cyc_ended_at", "Ended", tz)
    f.number("cyc_duration_s", "Duration (s)", 0, note=blank)
    f.coded("cyc_outcome", "Outcome", _choices(CycleOutcome))
    f.add("cyc_outcome_reason", "notes", "Why the cycle ended that way")
    f.number("cyc_min_tip_c", "Coldest valid tip temperature (°C)", note=blank)
    f.number("cyc_time_to_target_s", "Time to target (s)", 0, note=blank)
    f.number("cyc_below_m20_s", "Time at or below -20 °C (s)", 0, note=blank)
    f.number("cyc_below_m40_s", "Time at or below -40 °C (s)", 0, note=blank)
    f.number("cyc_thaw_to_0_s", "Thaw: time to 0 °C (s)", 0, note=blank)
    f.number("cyc_supply_start_kpa", "Supply pressure at start (kPa)", note=blank)
    f.number("cyc_supply_end_kpa", "Supply pressure at end (kPa)", note=blank)
    f.number("cyc_gas_used_l", "Estimated gas used (standard L)", 0, note=blank)
    return f.build()


def _adverse_event() -> Form:
    f = _FormBuilder("adverse_event", "Adverse events")
    f.text("ae_procedure_uuid", "Procedure uuid", required=True)
    f.coded("ae_category", "Category", _choices(AeCategory), required=True)
    f.coded("ae_subcategory", "Subcategory", _choices(AeSubcategory), required=True)
    f.add("ae_verbatim", "notes", "Verbatim term", required=True)
    f.text("ae_onset", "Onset", note=_PARTIAL_NOTE)
    f.text("ae_resolution", "Resolution", note=_PARTIAL_NOTE)
    f.coded(
        "ae_grade",
        "CTCAE v5 grade",
        (
            ("1", "Grade 1 (mild)"),
            ("2", "Grade 2 (moderate)"),
            ("3", "Grade 3 (severe)"),
            ("4", "Grade 4 (life-threatening)"),
            ("5", "Grade 5 (death)"),
        ),
        type_="radio",
    )
    f.coded("ae_serious", "Serious", (), type_="yesno")
    f.coded(
        "ae_serious_crit",
        "Seriousness criteria",
        _choices(SeriousnessCriterion),
        type_="checkbox",
        branching="[ae_serious] = '1'",
    )
    f.coded("ae_rel_device", "Relatedness to the device", _choices(Relatedness))
    f.coded("ae_rel_procedure", "Relatedness to the procedure", _choices(Relatedness))
    f.coded("ae_outcome", "Outcome", _choices(AeOutcome))
    f.coded("ae_action", "Action taken", _choices(ActionTaken))
    f.coded("ae_fi_type", "Further intervention", _choices(FurtherIntervention))
    f.text("ae_fi_date", "Further intervention date", note=_PARTIAL_NOTE)
    f.text("ae_yellow_card", "MHRA Yellow Card reference")
    f.add("ae_migration_reason", "notes", "Why a migrated row lacks details")
    return f.build()


def _pain(profile: StudyProfile) -> Form:
    pain = profile.instruments.pain
    f = _FormBuilder("pain", "Pain score")
    f.text("pain_procedure_uuid", "Procedure uuid (the treatment followed)")
    label = f"Pain: {pain.scale.label}; {pain.recall_period.label.lower()}"
    if pain.scale is PainScale.NRS_0_10:
        f.integer("pain_score", label, 0, 10, note="integer 0-10")
    else:
        f.number("pain_score", label, 0, 100, note="mm from the left end of a 100 mm line")
    f.datetime("pain_assessed_at", "Assessed", profile.site.time_zone)
    return f.build()


def _questionnaire(
    name: str,
    label: str,
    prefix: str,
    instrument: str,
    version: str,
    lo: float | None,
    hi: float | None,
) -> Form:
    f = _FormBuilder(name, label)
    f.text(f"{prefix}_procedure_uuid", "Procedure uuid (the treatment followed)")
    f.text(f"{prefix}_instrument", "Instrument", annotation=f'@DEFAULT="{instrument}" @READONLY')
    f.text(f"{prefix}_version", "Instrument version", annotation=f'@DEFAULT="{version}"')
    f.number(f"{prefix}_score", f"{instrument}: total score", lo, hi)
    f.add(f"{prefix}_date", "text", "Completed on", validation="date_ymd")
    return f.build()


def _visit() -> Form:
    f = _FormBuilder("visit", "Follow-up visit")
    f.text("visit_procedure_uuid", "Procedure uuid (the treatment followed)")
    f.coded("visit_status", "Status", _choices(VisitStatus), type_="radio", required=True)
    f.add("visit_reason", "notes", "Reason", branching="[visit_status] <> 'done'")
    f.add("visit_date", "text", "Actual date", validation="date_ymd")
    f.coded(
        "visit_mode",
        "Mode",
        _choices(VisitMode),
        type_="radio",
        branching="[visit_status] = 'done'",
    )
    return f.build()


def design_for(profile: StudyProfile) -> Design:
    """The REDCap project of a study (pure: the same profile gives the same design)."""
    qol = profile.instruments.qol
    forms: list[Form] = [
        _enrolment(profile),
        _procedure(profile),
        _cycle(profile),
        _adverse_event(),
        _pain(profile),
        _questionnaire(
            "quality_of_life", "Quality of life", "qol", qol.name, qol.version, None, None
        ),
    ]
    fn = profile.instruments.function
    if fn is not None:
        forms.append(
            _questionnaire(
                "function_score",
                "Function score",
                "fn",
                fn.name,
                fn.version,
                fn.score_min,
                fn.score_max,
            )
        )
    forms.append(_visit())
    assessments = [f.name for f in forms if f.name in ("pain", "quality_of_life", "function_score")]

    base = profile.baseline
    events = [
        Event(
            base.id, base.label, base.target_day, base.window_before_days, base.window_after_days
        ),
        Event(PROCEDURE_EVENT, "Procedure day", 0, 0, 0),
    ]
    events += [
        Event(tp.id, tp.label, tp.target_day, tp.window_before_days, tp.window_after_days)
        for tp in profile.follow_up_points
    ]
    mapping: list[tuple[str, str]] = []
    repeating: list[tuple[str, str]] = []
    restart = profile.follow_up.restart_after_repeat
    b, p = events[0].unique_name, events[1].unique_name
    mapping += [(b, "enrolment")] + [(b, a) for a in assessments]
    if restart:
        repeating += [(b, a) for a in assessments]
    mapping += [(p, "procedure"), (p, "cycle"), (p, "adverse_event")]
    repeating += [(p, "procedure"), (p, "cycle"), (p, "adverse_event")]
    for e in events[2:]:
        u = e.unique_name
        mapping += [(u, "visit")] + [(u, a) for a in assessments] + [(u, "adverse_event")]
        repeating.append((u, "adverse_event"))
        if restart:
            repeating += [(u, "visit")] + [(u, a) for a in assessments]
    return Design(tuple(forms), tuple(events), tuple(mapping), tuple(repeating))


def to_csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """CSV as REDCap reads it: comma-separated, RFC 4180 quoting, CRLF line ends."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(header)
    w.writerows(rows)
    return out.getvalue()


def design_files(design: Design) -> dict[str, str]:
    """File name -> CSV text of every design file (the records CSV is ``redcap_records``)."""
    labels = {f.name: f.label for f in design.forms}
    return {
        DICTIONARY_FILE: to_csv(
            DICTIONARY_COLUMNS, [f.row() for form in design.forms for f in form.fields]
        ),
        ARMS_FILE: to_csv(("arm_num", "name"), [(str(ARM), "Arm 1")]),
        EVENTS_FILE: to_csv(
            (
                "event_name",
                "arm_num",
                "day_offset",
                "offset_min",
                "offset_max",
                "unique_event_name",
                "custom_event_label",
            ),
            [
                (
                    e.name,
                    str(ARM),
                    str(e.day_offset),
                    str(e.offset_min),
                    str(e.offset_max),
                    e.unique_name,
                    e.label,
                )
                for e in design.events
            ],
        ),
        MAPPING_FILE: to_csv(
            ("arm_num", "unique_event_name", "form"),
            [(str(ARM), event, form) for event, form in design.mapping],
        ),
        REPEATING_FILE: to_csv(
            ("event_name", "form_name", "custom_form_label"),
            [(event, form, labels[form]) for event, form in design.repeating],
        ),
    }
