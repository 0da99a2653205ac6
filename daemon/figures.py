"""Per-cycle figures, updated snapshot by snapshot while a cycle runs.

Pure and immutable: ``tracker = tracker.update(probe_state, snapshot)`` returns
a new tracker; ``tracker.figures()`` gives the numbers for the cycle row.

Only usable readings count, and every time is a reading's own monotonic
determination time (``Reading.t_mono``), never wall-clock time. Times spent
below a threshold are integrated between consecutive usable samples, with the
crossing point interpolated linearly; a gap longer than ``max_gap_s`` between
usable samples is not integrated (it is reported as ``gap_s``), so a dead
link never counts as time in lethal ice.

Gas used is estimated from the **cylinder pressure drop** between the first
and last usable cylinder readings of the cycle (kPa; shared by all probes
that froze at the same time: ``probes_sharing``). When the cylinder reading
is not usable at both ends, ``gas_used_kpa`` is None and ``gas_method`` says
``valve_open_time``: the valve-open time is then the only estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from cryod.drivers.base import ProbeState, Reading, Snapshot

__all__ = ["LETHAL_C", "CycleFigures", "FigureTracker"]

#: the lethal-ice thresholds the figures report time below (domain.md)
LETHAL_C = (-20.0, -40.0)


@dataclass(frozen=True, slots=True)
class CycleFigures:
    phase: Literal["freeze", "thaw"]
    duration_s: float | None  # from phase start to the last sample
    min_tip_c: float | None
    time_to_target_s: float | None  # freeze: first crossing of the target
    below_m20_s: float
    below_m40_s: float
    thaw_to_0c_s: float | None  # thaw: first crossing of 0 C from the phase start
    supply_start_kpa: float | None
    supply_end_kpa: float | None
    cylinder_start_kpa: float | None
    cylinder_end_kpa: float | None
    gas_used_kpa: float | None
    gas_method: Literal["cylinder_drop", "valve_open_time"]
    valve_open_s: float | None
    probes_sharing: int
    samples: int  # usable tip samples
    unusable_samples: int
    gap_s: float  # time between usable samples not integrated (gaps > max_gap_s)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cross(t0: float, v0: float, t1: float, v1: float, level: float) -> float:
    """Time at which the line through (t0, v0), (t1, v1) crosses ``level``."""
    if v1 == v0:
        return t1
    return t0 + (level - v0) * (t1 - t0) / (v1 - v0)


def _time_below(t0: float, v0: float, t1: float, v1: float, level: float) -> float:
    if v0 < level and v1 < level:
        return t1 - t0
    if v0 >= level and v1 >= level:
        return 0.0
    tc = _cross(t0, v0, t1, v1, level)
    return (tc - t0) if v0 < level else (t1 - tc)


@dataclass(frozen=True, slots=True)
class FigureTracker:
    phase: Literal["freeze", "thaw"]
    start_mono_s: float  # when the valve opened (freeze) or the thaw began
    target_tip_c: float | None = None
    probes_sharing: int = 1
    max_gap_s: float = 2.0
    last_t: float | None = None
    last_tip: float | None = None
    min_tip_c: float | None = None
    time_to_target_s: float | None = None
    below_m20_s: float = 0.0
    below_m40_s: float = 0.0
    thaw_to_0c_s: float | None = None
    supply_start_kpa: float | None = None
    supply_end_kpa: float | None = None
    cylinder_start_kpa: float | None = None
    cylinder_end_kpa: float | None = None
    valve_end_mono_s: float | None = None
    samples: int = 0
    unusable_samples: int = 0
    gap_s: float = 0.0

    def update(self, probe: ProbeState, snapshot: Snapshot) -> FigureTracker:
        """Fold in one snapshot (ignored if determined before the phase start).

        One copy per snapshot: this runs for every probe at every poll."""
        changes: dict[str, Any] = {}
        self._pressure(snapshot.supply_kpa, "supply", changes)
        self._pressure(snapshot.cylinder_kpa, "cylinder", changes)
        self._tip(probe.tip_c, changes)
        return replace(self, **changes) if changes else self

    def _pressure(self, r: Reading, which: str, changes: dict[str, Any]) -> None:
        if not r.usable or r.value is None or r.t_mono < self.start_mono_s:
            return
        if which == "supply":
            start = self.supply_start_kpa if self.supply_start_kpa is not None else r.value
            changes.update(supply_start_kpa=start, supply_end_kpa=r.value)
        else:
            start = self.cylinder_start_kpa if self.cylinder_start_kpa is not None else r.value
            changes.update(cylinder_start_kpa=start, cylinder_end_kpa=r.value)

    def _tip(self, r: Reading, changes: dict[str, Any]) -> None:
        if r.t_mono < self.start_mono_s:
            return
        if not r.usable or r.value is None:
            changes["unusable_samples"] = self.unusable_samples + 1
            return
        t1, v1 = r.t_mono, r.value
        if self.last_t is not None and t1 <= self.last_t:
            return  # repeated or out-of-order sample: ignore
        changes.update(
            last_t=t1,
            last_tip=v1,
            samples=self.samples + 1,
            min_tip_c=v1 if self.min_tip_c is None else min(self.min_tip_c, v1),
        )
        if self.last_t is None or self.last_tip is None:
            # first usable sample: events already true count from this sample
            if self.phase == "freeze" and self.target_tip_c is not None and v1 <= self.target_tip_c:
                changes["time_to_target_s"] = t1 - self.start_mono_s
            if self.phase == "thaw" and v1 >= 0.0:
                changes["thaw_to_0c_s"] = t1 - self.start_mono_s
            return
        t0, v0 = self.last_t, self.last_tip
        if t1 - t0 > self.max_gap_s:
            changes["gap_s"] = self.gap_s + (t1 - t0)
        else:
            changes["below_m20_s"] = self.below_m20_s + _time_below(t0, v0, t1, v1, LETHAL_C[0])
            changes["below_m40_s"] = self.below_m40_s + _time_below(t0, v0, t1, v1, LETHAL_C[1])
        target = self.target_tip_c
        if (
            self.phase == "freeze"
            and target is not None
            and self.time_to_target_s is None
            and v1 <= target
        ):
            tc = _cross(t0, v0, t1, v1, target) if t1 - t0 <= self.max_gap_s else t1
            changes["time_to_target_s"] = max(tc, t0) - self.start_mono_s
        if self.phase == "thaw" and self.thaw_to_0c_s is None and v1 >= 0.0:
            tc = _cross(t0, v0, t1, v1, 0.0) if t1 - t0 <= self.max_gap_s else t1
            changes["thaw_to_0c_s"] = max(tc, t0) - self.start_mono_s

    def valve_closed(self, mono_s: float) -> FigureTracker:
        """Note when the freeze (or active-thaw) valve was commanded closed."""
        return self if self.valve_end_mono_s is not None else replace(self, valve_end_mono_s=mono_s)

    def figures(self, end_mono_s: float | None = None) -> CycleFigures:
        gas: float | None = None
        if self.cylinder_start_kpa is not None and self.cylinder_end_kpa is not None:
            gas = round(self.cylinder_start_kpa - self.cylinder_end_kpa, 3)
        end = self.valve_end_mono_s if self.valve_end_mono_s is not None else end_mono_s
        valve_s = None
        if self.phase == "freeze" and end is not None:
            valve_s = round(max(0.0, end - self.start_mono_s), 3)
        return CycleFigures(
            phase=self.phase,
            duration_s=None if self.last_t is None else round(self.last_t - self.start_mono_s, 3),
            min_tip_c=self.min_tip_c,
            time_to_target_s=None
            if self.time_to_target_s is None
            else round(self.time_to_target_s, 3),
            below_m20_s=round(self.below_m20_s, 3),
            below_m40_s=round(self.below_m40_s, 3),
            thaw_to_0c_s=None if self.thaw_to_0c_s is None else round(self.thaw_to_0c_s, 3),
            supply_start_kpa=self.supply_start_kpa,
            supply_end_kpa=self.supply_end_kpa,
            cylinder_start_kpa=self.cylinder_start_kpa,
            cylinder_end_kpa=self.cylinder_end_kpa,
            gas_used_kpa=gas,
            gas_method="cylinder_drop" if gas is not None else "valve_open_time",
            valve_open_s=valve_s,
            probes_sharing=self.probes_sharing,
            samples=self.samples,
            unusable_samples=self.unusable_samples,
            gap_s=round(self.gap_s, 3),
        )
