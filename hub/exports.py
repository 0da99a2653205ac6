"""The whole study out: JSON, CSV, FHIR, REDCap and SDTM-shaped CSV (pure).

Input is a ``StudyData``: the study's procedures as the rooms sent them and
the collector's follow-up (withdrawn subjects already left out by the
store). Every format goes through the shared mappings of ``cryod.research``
(FHIR bundle, REDCap design and records) and is validated before it is
written: FHIR with fhir.resources and the project check, REDCap with its
import rules, the others with their own checks here. A format that does not
validate is refused (``ExportInvalid``, every problem named), never written.

The procedure-day record of each procedure is what the room sent: its
``procedures`` and ``cycles`` rows, and (opened under a study profile) its
``procedure_study`` (profile stamp, consent, selection, details),
``pain_assessments`` (the baseline pain before the first freeze) and
``adverse_events`` (noticed up to close) rows. The treatment number follows
the subject's procedures in time, each repeat naming the one before.

Baseline rule: the room's baseline pain is the baseline. The collector
refuses to record a baseline pain score for a procedure whose room sent one;
one transcribed before the room's row arrived is left out of every format
and the summary (JSON names it under ``baseline_pain_superseded``).
docs/followup.md (formats), docs/sdtm-mapping.md (SDTM).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryod.research.facts import ProbeFacts, ProcedureFacts
from cryod.research.fhir_bundle import StudyProcedure, build_bundle
from cryod.research.followup import FollowUpAssessment, local_date
from cryod.research.partial_dates import parse_partial
from cryod.research.problems import Problem
from cryod.research.profile import StudyProfile
from cryod.research.record import (
    AdverseEventRecord,
    ProcedureDayRecord,
    ProcedureDetails,
    Selection,
)
from cryod.research.redcap_design import (
    RECORDS_FILE,
    design_files,
    design_for,
)
from cryod.research.redcap_records import follow_up_rows, procedure_day_rows, records_csv
from cryod.research.vocab import Relatedness, VisitStatus

from .followup import ProcedureView

__all__ = [
    "FORMATS",
    "ExportInvalid",
    "FollowUpEvent",
    "StudyData",
    "export_files",
    "room_baselines",
    "study_procedures",
]

FORMATS: Final = ("json", "csv", "fhir", "redcap", "sdtm")
EXPORT_SCHEMA: Final = "cryohub.study-export/1"


class ExportInvalid(ValueError):
    def __init__(self, fmt: str, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"the {fmt} export does not validate:\n" + "\n".join(f"  {p}" for p in problems)
        )


@dataclass(frozen=True, slots=True)
class FollowUpEvent:
    """An adverse event (or further intervention) found after close, as the collector holds it."""

    event_id: int
    procedure_uuid: uuid.UUID
    event: AdverseEventRecord
    signed: bool


@dataclass(frozen=True, slots=True)
class StudyData:
    profile: StudyProfile
    procedures: tuple[ProcedureView, ...]
    assessments: tuple[tuple[uuid.UUID, FollowUpAssessment], ...]
    events: tuple[FollowUpEvent, ...]
    generated_at: dt.datetime


def room_baselines(data: StudyData) -> dict[uuid.UUID, FollowUpAssessment]:
    """Procedure -> the room's baseline pain as the baseline time point's assessment
    (on the profile's scale only: a score on another scale is not mixed in)."""
    p = data.profile
    out: dict[uuid.UUID, FollowUpAssessment] = {}
    for v in data.procedures:
        pain = None if v.record is None else v.record.baseline_pain
        if pain is None or pain.scale is not p.instruments.pain.scale:
            continue
        out[v.procedure_uuid] = FollowUpAssessment(
            time_point=p.follow_up.baseline,
            assessed_on=local_date(pain.assessed_at, p.zone),
            status=VisitStatus.DONE,
            pain_score=pain.score,
        )
    return out


def _superseded(view: ProcedureView, a: FollowUpAssessment, profile: StudyProfile) -> bool:
    """A collector baseline pain score where the room sent the baseline (the room's wins)."""
    return (
        a.time_point == profile.follow_up.baseline
        and a.pain_score is not None
        and view.record is not None
        and view.record.baseline_pain is not None
    )


def _by_procedure(data: StudyData) -> dict[uuid.UUID, list[FollowUpAssessment]]:
    """Each procedure's assessments, in the order the collector holds them (one pass: a
    scan per procedure made a 10,000-procedure export quadratic, minutes long)."""
    out: dict[uuid.UUID, list[FollowUpAssessment]] = {}
    for u, a in data.assessments:
        out.setdefault(u, []).append(a)
    return out


def _collector_follow_up(
    data: StudyData, view: ProcedureView, by_procedure: dict[uuid.UUID, list[FollowUpAssessment]]
) -> tuple[tuple[FollowUpAssessment, ...], list[FollowUpAssessment]]:
    """(the procedure's follow-up as exported, the collector baselines superseded)."""
    kept: list[FollowUpAssessment] = []
    superseded: list[FollowUpAssessment] = []
    for a in by_procedure.get(view.procedure_uuid, ()):
        if _superseded(view, a, data.profile):
            superseded.append(a)
            a = a.model_copy(update={"pain_score": None})
        kept.append(a)
    return tuple(sorted(kept, key=lambda a: a.assessed_on)), superseded


def study_procedures(data: StudyData) -> list[StudyProcedure]:
    """The shared mappings' input: record, facts and follow-up per procedure."""
    stamp = data.profile.stamp()
    numbers: dict[uuid.UUID, tuple[int, uuid.UUID | None]] = {}
    by_subject: dict[str, list[ProcedureView]] = {}
    for p in data.procedures:
        by_subject.setdefault(p.subject, []).append(p)
    for procs in by_subject.values():
        procs.sort(key=lambda p: p.opened_at)
        for i, p in enumerate(procs):
            numbers[p.procedure_uuid] = (i + 1, procs[i - 1].procedure_uuid if i else None)
    assessments = _by_procedure(data)
    events: dict[uuid.UUID, list[AdverseEventRecord]] = {}
    for e in data.events:
        events.setdefault(e.procedure_uuid, []).append(e.event)
    out = []
    for p in data.procedures:
        number, repeat_of = numbers[p.procedure_uuid]
        if p.record is None:
            record = ProcedureDayRecord(
                profile=stamp,
                procedure=ProcedureDetails(
                    treatment_number=number,
                    repeat_of=repeat_of,
                    probe_model=p.probe_model,
                    probe_lot=p.probe_lot,
                ),
            )
        else:
            details = p.record.procedure
            record = p.record.model_copy(
                update={
                    "procedure": details.model_copy(
                        update={
                            "treatment_number": number,
                            "repeat_of": repeat_of,
                            "probe_model": details.probe_model or p.probe_model,
                            "probe_lot": details.probe_lot or p.probe_lot,
                        }
                    )
                }
            )
        probes = sorted({c.probe for c in p.cycles})
        facts = ProcedureFacts(
            procedure_id=p.procedure_id,
            procedure_uuid=p.procedure_uuid,
            patient_ref=p.subject,
            opened_at=p.opened_at,
            closed_at=p.closed_at,
            body_site=p.body_site,
            side=p.side,
            console=p.console,
            probes=[ProbeFacts(probe=n, model=p.probe_model, lot=p.probe_lot) for n in probes],
            cycles=list(p.cycles),
        )
        follow, _superseded_baselines = _collector_follow_up(data, p, assessments)
        later = tuple(events.get(p.procedure_uuid, ()))
        out.append(StudyProcedure(record, facts, follow, later))
    return out


# ---- JSON and CSV ----------------------------------------------------------------------
def _assessment_json(a: FollowUpAssessment, profile: StudyProfile) -> dict[str, Any]:
    d = a.model_dump(mode="json", exclude_none=True)
    if a.pain_score is not None:
        d["pain_scale"] = profile.instruments.pain.scale.value
        d["recall_period"] = profile.instruments.pain.recall_period.value
    return d


def _event_json(e: FollowUpEvent) -> dict[str, Any]:
    return {**e.event.model_dump(mode="json", exclude_none=True), "signed": e.signed}


def _room_record_json(sp: StudyProcedure, view: ProcedureView) -> dict[str, Any] | None:
    """The room's procedure-day record (``null`` parts: the room did not send them)."""
    if view.record is None:
        return None
    r = sp.record
    return {
        "profile": r.profile.model_dump(mode="json"),
        "consent": None if r.consent is None else r.consent.model_dump(mode="json"),
        "selection": r.selection.model_dump(mode="json", exclude_none=True),
        "procedure_details": r.procedure.model_dump(mode="json", exclude_none=True),
        "baseline_pain": None
        if r.baseline_pain is None
        else r.baseline_pain.model_dump(mode="json"),
    }


def export_json(data: StudyData) -> str:
    p = data.profile
    subjects: dict[str, list[dict[str, Any]]] = {}
    assessments = _by_procedure(data)
    later: dict[uuid.UUID, list[FollowUpEvent]] = {}
    for e in data.events:
        later.setdefault(e.procedure_uuid, []).append(e)
    for sp, view in zip(study_procedures(data), data.procedures, strict=True):
        f = sp.facts
        _kept, superseded = _collector_follow_up(data, view, assessments)
        subjects.setdefault(f.patient_ref, []).append(
            {
                "procedure_uuid": str(f.procedure_uuid),
                "room": view.node,
                "site": view.site,
                "treatment_number": sp.record.procedure.treatment_number,
                "opened_at": f.opened_at.isoformat(),
                "closed_at": None if f.closed_at is None else f.closed_at.isoformat(),
                "cycles": [c.model_dump(mode="json") for c in f.cycles],
                "procedure_record": _room_record_json(sp, view),
                "procedure_record_problems": list(view.record_problems),
                "baseline_pain_superseded": [_assessment_json(a, p) for a in superseded],
                "procedure_day_adverse_events": [
                    e.model_dump(mode="json", exclude_none=True) for e in sp.record.adverse_events
                ],
                "follow_up": [_assessment_json(a, p) for a in sp.follow_up],
                "later_adverse_events": [_event_json(e) for e in later.get(f.procedure_uuid, ())],
            }
        )
    doc = {
        "schema": EXPORT_SCHEMA,
        "study": {
            "id": p.study.id,
            "profile_version": p.version,
            "profile_hash": p.content_hash,
            "time_zone": p.site.time_zone,
        },
        "generated_at": data.generated_at.isoformat(),
        "subjects": [{"subject": s, "procedures": procs} for s, procs in sorted(subjects.items())],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if v is None else v for v in r])
    return out.getvalue()


