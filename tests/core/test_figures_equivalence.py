"""The cycle figures as optimised (``daemon/figures.py``: tuples of running
values, pressures checked once per snapshot) against the plain reference below
(the tracker as it was: one frozen dataclass, ``dataclasses.replace`` per
snapshot), over random snapshot sequences: the figures must be exactly equal,
and the engine's ``CloseCycle`` figures must be the reference's."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryod.daemon.commands import (
    CloseCycle,
    ProcedureOpened,
    RunProtocol,
    Tick,
)
from cryod.daemon.engine import Phase, ProbeCycle
from cryod.daemon.figures import (
    LETHAL_C,
    CycleFigures,
    FigureTracker,
    SnapshotFold,
    figures_note,
)
from cryod.drivers.base import ProbeState, Reading, Snapshot, Validity

from .helpers import Harness, freeze, now, proto, snap, thaw

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- reference


def _ref_cross(t0: float, v0: float, t1: float, v1: float, level: float) -> float:
    if v1 == v0:
        return t1
    return t0 + (level - v0) * (t1 - t0) / (v1 - v0)


def _ref_time_below(t0: float, v0: float, t1: float, v1: float, level: float) -> float:
    if v0 < level and v1 < level:
        return t1 - t0
    if v0 >= level and v1 >= level:
        return 0.0
    tc = _ref_cross(t0, v0, t1, v1, level)
    return (tc - t0) if v0 < level else (t1 - tc)


@dataclass(frozen=True, slots=True)
class RefTracker:
    """The figure tracker before the optimisation, kept as the specification."""

    phase: Literal["freeze", "thaw"]
    start_mono_s: float
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
    spans: int = 0  # intervals integrated

    def update(self, probe: ProbeState, snapshot: Snapshot) -> RefTracker:
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
            return
        changes.update(
            last_t=t1,
            last_tip=v1,
            samples=self.samples + 1,
            min_tip_c=v1 if self.min_tip_c is None else min(self.min_tip_c, v1),
        )
        if self.last_t is None or self.last_tip is None:
            if self.phase == "freeze" and self.target_tip_c is not None and v1 <= self.target_tip_c:
                changes["time_to_target_s"] = t1 - self.start_mono_s
            if self.phase == "thaw" and v1 >= 0.0:
                changes["thaw_to_0c_s"] = t1 - self.start_mono_s
            return
        t0, v0 = self.last_t, self.last_tip
        if t1 - t0 > self.max_gap_s:
            changes["gap_s"] = self.gap_s + (t1 - t0)
        else:
            changes["spans"] = self.spans + 1
            changes["below_m20_s"] = self.below_m20_s + _ref_time_below(t0, v0, t1, v1, LETHAL_C[0])
            changes["below_m40_s"] = self.below_m40_s + _ref_time_below(t0, v0, t1, v1, LETHAL_C[1])
        target = self.target_tip_c
        if (
            self.phase == "freeze"
            and target is not None
            and self.time_to_target_s is None
            and v1 <= target
        ):
            tc = _ref_cross(t0, v0, t1, v1, target) if t1 - t0 <= self.max_gap_s else t1
            changes["time_to_target_s"] = max(tc, t0) - self.start_mono_s
        if self.phase == "thaw" and self.thaw_to_0c_s is None and v1 >= 0.0:
            tc = _ref_cross(t0, v0, t1, v1, 0.0) if t1 - t0 <= self.max_gap_s else t1
            changes["thaw_to_0c_s"] = max(tc, t0) - self.start_mono_s

    def valve_closed(self, mono_s: float) -> RefTracker:
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
            # no interval integrated: not computed (None), never 0
            below_m20_s=round(self.below_m20_s, 3) if self.spans else None,
            below_m40_s=round(self.below_m40_s, 3) if self.spans else None,
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
            figures_note=figures_note(
                samples=self.samples, spans=self.spans, gap_s=self.gap_s, max_gap_s=self.max_gap_s
            ),
        )


# ---------------------------------------------------------------- comparison


def _same(a: object, b: object) -> bool:
    """Equal, and as floats bit for bit in what a record keeps: NaN is NaN, -0.0 is not 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return type(a) is type(b) and a == b


