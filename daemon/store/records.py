"""What the service records, one function per event, each in one transaction
with its audit entry (and outbox event where MQTT subscribers need it).

The functions take a Session and run inside ``Writer.commit_now``;
``ProcedureLog`` wraps them as awaitables that return after the COMMIT.
Request models are pydantic v2 (unknown keys are errors) and hide input
values in their errors so a rejected patient reference never reaches a log.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from cryod import __version__
from cryod.research.legacy import LEGACY_AE_CATEGORY
from cryod.research.problems import Problem, ResearchDataError
from cryod.research.profile import StudyProfile, canonical_json
from cryod.research.record import (
    AdverseEventRecord,
    Consent,
    PainAssessment,
    ProcedureDetails,
    Selection,
)
from cryod.research.validation import (
    check_adverse_event,
    check_baseline_pain,
    check_consent,
    check_procedure_details,
    check_selection,
    parse_model,
)
from cryod.research.vocab import AeCategory, AeSubcategory

from . import audit, outbox
from .models import (
    AdverseEvent,
    AdverseEventRow,
    Alarm,
    AlarmPriority,
    Anaesthesia,
    Cycle,
    Imaging,
    Indication,
    OperatorAction,
    OutboxKind,
    Outcome,
    PainAssessmentRow,
    Phase,
    Procedure,
    ProcedureStudy,
    Side,
    format_utc,
    utcnow,
)
from .writer import Writer

_PSEUDONYM = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{2,31}")
_TEN_DIGITS = re.compile(r"\d{10}")
_DATE_LIKE = re.compile(r"(?<!\d)(\d{4}-\d{1,2}-\d{1,2}|\d{1,2}-\d{1,2}-\d{2,4})(?!\d)")
REDACTED = "[pseudonym: see procedures table]"


def check_patient_ref(value: str) -> str:
    """Accept a research pseudonym (e.g. ``MN-0042``), refuse what looks identifying.

    Rules: 3-32 letters, digits and dashes, starting with a letter or digit,
    with at least one digit; no run of ten digits once dashes are removed
    (an NHS number, however written); nothing shaped like a date (of birth).
    Spaces (names), ``@`` (e-mail) and other characters fail the pattern.
    Error messages never repeat the value.
    """
    if not isinstance(value, str) or not _PSEUDONYM.fullmatch(value):
        raise ValueError(
            "patient_ref must be a pseudonym of 3-32 letters, digits and dashes "
            "(no spaces, names or e-mail addresses)"
        )
    if not any(ch.isdigit() for ch in value):
        raise ValueError("patient_ref must contain a digit (a study pseudonym, not a name)")
    if _TEN_DIGITS.search(value.replace("-", "")):
        raise ValueError("patient_ref must not contain a 10-digit number (NHS number)")
    if _DATE_LIKE.search(value):
        raise ValueError("patient_ref must not contain a date")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)


_Name = Field(min_length=1, max_length=64)


class ProcedureOpen(_Strict):
    """Metadata recorded when a procedure is opened."""

    console: str = _Name
    patient_ref: str
    indication: Indication
    indication_other: str | None = Field(default=None, max_length=500)
    site: str = Field(min_length=1, max_length=128)
    side: Side
    imaging: Imaging
    anaesthesia: Anaesthesia
    operator: str = _Name
    study_id: str | None = Field(default=None, min_length=1, max_length=64)
    probe_model: str | None = Field(default=None, max_length=64)
    probe_lot: str | None = Field(default=None, max_length=64)
    console_model: str | None = Field(default=None, max_length=64)
    console_serial: str | None = Field(default=None, max_length=64)
    console_firmware: str | None = Field(default=None, max_length=64)
    software_version: str = Field(default=__version__, max_length=32)
    host_only_limits: bool = False

    @field_validator("patient_ref")
    @classmethod
    def _check_ref(cls, value: str) -> str:
        return check_patient_ref(value)

    @model_validator(mode="after")
    def _other_needs_text(self) -> ProcedureOpen:
        if self.indication is Indication.OTHER and not self.indication_other:
            raise ValueError("indication 'other' needs indication_other (free text)")
        return self


class AdverseEventEntry(_Strict):
    code: AdverseEvent
    text: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _other_needs_text(self) -> AdverseEventEntry:
        if self.code is AdverseEvent.OTHER and not self.text:
            raise ValueError("adverse event 'other' needs a text")
        return self


class ProcedureClose(_Strict):
    """Data recorded at close. The adverse events are the ``adverse_events`` rows
    (``cryoctl ae add``); ``adverse_events`` here is the quick old way, a yes/no code
    each, recorded as rows with subcategory ``unspecified_migrated`` and the reason.
    At close ``procedures.adverse_events`` becomes the summary of the rows (one
    ``{"code", "text"}`` each; ``[]``: none)."""

    procedure_id: int = Field(ge=1)
    closed_by: str = _Name
    notes: str | None = Field(default=None, max_length=10_000)
    adverse_events: list[AdverseEventEntry] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StudyOpen:
    """The study side of an open request, checked against its profile (``prepare_study``)."""

    profile: StudyProfile
    consent: Consent | None
    selection: Selection
    details: ProcedureDetails


def study_defaults(
    meta: dict[str, Any],
    selection: Mapping[str, Any],
    details: Mapping[str, Any],
    profile: StudyProfile,
    *,
    gas: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fill each side from the other, so an operator says a thing once: the selection's
    indication and the details' imaging, anaesthesia, probe model and lot give the
    procedure's own fields (and back), the gas comes from the console's profile.
    ``meta`` is changed in place; the selection and details are returned."""
    sel, det = dict(selection), dict(details)
    if (
        "indication" not in sel
        and meta.get("indication")
        and profile.indication(str(meta["indication"]))
    ):
        sel["indication"] = meta["indication"]
    if "indication" not in meta and isinstance(sel.get("indication"), str):
        key = sel["indication"]
        if key in {i.value for i in Indication}:
            meta["indication"] = key
        elif (coding := profile.indication(key)) is not None:
            meta["indication"] = Indication.OTHER.value
            meta.setdefault("indication_other", coding.display)
    if "imaging" not in det and meta.get("imaging"):
        det["imaging"] = [meta["imaging"]]
    if "imaging" not in meta and isinstance(det.get("imaging"), list) and det["imaging"]:
        first = det["imaging"][0]
        if first in {i.value for i in Imaging}:
            meta["imaging"] = first
    if "anaesthesia" not in det and meta.get("anaesthesia"):
        det["anaesthesia"] = meta["anaesthesia"]
    if "anaesthesia" not in meta and det.get("anaesthesia") in {a.value for a in Anaesthesia}:
        meta["anaesthesia"] = det["anaesthesia"]
    for name in ("probe_model", "probe_lot"):
        if name not in det and meta.get(name):
            det[name] = meta[name]
        if name not in meta and isinstance(det.get(name), str):
            meta[name] = det[name]
    if gas is not None:
        det.setdefault("gas", gas)
    return sel, det