FOLLOWUP_COLUMNS: Final = (
    "subject",
    "procedure_uuid",
    "time_point",
    "assessed_on",
    "status",
    "reason",
    "mode",
    "pain_score",
    "pain_scale",
    "recall_period",
    "qol_total",
    "function_score",
    "satisfaction",
)
EVENT_COLUMNS: Final = (
    "subject",
    "procedure_uuid",
    "event_id",
    "category",
    "subcategory",
    "verbatim_term",
    "onset",
    "resolution",
    "ctcae_grade",
    "serious",
    "relatedness_device",
    "relatedness_procedure",
    "outcome",
    "action_taken",
    "further_intervention",
    "further_intervention_date",
    "signed",
)
#: the room's procedure-day record, flattened (lists joined with ";"; the eligibility
#: checklist as answered is in the JSON export)
SELECTION_FIELDS: Final = tuple(f for f in Selection.model_fields if f != "eligibility")
DETAIL_FIELDS: Final = tuple(f for f in ProcedureDetails.model_fields if f != "treatment_number")
PROCEDURE_COLUMNS: Final = (
    "subject",
    "procedure_uuid",
    "room",
    "site",
    "treatment_number",
    "opened_at",
    "closed_at",
    "cycles",
    "profile_id",
    "profile_version",
    "profile_hash",
    "consent_confirmed",
    "consent_form_version",
    *(f"selection_{f}" for f in SELECTION_FIELDS),
    *(f"procedure_{f}" for f in DETAIL_FIELDS),
    "baseline_pain_score",
    "baseline_pain_scale",
    "baseline_recall_period",
    "baseline_assessed_at",
    "procedure_day_adverse_events",
    "record_problems",
)
DAY_EVENT_COLUMNS: Final = (
    "subject",
    "procedure_uuid",
    "room",
    "ae_id",
    *EVENT_COLUMNS[3:-1],
)


