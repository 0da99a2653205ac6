"""Per-cycle figures on synthetic traces with known answers."""

from __future__ import annotations

import pytest

from cryod.daemon.commands import CloseCycle, ProcedureOpened, RunProtocol
from cryod.daemon.engine import Phase
from cryod.daemon.figures import MIN_GAP_S, FigureTracker, gap_rule_s
from cryod.drivers.base import TcStatus, Validity

from .helpers import Harness, freeze, proto, snap, thaw


def feed(
    tr: FigureTracker, points: list[tuple[float, float | None]], **kw: object
) -> FigureTracker:
    for t, tip in points:
        validity = {1: Validity.VALID if tip is not None else Validity.INVALID}
        s = snap(t, {1: tip}, tip_validity=validity, **kw)  # type: ignore[arg-type]
        tr = tr.update(s.probe(1), s)
    return tr


def ramp(t0: float, t1: float, v0: float, v1: float, dt: float = 0.5) -> list[tuple[float, float]]:
    n = round((t1 - t0) / dt)
    return [(t0 + i * dt, v0 + (v1 - v0) * i / n) for i in range(n + 1)]


def test_freeze_trace_exact_figures() -> None:
    # 37 C falling 10 C/s to -103 C at t=14, then flat to t=30
    pts = ramp(0.0, 14.0, 37.0, -103.0) + [(14.0 + i * 0.5, -103.0) for i in range(1, 33)]
    tr = feed(FigureTracker.start(phase="freeze", start_mono_s=0.0, target_tip_c=-40.0), pts)
    tr = tr.valve_closed(30.0)
    f = tr.figures()
    assert f.min_tip_c == -103.0
    assert f.time_to_target_s == pytest.approx(7.7)  # (37 + 40) / 10
    assert f.below_m20_s == pytest.approx(30.0 - 5.7)  # crossed -20 at 5.7 s
    assert f.below_m40_s == pytest.approx(30.0 - 7.7)
    assert f.valve_open_s == pytest.approx(30.0)
    assert f.duration_s == pytest.approx(30.0)
    assert f.samples == len(pts)
    assert f.unusable_samples == 0


def test_thaw_to_zero_interpolated() -> None:
    pts = ramp(100.0, 110.0, -50.0, 10.0)  # 6 C/s: crosses 0 at 100 + 50/6
    f = feed(FigureTracker.start(phase="thaw", start_mono_s=100.0), pts).figures()
    assert f.thaw_to_0c_s == pytest.approx(50.0 / 6.0, abs=1e-3)  # figures keep ms
    assert f.time_to_target_s is None
    assert f.valve_open_s is None


def test_invalid_samples_ignored_and_gaps_not_integrated() -> None:
    pts: list[tuple[float, float | None]] = [(0.0, -60.0), (0.5, -60.0)]
    pts += [(0.5 + i * 0.5, None) for i in range(1, 11)]  # 5 s of open thermocouple
    pts += [(6.0, -60.0), (6.5, -60.0)]
    f = feed(
        FigureTracker.start(phase="freeze", start_mono_s=0.0, target_tip_c=-40.0, max_gap_s=2.0),
        pts,
    ).figures()
    assert f.unusable_samples == 10
    assert f.gap_s == pytest.approx(5.5)
    assert f.below_m40_s == pytest.approx(1.0)  # only the two valid half-second spans
    assert f.min_tip_c == -60.0


def test_readings_before_the_phase_start_are_ignored() -> None:
    f = feed(
        FigureTracker.start(phase="freeze", start_mono_s=10.0, target_tip_c=-40.0),
        [(9.0, -90.0), (10.0, 30.0)],
    ).figures()
    assert f.min_tip_c == 30.0
    assert f.samples == 1


def test_gas_from_cylinder_drop_and_supply_ends() -> None:
    tr = FigureTracker.start(phase="freeze", start_mono_s=0.0, target_tip_c=-40.0, probes_sharing=2)
    for i in range(11):
        t = float(i)
        s = snap(t, {1: -50.0}, cylinder=40000.0 - 3.0 * t, supply=25000.0 - i)
        tr = tr.update(s.probe(1), s)
    f = tr.figures(end_mono_s=10.0)
    assert f.gas_method == "cylinder_drop"
    assert f.gas_used_kpa == pytest.approx(30.0)
    assert f.supply_start_kpa == 25000.0
    assert f.supply_end_kpa == 24990.0
    assert f.probes_sharing == 2
    assert f.valve_open_s == pytest.approx(10.0)


def test_gas_falls_back_to_valve_time_without_cylinder_reading() -> None:
    tr = FigureTracker.start(phase="freeze", start_mono_s=0.0)
    for t in (0.0, 1.0, 2.0):
        s = snap(t, {1: -50.0}, cylinder=None)
        tr = tr.update(s.probe(1), s)
    f = tr.figures(end_mono_s=2.0)
    assert f.gas_used_kpa is None
    assert f.gas_method == "valve_open_time"
    assert f.valve_open_s == 2.0


def test_open_thermocouple_is_not_a_temperature() -> None:
    s = snap(1.0, tc={1: TcStatus.OPEN})
    f = (
        FigureTracker.start(phase="freeze", start_mono_s=0.0, target_tip_c=-40.0)
        .update(s.probe(1), s)
        .figures()
    )
    assert f.min_tip_c is None
    assert f.samples == 0
    assert f.unusable_samples == 1


# ---- the gap rule follows the engine's clock; a figure not computed is None ----------

SPEED_50_POLL_S = 0.05 * 50  # cryod demo --speed 50: a 20 Hz poll is 2.5 simulated seconds


