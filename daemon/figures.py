"""Per-cycle figures, updated snapshot by snapshot while a cycle runs.

Pure and immutable: ``tracker = tracker.update(probe_state, snapshot)`` returns
a new tracker; ``tracker.figures()`` gives the numbers for the cycle row.

Only usable readings count, and every time is a reading's own monotonic
determination time (``Reading.t_mono``), never wall-clock time. Times spent
below a threshold are integrated between consecutive usable samples, with the
crossing point interpolated linearly; a gap longer than ``max_gap_s`` between
usable samples is not integrated (it is reported as ``gap_s``), so a dead
link never counts as time in lethal ice. The gap rule follows the engine's
clock (``gap_rule_s``): 2 s, or ``stale_polls`` poll periods when that is
longer (a console polled slowly, or a simulated clock: at speed 50 a 20 Hz
poll is 2.5 simulated seconds). A time below a threshold that cannot be
computed (no usable reading, one only, or every interval a gap) is None, and
``figures_note`` says why: never 0.

Gas used is estimated from the **cylinder pressure drop** between the first
and last usable cylinder readings of the cycle (kPa; shared by all probes
that froze at the same time: ``probes_sharing``). When the cylinder reading
is not usable at both ends, ``gas_used_kpa`` is None and ``gas_method`` says
``valve_open_time``: the valve-open time is then the only estimate.

Cost: this runs for every probe at every poll (160 times a second for 8
probes at 20 Hz). A tracker is a fixed ``config`` plus two small tuples of
running values (``tip``, ``pressures``) rebuilt when they change;
``SnapshotFold`` checks the supply and cylinder readings, which are the same
for every probe, once per snapshot, and probes that share their pressure
figures (every probe of a phase) share the updated ones too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

from cryod.drivers.base import ProbeState, Reading, Snapshot

__all__ = [
    "LETHAL_C",
    "MIN_GAP_S",
    "CycleFigures",
    "FigureTracker",
    "SnapshotFold",
    "figures_note",
    "gap_rule_s",
]

#: the lethal-ice thresholds the figures report time below (domain.md)
LETHAL_C = (-20.0, -40.0)
_M20_C, _M40_C = LETHAL_C

#: an interval between usable tip readings longer than this is never integrated
MIN_GAP_S = 2.0


def gap_rule_s(*, poll_period_s: float, stale_polls: int) -> float:
    """The longest interval between usable tip readings that is integrated, on the
    engine's clock: 2 s, or ``stale_polls`` poll periods (the age at which the
    supervisor calls a reading stale) when the poll is slower than that allows."""
    return max(MIN_GAP_S, stale_polls * poll_period_s)


def figures_note(*, samples: int, spans: int, gap_s: float, max_gap_s: float) -> str | None:
    """Why the times below -20/-40 °C are missing or a lower bound (None: they are
    whole). ``spans``: intervals between usable readings that were integrated."""
    what = "times below -20/-40 °C"
    if samples == 0:
        return f"no usable tip reading: {what} not computed"
    if samples == 1:
        return f"one usable tip reading only: {what} not computed"
    if spans == 0:
        return (
            f"every interval between usable tip readings was longer than the "
            f"{max_gap_s:g} s gap rule: {what} not computed"
        )
    if gap_s > 0.0:
        return (
            f"{gap_s:.1f} s between usable tip readings not integrated (intervals over "
            f"{max_gap_s:g} s): {what} are a lower bound"
        )
    return None


@dataclass(frozen=True, slots=True)
class CycleFigures:
    phase: Literal["freeze", "thaw"]
    duration_s: float | None  # from phase start to the last sample
    min_tip_c: float | None
    time_to_target_s: float | None  # freeze: first crossing of the target
    below_m20_s: float | None  # None: not computed (figures_note says why)
    below_m40_s: float | None
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
    figures_note: str | None  # why a figure is missing or a lower bound (figures_note())

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


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackerConfig:
    """What is fixed for the whole cycle."""

    phase: Literal["freeze", "thaw"]
    start_mono_s: float  # when the valve opened (freeze) or the thaw began
    target_tip_c: float | None = None
    probes_sharing: int = 1
    max_gap_s: float = MIN_GAP_S  # the engine passes gap_rule_s(...)


class TipRun(NamedTuple):
    """Running tip figures of one probe (a tuple: rebuilt every poll, cheaply)."""

    last_t: float | None = None
    last_tip: float | None = None
    min_tip_c: float | None = None
    time_to_target_s: float | None = None
    below_m20_s: float = 0.0
    below_m40_s: float = 0.0
    thaw_to_0c_s: float | None = None
    samples: int = 0
    unusable_samples: int = 0
    gap_s: float = 0.0
    spans: int = 0  # intervals integrated (not gaps)


class Pressures(NamedTuple):
    """First and last usable supply and cylinder readings of the cycle, kPa."""

    supply_start_kpa: float | None = None
    supply_end_kpa: float | None = None
    cylinder_start_kpa: float | None = None
    cylinder_end_kpa: float | None = None


_TIP_START = TipRun()
_NO_PRESSURES = Pressures()


@dataclass(frozen=True, slots=True, kw_only=True)
class FigureTracker:
    """One probe's figures while its cycle runs; immutable, so an engine state
    stepped again from an older one still holds that state's figures.
    ``FigureTracker.start(...)`` starts a cycle; updates share ``config`` and
    rebuild only the running tuples."""

    config: TrackerConfig
    tip: TipRun = _TIP_START
    pressures: Pressures = _NO_PRESSURES  # one object: trackers started together share it
    valve_end_mono_s: float | None = None

    @classmethod
    def start(
        cls,
        *,
        phase: Literal["freeze", "thaw"],
        start_mono_s: float,
        target_tip_c: float | None = None,
        probes_sharing: int = 1,
        max_gap_s: float = MIN_GAP_S,
    ) -> FigureTracker:
        """A tracker for a cycle whose phase starts at ``start_mono_s``."""
        return cls(
            config=TrackerConfig(
                phase=phase,
                start_mono_s=start_mono_s,
                target_tip_c=target_tip_c,
                probes_sharing=probes_sharing,
                max_gap_s=max_gap_s,
            )
        )

    def _evolve(
        self, *, tip: TipRun, pressures: Pressures, valve_end_mono_s: float | None
    ) -> FigureTracker:
        """A copy with new running values; the config object is shared, not copied."""
        return FigureTracker(
            config=self.config, tip=tip, pressures=pressures, valve_end_mono_s=valve_end_mono_s
        )

    def update(self, probe: ProbeState, snapshot: Snapshot) -> FigureTracker:
        """Fold in one snapshot (ignored if determined before the phase start).

        For several probes of one snapshot, ``SnapshotFold(snapshot).update``
        checks the shared pressure readings once instead of once per probe."""
        return SnapshotFold(snapshot).update(self, probe)

    def valve_closed(self, mono_s: float) -> FigureTracker:
        """Note when the freeze (or active-thaw) valve was commanded closed."""
        if self.valve_end_mono_s is not None:
            return self
        return self._evolve(tip=self.tip, pressures=self.pressures, valve_end_mono_s=mono_s)

    def figures(self, end_mono_s: float | None = None) -> CycleFigures:
        cfg, tip, pr = self.config, self.tip, self.pressures
        gas: float | None = None
        if pr.cylinder_start_kpa is not None and pr.cylinder_end_kpa is not None:
            gas = round(pr.cylinder_start_kpa - pr.cylinder_end_kpa, 3)
        end = self.valve_end_mono_s if self.valve_end_mono_s is not None else end_mono_s
        valve_s = None
        if cfg.phase == "freeze" and end is not None:
            valve_s = round(max(0.0, end - cfg.start_mono_s), 3)
        integrated = tip.spans > 0
        return CycleFigures(
            phase=cfg.phase,
            duration_s=None if tip.last_t is None else round(tip.last_t - cfg.start_mono_s, 3),
            min_tip_c=tip.min_tip_c,
            time_to_target_s=None
            if tip.time_to_target_s is None
            else round(tip.time_to_target_s, 3),
            below_m20_s=round(tip.below_m20_s, 3) if integrated else None,
            below_m40_s=round(tip.below_m40_s, 3) if integrated else None,
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
            figures_note=figures_note(
                samples=tip.samples, spans=tip.spans, gap_s=tip.gap_s, max_gap_s=cfg.max_gap_s
            ),
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
        return tracker._evolve(tip=tip, pressures=new_pr, valve_end_mono_s=tracker.valve_end_mono_s)

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
        if not changed:
            return pr
        return Pressures(
            supply_start_kpa=supply_start,
            supply_end_kpa=supply_end,
            cylinder_start_kpa=cyl_start,
            cylinder_end_kpa=cyl_end,
        )


def _fold_tip(cfg: TrackerConfig, tip: TipRun, r: Reading) -> TipRun:
    """``tip`` with one tip reading folded in (``tip`` itself if it is ignored)."""
    t1 = r.t_mono
    start = cfg.start_mono_s
    if t1 < start:
        return tip
    v1 = r.value
    if not r.usable or v1 is None:
        return tip._replace(unusable_samples=tip.unusable_samples + 1)
    t0, v0 = tip.last_t, tip.last_tip
    if t0 is not None and t1 <= t0:
        return tip  # repeated or out-of-order sample: ignore
    min_c = v1 if tip.min_tip_c is None else min(tip.min_tip_c, v1)
    phase, target = cfg.phase, cfg.target_tip_c
    to_target_s, to_0c_s = tip.time_to_target_s, tip.thaw_to_0c_s
    m20_s, m40_s, gap_s, spans = tip.below_m20_s, tip.below_m40_s, tip.gap_s, tip.spans
    if t0 is None or v0 is None:
        # first usable sample: events already true count from this sample
        if phase == "freeze" and target is not None and v1 <= target:
            to_target_s = t1 - start
        if phase == "thaw" and v1 >= 0.0:
            to_0c_s = t1 - start
    else:
        within = t1 - t0 <= cfg.max_gap_s
        if within:
            m20_s += _time_below(t0, v0, t1, v1, _M20_C)
            m40_s += _time_below(t0, v0, t1, v1, _M40_C)
            spans += 1
        else:
            gap_s += t1 - t0
        if phase == "freeze" and target is not None and to_target_s is None and v1 <= target:
            tc = _cross(t0, v0, t1, v1, target) if within else t1
            to_target_s = max(tc, t0) - start
        if phase == "thaw" and to_0c_s is None and v1 >= 0.0:
            tc = _cross(t0, v0, t1, v1, 0.0) if within else t1
            to_0c_s = max(tc, t0) - start
    return TipRun(
        last_t=t1,
        last_tip=v1,
        min_tip_c=min_c,
        time_to_target_s=to_target_s,
        below_m20_s=m20_s,
        below_m40_s=m40_s,
        thaw_to_0c_s=to_0c_s,
        samples=tip.samples + 1,
        unusable_samples=tip.unusable_samples,
        gap_s=gap_s,
        spans=spans,
    )