def _flat(value: Any) -> Any:
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return value


def _record_cells(sp: StudyProcedure, view: ProcedureView) -> list[Any]:
    """The room's record columns of procedures.csv (empty: the room did not send it)."""
    if view.record is None:
        empty: list[Any] = [None] * (len(PROCEDURE_COLUMNS) - 9)
        return [*empty, "; ".join(view.record_problems)]
    r = sp.record
    sel = r.selection.model_dump(mode="json")
    det = r.procedure.model_dump(mode="json")
    pain = r.baseline_pain
    return [
        r.profile.profile_id,
        r.profile.version,
        r.profile.content_hash,
        None if r.consent is None else r.consent.confirmed,
        None if r.consent is None else r.consent.form_version,
        *(_flat(sel.get(f)) for f in SELECTION_FIELDS),
        *(_flat(det.get(f)) for f in DETAIL_FIELDS),
        None if pain is None else f"{pain.score:g}",
        None if pain is None else pain.scale.value,
        None if pain is None else pain.recall_period.value,
        None if pain is None else pain.assessed_at.isoformat(),
        len(r.adverse_events),
        "; ".join(view.record_problems),
    ]


def export_csv(data: StudyData) -> dict[str, str]:
    p = data.profile
    sps = study_procedures(data)
    subject_of = {sp.facts.procedure_uuid: sp.facts.patient_ref for sp in sps}
    procs = [
        [
            sp.facts.patient_ref,
            sp.facts.procedure_uuid,
            view.node,
            view.site,
            sp.record.procedure.treatment_number,
            sp.facts.opened_at.isoformat(),
            None if sp.facts.closed_at is None else sp.facts.closed_at.isoformat(),
            len(sp.facts.cycles),
            *_record_cells(sp, view),
        ]
        for sp, view in zip(sps, data.procedures, strict=True)
    ]
    day_events = []
    for sp, view in zip(sps, data.procedures, strict=True):
        for ae in sp.record.adverse_events:
            d = ae.model_dump(mode="json")
            day_events.append(
                [
                    sp.facts.patient_ref,
                    sp.facts.procedure_uuid,
                    view.node,
                    ae.ae_id,
                    *[_flat(d.get(c)) for c in EVENT_COLUMNS[3:-1]],
                ]
            )
    follow = []
    for u, a in data.assessments:
        d = _assessment_json(a, p)
        follow.append([subject_of[u], u, *[d.get(c) for c in FOLLOWUP_COLUMNS[2:]]])
    events = []
    for e in data.events:
        d = e.event.model_dump(mode="json")
        row: list[Any] = [subject_of[e.procedure_uuid], e.procedure_uuid, e.event_id]
        row += [d.get(c) for c in EVENT_COLUMNS[3:-1]]
        events.append([*row, e.signed])
    return {
        "procedures.csv": _csv(PROCEDURE_COLUMNS, procs),
        "follow_up.csv": _csv(FOLLOWUP_COLUMNS, follow),
        "adverse_events_procedure_day.csv": _csv(DAY_EVENT_COLUMNS, day_events),
        "adverse_events_after_close.csv": _csv(EVENT_COLUMNS, events),
    }