def prepare_study(
    profile: StudyProfile,
    *,
    consent: dict[str, Any] | None,
    selection: dict[str, Any] | None,
    details: dict[str, Any] | None,
) -> StudyOpen:
    """Parse and check the study's fields; ``ResearchDataError`` names every problem
    (a missing required field, a value outside the profile's list, consent not
    confirmed where the study demands it). The eligibility checklist's id and version
    default to the profile's, so an operator gives only the answers."""
    problems: list[Problem] = []
    sel_data = dict(selection or {})
    elig = sel_data.get("eligibility")
    if isinstance(elig, dict) and profile.eligibility is not None:
        elig = dict(elig)
        elig.setdefault("checklist_id", profile.eligibility.checklist_id)
        elig.setdefault("checklist_version", profile.eligibility.version)
        items = elig.get("items")
        if isinstance(items, dict) and items.get("*") is True:  # cryoctl --eligible all
            items = {k: v for k, v in items.items() if k != "*"}
            for item in profile.eligibility.items:
                items.setdefault(item.id, True)
            elig["items"] = items
        sel_data["eligibility"] = elig
    parsed: dict[str, Any] = {}
    for name, model, data in (
        ("consent", Consent, consent),
        ("selection", Selection, sel_data),
        ("procedure", ProcedureDetails, details or {}),
    ):
        if data is None:
            parsed[name] = None
            continue
        try:
            parsed[name] = parse_model(model, data, prefix=name)
        except ResearchDataError as exc:
            problems += exc.problems
            parsed[name] = None
    problems += check_consent(profile, parsed["consent"])
    if parsed["selection"] is not None:
        problems += check_selection(profile, parsed["selection"])
    if parsed["procedure"] is not None:
        problems += check_procedure_details(profile, parsed["procedure"])
    if problems:
        raise ResearchDataError(problems)
    return StudyOpen(profile, parsed["consent"], parsed["selection"], parsed["procedure"])


@dataclass(frozen=True, slots=True)
class CycleOpen:
    procedure_id: int
    probe: int
    phase: Phase
    step_index: int
    started_at: dt.datetime
    started_mono: float
    protocol: str | None = None
    planned_s: float | None = None
    target_tip_c: float | None = None
    supply_start_kpa: float | None = None
    host_only_limits: bool = False


