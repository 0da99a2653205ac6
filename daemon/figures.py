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

Cost: this runs for every probe at every poll (160 times a second for 8
probes at 20 Hz). A tracker is a fixed ``config`` plus two small tuples of
running values (``tip``, ``pressures``) rebuilt in one step when they change;
``SnapshotFold`` checks the supply and cylinder readings, which are the same
for every probe, once per snapshot, and probes that share their pressure
figures (every probe of a phase) share the updated ones too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

from cryod.drivers.base import ProbeState, Reading, Snapshot

__all__ = ["LETHAL_C", "CycleFigures", "FigureTracker", "SnapshotFold"]

#: the lethal-ice thresholds the figures report time below (domain.md)
LETHAL_C = (-20.0, -40.0)
_M20_C, _M40_C = LETHAL_C


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
class TrackerConfig:
    """What is fixed for the whole cycle."""

    phase: Literal["freeze", "thaw"]
    start_mono_s: float  # when the valve opened (freeze) or the thaw began
    target_tip_c: float | None = None
    probes_sharing: int = 1
    max_gap_s: float = 2.0


class TipRun(NamedTuple):
    """Running tip figures of one probe (a tuple: rebuilt every poll, cheaply)."""

    last_t: float | None
    last_tip: float | None
    min_tip_c: float | None
    time_to_target_s: float | None
    below_m20_s: float
    below_m40_s: float
    thaw_to_0c_s: float | None
    samples: int
    unusable_samples: int
    gap_s: float


class Pressures(NamedTuple):
    """First and last usable supply and cylinder readings of the cycle, kPa."""

    supply_start_kpa: float | None
    supply_end_kpa: float | None
    cylinder_start_kpa: float | None
    cylinder_end_kpa: float | None


_TIP_START = TipRun(None, None, None, None, 0.0, 0.0, None, 0, 0, 0.0)
_NO_PRESSURES = Pressures(None, None, None, None)
_set = object.__setattr__


@dataclass(frozen=True, slots=True, init=False)
class FigureTracker:
    """One probe's figures while its cycle runs; immutable, so an engine state
    stepped again from an older one still holds that state's figures. The
    constructor starts a cycle; updates share ``config`` and rebuild only the
    running tuples."""

    config: TrackerConfig
    tip: TipRun
    pressures: Pressures
    valve_end_mono_s: float | None

    def __init__(
        self,
        phase: Literal["freeze", "thaw"],
        start_mono_s: float,
        target_tip_c: float | None = None,
        probes_sharing: int = 1,
        max_gap_s: float = 2.0,
    ) -> None:
        config = TrackerConfig(phase, start_mono_s, target_tip_c, probes_sharing, max_gap_s)
        _set(self, "config", config)
        _set(self, "tip", _TIP_START)
        _set(self, "pressures", _NO_PRESSURES)
        _set(self, "valve_end_mono_s", None)

    def _evolve(
        self, tip: TipRun, pressures: Pressures, valve_end_mono_s: float | None
    ) -> FigureTracker:
        """A copy with new running values; the config object is shared, not copied."""
        new = object.__new__(FigureTracker)
        _set(new, "config", self.config)
        _set(new, "tip", tip)
        _set(new, "pressures", pressures)
        _set(new, "valve_end_mono_s", valve_end_mono_s)
        return new

    def update(self, probe: ProbeState, snapshot: Snapshot) -> FigureTracker:
        """Fold in one snapshot (ignored if determined before the phase start).

        For several probes of one snapshot, ``SnapshotFold(snapshot).update``
        checks the shared pressure readings once instead of once per probe."""
        return SnapshotFold(snapshot).update(self, probe)

    def valve_closed(self, mono_s: float) -> FigureTracker:
        """Note when the freeze (or active-thaw) valve was commanded closed."""
        if self.valve_end_mono_s is not None:
            return self
        return self._evolve(self.tip, self.pressures, mono_s)

    def figures(self, end_mono_s: float | None = None) -> CycleFigures:
        cfg, tip, pr = self.config, self.tip, self.pressures
        gas: float | None = None
        if pr.cylinder_start_kpa is not None and pr.cylinder_end_kpa is not None:
            gas = round(pr.cylinder_start_kpa - pr.cylinder_end_kpa, 3)
        end = self.valve_end_mono_s if self.valve_end_mono_s is not None else end_mono_s
        valve_s = None
        if cfg.phase == "freeze" and end is not None:
            valve_s = round(max(0.0, end - cfg.start_mono_s), 3)
        return CycleFigures(
            phase=cfg.phase,
            duration_s=None if tip.last_t is None else round(tip.last_t - cfg.start_mono_s, 3),
            min_tip_c=tip.min_tip_c,
            time_to_target_s=None
            if tip.time_to_target_s is None
            else round(tip.time_to_target_s, 3),
            below_m20_s=round(tip.below_m20_s, 3),
            below_m40_s=round(tip.below_m40_s, 3),
            thaw_to_0c_s=None if tip.thaw_to_0c_s is None else round(tip.thaw_to_0c_s, 3),
            supply_start_kpa=pr.supply_start_kpa,
            supply_end_kpa=pr.supply_end_kpa,
            cylinder_start_kpa=pr.cylinder_start_kpa,
            cylinder_end_kpa=pr.cylinder_end_kpa,
            gas_used_kpa=gas,
            gas_method="cylinder_drop" if gas is not None else "valve_open_time",
            valve_open_s=valve_s,
            probes_sharing=cfg.probes_sharing,
            samples=tip.samples,
            unusable_samples=tip.unusable_samples,
            gap_s=round(tip.gap_s, 3),
        )