# ---- FHIR and REDCap (the shared mappings, validated) ---------------------------------
def export_fhir(data: StudyData) -> str:
    from cryod.research.fhir_check import validate_bundle

    bundle = build_bundle(data.profile, study_procedures(data), generated_at=data.generated_at)
    problems = validate_bundle(bundle, data.profile)
    if problems:
        raise ExportInvalid("fhir", problems)
    return json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"


def export_redcap(data: StudyData) -> dict[str, str]:
    from cryod.research.redcap_rules import check_redcap_files

    p = data.profile
    design = design_for(p)
    rows = []
    for sp in sorted(study_procedures(data), key=lambda sp: sp.facts.opened_at):
        rows += procedure_day_rows(p, design, sp.record, sp.facts)
        followed = p.follow_up.restart_after_repeat or sp.record.procedure.treatment_number == 1
        rows += follow_up_rows(
            p, design, sp.facts, sp.follow_up if followed else (), sp.later_events
        )
    files = design_files(design)
    files[RECORDS_FILE] = records_csv(design, rows)
    problems = check_redcap_files(files)
    if problems:
        raise ExportInvalid("redcap", problems)
    return files


# ---- SDTM-shaped CSV (docs/sdtm-mapping.md) -------------------------------------------
DM_COLUMNS: Final = (
    "STUDYID", "DOMAIN", "USUBJID", "SUBJID", "SITEID", "RFSTDTC", "RFENDTC", "COUNTRY",
)  # fmt: skip
PR_COLUMNS: Final = (
    "STUDYID", "DOMAIN", "USUBJID", "PRSEQ", "PRSPID", "PRTRT", "PRDECOD", "PRCAT",
    "PRSTDTC", "PRENDTC", "PRDY",
)  # fmt: skip
AE_COLUMNS: Final = (
    "STUDYID", "DOMAIN", "USUBJID", "AESEQ", "AESPID", "AETERM", "AEDECOD", "AECAT",
    "AESCAT", "AESTDTC", "AEENDTC", "AESTDY", "AESER", "AETOXGR", "AEREL", "AERELNST",
    "AEOUT", "AECONTRT",
)  # fmt: skip
QS_COLUMNS: Final = (
    "STUDYID", "DOMAIN", "USUBJID", "QSSEQ", "QSTESTCD", "QSTEST", "QSCAT", "QSSCAT",
    "QSORRES", "QSORRESU", "QSSTRESC", "QSSTRESN", "QSSTRESU", "QSSTAT", "QSREASND",
    "QSBLFL", "VISITNUM", "VISIT", "QSDTC", "QSDY",
)  # fmt: skip

