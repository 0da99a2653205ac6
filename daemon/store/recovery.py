"""Start-up recovery: a cycle left open by a crash is closed as ``interrupted``.

The daemon never resumes a freeze after a restart; this makes the log say so.
The end time is the last sample of that probe's tip after the cycle started
(the last thing known), or now when there is none, and each change is
recorded in the audit trail. ``integrity_check`` runs SQLite's own check.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session

from . import audit, samples
from .chain import ChainedSession
from .db import engine_for
from .models import Cycle, Outcome, Procedure, utc_from_epoch, utcnow
from .records import CycleClose, close_cycle


@dataclass(frozen=True, slots=True)
class RecoveredCycle:
    cycle_id: int
    procedure_id: int
    probe: int
    ended_at: dt.datetime
    from_samples: bool  # False: no sample after the start, ended_at is the recovery time


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    interrupted: list[RecoveredCycle]
    open_procedures: list[int]  # left open: the operator closes them with notes


#: the figures an interrupted cycle lacks, and why
INTERRUPTED_FIGURES_NOTE = (
    "cycle interrupted by a restart: only min_tip_c recomputed from the stored samples, "
    "times below -20/-40 °C not computed"
)


def recover_open_cycles(session: Session, *, now: dt.datetime | None = None) -> RecoveryReport:
    """Mark every cycle with no outcome ``interrupted`` (run inside one transaction)."""
    now = now or utcnow()
    done: list[RecoveredCycle] = []
    open_cycles = session.scalars(
        select(Cycle).where(Cycle.outcome.is_(None)).order_by(Cycle.id)
    ).all()
    for cycle in open_cycles:
        start_epoch = cycle.started_at.timestamp()
        conn = session.connection()
        last = samples.last_tip(conn, cycle.procedure_id, cycle.probe, start_epoch)
        min_tip = samples.min_tip(conn, cycle.procedure_id, cycle.probe, start_epoch)
        if last is not None:
            ended_at, ended_mono, from_samples = (
                utc_from_epoch(float(last[0])),
                float(last[1]),
                True,
            )
        else:
            ended_at, ended_mono, from_samples = max(now, cycle.started_at), None, False
        close_cycle(
            session,
            CycleClose(
                cycle_id=cycle.id,
                outcome=Outcome.INTERRUPTED,
                ended_at=ended_at,
                ended_mono=ended_mono,
                reason="daemon restarted while the cycle was open (not resumed)",
                min_tip_c=None if min_tip is None else float(min_tip),
                figures_note=INTERRUPTED_FIGURES_NOTE,
            ),
            audit_kind="cycle_interrupted",
        )
        done.append(
            RecoveredCycle(cycle.id, cycle.procedure_id, cycle.probe, ended_at, from_samples)
        )
    open_procs = list(
        session.scalars(select(Procedure.id).where(Procedure.closed_at.is_(None))).all()
    )
    audit.append(
        session,
        "recovery",
        {
            "interrupted_cycles": [c.cycle_id for c in done],
            "open_procedures": open_procs,
        },
        at=now,
    )
    return RecoveryReport(done, open_procs)


def recover(engine: Engine, *, now: dt.datetime | None = None) -> RecoveryReport:
    """Run recovery in its own transaction (at start, before the writer starts)."""
    with ChainedSession(engine, expire_on_commit=False) as session, session.begin():
        return recover_open_cycles(session, now=now)


def integrity_check(db: Engine | Connection | str | os.PathLike[str]) -> list[str]:
    """Problems SQLite's ``PRAGMA integrity_check`` reports; an empty list means ok."""
    if isinstance(db, Connection):
        rows = [str(r[0]) for r in db.execute(text("PRAGMA integrity_check"))]
    else:
        engine, owned = engine_for(db)
        try:
            with engine.connect() as conn:
                rows = [str(r[0]) for r in conn.execute(text("PRAGMA integrity_check"))]
        finally:
            if owned:
                engine.dispose()
    return [] if rows == ["ok"] else rows