def assert_same(new: CycleFigures, ref: CycleFigures) -> None:
    for f in fields(CycleFigures):
        a, b = getattr(new, f.name), getattr(ref, f.name)
        assert _same(a, b), f"{f.name}: optimised {a!r} != reference {b!r}"


def test_the_comparison_can_fail() -> None:
    f = RefTracker("freeze", 0.0).figures(1.0)
    assert not _same(0.0, -0.0)
    assert not _same(1, 1.0)
    assert _same(math.nan, math.nan)
    for bad in (replace(f, min_tip_c=-0.0), replace(f, valve_open_s=1.001)):
        with pytest.raises(AssertionError):
            assert_same(bad, f)


# ---------------------------------------------------------------- strategies

TIP_VALUES = st.one_of(
    st.floats(-160.0, 60.0),
    st.sampled_from([-60.0, -40.0, -20.0, -0.0, 0.0, 10.0]),
    st.floats(allow_nan=True, allow_infinity=True),
)
KPA_VALUES = st.one_of(st.floats(0.0, 45000.0), st.floats(allow_nan=True, allow_infinity=True))
STEPS_S = st.one_of(
    st.sampled_from([0.05, 0.05, 0.05, 0.5, 0.0, -0.05, 1.99, 2.0, 2.01, 3.0]),
    st.floats(-1.0, 4.0),
)
AGES_S = st.sampled_from([0.0, 0.0, 0.0, 0.05, 3.0])


@st.composite
def readings(draw: st.DrawFn, t: float, values: st.SearchStrategy[float], unit: str) -> Reading:
    validity = draw(st.sampled_from(list(Validity)))
    value = draw(values if validity.usable else st.none() | values)
    age_s = draw(AGES_S)
    return Reading(value, unit, t - age_s, 1.7e9 + t, validity)


@st.composite
def snapshots(draw: st.DrawFn, t: float, n_probes: int) -> Snapshot:
    base = snap(t, probes=n_probes)
    probes = tuple(replace(p, tip_c=draw(readings(t, TIP_VALUES, "degC"))) for p in base.probes)
    return replace(
        base,
        supply_kpa=draw(readings(t, KPA_VALUES, "kPa")),
        cylinder_kpa=draw(readings(t, KPA_VALUES, "kPa")),
        probes=probes,
    )


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "phase": draw(st.sampled_from(["freeze", "thaw"])),
        "start_mono_s": draw(st.floats(0.0, 3.0)),
        "target_tip_c": draw(st.none() | st.floats(-150.0, 0.0)),
        "probes_sharing": draw(st.integers(1, 8)),
        "max_gap_s": draw(st.sampled_from([2.0, 0.5, 1.0])),
    }


@st.composite
def traces(draw: st.DrawFn, n_probes: int) -> list[tuple[str, Any]]:
    """Snapshots at wandering times (repeats, steps back, gaps), with valve
    closes and figure reads in between."""
    t = draw(st.floats(0.0, 3.0))
    ops: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(["snap", "snap", "snap", "snap", "close", "read"]))
        if kind == "snap":
            t += draw(STEPS_S)
            ops.append(("snap", draw(snapshots(t, n_probes))))
        elif kind == "close":
            ops.append(("close", t + draw(st.floats(-1.0, 1.0))))
        else:
            ops.append(("read", draw(st.none() | st.floats(-1.0, 60.0))))
    return ops


# ---------------------------------------------------------------- properties


@PROPERTY
@given(cfg=configs(), ops=traces(1), end=st.none() | st.floats(-1.0, 60.0))
def test_one_tracker_equals_the_reference(
    cfg: dict[str, Any], ops: list[tuple[str, Any]], end: float | None
) -> None:
    new, ref = FigureTracker.start(**cfg), RefTracker(**cfg)
    for kind, arg in ops:
        if kind == "snap":
            new, ref = new.update(arg.probe(1), arg), ref.update(arg.probe(1), arg)
        elif kind == "close":
            new, ref = new.valve_closed(arg), ref.valve_closed(arg)
        at = arg if kind == "read" else end
        assert_same(new.figures(at), ref.figures(at))