#: SDTM AEREL (relationship to the study treatment): the collector's five-point scale
AEREL: Final = {
    Relatedness.NOT_RELATED: "NOT RELATED",
    Relatedness.UNLIKELY: "UNLIKELY RELATED",
    Relatedness.POSSIBLY: "POSSIBLY RELATED",
    Relatedness.PROBABLY: "PROBABLY RELATED",
    Relatedness.DEFINITELY: "RELATED",
}
AEOUT: Final = {
    "recovered_resolved": "RECOVERED/RESOLVED",
    "recovering_resolving": "RECOVERING/RESOLVING",
    "not_recovered": "NOT RECOVERED/NOT RESOLVED",
    "recovered_with_sequelae": "RECOVERED/RESOLVED WITH SEQUELAE",
    "fatal": "FATAL",
    "unknown": "UNKNOWN",
}


def usubjid(study: str, subject: str) -> str:
    return f"{study}-{subject}"


def _study_day(day: dt.date, ref: dt.date) -> int:
    """SDTM --DY: day 1 is the reference day, the day before it is -1 (no day 0)."""
    delta = (day - ref).days
    return delta + 1 if delta >= 0 else delta


def _iso_partial(text: str | None, profile: StudyProfile) -> str:
    """A partial date as SDTM keeps it: as precise as known, site-local, no offset."""
    if text is None:
        return ""
    pd = parse_partial(text)
    if pd.offset is not None and pd.time is not None:
        return pd.earliest(profile.zone).astimezone(profile.zone).strftime("%Y-%m-%dT%H:%M")
    return text


def _local(at: dt.datetime | None, profile: StudyProfile) -> str:
    return "" if at is None else at.astimezone(profile.zone).strftime("%Y-%m-%dT%H:%M")


