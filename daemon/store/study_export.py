"""FHIR and REDCap exports of a real database, built with ``cryod.research``.

The store reads what was recorded (the procedure, its study row with the
profile it was opened under, baseline pain, adverse events, cycles) into the
research package's plain models (``ProcedureDayRecord``, ``ProcedureFacts``);
``cryod.research`` builds the Bundle or the REDCap project from them. An
export is checked before it is handed out: the FHIR Bundle against
fhir.resources' R4B models and the project's own rules, the REDCap files
against the import rules; a problem is a ``StudyExportError`` naming each,
never a file that a registry would refuse.

Only procedures opened under a study profile are exported, one study at a
time (the profile travels in the database, so no file is needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cryod.research.facts import ConsoleFacts, CycleFacts, ProbeFacts, ProcedureFacts
from cryod.research.fhir_bundle import StudyProcedure, build_bundle
from cryod.research.fhir_check import project_problems
from cryod.research.fhir_library import FhirLibraryMissing, library_problems
from cryod.research.problems import Problem, format_problems
from cryod.research.profile import StudyProfile
from cryod.research.redcap_design import RECORDS_FILE, design_files, design_for
from cryod.research.redcap_records import procedure_day_rows, records_csv
from cryod.research.redcap_rules import check_redcap_files

from .db import engine_for
from .models import Cycle, Procedure, ProcedureStudy, utcnow
from .queries import Db, NotFound, study_record
from .records import profile_of

__all__ = [
    "StudyExportError",
    "fhir_export",
    "load_study_procedures",
    "redcap_export",
    "redcap_files",
]


class StudyExportError(ValueError):
    """The study export cannot be made, or would not pass its checks (each problem named)."""


@dataclass(frozen=True, slots=True)
class StudyProcedures:
    profile: StudyProfile
    procedures: list[StudyProcedure]


def _facts(session: Session, p: Procedure, gas: str | None) -> ProcedureFacts:
    cycles = session.scalars(
        select(Cycle).where(Cycle.procedure_id == p.id).order_by(Cycle.started_at, Cycle.id)
    ).all()
    return ProcedureFacts(
        procedure_id=p.id,
        procedure_uuid=p.uuid,
        patient_ref=p.patient_ref,
        opened_at=p.opened_at,
        closed_at=p.closed_at,
        body_site=p.site,
        side=p.side,
        console=ConsoleFacts(
            name=p.console,
            model=p.console_model,
            serial=p.console_serial,
            firmware=p.console_firmware,
            gas=gas,
        ),
        probes=[ProbeFacts(probe=n) for n in sorted({c.probe for c in cycles})],
        cycles=[
            CycleFacts(
                cycle_id=c.id,
                probe=c.probe,
                phase=c.phase,
                step_index=c.step_index,
                protocol=c.protocol,
                planned_s=c.planned_s,
                target_tip_c=c.target_tip_c,
                started_at=c.started_at,
                ended_at=c.ended_at,
                duration_s=c.duration_s,
                outcome=c.outcome,
                outcome_reason=None if c.outcome_reason is None else c.outcome_reason[:500],
                min_tip_c=c.min_tip_c,
                time_to_target_s=c.time_to_target_s,
                time_below_m20_s=c.time_below_m20_s,
                time_below_m40_s=c.time_below_m40_s,
                thaw_to_0_s=c.thaw_to_0_s,
                supply_start_kpa=c.supply_start_kpa,
                supply_end_kpa=c.supply_end_kpa,
                gas_used_est_l=c.gas_used_est_l,
            )
            for c in cycles
        ],
    )


def load_study_procedures(session: Session, procedure_id: int | None = None) -> StudyProcedures:
    """The procedures recorded under a study profile (one, or all of one study)."""
    query = select(ProcedureStudy).order_by(ProcedureStudy.procedure_id)
    if procedure_id is not None:
        if session.get(Procedure, procedure_id) is None:
            raise NotFound(f"procedure {procedure_id} does not exist")
        query = query.where(ProcedureStudy.procedure_id == procedure_id)
    rows = session.scalars(query).all()
    if not rows:
        what = "no procedure" if procedure_id is None else f"procedure {procedure_id} was not"
        raise StudyExportError(
            f"{what} recorded under a study profile (cryoctl procedure open --study): "
            "nothing to export as FHIR or REDCap"
        )
    studies = sorted({(r.profile_id, r.profile_version, r.profile_hash) for r in rows})
    if len(studies) > 1:
        listed = "; ".join(f"{i} v{v} ({h[:15]}...)" for i, v, h in studies)
        raise StudyExportError(
            f"procedures of {len(studies)} study profiles ({listed}): export them one "
            "procedure at a time (cryoctl export ID --format ...)"
        )
    profile = profile_of(rows[0])
    out = []
    for row in rows:
        p = session.get(Procedure, row.procedure_id)
        record = study_record(session, row.procedure_id)
        assert p is not None
        assert record is not None
        out.append(StudyProcedure(record=record, facts=_facts(session, p, record.procedure.gas)))
    return StudyProcedures(profile, out)


def _read(db: Db, procedure_id: int | None) -> StudyProcedures:
    engine, owned = engine_for(db)
    try:
        with Session(engine) as session:
            return load_study_procedures(session, procedure_id)
    finally:
        if owned:
            engine.dispose()


def _refuse(what: str, problems: Sequence[Problem]) -> None:
    if problems:
        raise StudyExportError(
            f"the {what} does not pass its checks:\n" + format_problems(problems)
        )


def fhir_export(db: Db, procedure_id: int | None = None) -> dict[str, Any]:
    """A FHIR R4B Bundle (JSON) of the procedures, checked by fhir.resources' R4B models
    (the ``research`` extra; without it the export is refused, saying so) and by the
    project's own rules."""
    found = _read(db, procedure_id)
    bundle = build_bundle(found.profile, found.procedures, generated_at=utcnow())
    try:
        problems = library_problems(bundle)
    except FhirLibraryMissing as exc:
        raise StudyExportError(f"the FHIR export is not checked: {exc}") from None
    _refuse("FHIR Bundle", problems + project_problems(bundle, found.profile))
    return bundle


def redcap_files(found: StudyProcedures) -> dict[str, str]:
    design = design_for(found.profile)
    files = design_files(design)
    rows = [
        row
        for sp in sorted(found.procedures, key=lambda sp: sp.facts.opened_at)
        for row in procedure_day_rows(found.profile, design, sp.record, sp.facts)
    ]
    files[RECORDS_FILE] = records_csv(design, rows)
    return files


def redcap_export(db: Db, procedure_id: int | None = None) -> dict[str, str]:
    """The longitudinal REDCap project (file name -> CSV text), checked by the import
    rules REDCap trips over most."""
    files = redcap_files(_read(db, procedure_id))
    _refuse("REDCap project", check_redcap_files(files))
    return files
