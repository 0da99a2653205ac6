"""Read-side queries: list procedures, show one. Work offline on a database file.

Given a path, the file is opened read-only (``file:...?mode=ro``), so
researchers and auditors can work on copies, and on the live database while
the daemon runs (WAL lets readers and the writer work at the same time).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cryod.research.problems import Problem
from cryod.research.record import PainAssessment, ProcedureDayRecord
from cryod.research.validation import baseline_pain_gate

from .db import engine_for
from .models import (
    AdverseEventRow,
    Alarm,
    AuditEntry,
    Cycle,
    OperatorAction,
    PainAssessmentRow,
    Procedure,
    ProcedureStudy,
    format_utc,
)
from .records import ae_record, cycle_summary, duration_between, pain_record, profile_of

Db = Engine | str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class ProcedureSummary:
    id: int
    uuid: str
    console: str
    opened_at: str
    closed_at: str | None
    indication: str
    site: str
    side: str
    operator: str
    study_id: str | None
    cycles: int
    alarms: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ProcedureDetail:
    metadata: dict[str, Any]
    cycles: list[dict[str, Any]]
    alarms: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    #: the study record (profile, consent, selection, details, baseline pain); None: no study
    study: dict[str, Any] | None = None
    adverse_events: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class NotFound(LookupError):
    pass


def _ts(value: Any) -> str | None:
    return None if value is None else format_utc(value)


def procedure_metadata(p: Procedure) -> dict[str, Any]:
    """Every column of the procedure, patient_ref included (exports and show only, never
    logs/MQTT), named as the export names them (``id`` as ``procedure_id``)."""
    out: dict[str, Any] = {}
    for column in Procedure.__table__.columns:
        value = getattr(p, column.key)
        name = "procedure_id" if column.key == "id" else column.key
        out[name] = _ts(value) if isinstance(value, dt.datetime) else value
    return out


def study_record(session: Session, procedure_id: int) -> ProcedureDayRecord | None:
    """The procedure-day record of a procedure opened under a study profile."""
    row = session.get(ProcedureStudy, procedure_id)
    if row is None:
        return None
    profile = profile_of(row)
    consent = (
        None
        if row.consent_confirmed is None
        else {"confirmed": row.consent_confirmed, "form_version": row.consent_form_version}
    )
    return ProcedureDayRecord.model_validate(
        {
            "profile": profile.stamp(),
            "consent": consent,
            "selection": row.selection,
            "procedure": row.details,
            "baseline_pain": baseline_pain(session, procedure_id, profile.follow_up.baseline),
            "adverse_events": [ae_record(r) for r in _ae_rows(session, procedure_id)],
        }
    )


def baseline_pain(session: Session, procedure_id: int, time_point: str) -> PainAssessment | None:
    row = session.scalar(
        select(PainAssessmentRow)
        .where(
            PainAssessmentRow.procedure_id == procedure_id,
            PainAssessmentRow.time_point == time_point,
        )
        .order_by(PainAssessmentRow.id)
        .limit(1)
    )
    return None if row is None else pain_record(row)


def _ae_rows(session: Session, procedure_id: int) -> list[AdverseEventRow]:
    return list(
        session.scalars(
            select(AdverseEventRow)
            .where(AdverseEventRow.procedure_id == procedure_id)
            .order_by(AdverseEventRow.id)
        )
    )


def adverse_event_dict(r: AdverseEventRow) -> dict[str, Any]:
    """An adverse-event row as show, ``ae list`` and the report give it."""
    out: dict[str, Any] = {"ae_id": r.id}
    for column in AdverseEventRow.__table__.columns:
        if column.key in ("id", "procedure_id"):
            continue
        value = getattr(r, column.key)
        out[column.key] = _ts(value) if isinstance(value, dt.datetime) else value
    return out


def study_dict(session: Session, procedure_id: int) -> dict[str, Any] | None:
    """The study side for show and the report (profile stamp, consent, selection,
    details, baseline pain)."""
    row = session.get(ProcedureStudy, procedure_id)
    if row is None:
        return None
    profile = profile_of(row)
    pain = baseline_pain(session, procedure_id, profile.follow_up.baseline)
    return {
        "profile": {
            "profile_id": row.profile_id,
            "version": row.profile_version,
            "content_hash": row.profile_hash,
            "title": profile.study.title,
        },
        "consent": {"confirmed": row.consent_confirmed, "form_version": row.consent_form_version},
        "selection": row.selection,
        "details": row.details,
        "baseline_pain": None if pain is None else pain.model_dump(mode="json"),
    }


def alarm_record(a: Alarm) -> dict[str, Any]:
    return {
        "alarm_id": a.id,
        "code": a.code,
        "priority": a.priority,
        "probe": a.probe,
        "message": a.message,
        "raised_at": _ts(a.raised_at),
        "acked_at": _ts(a.acked_at),
        "acked_by": a.acked_by,
        "cleared_at": _ts(a.cleared_at),
    }


def action_record(a: OperatorAction) -> dict[str, Any]:
    return {
        "action_id": a.id,
        "at": _ts(a.at),
        "who": a.who,
        "action": a.action,
        "args": a.args,
        "accepted": a.accepted,
        "reason": a.reason,
    }


def _with_session(db: Db) -> tuple[Session, Engine, bool]:
    engine, owned = engine_for(db)
    return Session(engine), engine, owned


def list_procedures(db: Db) -> list[ProcedureSummary]:
    session, engine, owned = _with_session(db)
    try:
        n_cycles = (
            select(Cycle.procedure_id, func.count().label("n"))
            .group_by(Cycle.procedure_id)
            .subquery()
        )
        n_alarms = (
            select(Alarm.procedure_id, func.count().label("n"))
            .group_by(Alarm.procedure_id)
            .subquery()
        )
        rows = session.execute(
            select(Procedure, n_cycles.c.n, n_alarms.c.n)
            .outerjoin(n_cycles, n_cycles.c.procedure_id == Procedure.id)
            .outerjoin(n_alarms, n_alarms.c.procedure_id == Procedure.id)
            .order_by(Procedure.id)
        ).all()
        return [
            ProcedureSummary(
                id=p.id,
                uuid=p.uuid,
                console=p.console,
                opened_at=format_utc(p.opened_at),
                closed_at=_ts(p.closed_at),
                indication=p.indication,
                site=p.site,
                side=p.side,
                operator=p.operator,
                study_id=p.study_id,
                cycles=int(nc or 0),
                alarms=int(na or 0),
            )
            for p, nc, na in rows
        ]
    finally:
        session.close()
        if owned:
            engine.dispose()


def load_procedure(session: Session, procedure_id: int, *, actions: bool = True) -> ProcedureDetail:
    p = session.get(Procedure, procedure_id)
    if p is None:
        raise NotFound(f"procedure {procedure_id} does not exist")
    cycles = session.scalars(
        select(Cycle).where(Cycle.procedure_id == p.id).order_by(Cycle.started_at, Cycle.id)
    ).all()
    alarms = session.scalars(
        select(Alarm).where(Alarm.procedure_id == p.id).order_by(Alarm.raised_at, Alarm.id)
    ).all()
    acts = (
        session.scalars(
            select(OperatorAction)
            .where(OperatorAction.procedure_id == p.id)
            .order_by(OperatorAction.at, OperatorAction.id)
        ).all()
        if actions
        else []
    )
    return ProcedureDetail(
        metadata=procedure_metadata(p),
        cycles=[cycle_summary(c) for c in cycles],
        alarms=[alarm_record(a) for a in alarms],
        actions=[action_record(a) for a in acts],
        study=study_dict(session, p.id),
        adverse_events=[adverse_event_dict(r) for r in _ae_rows(session, p.id)],
    )


def show_procedure(db: Db, procedure_id: int) -> ProcedureDetail:
    session, engine, owned = _with_session(db)
    try:
        return load_procedure(session, procedure_id)
    finally:
        session.close()
        if owned:
            engine.dispose()


def procedure_ids(session: Session) -> list[int]:
    return list(session.scalars(select(Procedure.id).order_by(Procedure.id)).all())


def list_adverse_events(db: Db, procedure_id: int) -> list[dict[str, Any]]:
    """The adverse events of one procedure (``cryoctl ae list``)."""
    session, engine, owned = _with_session(db)
    try:
        if session.get(Procedure, procedure_id) is None:
            raise NotFound(f"procedure {procedure_id} does not exist")
        return [adverse_event_dict(r) for r in _ae_rows(session, procedure_id)]
    finally:
        session.close()
        if owned:
            engine.dispose()


def baseline_gate(db: Db, procedure_id: int) -> list[Problem]:
    """Why ``run`` and ``freeze`` must wait (empty: they need not): the procedure's study
    requires the baseline pain score before the first freeze and it is not recorded."""
    session, engine, owned = _with_session(db)
    try:
        row = session.get(ProcedureStudy, procedure_id)
        if row is None:
            return []
        profile = profile_of(row)
        pain = baseline_pain(session, procedure_id, profile.follow_up.baseline)
        return baseline_pain_gate(profile, pain)
    finally:
        session.close()
        if owned:
            engine.dispose()


# ---- what the daemon reads when it starts ----------------------------------------------
class OpenProcedure(NamedTuple):
    """A procedure a previous run left open, and the freeze time each probe has had in it."""

    procedure_id: int
    freeze_s: dict[int, float]


def next_session(session: Session) -> int:
    """The number of this daemon start: one more than the starts recorded."""
    n = session.scalar(
        select(func.count()).select_from(AuditEntry).where(AuditEntry.kind == "daemon_started")
    )
    return int(n or 0) + 1


def open_procedures(engine: Engine) -> dict[str, OpenProcedure]:
    """Procedures left open by a previous run, per console (the latest wins), with the
    freeze time each probe has had in it (the per-procedure limit survives a restart)."""
    out: dict[str, OpenProcedure] = {}
    with Session(engine) as s:
        rows = s.execute(
            select(Procedure.console, Procedure.id)
            .where(Procedure.closed_at.is_(None))
            .order_by(Procedure.id)
        ).all()
        for console, pid in rows:
            freeze_s: dict[int, float] = {}
            for c in s.scalars(
                select(Cycle).where(Cycle.procedure_id == pid, Cycle.phase == "freeze")
            ):
                if c.ended_at is None:
                    continue
                d = duration_between(c.started_at, c.started_mono, c.ended_at, c.ended_mono)
                freeze_s[c.probe] = freeze_s.get(c.probe, 0.0) + d
            out[console] = OpenProcedure(pid, freeze_s)
    return out