def export_sdtm(data: StudyData) -> dict[str, str]:
    p = data.profile
    study = p.study.id
    zone = p.zone
    sps = sorted(study_procedures(data), key=lambda sp: sp.facts.opened_at)
    views = {v.procedure_uuid: v for v in data.procedures}
    first: dict[str, StudyProcedure] = {}
    last: dict[str, StudyProcedure] = {}
    for sp in sps:
        first.setdefault(sp.facts.patient_ref, sp)
        last[sp.facts.patient_ref] = sp
    dm = [
        [
            study,
            "DM",
            usubjid(study, s),
            s,
            views[sp.facts.procedure_uuid].site,
            _local(sp.facts.opened_at, p),
            _local(last[s].facts.closed_at or last[s].facts.opened_at, p),
            "",
        ]
        for s, sp in sorted(first.items())
    ]
    ref_day = {s: local_date(sp.facts.opened_at, zone) for s, sp in first.items()}
    pr: list[list[Any]] = []
    seq: dict[str, int] = {}

    def nxt(domain: str, subject: str) -> int:
        seq[f"{domain}/{subject}"] = seq.get(f"{domain}/{subject}", 0) + 1
        return seq[f"{domain}/{subject}"]

    code = p.codes.procedure
    for sp in sps:
        s = sp.facts.patient_ref
        pr.append(
            [
                study,
                "PR",
                usubjid(study, s),
                nxt("PR", s),
                str(sp.facts.procedure_uuid),
                "Image-guided cryoablation",
                code.display.upper(),
                "STUDY PROCEDURE",
                _local(sp.facts.opened_at, p),
                _local(sp.facts.closed_at, p),
                _study_day(local_date(sp.facts.opened_at, zone), ref_day[s]),
            ]
        )
    ae: list[list[Any]] = []
    for sp in sps:
        s = sp.facts.patient_ref
        uid = sp.facts.procedure_uuid
        tagged = [(f"{uid}/day/{e.ae_id}", e) for e in sp.record.adverse_events]
        tagged += [(f"{uid}/{e.ae_id}", e) for e in sp.later_events]
        for spid, e in tagged:
            onset_day = ""
            if e.onset is not None:
                pd = parse_partial(e.onset)
                if pd.precision.value in ("day", "time"):
                    day = pd.earliest(zone).astimezone(zone).date()
                    onset_day = str(_study_day(day, ref_day[s]))
            ae.append(
                [
                    study,
                    "AE",
                    usubjid(study, s),
                    nxt("AE", s),
                    spid,
                    e.verbatim_term,
                    e.subcategory.label.upper(),
                    e.category.label.upper(),
                    e.subcategory.label.upper(),
                    _iso_partial(e.onset, p),
                    _iso_partial(e.resolution, p),
                    onset_day,
                    "" if e.serious is None else ("Y" if e.serious else "N"),
                    "" if e.ctcae_grade is None else str(e.ctcae_grade),
                    "" if e.relatedness_procedure is None else AEREL[e.relatedness_procedure],
                    ""
                    if e.relatedness_device is None
                    else f"DEVICE: {AEREL[e.relatedness_device]}",
                    "" if e.outcome is None else AEOUT[e.outcome.value],
                    "Y" if e.further_intervention is not None else "",
                ]
            )
    qs: list[list[Any]] = []
    visitnum = {tp.id: i + 1 for i, tp in enumerate(p.follow_up.time_points)}
    labels = {tp.id: tp.label for tp in p.follow_up.time_points}
    pain = p.instruments.pain
    fn = p.instruments.function
    qol = p.instruments.qol
    tests: list[tuple[str, str, str, str, str]] = [
        ("PAIN", f"Pain score ({pain.scale.label})", "PAIN", pain.recall_period.label,
         "pain_score"),
        ("QOLTOT", f"{qol.name} total score", qol.name.upper(), qol.version, "qol_total"),
    ]  # fmt: skip
    if fn is not None:
        tests.append(("FUNCTOT", f"{fn.name} score", fn.name.upper(), fn.version, "function_score"))
    tests.append(("SATISF", "Satisfaction (1-5)", "SATISFACTION", "", "satisfaction"))
    room_base = room_baselines(data)
    for sp in sps:
        s = sp.facts.patient_ref
        from_room = room_base.get(sp.facts.procedure_uuid)
        for a in (*(() if from_room is None else (from_room,)), *sp.follow_up):
            done = a.status is VisitStatus.DONE
            for testcd, test, cat, scat, attr in tests:
                value = getattr(a, attr)
                if done and value is None:
                    continue
                if not done and testcd != "PAIN":
                    continue  # one not-done row per missed visit, on the primary outcome
                shown = (
                    ""
                    if value is None
                    else (f"{value:g}" if isinstance(value, float) else str(value))
                )
                qs.append(
                    [
                        study,
                        "QS",
                        usubjid(study, s),
                        nxt("QS", s),
                        testcd,
                        test,
                        cat,
                        scat,
                        shown,
                        "mm" if testcd == "PAIN" and pain.scale.value == "vas_0_100_mm" else "",
                        shown,
                        shown,
                        "mm" if testcd == "PAIN" and pain.scale.value == "vas_0_100_mm" else "",
                        "" if done else "NOT DONE",
                        "" if done else f"{a.status.label.upper()}: {a.reason or ''}".strip(),
                        "Y" if a.time_point == p.follow_up.baseline and done else "",
                        visitnum.get(a.time_point, ""),
                        labels.get(a.time_point, a.time_point).upper(),
                        a.assessed_on.isoformat(),
                        _study_day(a.assessed_on, ref_day[s]),
                    ]
                )
    files = {
        "dm.csv": _csv(DM_COLUMNS, dm),
        "pr.csv": _csv(PR_COLUMNS, pr),
        "ae.csv": _csv(AE_COLUMNS, ae),
        "qs.csv": _csv(QS_COLUMNS, qs),
    }
    problems = check_sdtm(files)
    if problems:
        raise ExportInvalid("sdtm", problems)
    return files