@dataclass(frozen=True, slots=True)
class CycleClose:
    cycle_id: int
    outcome: Outcome
    ended_at: dt.datetime
    ended_mono: float | None
    reason: str | None = None
    min_tip_c: float | None = None
    time_to_target_s: float | None = None
    time_below_m20_s: float | None = None
    time_below_m40_s: float | None = None
    thaw_to_0_s: float | None = None
    supply_end_kpa: float | None = None
    gas_used_est_l: float | None = None
    figures_note: str | None = None  # why a time below is None or a lower bound


class RecordError(ValueError):
    """A record the log refuses (unknown id, closed procedure, double close...)."""


# ---- procedures --------------------------------------------------------------
def open_procedure(
    session: Session,
    meta: ProcedureOpen,
    *,
    study_id_required: bool = False,
    at: dt.datetime | None = None,
    study: StudyOpen | None = None,
) -> int:
    """The procedure row (and its study row when opened under a study profile)."""
    if study is not None:
        if meta.study_id is not None and meta.study_id != study.profile.study.id:
            raise RecordError(
                f"study_id {meta.study_id!r} is not the profile's study {study.profile.study.id!r}"
            )
        meta = meta.model_copy(update={"study_id": study.profile.study.id})
    if study_id_required and not meta.study_id:
        raise RecordError("study_id is required by this site's configuration (research use only)")
    when = at or utcnow()
    row = Procedure(
        uuid=str(uuid.uuid4()),
        opened_at=when,
        **meta.model_dump(mode="json"),
    )
    session.add(row)
    session.flush()
    payload = meta.model_dump(mode="json", exclude={"patient_ref"})
    payload.update(procedure_id=row.id, uuid=row.uuid)
    if study is not None:
        stamp = study.profile.stamp()
        session.add(
            ProcedureStudy(
                procedure_id=row.id,
                profile_id=stamp.profile_id,
                profile_version=stamp.version,
                profile_hash=stamp.content_hash,
                profile=canonical_json(study.profile),
                consent_confirmed=None if study.consent is None else study.consent.confirmed,
                consent_form_version=None if study.consent is None else study.consent.form_version,
                selection=study.selection.model_dump(mode="json", exclude_none=True),
                details=study.details.model_dump(mode="json", exclude_none=True),
                recorded_at=when,
            )
        )
        session.flush()
        payload["study_profile"] = stamp.model_dump(mode="json")
    audit.append(session, "procedure_opened", payload, at=when)
    return row.id


def _open_procedure_row(session: Session, procedure_id: int, doing: str) -> Procedure:
    proc = session.get(Procedure, procedure_id)
    if proc is None:
        raise RecordError(f"procedure {procedure_id} does not exist")
    if proc.closed_at is not None:
        raise RecordError(
            f"procedure {procedure_id} is closed: {doing} after close is the study "
            "collector's to record, not the daemon's"
        )
    return proc


def study_profile(session: Session, procedure_id: int) -> StudyProfile | None:
    """The profile a procedure was opened under (None: opened without one)."""
    row = session.get(ProcedureStudy, procedure_id)
    return None if row is None else profile_of(row)


def profile_of(row: ProcedureStudy) -> StudyProfile:
    import json

    profile = StudyProfile.model_validate(json.loads(row.profile))
    if profile.content_hash != row.profile_hash:
        raise RecordError(
            f"procedure {row.procedure_id}: its stored study profile does not hash to "
            f"{row.profile_hash} (edited)"
        )
    return profile


# ---- baseline pain ---------------------------------------------------------------------
def record_baseline_pain(
    session: Session,
    procedure_id: int,
    data: Mapping[str, Any],
    *,
    by: str,
    at: dt.datetime | None = None,
) -> int:
    """The baseline pain score, before the first freeze. Time point, scale and recall
    period default to the profile's; refused after a freeze has started, twice, or on
    a procedure opened without a study profile."""
    _open_procedure_row(session, procedure_id, "a baseline pain score")
    profile = study_profile(session, procedure_id)
    if profile is None:
        raise RecordError(
            f"procedure {procedure_id} was opened without a study profile: no baseline to record"
        )
    existing = session.scalar(
        select(PainAssessmentRow.id).where(
            PainAssessmentRow.procedure_id == procedure_id,
            PainAssessmentRow.time_point == profile.follow_up.baseline,
        )
    )
    if existing is not None:
        raise RecordError(f"procedure {procedure_id} already has its baseline pain score")
    when = at or utcnow()
    want = profile.instruments.pain
    full = {
        "time_point": profile.follow_up.baseline,
        "scale": want.scale.value,
        "recall_period": want.recall_period.value,
        "assessed_at": when.isoformat(),
        **data,
    }
    pain = parse_model(PainAssessment, full, prefix="baseline_pain")
    first = session.scalar(
        select(Cycle.started_at)
        .where(Cycle.procedure_id == procedure_id, Cycle.phase == Phase.FREEZE.value)
        .order_by(Cycle.started_at)
        .limit(1)
    )
    problems = check_baseline_pain(profile, pain, first_freeze_at=first)
    if first is not None and not any(p.field == "baseline_pain.assessed_at" for p in problems):
        problems.append(
            Problem("baseline_pain", "a freeze has started: the baseline is taken before it")
        )
    if problems:
        raise ResearchDataError(problems)
    row = PainAssessmentRow(
        procedure_id=procedure_id,
        time_point=pain.time_point,
        scale=pain.scale.value,
        score=pain.score,
        recall_period=pain.recall_period.value,
        assessed_at=pain.assessed_at,
        recorded_at=when,
        recorded_by=by,
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        "baseline_pain_recorded",
        {"procedure_id": procedure_id, "assessment_id": row.id, "time_point": row.time_point},
        at=when,
    )
    return row.id