def _cold_freeze(tracker: FigureTracker, dt_s: float, until_s: float) -> FigureTracker:
    """37 °C falling 25 °C per poll to -138 °C, held there, one reading per poll."""
    n = round(until_s / dt_s)
    return feed(tracker, [(i * dt_s, max(37.0 - 25.0 * i, -138.0)) for i in range(n + 1)])


def test_gap_rule_is_two_seconds_or_the_stale_age_of_a_slow_poll() -> None:
    assert gap_rule_s(poll_period_s=0.05, stale_polls=3) == MIN_GAP_S == 2.0
    assert gap_rule_s(poll_period_s=SPEED_50_POLL_S, stale_polls=3) == pytest.approx(7.5)
    assert gap_rule_s(poll_period_s=1.0, stale_polls=3) == pytest.approx(3.0)


def test_speed_50_freeze_counts_real_seconds_below_minus_20() -> None:
    """A -138 °C freeze sampled every 2.5 s: every interval was a 'gap' under the
    fixed 2 s rule (0 s below -20 °C recorded); under the engine's rule all count."""
    gap_s = gap_rule_s(poll_period_s=SPEED_50_POLL_S, stale_polls=3)
    start = FigureTracker.start(
        phase="freeze", start_mono_s=0.0, target_tip_c=-40.0, max_gap_s=gap_s
    )
    f = _cold_freeze(start, SPEED_50_POLL_S, 60.0).figures()
    assert f.min_tip_c == -138.0
    # crosses -20 °C at 5.7 s (37 - 25 t / 2.5 = -20), -40 °C at 7.7 s
    assert f.below_m20_s == pytest.approx(60.0 - 57.0 / 10.0)
    assert f.below_m40_s == pytest.approx(60.0 - 77.0 / 10.0)
    assert f.gap_s == 0.0
    assert f.figures_note is None


def test_every_interval_a_gap_is_none_with_its_reason_never_zero() -> None:
    start = FigureTracker.start(phase="freeze", start_mono_s=0.0, max_gap_s=2.0)
    f = _cold_freeze(start, SPEED_50_POLL_S, 60.0).figures()
    assert f.min_tip_c == -138.0
    assert f.below_m20_s is None
    assert f.below_m40_s is None
    assert f.gap_s == pytest.approx(60.0)
    assert f.figures_note == (
        "every interval between usable tip readings was longer than the 2 s gap rule: "
        "times below -20/-40 °C not computed"
    )


@pytest.mark.parametrize(
    ("points", "note"),
    [
        ([], "no usable tip reading: times below -20/-40 °C not computed"),
        ([(0.0, None), (0.5, None)], "no usable tip reading: times below -20/-40 °C not computed"),
        ([(1.0, -60.0)], "one usable tip reading only: times below -20/-40 °C not computed"),
    ],
)
def test_too_few_readings_is_none_with_its_reason(
    points: list[tuple[float, float | None]], note: str
) -> None:
    f = feed(FigureTracker.start(phase="freeze", start_mono_s=0.0), points).figures(5.0)
    assert (f.below_m20_s, f.below_m40_s, f.figures_note) == (None, None, note)


def test_some_gaps_make_a_lower_bound_and_say_so() -> None:
    pts = [(0.0, -60.0), (0.5, -60.0), (6.0, -60.0), (6.5, -60.0)]
    f = feed(FigureTracker.start(phase="freeze", start_mono_s=0.0, max_gap_s=2.0), pts).figures()
    assert f.below_m20_s == pytest.approx(1.0)
    assert f.figures_note == (
        "5.5 s between usable tip readings not integrated (intervals over 2 s): "
        "times below -20/-40 °C are a lower bound"
    )


def test_a_warm_cycle_is_zero_below_not_none() -> None:
    """0 s below -20 °C is a real figure when the readings were there and warm."""
    pts = ramp(0.0, 10.0, 20.0, 10.0)
    f = feed(FigureTracker.start(phase="thaw", start_mono_s=0.0), pts).figures()
    assert (f.below_m20_s, f.below_m40_s, f.figures_note) == (0.0, 0.0, None)


def test_engine_at_speed_50_records_real_seconds_below_minus_20() -> None:
    """The engine as ``cryod demo --speed 50`` runs it (20 Hz, 2.5 simulated seconds
    per poll), supervised: the freeze's CloseCycle carries the seconds below -20 °C
    and -40 °C, not 0 (before the gap rule followed the engine's clock, it did)."""
    h = Harness(poll_s=SPEED_50_POLL_S, supervise=True)
    h.feed(ProcedureOpened(), 0.0)
    h.tick(0.0, snap(0.0, master_open=False))
    h.feed(RunProtocol(proto([freeze(60.0, -40.0), thaw(30.0)]), (1,)), 0.0)
    assert h.state.phase is Phase.FREEZING
    t, i = 0.0, 0
    closes: list[CloseCycle] = []
    while not closes and t < 120.0:
        i += 1
        t = round(i * SPEED_50_POLL_S, 6)
        # at the floor the reading moves a little, as a live thermocouple's does
        tip = max(37.0 - 25.0 * i, -138.0 + 0.5 * (i % 3))
        cmds = h.tick(t, snap(t, {1: tip}, freeze_open=[1]))
        closes = [c for c in cmds if isinstance(c, CloseCycle)]
    assert not h.alarms, h.alarms
    (close,) = closes
    f = close.figures
    assert (close.outcome, f.phase, f.min_tip_c) == ("completed", "freeze", -138.0)
    assert f.samples == round(t / SPEED_50_POLL_S)
    # crosses -20 °C at 5.7 s and -40 °C at 7.7 s (37 - 10 t), then cold to the end
    assert f.below_m20_s == pytest.approx(t - 5.7)
    assert f.below_m40_s == pytest.approx(t - 7.7)
    assert t >= 60.0
    assert (f.gap_s, f.figures_note) == (0.0, None)