_REQUIRED: Final = {
    "dm.csv": ("STUDYID", "DOMAIN", "USUBJID", "SUBJID", "SITEID"),
    "pr.csv": ("STUDYID", "DOMAIN", "USUBJID", "PRSEQ", "PRTRT"),
    "ae.csv": ("STUDYID", "DOMAIN", "USUBJID", "AESEQ", "AETERM", "AEDECOD"),
    "qs.csv": ("STUDYID", "DOMAIN", "USUBJID", "QSSEQ", "QSTESTCD", "QSTEST"),
}
_DATE_COLUMNS: Final = ("RFSTDTC", "RFENDTC", "PRSTDTC", "PRENDTC", "AESTDTC", "AEENDTC", "QSDTC")


def check_sdtm(files: dict[str, str]) -> list[Problem]:
    """Each domain: required variables filled, USUBJID in DM, --SEQ unique per subject,
    dates ISO 8601 (as precise as known)."""
    problems: list[Problem] = []
    tables = {name: list(csv.DictReader(io.StringIO(text))) for name, text in files.items()}
    subjects = {r["USUBJID"] for r in tables.get("dm.csv", [])}
    for name, rows in tables.items():
        domain = name.removesuffix(".csv").upper()
        seen: set[tuple[str, str]] = set()
        for i, r in enumerate(rows):
            where = f"{name}.{i + 1}"
            for col in _REQUIRED[name]:
                if not r.get(col):
                    problems.append(Problem(f"{where}.{col}", "required"))
            if r.get("DOMAIN") != domain:
                problems.append(Problem(f"{where}.DOMAIN", f"is {r.get('DOMAIN')!r}, not {domain}"))
            if domain != "DM" and r.get("USUBJID") not in subjects:
                problems.append(Problem(f"{where}.USUBJID", "not a subject of DM"))
            seq_col = f"{domain}SEQ"
            if seq_col in r:
                key = (r["USUBJID"], r[seq_col])
                if key in seen:
                    problems.append(Problem(f"{where}.{seq_col}", "not unique for the subject"))
                seen.add(key)
            for col in _DATE_COLUMNS:
                value = r.get(col)
                if value:
                    try:
                        parse_partial(value)
                    except ValueError:
                        problems.append(Problem(f"{where}.{col}", f"{value!r} is not ISO 8601"))
    return problems


def export_files(data: StudyData, fmt: str) -> dict[str, str]:
    """File name -> text of one export format (validated)."""
    stem = data.profile.study.id
    if fmt == "json":
        return {f"{stem}.json": export_json(data)}
    if fmt == "csv":
        return export_csv(data)
    if fmt == "fhir":
        return {f"{stem}.fhir.json": export_fhir(data)}
    if fmt == "redcap":
        return export_redcap(data)
    if fmt == "sdtm":
        return export_sdtm(data)
    raise ValueError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