def pain_record(row: PainAssessmentRow) -> PainAssessment:
    return PainAssessment(
        time_point=row.time_point,
        scale=row.scale,
        score=row.score,
        recall_period=row.recall_period,
        assessed_at=row.assessed_at,
    )


# ---- adverse events --------------------------------------------------------------------
#: the fields of an adverse event that are columns of its row (all but its id)
AE_FIELDS: tuple[str, ...] = tuple(n for n in AdverseEventRecord.model_fields if n != "ae_id")


def ae_record(row: AdverseEventRow) -> AdverseEventRecord:
    """The row as the research model (what exports, FHIR and REDCap are built from)."""
    return AdverseEventRecord.model_validate(
        {"ae_id": row.id, **{name: getattr(row, name) for name in AE_FIELDS}}
    )


def _ae_check(session: Session, proc: Procedure, ae: AdverseEventRecord) -> None:
    profile = study_profile(session, proc.id)
    tz = dt.UTC if profile is None else profile.zone
    problems = check_adverse_event(ae, opened_at=proc.opened_at, tz=tz)
    if problems:
        raise ResearchDataError(problems)


def add_adverse_event(
    session: Session,
    procedure_id: int,
    data: Mapping[str, Any],
    *,
    by: str,
    at: dt.datetime | None = None,
) -> int:
    """One adverse event noticed while the procedure is open (or at its close);
    ``ResearchDataError`` names every problem (onset before the procedure opened,
    resolution before onset, grade outside 1-5, unknown codes ...)."""
    proc = _open_procedure_row(session, procedure_id, "an adverse event")
    ae = parse_model(AdverseEventRecord, dict(data), prefix="adverse_event")
    if ae.ae_id is not None:
        raise ResearchDataError([Problem("adverse_event.ae_id", "assigned by the record")])
    _ae_check(session, proc, ae)
    when = at or utcnow()
    row = AdverseEventRow(
        procedure_id=procedure_id,
        recorded_at=when,
        recorded_by=by,
        **ae.model_dump(mode="json", exclude={"ae_id"}),
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        "adverse_event_recorded",
        {"procedure_id": procedure_id, "ae_id": row.id, "category": row.category},
        at=when,
    )
    return row.id


def update_adverse_event(
    session: Session,
    ae_id: int,
    changes: Mapping[str, Any],
    *,
    by: str,
    at: dt.datetime | None = None,
) -> None:
    """Change fields of an adverse event while its procedure is open; the whole event
    is checked again. Refused after close (the collector's job) and on migrated rows."""
    row = session.get(AdverseEventRow, ae_id)
    if row is None:
        raise RecordError(f"adverse event {ae_id} does not exist")
    proc = _open_procedure_row(session, row.procedure_id, "a change to an adverse event")
    if row.subcategory == AeSubcategory.UNSPECIFIED_MIGRATED.value:
        raise RecordError(
            f"adverse event {ae_id} was migrated from an old yes/no code: it keeps what the "
            "old record said (add a new event instead)"
        )
    unknown = sorted(set(changes) - set(AE_FIELDS))
    if unknown:
        raise ResearchDataError([Problem(f"adverse_event.{k}", "unknown field") for k in unknown])
    merged = {name: getattr(row, name) for name in AE_FIELDS} | dict(changes)
    ae = parse_model(AdverseEventRecord, merged, prefix="adverse_event")
    _ae_check(session, proc, ae)
    when = at or utcnow()
    for name, value in ae.model_dump(mode="json", exclude={"ae_id"}).items():
        setattr(row, name, value)
    row.updated_at = when
    row.updated_by = by
    session.flush()
    audit.append(
        session,
        "adverse_event_updated",
        {"procedure_id": proc.id, "ae_id": row.id, "fields": sorted(changes)},
        at=when,
    )


