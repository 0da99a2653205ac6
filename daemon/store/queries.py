"""Read-side queries: list procedures, show one. Work offline on a database file.

Given a path, the file is opened read-only (``file:...?mode=ro``), so
researchers and auditors can work on copies, and on the live database while
the daemon runs (WAL lets readers and the writer work at the same time).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from .db import engine_for
from .models import Alarm, AuditEntry, Cycle, OperatorAction, Procedure, format_utc
from .records import cycle_summary, duration_between

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class NotFound(LookupError):
    pass


def _ts(value: Any) -> str | None:
    return None if value is None else format_utc(value)


def procedure_metadata(p: Procedure) -> dict[str, Any]:
    """Every metadata field, patient_ref included (exports and show only, never logs/MQTT)."""
    return {
        "procedure_id": p.id,
        "uuid": p.uuid,
        "console": p.console,
        "opened_at": _ts(p.opened_at),
        "closed_at": _ts(p.closed_at),
        "patient_ref": p.patient_ref,
        "study_id": p.study_id,
        "indication": p.indication,
        "indication_other": p.indication_other,
        "site": p.site,
        "side": p.side,
        "imaging": p.imaging,
        "anaesthesia": p.anaesthesia,
        "operator": p.operator,
        "probe_model": p.probe_model,
        "probe_lot": p.probe_lot,
        "console_model": p.console_model,
        "console_serial": p.console_serial,
        "console_firmware": p.console_firmware,
        "software_version": p.software_version,
        "host_only_limits": p.host_only_limits,
        "closed_by": p.closed_by,
        "notes": p.notes,
        "adverse_events": p.adverse_events,
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
