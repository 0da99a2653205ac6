"""Physics sanity of the simulated console (simulated time, no sleeping)."""

from __future__ import annotations

import statistics

import pytest

from cryod.simulators import physics

from .helpers import make, run, start_freeze, variant


def test_first_order_is_exact_whatever_the_step() -> None:
    one = physics.first_order(35.0, -140.0, 12.0, 10.0)
    many = 35.0
    for _ in range(1000):
        many = physics.first_order(many, -140.0, 12.0, 0.01)
    assert one == pytest.approx(many, abs=1e-9)
    assert physics.first_order(5.0, 0.0, 1.0, 0.0) == 5.0


def test_equilibrium_warmer_at_lower_supply() -> None:
    argon = physics.GASES["argon"]
    nominal = physics.freeze_equilibrium_c(argon, 25000.0, 25000.0)
    half = physics.freeze_equilibrium_c(argon, 12500.0, 25000.0)
    assert nominal == pytest.approx(-140.0)
    assert nominal < half < 0.0
    assert physics.freeze_equilibrium_c(argon, 0.0, 25000.0) == pytest.approx(physics.BODY_C)


def test_argon_tip_below_minus_100_within_60_s() -> None:
    c, clock = make()
    run(c, clock, 5.0)
    start = c.probe(1).tip_c
    assert start is not None
    assert 33.0 <= start <= 37.5
    start_freeze(c)
    t0 = c.now_s
    crossed = None
    while c.now_s - t0 < 60.0:
        run(c, clock, 0.5)
        tip = c.probe(1).tip_c
        assert tip is not None
        if tip < -100.0:
            crossed = c.now_s - t0
            break
    assert crossed is not None, f"tip still at {c.probe(1).tip_c} after 60 s"
    assert crossed < 60.0
    run(c, clock, 60.0)
    tip = c.probe(1).tip_c
    assert tip is not None
    assert -145.0 < tip < -130.0
    # other probes were never opened and stay warm
    other = c.probe(2).tip_c
    assert other is not None
    assert other > 30.0


def test_no_gas_without_master_valve() -> None:
    c, clock = make()
    c.set_lease_timeout(1000)
    c.set_freeze(1, True)
    run(c, clock, 30.0)
    tip = c.probe(1).tip_c
    assert tip is not None
    assert tip > 30.0
    assert c.true_state()["probes"][0]["gas_flowing"] is False


def test_supply_and_cylinder_fall_while_freezing() -> None:
    c, clock = make()
    run(c, clock, 2.0)
    cyl0 = c.true_state()["supply"]["cylinder_kpa"]
    sup_idle = statistics.mean(run(c, clock, 2.0, every=c.supply_kpa))
    start_freeze(c, 1)
    c.set_freeze(2, True)
    sup_flow = statistics.mean(run(c, clock, 60.0, every=c.supply_kpa)[-100:])
    cyl1 = c.true_state()["supply"]["cylinder_kpa"]
    assert sup_flow < sup_idle - 200.0  # regulator droop under flow
    # two probes for ~60 s at 2.6 kPa/s each
    assert 250.0 < cyl0 - cyl1 < 370.0
    lo, hi = c.profile.console.supply_working_kpa
    assert lo < sup_flow < hi
    assert not c.supply_low()
    c.set_freeze(1, False)
    c.set_freeze(2, False)
    run(c, clock, 10.0)
    assert c.true_state()["supply"]["cylinder_kpa"] == pytest.approx(cyl1, abs=30.0)


def test_empty_cylinder_drops_supply_and_sets_supply_low() -> None:
    gas = physics.GASES["argon"]
    s = physics.SupplyPhysics(cylinder_kpa=21000.0, supply_kpa=25850.0)
    for _ in range(100):
        physics.step_supply(
            s,
            gas=gas,
            set_point_kpa=25850.0,
            flowing=1,
            leak_kpa_per_s=0.0,
            cap_kpa=None,
            force_kpa=None,
            dt_s=0.05,
        )
    assert s.supply_kpa < 20700.0  # the regulator cannot hold its set point
    c, clock = make()
    c.inject("supply-leak", value=2000.0)
    run(c, clock, 12.0)
    assert c.supply_low()
    assert c.cylinder_kpa() < 20700.0