def adverse_events_of(session: Session, procedure_id: int) -> list[AdverseEventRow]:
    return list(
        session.scalars(
            select(AdverseEventRow)
            .where(AdverseEventRow.procedure_id == procedure_id)
            .order_by(AdverseEventRow.id)
        )
    )


_CATEGORIES = {c.value: c for c in AeCategory}
#: category -> the old yes/no code it summarises as (``procedures.adverse_events``)
LEGACY_CODE = {category: code for code, category in LEGACY_AE_CATEGORY.items()}


def _legacy_entry(row: AdverseEventRow) -> dict[str, Any]:
    """An adverse-event row as an old yes/no entry (the text when it says more than the
    category's own label, which a code given without text is recorded with)."""
    category = _CATEGORIES[row.category]
    text = None if row.verbatim_term == category.label else row.verbatim_term
    return {"code": LEGACY_CODE[category], "text": text}


CLOSE_CODE_REASON = (
    "entered at close as the yes/no code {code!r} (cryoctl procedure close --adverse-event): "
    "grade, relatedness, dates and outcome were not given"
)


def close_procedure(
    session: Session, close: ProcedureClose, *, at: dt.datetime | None = None
) -> None:
    proc = session.get(Procedure, close.procedure_id)
    if proc is None:
        raise RecordError(f"procedure {close.procedure_id} does not exist")
    if proc.closed_at is not None:
        raise RecordError(f"procedure {close.procedure_id} is already closed")
    open_cycles = session.scalars(
        select(Cycle.id).where(Cycle.procedure_id == proc.id, Cycle.outcome.is_(None))
    ).all()
    if open_cycles:
        raise RecordError(f"procedure {proc.id} has cycles still running: {list(open_cycles)}")
    when = at or utcnow()
    for entry in close.adverse_events:
        category = LEGACY_AE_CATEGORY[entry.code.value]
        session.add(
            AdverseEventRow(
                procedure_id=proc.id,
                category=category.value,
                subcategory=AeSubcategory.UNSPECIFIED_MIGRATED.value,
                verbatim_term=(entry.text or category.label)[:500],
                seriousness_criteria=[],
                migration_reason=CLOSE_CODE_REASON.format(code=entry.code.value),
                recorded_at=when,
                recorded_by=close.closed_by,
            )
        )
    session.flush()
    summary = [_legacy_entry(r) for r in adverse_events_of(session, proc.id)]
    proc.closed_at = when
    proc.closed_by = close.closed_by
    proc.notes = close.notes
    proc.adverse_events = summary
    session.flush()
    audit.append(
        session,
        "procedure_closed",
        {
            "procedure_id": proc.id,
            "closed_by": close.closed_by,
            "notes": close.notes,
            "adverse_events": proc.adverse_events,
        },
        at=when,
    )


# ---- cycles ------------------------------------------------------------------
def cycle_summary(c: Cycle, console: str | None = None) -> dict[str, Any]:
    """The cycle as subscribers and exports see it (no patient data)."""
    out: dict[str, Any] = {
        "cycle_id": c.id,
        "procedure_id": c.procedure_id,
        "probe": c.probe,
        "phase": c.phase,
        "step_index": c.step_index,
        "protocol": c.protocol,
        "planned_s": c.planned_s,
        "target_tip_c": c.target_tip_c,
        "started_at": format_utc(c.started_at),
        "ended_at": None if c.ended_at is None else format_utc(c.ended_at),
        "duration_s": c.duration_s,
        "outcome": c.outcome,
        "outcome_reason": c.outcome_reason,
        "min_tip_c": c.min_tip_c,
        "time_to_target_s": c.time_to_target_s,
        "time_below_c": {"-20": c.time_below_m20_s, "-40": c.time_below_m40_s},
        "thaw_to_0_s": c.thaw_to_0_s,
        "supply_start_kpa": c.supply_start_kpa,
        "supply_end_kpa": c.supply_end_kpa,
        "gas_used_est_l": c.gas_used_est_l,
        "host_only_limits": c.host_only_limits,
        "figures_note": c.figures_note,
    }
    if console is not None:
        out["console"] = console
    return out


