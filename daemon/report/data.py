"""The report's data: one procedure read from the log into plain values.

``load_report_data(db, procedure_id)`` opens the database read-only (so it
works on a copy, or beside a running daemon), reads the procedure, its
cycles, alarms and operator actions, the plotted channels' samples and the
audit chain's state, and returns a ``ReportData``. Nothing here draws or
formats.

Only the probes that had a cycle are plotted; the others are named
(``unplotted_probes``) so the report can say they were left out.

The console's speed: on a simulated console at ``time_scale`` ≠ 1, cycle
durations and figures are on cryod's scaled engine clock (simulated seconds)
while every UTC time is wall clock. The procedure row does not record the
speed (yet); each sample does record both clocks (``t_utc`` wall clock,
``t_mono`` on the engine clock), so ``time_scale_from_clocks`` measures it
from consecutive samples. A ``time_scale`` in the procedure's metadata, once
the log records one, is used as recorded.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from ..store import audit
from ..store.db import open_readonly
from ..store.models import parse_utc, utcnow
from ..store.queries import NotFound, load_procedure
from ..store.samples import procedure_readings
from .errors import ReportError

__all__ = ["ReportData", "Series", "TimeScale", "load_report_data", "time_scale_from_clocks"]

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
class TimeScale:
    """How fast the console's clock ran against the wall clock, and how that is known.

    ``factor`` is None when it could not be known (``basis`` says why); 1.0 is real time.
    """

    factor: float | None
    basis: str

    @property
    def simulated(self) -> bool:
        return self.factor is not None and self.factor != 1.0


#: a measured speed within 1 % of 1 is reported as real time: the wall and monotonic
#: clocks of a real-time console drift apart by far less than that
REAL_TIME_TOLERANCE = 0.01
#: consecutive samples closer than this in wall-clock time say nothing about the speed
_MIN_STEP_S = 1e-3


def time_scale_from_clocks(t_utc: Sequence[float], t_mono: Sequence[float]) -> float | None:
    """The engine clock's speed against the wall clock, from samples recorded on both:
    the median over consecutive samples of Δt_mono / Δt_utc, so a daemon restart
    (the engine clock starts again) or a wall-clock step moves no figure.

    Rounded to 4 significant digits (a configured speed is at most 1000); within
    ``REAL_TIME_TOLERANCE`` of 1, exactly 1.0.
    None when fewer than two usable steps were recorded.
    """
    ratios = [
        (m1 - m0) / (u1 - u0)
        for u0, u1, m0, m1 in zip(t_utc, t_utc[1:], t_mono, t_mono[1:], strict=False)
        if u1 - u0 >= _MIN_STEP_S and m1 > m0
    ]
    if len(ratios) < 2:
        return None
    factor = statistics.median(ratios)
    if abs(factor - 1.0) <= REAL_TIME_TOLERANCE:
        return 1.0
    return float(f"{factor:.4g}")


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
    time_scale: TimeScale
    unplotted_probes: tuple[int, ...]  # probes with samples but no cycle: not plotted
    #: the study record (profile, consent, selection, details, baseline pain); None: no study
    study: dict[str, Any] | None = None
    adverse_events: list[dict[str, Any]] = field(default_factory=list)  # the rows (issue 19)

    @property
    def probes(self) -> list[int]:
        """The probes the report plots: those that had a cycle in this procedure."""
        return sorted({int(c["probe"]) for c in self.cycles})

    def rel_s(self, iso_utc: str | None) -> float | None:
        if iso_utc is None:
            return None
        return parse_utc(iso_utc).timestamp() - self.t0_utc


@dataclass(frozen=True, slots=True)
class _Samples:
    tip: dict[int, Series]
    supply: Series
    cylinder: Series
    unplotted_probes: tuple[int, ...]
    supply_clocks: tuple[list[float], list[float]]  # (t_utc, t_mono) of the supply samples


def _load_samples(session: Session, procedure_id: int, t0: float, probes: set[int]) -> _Samples:
    rows = procedure_readings(session.connection(), procedure_id)
    tip: dict[int, Series] = {p: Series() for p in sorted(probes)}
    unplotted: set[int] = set()
    supply, cylinder = Series(), Series()
    clock_utc: list[float] = []
    clock_mono: list[float] = []
    for probe, channel, t_utc, t_mono, value, validity in rows:
        if channel == TIP_CHANNEL and probe >= 1:
            if probe not in tip:
                unplotted.add(int(probe))
                continue
            series = tip[probe]
        elif channel == SUPPLY_CHANNEL and probe == 0:
            series = supply
            clock_utc.append(float(t_utc))
            clock_mono.append(float(t_mono))
        elif channel == CYLINDER_CHANNEL and probe == 0:
            series = cylinder
        else:
            continue
        series.t_s.append(float(t_utc) - t0)
        # a reading that was not usable is stored without a value; never plot one
        series.value.append(float(value) if value is not None and validity == "valid" else None)
        series.validity.append(str(validity))
    return _Samples(
        tip=tip,
        supply=supply,
        cylinder=cylinder,
        unplotted_probes=tuple(sorted(unplotted)),
        supply_clocks=(clock_utc, clock_mono),
    )


def _time_scale(metadata: dict[str, Any], clocks: tuple[list[float], list[float]]) -> TimeScale:
    recorded = metadata.get("time_scale")
    if recorded is not None:
        return TimeScale(float(recorded), "recorded with the procedure")
    factor = time_scale_from_clocks(*clocks)
    if factor is None:
        return TimeScale(None, "not recorded, and too few samples to measure it")
    return TimeScale(factor, "measured from the samples' wall and engine clocks")


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
            probes = {int(c["probe"]) for c in detail.cycles}
            samples = _load_samples(session, int(procedure_id), t0, probes)
            audit_status = _audit_status(session)
    finally:
        engine.dispose()
    return ReportData(
        metadata=detail.metadata,
        cycles=detail.cycles,
        alarms=detail.alarms,
        actions=detail.actions,
        tip=samples.tip,
        supply=samples.supply,
        cylinder=samples.cylinder,
        t0_utc=t0,
        audit_status=audit_status,
        generated_at=utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        source=path.name,
        time_scale=_time_scale(detail.metadata, samples.supply_clocks),
        unplotted_probes=samples.unplotted_probes,
        study=detail.study,
        adverse_events=detail.adverse_events,
    )