@st.composite
def tracker_sets(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[tuple[str, Any]]]:
    """Up to 8 trackers, with one phase start or several, and their trace."""
    cfgs = draw(st.lists(configs(), min_size=1, max_size=8))
    if draw(st.booleans()):
        cfgs = [{**c, "start_mono_s": cfgs[0]["start_mono_s"]} for c in cfgs]
    return cfgs, draw(traces(len(cfgs)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    trackers=tracker_sets(),
    skips=st.sets(st.tuples(st.integers(0, 30), st.integers(0, 7))),
    end=st.none() | st.floats(-1.0, 60.0),
)
def test_one_fold_per_snapshot_equals_the_reference_per_probe(
    trackers: tuple[list[dict[str, Any]], list[tuple[str, Any]]],
    skips: set[tuple[int, int]],
    end: float | None,
) -> None:
    """Trackers with shared or different phase starts, some skipping some
    snapshots (their pressure figures then differ), folded by one
    ``SnapshotFold`` per snapshot."""
    cfgs, ops = trackers
    news = [FigureTracker.start(**c) for c in cfgs]
    refs = [RefTracker(**c) for c in cfgs]
    for i, (kind, arg) in enumerate(ops):
        if kind == "snap":
            fold = SnapshotFold(arg)
            for k in range(len(news)):
                if (i, k) not in skips:
                    news[k] = fold.update(news[k], arg.probe(k + 1))
                    refs[k] = refs[k].update(arg.probe(k + 1), arg)
        elif kind == "close":
            news = [n.valve_closed(arg) for n in news]
            refs = [r.valve_closed(arg) for r in refs]
    for n, r in zip(news, refs, strict=True):
        assert_same(n.figures(end), r.figures(end))


def test_the_coldest_tip_is_the_first_of_equals() -> None:
    """``min`` keeps the earlier of two equal values: 0.0 then -0.0 stays 0.0."""
    new, ref = FigureTracker.start(phase="freeze", start_mono_s=0.0), RefTracker("freeze", 0.0)
    for t, tip in ((1.0, 0.0), (1.5, -0.0), (2.0, math.nan), (2.5, -0.0)):
        s = snap(t, {1: tip})
        new, ref = new.update(s.probe(1), s), ref.update(s.probe(1), s)
        assert_same(new.figures(), ref.figures())
    coldest = new.figures().min_tip_c
    assert coldest is not None
    assert math.copysign(1.0, coldest) == 1.0


def test_pressures_are_checked_once_and_shared() -> None:
    """Probes of one phase end up holding the same pressure figures object."""
    s = snap(1.0, {1: -30.0, 2: -35.0}, cylinder=39990.0)
    fold = SnapshotFold(s)
    a = fold.update(FigureTracker.start(phase="freeze", start_mono_s=0.0), s.probe(1))
    b = fold.update(FigureTracker.start(phase="freeze", start_mono_s=0.0), s.probe(2))
    c = fold.update(
        FigureTracker.start(phase="freeze", start_mono_s=2.0), s.probe(2)
    )  # later start: not updated
    assert a.pressures is b.pressures
    assert a.pressures.cylinder_end_kpa == 39990.0
    assert c.pressures.cylinder_end_kpa is None


# ---------------------------------------------------------------- the engine


@st.composite
def engine_traces(draw: st.DrawFn) -> tuple[tuple[int, ...], list[Snapshot]]:
    probes = tuple(sorted(draw(st.sets(st.integers(1, 8), min_size=1, max_size=8))))
    t, out = 0.0, []
    for _ in range(draw(st.integers(1, 90))):
        t = round(t + draw(st.sampled_from([0.05, 0.5, 0.5, 1.0, 2.5])), 3)
        n = draw(st.sampled_from([8, 8, 8, 8, max(probes) - 1])) or 8
        s = draw(snapshots(t, n))
        # mostly valid and plausible (so the run goes on), sometimes anything
        if draw(st.integers(0, 3)):
            tips = {p: draw(st.floats(-120.0, 40.0)) for p in range(1, n + 1)}
            s = replace(snap(t, tips, probes=n), cylinder_kpa=s.cylinder_kpa)
        out.append(s)
    return probes, out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=engine_traces())