def open_cycle(session: Session, spec: CycleOpen) -> int:
    """Commit the cycle row; the caller opens the valve only after this returns."""
    proc = session.get(Procedure, spec.procedure_id)
    if proc is None:
        raise RecordError(f"procedure {spec.procedure_id} does not exist")
    if proc.closed_at is not None:
        raise RecordError(f"procedure {spec.procedure_id} is closed")
    if spec.probe < 1:
        raise RecordError("probe numbers start at 1")
    if not math.isfinite(spec.started_mono):
        raise RecordError("started_mono must be a finite monotonic time")
    busy = session.scalar(
        select(Cycle.id).where(
            Cycle.procedure_id == spec.procedure_id,
            Cycle.probe == spec.probe,
            Cycle.outcome.is_(None),
        )
    )
    if busy is not None:
        raise RecordError(f"probe {spec.probe} already has an open cycle ({busy})")
    row = Cycle(
        procedure_id=spec.procedure_id,
        probe=spec.probe,
        phase=Phase(spec.phase).value,
        step_index=spec.step_index,
        protocol=spec.protocol,
        planned_s=_finite(spec.planned_s),
        target_tip_c=_finite(spec.target_tip_c),
        started_at=spec.started_at,
        started_mono=spec.started_mono,
        supply_start_kpa=_finite(spec.supply_start_kpa),
        host_only_limits=spec.host_only_limits,
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        "cycle_opened",
        {
            "cycle_id": row.id,
            "procedure_id": row.procedure_id,
            "probe": row.probe,
            "phase": row.phase,
            "step_index": row.step_index,
            "protocol": row.protocol,
            "planned_s": row.planned_s,
            "target_tip_c": row.target_tip_c,
            "host_only_limits": row.host_only_limits,
        },
        at=spec.started_at,
    )
    return row.id


def mark_valve_open(session: Session, cycle_id: int, *, at: dt.datetime, mono: float) -> None:
    """A freeze cycle's row was committed before its valve opened; when the valve has
    opened, the cycle's start becomes that moment (so its duration is the valve-open
    time) and the audit trail records it."""
    row = session.get(Cycle, cycle_id)
    if row is None:
        raise RecordError(f"cycle {cycle_id} does not exist")
    if row.outcome is not None:
        raise RecordError(f"cycle {cycle_id} is already closed")
    if not math.isfinite(mono):
        raise RecordError("mono must be a finite monotonic time")
    committed_at = row.started_at
    row.started_at = at
    row.started_mono = mono
    session.flush()
    audit.append(
        session,
        "cycle_valve_open",
        {"cycle_id": row.id, "probe": row.probe, "committed_at": format_utc(committed_at)},
        at=at,
    )


def duration_between(
    started_at: dt.datetime,
    started_mono: float | None,
    ended_at: dt.datetime,
    ended_mono: float | None,
) -> float:
    """Monotonic difference when both ends have one (same boot), else UTC difference."""
    if started_mono is not None and ended_mono is not None and ended_mono >= started_mono:
        return ended_mono - started_mono
    return max(0.0, (ended_at - started_at).total_seconds())


def close_cycle(
    session: Session, spec: CycleClose, *, publish: bool = True, audit_kind: str = "cycle_closed"
) -> dict[str, Any]:
    """Commit the outcome; returns the cycle summary (also queued for MQTT)."""
    row = session.get(Cycle, spec.cycle_id)
    if row is None:
        raise RecordError(f"cycle {spec.cycle_id} does not exist")
    if row.outcome is not None:
        raise RecordError(f"cycle {spec.cycle_id} is already closed ({row.outcome})")
    row.outcome = Outcome(spec.outcome).value
    row.outcome_reason = spec.reason
    row.ended_at = spec.ended_at
    if spec.ended_mono is not None and not math.isfinite(spec.ended_mono):
        raise RecordError("ended_mono must be a finite monotonic time")
    row.ended_mono = spec.ended_mono
    row.duration_s = duration_between(
        row.started_at, row.started_mono, spec.ended_at, spec.ended_mono
    )
    for name in (
        "min_tip_c",
        "time_to_target_s",
        "time_below_m20_s",
        "time_below_m40_s",
        "thaw_to_0_s",
        "supply_end_kpa",
        "gas_used_est_l",
    ):
        # a figure that is not a finite number is unknown (NULL), never NaN
        setattr(row, name, _finite(getattr(spec, name)))
    row.figures_note = spec.figures_note
    session.flush()
    console = session.scalar(select(Procedure.console).where(Procedure.id == row.procedure_id))
    summary = cycle_summary(row, console)
    audit.append(session, audit_kind, summary, at=spec.ended_at)
    if publish:
        outbox.add(session, OutboxKind.CYCLE, cycle_outbox_body(row))
    return summary


