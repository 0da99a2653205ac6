"""Per-cycle figures on synthetic traces with known answers."""

from __future__ import annotations

import pytest

from cryod.daemon.figures import FigureTracker
from cryod.drivers.base import TcStatus, Validity

from .helpers import snap


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
    tr = feed(FigureTracker("freeze", 0.0, target_tip_c=-40.0), pts)
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
    f = feed(FigureTracker("thaw", 100.0), pts).figures()
    assert f.thaw_to_0c_s == pytest.approx(50.0 / 6.0, abs=1e-3)  # figures keep ms
    assert f.time_to_target_s is None
    assert f.valve_open_s is None


def test_invalid_samples_ignored_and_gaps_not_integrated() -> None:
    pts: list[tuple[float, float | None]] = [(0.0, -60.0), (0.5, -60.0)]
    pts += [(0.5 + i * 0.5, None) for i in range(1, 11)]  # 5 s of open thermocouple
    pts += [(6.0, -60.0), (6.5, -60.0)]
    f = feed(FigureTracker("freeze", 0.0, target_tip_c=-40.0, max_gap_s=2.0), pts).figures()
    assert f.unusable_samples == 10
    assert f.gap_s == pytest.approx(5.5)
    assert f.below_m40_s == pytest.approx(1.0)  # only the two valid half-second spans
    assert f.min_tip_c == -60.0


def test_readings_before_the_phase_start_are_ignored() -> None:
    f = feed(
        FigureTracker("freeze", 10.0, target_tip_c=-40.0), [(9.0, -90.0), (10.0, 30.0)]
    ).figures()
    assert f.min_tip_c == 30.0
    assert f.samples == 1


def test_gas_from_cylinder_drop_and_supply_ends() -> None:
    tr = FigureTracker("freeze", 0.0, target_tip_c=-40.0, probes_sharing=2)
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
    tr = FigureTracker("freeze", 0.0)
    for t in (0.0, 1.0, 2.0):
        s = snap(t, {1: -50.0}, cylinder=None)
        tr = tr.update(s.probe(1), s)
    f = tr.figures(end_mono_s=2.0)
    assert f.gas_used_kpa is None
    assert f.gas_method == "valve_open_time"
    assert f.valve_open_s == 2.0


def test_open_thermocouple_is_not_a_temperature() -> None:
    s = snap(1.0, tc={1: TcStatus.OPEN})
    f = FigureTracker("freeze", 0.0, target_tip_c=-40.0).update(s.probe(1), s).figures()
    assert f.min_tip_c is None
    assert f.samples == 0
    assert f.unusable_samples == 1