class SnapshotFold:
    """One snapshot, prepared once to be folded into every probe's tracker.

    Supply and cylinder pressure are the same for every probe: their readings
    are checked here once, and the pressure figures that trackers share (all
    probes of a phase start together) are updated once and stay shared."""

    __slots__ = ("_cyl_kpa", "_cyl_mono_s", "_memo", "_supply_kpa", "_supply_mono_s")

    def __init__(self, snapshot: Snapshot) -> None:
        supply, cyl = snapshot.supply_kpa, snapshot.cylinder_kpa
        self._supply_kpa = supply.value if supply.usable else None
        self._supply_mono_s = supply.t_mono
        self._cyl_kpa = cyl.value if cyl.usable else None
        self._cyl_mono_s = cyl.t_mono
        # (pressures in, phase start, pressures out) of the last tracker folded
        self._memo: tuple[Pressures, float, Pressures] | None = None

    def update(self, tracker: FigureTracker, probe: ProbeState) -> FigureTracker:
        """``tracker`` with this snapshot and ``probe``'s tip reading folded in
        (``tracker`` itself when nothing changes)."""
        cfg = tracker.config
        pr = tracker.pressures
        memo = self._memo
        if memo is not None and memo[0] is pr and memo[1] == cfg.start_mono_s:
            new_pr = memo[2]
        else:
            new_pr = self._pressures(pr, cfg.start_mono_s)
            self._memo = (pr, cfg.start_mono_s, new_pr)
        tip = _fold_tip(cfg, tracker.tip, probe.tip_c)
        if tip is tracker.tip and new_pr is pr:
            return tracker
        return tracker._evolve(tip, new_pr, tracker.valve_end_mono_s)

    def _pressures(self, pr: Pressures, start_mono_s: float) -> Pressures:
        supply_start, supply_end, cyl_start, cyl_end = pr
        changed = False
        kpa = self._supply_kpa
        if kpa is not None and not self._supply_mono_s < start_mono_s:
            supply_start = supply_start if supply_start is not None else kpa
            supply_end = kpa
            changed = True
        kpa = self._cyl_kpa
        if kpa is not None and not self._cyl_mono_s < start_mono_s:
            cyl_start = cyl_start if cyl_start is not None else kpa
            cyl_end = kpa
            changed = True
        return Pressures(supply_start, supply_end, cyl_start, cyl_end) if changed else pr


def _fold_tip(cfg: TrackerConfig, tip: TipRun, r: Reading) -> TipRun:
    """``tip`` with one tip reading folded in (``tip`` itself if it is ignored)."""
    t1 = r.t_mono
    start = cfg.start_mono_s
    if t1 < start:
        return tip
    last_t, last_tip, min_c, to_target_s, m20_s, m40_s, to_0c_s, n, bad, gap_s = tip
    v1 = r.value
    if not r.usable or v1 is None:
        return TipRun(
            last_t, last_tip, min_c, to_target_s, m20_s, m40_s, to_0c_s, n, bad + 1, gap_s
        )
    if last_t is not None and t1 <= last_t:
        return tip  # repeated or out-of-order sample: ignore
    min_c = v1 if min_c is None else min(min_c, v1)
    phase, target = cfg.phase, cfg.target_tip_c
    if last_t is None or last_tip is None:
        # first usable sample: events already true count from this sample
        if phase == "freeze" and target is not None and v1 <= target:
            to_target_s = t1 - start
        if phase == "thaw" and v1 >= 0.0:
            to_0c_s = t1 - start
        return TipRun(t1, v1, min_c, to_target_s, m20_s, m40_s, to_0c_s, n + 1, bad, gap_s)
    t0, v0 = last_t, last_tip
    max_gap_s = cfg.max_gap_s
    if t1 - t0 > max_gap_s:
        gap_s = gap_s + (t1 - t0)
    else:
        m20_s = m20_s + _time_below(t0, v0, t1, v1, _M20_C)
        m40_s = m40_s + _time_below(t0, v0, t1, v1, _M40_C)
    if phase == "freeze" and target is not None and to_target_s is None and v1 <= target:
        tc = _cross(t0, v0, t1, v1, target) if t1 - t0 <= max_gap_s else t1
        to_target_s = max(tc, t0) - start
    if phase == "thaw" and to_0c_s is None and v1 >= 0.0:
        tc = _cross(t0, v0, t1, v1, 0.0) if t1 - t0 <= max_gap_s else t1
        to_0c_s = max(tc, t0) - start
    return TipRun(t1, v1, min_c, to_target_s, m20_s, m40_s, to_0c_s, n + 1, bad, gap_s)