# ---- alarms ------------------------------------------------------------------
def _ms(when: dt.datetime) -> int:
    return round(when.timestamp() * 1000)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _alarm_payload(a: Alarm, event: str) -> dict[str, Any]:
    """Audit payload: the whole alarm row as it stands after the event."""
    return {
        "event": event,
        "alarm_id": a.id,
        "console": a.console,
        "procedure_id": a.procedure_id,
        "code": a.code,
        "priority": a.priority,
        "probe": a.probe,
        "message": a.message,
        "raised_at": format_utc(a.raised_at),
        "acked_at": None if a.acked_at is None else format_utc(a.acked_at),
        "acked_by": a.acked_by,
        "cleared_at": None if a.cleared_at is None else format_utc(a.cleared_at),
    }


def alarm_outbox_body(a: Alarm, event: str, when: dt.datetime, latched: bool) -> dict[str, Any]:
    """The MQTT ``alarms`` event body (docs/asyncapi.yaml AlarmEvent, less the envelope
    the publisher adds: schema, session, seq, event_id)."""
    return {
        "ts_ms": _ms(when),
        "event": event,
        "alarm_id": a.id,
        "code": a.code,
        "priority": a.priority,
        "probe": a.probe,
        "message": a.message,
        "latched": latched,
        "procedure_id": a.procedure_id,
    }


def cycle_outbox_body(c: Cycle) -> dict[str, Any]:
    """The MQTT ``cycles`` body (docs/asyncapi.yaml Cycle, less the envelope).

    The log keeps one row per phase; the MQTT summary names the phase and
    puts the duration under ``freeze_s`` or ``thaw_s`` accordingly.
    """
    assert c.ended_at is not None
    freeze = c.phase == Phase.FREEZE.value
    return {
        "ts_ms": _ms(c.ended_at),
        "cycle_id": c.id,
        "procedure_id": c.procedure_id,
        "probe": c.probe,
        "cycle": c.step_index + 1,
        "phase": c.phase,
        "started_ts_ms": _ms(c.started_at),
        "ended_ts_ms": _ms(c.ended_at),
        "freeze_s": _finite(c.duration_s) if freeze else None,
        "thaw_s": None if freeze else _finite(c.duration_s),
        "target_freeze_s": _finite(c.planned_s) if freeze else None,
        "min_tip_c": _finite(c.min_tip_c),
        "time_below_m20c_s": _finite(c.time_below_m20_s),
        "time_below_m40c_s": _finite(c.time_below_m40_s),
        "outcome": c.outcome,
    }


def raise_alarm(
    session: Session,
    *,
    console: str,
    code: str,
    priority: AlarmPriority | str,
    message: str,
    probe: int | None = None,
    procedure_id: int | None = None,
    at: dt.datetime | None = None,
    publish: bool = True,
    latched: bool | None = None,
) -> int:
    """Record a raised alarm; ``latched`` defaults to high priority (those latch)."""
    row = Alarm(
        console=console,
        code=code,
        priority=AlarmPriority(priority).value,
        probe=probe,
        message=message,
        procedure_id=procedure_id,
        raised_at=at or utcnow(),
    )
    session.add(row)
    session.flush()
    audit.append(session, "alarm_raised", _alarm_payload(row, "raised"), at=row.raised_at)
    if publish:
        latch = row.priority == AlarmPriority.HIGH.value if latched is None else latched
        outbox.add(
            session, OutboxKind.ALARM, alarm_outbox_body(row, "raised", row.raised_at, latch)
        )
    return row.id


def _alarm(session: Session, alarm_id: int) -> Alarm:
    row = session.get(Alarm, alarm_id)
    if row is None:
        raise RecordError(f"alarm {alarm_id} does not exist")
    return row


def ack_alarm(
    session: Session,
    alarm_id: int,
    *,
    by: str,
    at: dt.datetime | None = None,
    publish: bool = True,
) -> None:
    row = _alarm(session, alarm_id)
    if row.acked_at is not None:
        raise RecordError(f"alarm {alarm_id} is already acknowledged")
    row.acked_at = at or utcnow()
    row.acked_by = by
    session.flush()
    audit.append(session, "alarm_acked", _alarm_payload(row, "acknowledged"), at=row.acked_at)
    if publish:
        latch = row.priority == AlarmPriority.HIGH.value
        outbox.add(
            session, OutboxKind.ALARM, alarm_outbox_body(row, "acknowledged", row.acked_at, latch)
        )


def clear_alarm(
    session: Session, alarm_id: int, *, at: dt.datetime | None = None, publish: bool = True
) -> None:
    row = _alarm(session, alarm_id)
    if row.cleared_at is not None:
        raise RecordError(f"alarm {alarm_id} is already cleared")
    row.cleared_at = at or utcnow()
    session.flush()
    audit.append(session, "alarm_cleared", _alarm_payload(row, "cleared"), at=row.cleared_at)
    if publish:
        latch = row.priority == AlarmPriority.HIGH.value
        outbox.add(
            session, OutboxKind.ALARM, alarm_outbox_body(row, "cleared", row.cleared_at, latch)
        )