def test_passive_thaw_shows_the_zero_plateau() -> None:
    c, clock = make()
    start_freeze(c)
    run(c, clock, 90.0)
    c.set_freeze(1, False)
    samples = run(c, clock, 240.0, every=lambda: (c.now_s, c.true_state()["probes"][0]["tip_c"]))
    # warms quickly to about 0 C ...
    reach = next(t for t, tip in samples if tip > -3.0)
    t_close = samples[0][0]
    assert reach - t_close < 40.0
    # ... plateaus there while the ice ball melts ...
    plateau = [t for t, tip in samples if -3.0 <= tip <= 1.0]
    assert len(plateau) * 0.1 > 25.0  # > 25 simulated seconds within a few degrees of 0 C
    # ... then rises toward body temperature
    assert samples[-1][1] > 25.0
    late = [tip for t, tip in samples if t > plateau[-1]]
    assert late == sorted(late)


def test_helium_active_thaw_is_fast() -> None:
    c, clock = make()
    start_freeze(c)
    run(c, clock, 60.0)
    c.set_freeze(1, False)
    c.set_thaw(1, True)
    run(c, clock, 15.0)
    tip = c.probe(1).tip_c
    assert tip is not None
    assert 20.0 < tip < 40.0


def test_electric_thaw_needs_no_master() -> None:
    c, clock = make(variant(capabilities=["active_thaw_electric"]))
    start_freeze(c)
    run(c, clock, 30.0)
    c.set_freeze(1, False)
    c.set_master(False)
    c.set_thaw(1, True)
    run(c, clock, 40.0)
    tip = c.probe(1).tip_c
    assert tip is not None
    assert tip > 25.0


def test_n2o_console_freezes_near_its_boiling_point() -> None:
    c, clock = make(variant(gas="n2o", supply_working_kpa=(4100.0, 5500.0), supply_max_kpa=6000.0))
    start_freeze(c)
    run(c, clock, 90.0)
    tip = c.probe(1).tip_c
    assert tip is not None
    assert -92.0 < tip < -80.0
    assert 4100.0 < c.supply_kpa() < 5500.0


def test_return_pressure_flowing_and_idle() -> None:
    c, clock = make()
    run(c, clock, 3.0)
    assert c.probe(1).return_kpa < 2.0
    start_freeze(c)
    run(c, clock, 5.0)
    assert 70.0 <= c.probe(1).return_kpa <= 100.0
    c.set_freeze(1, False)
    run(c, clock, 5.0)
    assert c.probe(1).return_kpa < 2.0


def test_skin_cools_slightly_while_probes_freeze() -> None:
    c, clock = make()
    run(c, clock, 2.0)
    skin0 = c.true_state()["skin"]["skin_c"]
    c.set_lease_timeout(1000)
    c.set_master(True)
    for n in (1, 2, 3):
        c.set_freeze(n, True)
    run(c, clock, 300.0)
    skin1 = c.true_state()["skin"]["skin_c"]
    assert 0.5 < skin0 - skin1 < 3.0
    measured = c.skin_c()
    assert measured is not None
    assert abs(measured - skin1) < 1.0


def test_sensor_noise_quantisation_and_seed() -> None:
    c, clock = make(seed=7)

    def sample() -> tuple[float | None, float]:
        return c.probe(3).tip_c, c.true_state()["probes"][2]["tip_c"]

    pairs = run(c, clock, 30.0, every=sample)
    readings = [m for m, _ in pairs]
    assert all(m is not None and abs(m * 10 - round(m * 10)) < 1e-6 for m in readings)
    residuals = [m - t for m, t in pairs if m is not None]
    assert 0.1 < statistics.pstdev(residuals) < 0.4  # ~0.2 C gaussian noise
    assert abs(statistics.mean(residuals)) < 0.05
    same, clock2 = make(seed=7)
    assert run(same, clock2, 30.0, every=lambda: same.probe(3).tip_c) == readings
    other, clock3 = make(seed=8)
    assert run(other, clock3, 30.0, every=lambda: other.probe(3).tip_c) != readings