def test_engine_close_cycle_figures_equal_the_reference(
    trace: tuple[tuple[int, ...], list[Snapshot]],
) -> None:
    """Every CloseCycle of a freeze-thaw-freeze-thaw run carries the figures the
    reference computes from the same snapshots, from the same phase start."""
    probes, snaps = trace
    h = Harness()
    h.feed(ProcedureOpened(), 0.0)
    h.tick(0.0)
    h.feed(RunProtocol(proto([freeze(6, -40.0), thaw(3), freeze(5, -60.0), thaw(4)]), probes), 0.0)
    assert h.state.phase is Phase.FREEZING
    refs: dict[int, RefTracker] = {}
    closes: list[tuple[CloseCycle, RefTracker]] = []

    def open_refs(t: float) -> None:
        run = h.state.run
        if run is None or h.state.phase not in (Phase.FREEZING, Phase.THAWING):
            return
        step = run.step
        for c in run.cycles:
            if c.cycle_ref not in refs:
                phase: Literal["freeze", "thaw"] = (
                    "freeze" if h.state.phase is Phase.FREEZING else "thaw"
                )
                target = getattr(step, "target_tip_c", None) if phase == "freeze" else None
                refs[c.cycle_ref] = RefTracker(phase, t, target, len(run.probes))

    open_refs(0.0)
    for s in snaps:
        run = h.state.run
        if run is not None and h.state.phase in (Phase.FREEZING, Phase.THAWING):
            for c in run.cycles:
                if c.probe <= len(s.probes):
                    refs[c.cycle_ref] = refs[c.cycle_ref].update(s.probe(c.probe), s)
        cmds = h.feed(Tick(s), s.t_mono)
        for cmd in cmds:
            if isinstance(cmd, CloseCycle):
                assert cmd.cycle_ref in refs, f"cycle {cmd.cycle_ref} closed without a tracker"
                ref = refs[cmd.cycle_ref]
                if ref.phase == "freeze":
                    ref = ref.valve_closed(s.t_mono)
                closes.append((cmd, ref))
                assert_same(cmd.figures, ref.figures(s.t_mono))
        open_refs(s.t_mono)
    assert closes or h.state.phase is Phase.FREEZING


def test_engine_states_stay_values() -> None:
    """Stepping an older state again gives the same figures: a later step from
    the same state (another branch) changes nothing in it."""
    h = Harness()
    h.feed(ProcedureOpened(), 0.0)
    h.tick(0.0)
    h.feed(RunProtocol(proto([freeze(60, -40.0)]), (1, 2)), 0.0)
    for i in range(1, 6):
        h.tick(i * 0.5, snap(i * 0.5, {1: -10.0 * i, 2: -12.0 * i}))
    base = h.state
    cold = Tick(snap(3.5, {1: -90.0, 2: -95.0}, cylinder=39000.0))
    warm = Tick(snap(3.5, {1: 20.0, 2: 25.0}, cylinder=39500.0))
    first, _ = h.engine.step(base, cold, now(3.5))
    other, _ = h.engine.step(base, warm, now(3.5))
    again, _ = h.engine.step(base, cold, now(3.5))
    assert first == again
    assert first != other

    def mins(state: Any) -> list[float | None]:
        return [c.tracker.figures().min_tip_c for c in state.run.cycles]

    assert mins(first) == [-90.0, -95.0]
    assert mins(other) == [-50.0, -60.0]
    assert mins(base) == [-50.0, -60.0]


# ---------------------------------------------------------------- ProbeCycle


def test_with_tracker_is_replace() -> None:
    """``with_tracker`` is ``replace``, and keeps the cycle itself for the same tracker
    (``_fold_figures`` relies on it to tell that nothing changed)."""
    tr = FigureTracker.start(phase="freeze", start_mono_s=1.0, target_tip_c=-40.0, probes_sharing=3)
    c = ProbeCycle(probe=7, cycle_ref=42, committed=True, limits_ok=True, thaw_on=True)
    assert c.with_tracker(tr) == replace(c, tracker=tr)
    assert c.with_tracker(tr).tracker is tr
    same = c.with_tracker(tr)
    assert same.with_tracker(tr) is same