# ---- operator actions and state changes --------------------------------------
def _scrub(args: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of request args without a patient reference (kept only in procedures)."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key == "patient_ref":
            out[key] = REDACTED
        elif isinstance(value, Mapping):
            out[key] = _scrub(value)
        else:
            out[key] = value
    return out


def record_action(
    session: Session,
    *,
    who: str,
    action: str,
    args: Mapping[str, Any],
    accepted: bool,
    reason: str | None = None,
    console: str | None = None,
    procedure_id: int | None = None,
    at: dt.datetime | None = None,
) -> int:
    """Every operator request, accepted or refused (with the reason)."""
    clean = _scrub(args)
    row = OperatorAction(
        who=who,
        action=action,
        args=clean,
        accepted=accepted,
        reason=reason,
        console=console,
        procedure_id=procedure_id,
        at=at or utcnow(),
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        "operator_action",
        {
            "action_id": row.id,
            "who": who,
            "action": action,
            "args": clean,
            "accepted": accepted,
            "reason": reason,
            "console": console,
            "procedure_id": procedure_id,
        },
        at=row.at,
    )
    return row.id


def record_event(
    session: Session, kind: str, payload: Mapping[str, Any], *, at: dt.datetime | None = None
) -> audit.AuditHead:
    """A state change with no row of its own (engine state, safe state, start/stop)."""
    return audit.append(session, kind, payload, at=at)


# ---- async facade ------------------------------------------------------------
class ProcedureLog:
    """The record functions as awaitables: each returns after its COMMIT."""

    def __init__(self, writer: Writer, *, study_id_required: bool = False) -> None:
        self.writer = writer
        self.study_id_required = study_id_required

    async def open_procedure(
        self, meta: ProcedureOpen, at: dt.datetime | None = None, study: StudyOpen | None = None
    ) -> int:
        req = self.study_id_required
        return await self.writer.commit_now(
            lambda s: open_procedure(s, meta, study_id_required=req, at=at, study=study),
            label="procedure_open",
        )

    async def record_baseline_pain(
        self, procedure_id: int, data: Mapping[str, Any], *, by: str
    ) -> int:
        return await self.writer.commit_now(
            lambda s: record_baseline_pain(s, procedure_id, data, by=by), label="baseline_pain"
        )

    async def add_adverse_event(
        self, procedure_id: int, data: Mapping[str, Any], *, by: str
    ) -> int:
        return await self.writer.commit_now(
            lambda s: add_adverse_event(s, procedure_id, data, by=by), label="ae_add"
        )

    async def update_adverse_event(
        self, ae_id: int, changes: Mapping[str, Any], *, by: str
    ) -> None:
        await self.writer.commit_now(
            lambda s: update_adverse_event(s, ae_id, changes, by=by), label="ae_update"
        )

    async def close_procedure(self, close: ProcedureClose, at: dt.datetime | None = None) -> None:
        await self.writer.commit_now(lambda s: close_procedure(s, close, at=at), label="close")

    async def open_cycle(self, spec: CycleOpen) -> int:
        return await self.writer.commit_now(lambda s: open_cycle(s, spec), label="cycle_open")

    async def mark_valve_open(self, cycle_id: int, at: dt.datetime, mono: float) -> None:
        await self.writer.commit_now(
            lambda s: mark_valve_open(s, cycle_id, at=at, mono=mono), label="valve_open"
        )

    async def close_cycle(self, spec: CycleClose) -> dict[str, Any]:
        return await self.writer.commit_now(lambda s: close_cycle(s, spec), label="cycle_close")

    async def raise_alarm(self, **kwargs: Any) -> int:
        return await self.writer.commit_now(lambda s: raise_alarm(s, **kwargs), label="alarm")

    async def ack_alarm(self, alarm_id: int, *, by: str, at: dt.datetime | None = None) -> None:
        await self.writer.commit_now(lambda s: ack_alarm(s, alarm_id, by=by, at=at), label="ack")

    async def clear_alarm(self, alarm_id: int, at: dt.datetime | None = None) -> None:
        await self.writer.commit_now(lambda s: clear_alarm(s, alarm_id, at=at), label="clear")

    async def record_action(self, **kwargs: Any) -> int:
        return await self.writer.commit_now(lambda s: record_action(s, **kwargs), label="action")

    async def record_event(self, kind: str, payload: Mapping[str, Any]) -> audit.AuditHead:
        return await self.writer.commit_now(lambda s: record_event(s, kind, payload), label="event")
