"""The report's data: one procedure read from the log into plain values.

``load_report_data(db, procedure_id)`` opens the database read-only (so it
works on a copy, or beside a running daemon), reads the procedure, its
cycles, alarms and operator actions, the plotted channels' samples and the
audit chain's state, and returns a ``ReportData``. Nothing here draws or
formats.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store import audit
from ..store.db import open_readonly
from ..store.models import Sample, parse_utc, utcnow
from ..store.queries import NotFound, load_procedure
from .errors import ReportError

__all__ = ["ReportData", "Series", "load_report_data"]

TIP_CHANNEL = "tip_c"
SUPPLY_CHANNEL = "supply_kpa"
CYLINDER_CHANNEL = "cylinder_kpa"


@dataclass(frozen=True, slots=True)
class Series:
    """One channel over time: seconds since the procedure opened, value or None."""

    t_s: list[float] = field(default_factory=list)
    value: list[float | None] = field(default_factory=list)
    validity: list[str] = field(default_factory=list)

    def unusable_t_s(self) -> list[float]:
        return [t for t, v in zip(self.t_s, self.value, strict=True) if v is None]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.validity:
            out[v] = out.get(v, 0) + 1
        return out


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the report shows, read from the log in one read-only session."""

    metadata: dict[str, Any]
    cycles: list[dict[str, Any]]
    alarms: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    tip: dict[int, Series]
    supply: Series
    cylinder: Series
    t0_utc: float  # epoch seconds of opened_at: x = 0
    audit_status: str
    generated_at: str
    source: str  # database file name (not its full path)

    @property
    def probes(self) -> list[int]:
        found = set(self.tip) | {int(c["probe"]) for c in self.cycles}
        return sorted(found)

    def rel_s(self, iso_utc: str | None) -> float | None:
        if iso_utc is None:
            return None
        return parse_utc(iso_utc).timestamp() - self.t0_utc


def _load_series(
    session: Session, procedure_id: int, t0: float
) -> tuple[dict[int, Series], Series, Series]:
    rows = session.execute(
        select(Sample.probe, Sample.channel, Sample.t_utc, Sample.value, Sample.validity)
        .where(
            Sample.procedure_id == procedure_id,
            Sample.channel.in_((TIP_CHANNEL, SUPPLY_CHANNEL, CYLINDER_CHANNEL)),
        )
        .order_by(Sample.probe, Sample.channel, Sample.t_utc, Sample.id)
    ).all()
    tip: dict[int, Series] = {}
    supply, cylinder = Series(), Series()
    for probe, channel, t_utc, value, validity in rows:
        if channel == TIP_CHANNEL and probe >= 1:
            series = tip.setdefault(int(probe), Series())
        elif channel == SUPPLY_CHANNEL and probe == 0:
            series = supply
        elif channel == CYLINDER_CHANNEL and probe == 0:
            series = cylinder
        else:
            continue
        series.t_s.append(float(t_utc) - t0)
        # a reading that was not usable is stored without a value; never plot one
        series.value.append(float(value) if value is not None and validity == "valid" else None)
        series.validity.append(str(validity))
    return tip, supply, cylinder


def _audit_status(session: Session) -> str:
    try:
        result = audit.verify(session)
    except Exception as exc:  # noqa: BLE001 - the report still shows the rest
        return f"not checked ({type(exc).__name__}: {exc})"
    if result.ok:
        return f"intact ({result.rows} entries verified)"
    return f"BROKEN at entry {result.first_bad_seq}: {result.reason}"


def load_report_data(db_path: str | os.PathLike[str], procedure_id: int) -> ReportData:
    """Read one procedure, its cycles, alarms, actions and plotted samples."""
    path = Path(db_path)
    if not path.is_file():
        raise ReportError(f"database {path} does not exist")
    engine = open_readonly(path)
    try:
        with Session(engine) as session:
            try:
                detail = load_procedure(session, int(procedure_id))
            except NotFound as exc:
                raise NotFound(
                    f"procedure {procedure_id} does not exist in {path.name} "
                    "(list them with `cryoctl procedures`)"
                ) from exc
            t0 = parse_utc(detail.metadata["opened_at"]).timestamp()
            tip, supply, cylinder = _load_series(session, int(procedure_id), t0)
            audit_status = _audit_status(session)
    finally:
        engine.dispose()
    return ReportData(
        metadata=detail.metadata,
        cycles=detail.cycles,
        alarms=detail.alarms,
        actions=detail.actions,
        tip=tip,
        supply=supply,
        cylinder=cylinder,
        t0_utc=t0,
        audit_status=audit_status,
        generated_at=utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        source=path.name,
    )
