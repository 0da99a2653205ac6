"""The console model: lease, refusals, latched faults, fault kinds, per-probe
limits and the event log, driven by hand (no sleeping, no wire)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from cryod.drivers.base import ConsoleLimits, TcStatus, TripCause
from cryod.simulators.console import COMMS_FAULTS, FAULT_KINDS, CommandRejected, SimConsole

from .helpers import TICK_S, Clock, make, run, start_freeze, tick, variant


def tip(c: SimConsole, n: int = 1) -> float:
    value = c.probe(n).tip_c
    assert value is not None, f"probe {n} has no valid tip reading"
    return value


def true_tip(c: SimConsole, n: int = 1) -> float:
    return float(c.true_state()["probes"][n - 1]["tip_c"])


def valve_events(c: SimConsole, valve: str = "freeze") -> list[dict]:
    return [e for e in c.events("valve") if e["valve"] == valve]


# ---- lease ---------------------------------------------------------------


def test_lease_disarmed_at_power_on_refuses_every_valve() -> None:
    c, _ = make()
    assert not c.lease_armed()
    assert c.lease_remaining_ms() == 0
    for call in (
        lambda: c.set_master(True),
        lambda: c.set_freeze(1, True),
        lambda: c.set_thaw(1, True),
    ):
        with pytest.raises(CommandRejected) as exc:
            call()
        assert exc.value.code == "lease_disarmed"
    assert not c.master_open()
    assert not c.probe(1).freeze_open
    c.set_freeze(1, False)  # closing is always allowed
    assert [e["code"] for e in c.events("command_rejected")] == ["lease_disarmed"] * 3


def test_lease_timeout_range_is_enforced_not_clamped() -> None:
    c, _ = make()
    lo, hi = c.profile.console.lease_timeout_ms_range
    for bad in (lo - 1, hi + 1, -5):
        with pytest.raises(CommandRejected) as exc:
            c.set_lease_timeout(bad)
        assert exc.value.code == "out_of_range"
    assert c.lease_timeout_ms() == 0
    c.set_lease_timeout(lo)
    assert c.lease_timeout_ms() == lo
    assert c.lease_armed()


def test_lease_expiry_closes_everything_within_one_tick_and_latches() -> None:
    c, clock = make()
    c.set_lease_timeout(200)
    c.set_master(True)
    c.set_freeze(1, True)
    c.set_freeze(3, True)
    c.set_thaw(2, True)
    deadline = clock.t + 0.2
    ticks = 0
    while c.master_open():
        # reads of every kind must not renew the lease
        c.probe(1), c.faults(), c.lease_remaining_ms(), c.true_state(), c.supply_kpa()
        c.comms_faults()
        tick(c, clock)
        ticks += 1
        assert ticks < 100
    assert clock.t >= deadline
    assert clock.t - deadline < TICK_S + 1e-9  # within one tick after the timeout
    assert c.faults() == {"lease_expired"}
    assert c.lease_expiry_count() == 1
    assert c.lease_remaining_ms() == 0
    assert not any(c.probe(n).freeze_open or c.probe(n).thaw_on for n in range(1, 9))
    expired = c.events("lease_expired")
    assert len(expired) == 1
    assert expired[0]["mono_t_s"] - deadline < TICK_S + 1e-6
    # the event names the renewing write (the last one, set_thaw), a lease before the deadline
    assert expired[0]["renewed_mono_t_s"] == pytest.approx(deadline - 0.2, abs=1e-6)
    causes = {(e["valve"], e["probe"]): e["cause"] for e in c.events("valve") if not e["open"]}
    assert causes == {
        ("freeze", 1): "lease_expired",
        ("freeze", 3): "lease_expired",
        ("thaw", 2): "lease_expired",
        ("master", None): "lease_expired",
    }
    assert c.events("fault_latched")[-1]["fault"] == "lease_expired"
    # it stays latched: no valve opens until the host resets it
    with pytest.raises(CommandRejected) as exc:
        c.set_master(True)
    assert exc.value.code == "fault_latched"
    tick(c, clock, 50)
    assert c.lease_expiry_count() == 1  # counted once
    c.reset_faults()
    assert c.faults() == frozenset()
    assert c.lease_remaining_ms() > 150  # the reset write renewed it
    c.set_master(True)
    assert c.master_open()


def test_writes_renew_the_lease() -> None:
    c, clock = make()
    c.set_lease_timeout(200)
    c.set_master(True)
    writes = [
        lambda: c.renew_lease(),
        lambda: c.set_freeze(2, False),
        lambda: c.set_master(True),
        lambda: c.write_pending_limit(4, "consecutive", 3),
    ]
    for i in range(200):  # 2 s of wall time, a write every 150 ms
        tick(c, clock)
        if i % 15 == 0:
            writes[(i // 15) % len(writes)]()
    assert c.faults() == frozenset()
    assert c.master_open()


def test_rejected_writes_do_not_renew() -> None:
    c, clock = make()
    c.set_lease_timeout(200)
    c.set_master(True)
    for _ in range(30):
        tick(c, clock)
        with pytest.raises(CommandRejected):
            c.set_lease_timeout(5)
        with pytest.raises(CommandRejected):
            c.set_freeze(99, True)
    assert "lease_expired" in c.faults()
    assert not c.master_open()


def test_a_write_after_the_deadline_cannot_rescue_the_lease() -> None:
    c, clock = make()
    c.set_lease_timeout(200)
    c.set_master(True)
    clock.t += 0.25  # the deadline passes between two ticks
    c.renew_lease()
    assert c.faults() == {"lease_expired"}
    assert not c.master_open()


def test_disarm_refused_while_a_valve_is_open() -> None:
    c, _ = make()
    c.set_lease_timeout(1000)
    c.set_master(True)
    with pytest.raises(CommandRejected) as exc:
        c.set_lease_timeout(0)
    assert exc.value.code == "cause_present"
    assert c.lease_armed()
    c.set_master(False)
    c.set_lease_timeout(0)
    assert not c.lease_armed()
    assert [(e["armed"], e["timeout_ms"]) for e in c.events("lease")] == [(True, 1000), (False, 0)]


# ---- hard limit ------------------------------------------------------------


def test_overpressure_closes_every_valve_and_reset_needs_the_cause_gone() -> None:
    c, clock = make()
    start_freeze(c, 1)
    c.set_freeze(2, True)
    c.inject("overpressure")
    run(c, clock, 5.0)
    assert c.supply_kpa() > c.profile.console.supply_max_kpa
    assert "overpressure" in c.faults()
    assert not c.master_open()
    assert not c.probe(1).freeze_open
    assert not c.probe(2).freeze_open
    assert {e["cause"] for e in c.events("valve") if not e["open"]} == {"hard_limit"}
    with pytest.raises(CommandRejected) as exc:
        c.reset_faults()
    assert exc.value.code == "cause_present"
    assert "overpressure" in c.faults()
    c.clear("overpressure")
    run(c, clock, 5.0)
    assert c.supply_kpa() < c.profile.console.supply_max_kpa
    c.reset_faults()
    assert c.faults() == frozenset()
    assert c.events("fault_reset")[-1]["faults"] == ["overpressure"]


# ---- fault kinds -------------------------------------------------------------


def test_every_fault_kind_is_accepted_and_validated() -> None:
    c, _ = make()
    for kind in FAULT_KINDS:
        value = -10.0 if kind == "temp-offset" else None
        c.inject(kind, value=value)
    assert {k for k, _, _ in c.injected()} == set(FAULT_KINDS)
    assert set(c.comms_faults()) == set(COMMS_FAULTS)
    assert c.comms_faults()["comms-slow"] == 500.0
    c.clear()
    assert c.injected() == []
    assert len(c.events("fault_cleared")) == len(FAULT_KINDS)
    with pytest.raises(ValueError, match="unknown fault kind"):
        c.inject("tc-melted")
    with pytest.raises(ValueError, match="takes no probe"):
        c.inject("supply-low", probe=1)
    with pytest.raises(ValueError, match="outside"):
        c.inject("tc-open", probe=9)
    with pytest.raises(ValueError, match="needs a value"):
        c.inject("temp-offset")
    with pytest.raises(ValueError, match="hard limit"):
        c.inject("overpressure", value=1000.0)
    with pytest.raises(ValueError, match="for_s"):
        c.inject("tc-open", for_s=-1.0)


def test_tc_open_and_short_report_status_and_no_value() -> None:
    c, clock = make()
    c.inject("tc-open", probe=2)
    c.inject("tc-short", probe=5)
    tick(c, clock)
    assert c.probe(2).tc_status is TcStatus.OPEN
    assert c.probe(2).tip_c is None
    assert c.probe(5).tc_status is TcStatus.SHORT
    assert c.probe(5).tip_c is None
    assert c.probe(1).tc_status is TcStatus.OK
    c.inject("tc-open")  # probe None = every probe
    tick(c, clock)
    assert all(c.probe(n).tc_status is TcStatus.OPEN for n in range(1, 9))
    c.clear("tc-open")
    tick(c, clock)
    assert c.probe(2).tc_status is TcStatus.OK
    assert c.probe(5).tc_status is TcStatus.SHORT
    assert c.true_state()["probes"][1]["tip_c"] > 30.0  # the truth is unaffected


def test_tc_stuck_freezes_the_reading() -> None:
    c, clock = make()
    run(c, clock, 1.0)
    c.inject("tc-stuck", probe=1)
    tick(c, clock)
    stuck = tip(c)
    start_freeze(c)
    readings = run(c, clock, 30.0, every=lambda: tip(c))
    assert set(readings) == {stuck}
    assert true_tip(c) < -100.0
    c.clear("tc-stuck")
    tick(c, clock)
    assert tip(c) < -100.0


def test_tc_noise_and_temp_offset() -> None:
    c, clock = make()
    c.inject("tc-noise", probe=1, value=5.0)
    c.inject("temp-offset", probe=2, value=-25.0)

    def sample() -> tuple[float, float, float, float]:
        return tip(c, 1), true_tip(c, 1), tip(c, 2), true_tip(c, 2)

    rows = run(c, clock, 20.0, every=sample)
    noise = statistics.pstdev(m - t for m, t, _, _ in rows)
    assert 4.0 < noise < 6.0
    offset = statistics.mean(m - t for _, _, m, t in rows)
    assert offset == pytest.approx(-25.0, abs=0.1)
    c.clear()
    rows = run(c, clock, 10.0, every=sample)
    assert statistics.pstdev(m - t for m, t, _, _ in rows) < 0.4
    assert statistics.mean(m - t for _, _, m, t in rows) == pytest.approx(0.0, abs=0.1)


def test_a_sensor_fault_is_logged_as_sensed_at_the_first_tick_that_samples_it() -> None:
    """The reading changes at the console's next sample, not at the injection:
    ``fault_sensed`` marks that tick once per injection (benchmarks time crossings
    from it); faults that are not sensed by sampling never log it."""
    c, clock = make()
    tick(c, clock)
    before = tip(c, 2)
    clock.t += TICK_S / 2  # between two ticks
    c.inject("temp-offset", probe=2, value=-40.0)
    c.inject("supply-leak", value=5.0)
    assert tip(c, 2) == before  # not sampled yet
    assert c.events("fault_sensed") == []
    injected_at = c.events("fault_injected")[0]["mono_t_s"]
    tick(c, clock)
    sensed = c.events("fault_sensed")
    assert [(e["kind"], e["probe"], e["value"]) for e in sensed] == [("temp-offset", 2, -40.0)]
    assert sensed[0]["mono_t_s"] > injected_at
    assert tip(c, 2) < before - 30.0
    tick(c, clock, 5)
    assert len(c.events("fault_sensed")) == 1  # once per injection
    c.clear("temp-offset")
    c.inject("temp-offset", probe=2, value=-40.0)
    tick(c, clock)
    assert len(c.events("fault_sensed")) == 2


def test_supply_low_falls_to_value_and_freezes_warmer() -> None:
    c, clock = make()
    c.inject("supply-low", value=12000.0)
    start_freeze(c)
    run(c, clock, 60.0)
    assert c.supply_kpa() == pytest.approx(12000.0, abs=30.0)
    assert c.supply_low()
    assert -75.0 < tip(c) < -40.0  # J-T cooling needs the pressure
    c.clear("supply-low")
    run(c, clock, 60.0)
    assert not c.supply_low()
    assert tip(c) < -130.0


def test_supply_leak_empties_the_cylinder_at_its_rate() -> None:
    c, clock = make()
    run(c, clock, 1.0)
    before = c.true_state()["supply"]["cylinder_kpa"]
    c.inject("supply-leak", value=100.0)
    run(c, clock, 30.0)
    after = c.true_state()["supply"]["cylinder_kpa"]
    assert before - after == pytest.approx(3000.0, rel=0.02)
    c.inject("supply-leak")  # default rate is visible
    run(c, clock, 10.0)
    assert after - c.true_state()["supply"]["cylinder_kpa"] > 100.0


def test_valve_stuck_open_keeps_cooling_while_reported_closed() -> None:
    c, clock = make()
    start_freeze(c)
    run(c, clock, 5.0)
    c.inject("valve-stuck-open", probe=1)
    c.set_freeze(1, False)
    assert not c.probe(1).freeze_open  # the driver sees its command, not the valve
    before = true_tip(c)
    run(c, clock, 30.0)
    assert true_tip(c) < before - 30.0  # still cooling: the host must notice this
    assert c.probe(1).return_kpa > 50.0
    last = valve_events(c)[-1]
    assert (last["open"], last["commanded"], last["cause"]) == (True, False, "command")
    # the master valve still shuts the gas off
    c.set_master(False)
    run(c, clock, 30.0)
    assert true_tip(c) > -20.0
    c.clear("valve-stuck-open")
    last = valve_events(c)[-1]
    assert (last["open"], last["cause"]) == (False, "fault")


def test_valve_stuck_closed_reports_open_but_no_gas_flows() -> None:
    c, clock = make()
    c.inject("valve-stuck-closed", probe=1)
    start_freeze(c)
    run(c, clock, 30.0)
    assert c.probe(1).freeze_open
    assert tip(c) > 30.0
    assert c.probe(1).return_kpa < 2.0
    c.clear("valve-stuck-closed")
    run(c, clock, 30.0)
    assert tip(c) < -100.0


def test_faults_auto_clear_after_for_s_wall_seconds() -> None:
    c, clock = make(speed=100.0)
    c.inject("comms-silent", for_s=0.5)
    c.inject("tc-open", probe=3, for_s=0.3)
    clock.t += 0.31
    assert "comms-silent" in c.comms_faults()
    tick(c, clock)
    assert c.probe(3).tc_status is TcStatus.OK
    clock.t += 0.2
    assert c.comms_faults() == {}
    assert [e["reason"] for e in c.events("fault_cleared")] == ["expired", "expired"]


# ---- per-probe console limits ------------------------------------------------


def arm(c: SimConsole, n: int = 1, **kw: float) -> ConsoleLimits:
    values = {
        "max_on_time_s": 600.0,
        "min_tip_c": -160.0,
        "max_supply_kpa": 33000.0,
        "consecutive": 3,
    }
    values.update(kw)
    limits = ConsoleLimits(**values)  # type: ignore[arg-type]
    c.set_limits(n, limits)
    assert c.limits(n) == limits
    assert c.probe(n).limits_armed
    return limits


def test_limits_are_validated_as_a_set() -> None:
    c, _ = make()
    c.write_pending_limit(1, "max_on_time_s", 90.0)
    c.write_pending_limit(1, "min_tip_c", -120.0)
    with pytest.raises(CommandRejected) as exc:
        c.arm_limits(1, True)
    assert exc.value.code == "limits_invalid"
    c.write_pending_limit(1, "max_supply_kpa", 30000.0)
    c.write_pending_limit(1, "consecutive", 0)
    with pytest.raises(CommandRejected) as exc:
        c.arm_limits(1, True)
    assert exc.value.code == "limits_invalid"
    assert c.limits(1) is None
    c.write_pending_limit(1, "consecutive", 2)
    c.arm_limits(1, True)
    assert c.limits(1) == ConsoleLimits(90.0, -120.0, 30000.0, 2)
    assert c.pending_limits(1) == {
        "max_on_time_s": 90.0,
        "min_tip_c": -120.0,
        "max_supply_kpa": 30000.0,
        "consecutive": 2.0,
    }
    with pytest.raises(CommandRejected):
        c.write_pending_limit(1, "max_temp", 5.0)
    c.arm_limits(1, False)
    assert c.limits(1) is None
    plain, _ = make(variant(capabilities=[]))
    with pytest.raises(CommandRejected) as exc:
        plain.set_limits(1, ConsoleLimits(90.0, -120.0, 30000.0, 2))
    assert exc.value.code == "read_only"


def test_on_time_limit_trips_exactly_when_it_runs_out() -> None:
    c, clock = make(speed=30.0)  # 0.3 s of simulated time per tick
    arm(c, max_on_time_s=10.05)
    start_freeze(c)
    opened = c.now_s
    run(c, clock, 20.0)
    ev = c.events("console_limit")
    assert len(ev) == 1
    assert ev[0]["cause"] == "max_on_time"
    assert ev[0]["sim_t_s"] - opened == pytest.approx(10.05, abs=1e-6)
    reading = c.probe(1)
    assert not reading.freeze_open
    assert reading.trip is TripCause.MAX_ON_TIME
    assert reading.trip_time_s == pytest.approx(opened + 10.05, abs=1e-6)
    assert reading.on_time_s == pytest.approx(10.05)
    assert c.faults() == {"console_limit"}
    closed = valve_events(c)[-1]
    assert (closed["open"], closed["cause"]) == (False, "console_limit")
    with pytest.raises(CommandRejected):
        c.set_freeze(1, True)
    c.reset_faults()  # the on-time cause is gone once the valve is closed
    assert c.probe(1).trip is TripCause.NONE
    c.set_freeze(1, True)
    assert c.probe(1).on_time_s == 0.0  # a new freeze


def test_temp_offset_past_min_tip_trips_after_consecutive_ticks() -> None:
    c, clock = make()
    arm(c, min_tip_c=-100.0, consecutive=4)
    start_freeze(c)
    tick(c, clock, 3)  # tip still warm: no violation
    c.inject("temp-offset", probe=1, value=-200.0)
    n = 0
    while c.probe(1).freeze_open:
        tick(c, clock)
        n += 1
        assert n < 20
    assert n == 4
    ev = c.events("console_limit")[-1]
    assert (ev["probe"], ev["cause"], ev["limit"]) == (1, "min_tip", -100.0)
    assert ev["measured"] < -100.0
    assert c.probe(1).trip is TripCause.MIN_TIP
    with pytest.raises(CommandRejected) as exc:
        c.reset_faults()
    assert exc.value.code == "cause_present"
    c.clear("temp-offset")
    tick(c, clock)
    c.reset_faults()
    assert c.faults() == frozenset()


def test_consecutive_count_rides_through_noise() -> None:
    c, clock = make()
    c.inject("tc-noise", probe=1, value=5.0)
    c.inject("valve-stuck-closed", probe=1)  # keep the tip warm while "freezing"
    start_freeze(c)
    warm = true_tip(c)
    arm(c, min_tip_c=warm - 8.0, consecutive=6)  # ~5 % of single samples violate
    run(c, clock, 60.0)
    assert c.probe(1).freeze_open
    assert c.faults() == frozenset()
    arm(c, min_tip_c=true_tip(c) - 8.0, consecutive=1)
    run(c, clock, 60.0)
    assert c.probe(1).trip is TripCause.MIN_TIP


def test_real_cooling_past_min_tip_and_supply_limit() -> None:
    c, clock = make()
    arm(c, 1, min_tip_c=-120.0, consecutive=5)
    arm(c, 2, max_supply_kpa=20000.0, consecutive=2)
    start_freeze(c, 1)
    coldest = min(run(c, clock, 60.0, every=lambda: true_tip(c)))
    assert c.probe(1).trip is TripCause.MIN_TIP
    assert -125.0 < coldest < -119.0  # stopped shortly after crossing the limit
    c.reset_faults()  # the tip warmed above the limit once the valve closed
    c.set_freeze(2, True)
    tick(c, clock)
    assert c.probe(2).freeze_open
    tick(c, clock)
    assert not c.probe(2).freeze_open
    assert c.probe(2).trip is TripCause.MAX_SUPPLY
    assert c.events("console_limit")[-1]["measured"] > 20000.0


def test_open_thermocouple_counts_as_min_tip_violation() -> None:
    c, clock = make()
    arm(c, consecutive=2)
    start_freeze(c)
    c.inject("tc-open", probe=1)
    tick(c, clock, 2)
    assert c.probe(1).trip is TripCause.MIN_TIP
    assert c.events("console_limit")[-1]["measured"] is None


# ---- other writes and the event log --------------------------------------------


def test_thaw_refused_without_active_thaw_and_bad_probe() -> None:
    c, _ = make(variant(capabilities=[]))
    c.set_lease_timeout(1000)
    with pytest.raises(CommandRejected) as exc:
        c.set_thaw(1, True)
    assert exc.value.code == "out_of_range"
    for n in (0, 9, -1):
        with pytest.raises(CommandRejected) as exc:
            c.probe(n)
        assert exc.value.code == "bad_probe"
    assert not c.helium_ok()
    assert c.skin_c() is None


def test_bad_requests_are_counted() -> None:
    c, _ = make()
    c.count_bad_request()
    c.count_bad_request(transport="modbus-tcp", reason="read-only register")
    assert c.bad_request_count() == 2
    assert c.events("bad_request")[-1]["reason"] == "read-only register"


def test_event_log_file_is_json_lines_flushed_as_written(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    clock = Clock()
    from cryod.drivers.profile import load_profile

    c = SimConsole(load_profile(), speed=10.0, seed=3, event_log_path=str(path), clock=clock)
    try:
        start_freeze(c)
        c.inject("tc-noise", probe=2, value=2.0)
        c.log_event("connection", transport="modbus-tcp", state="opened", peer="127.0.0.1:4242")
        run(c, clock, 3.0)
        c.set_freeze(1, False)
        lines = path.read_text().splitlines()  # read while the console is still open
        records = [json.loads(line) for line in lines]
        for r in records:
            assert {"event", "sim_t_s", "wall_t", "mono_t_s"} <= set(r)
            assert r["wall_t"].endswith("+00:00")
        names = [r["event"] for r in records]
        assert names[0] == "power_on"
        assert {"lease", "valve", "fault_injected", "connection"} <= set(names)
        freeze = [r for r in records if r["event"] == "valve" and r["valve"] == "freeze"]
        assert [(r["open"], r["cause"]) for r in freeze] == [(True, "command"), (False, "command")]
        assert freeze[1]["sim_t_s"] == pytest.approx(3.0, abs=0.01)
        assert records == c.events()
    finally:
        c.close()


async def test_run_ticks_on_the_wall_clock_at_speed() -> None:
    import asyncio
    import time

    from cryod.drivers.profile import load_profile
    from tests.timing import LoopLag

    c = SimConsole(load_profile(), speed=100.0, seed=2)
    tick_s = c.profile.console.tick_s
    async with LoopLag() as lag:
        task = asyncio.create_task(c.run())
        t0 = time.monotonic()
        await asyncio.sleep(0.3)  # a span of wall time to compare with, not a condition
        elapsed = time.monotonic() - t0
    try:
        # simulated time follows the wall clock at speed 100, at most a tick (and the
        # worst stall this machine had meanwhile) behind
        behind_s = elapsed - c.now_s / 100.0
        assert -tick_s <= behind_s <= tick_s + lag.max_s + 0.01, (behind_s, lag.max_s)
        c.set_lease_timeout(100)
        c.set_master(True)
        t_armed = time.monotonic()
        deadline = t_armed + 30
        while c.faults() != {"lease_expired"}:  # no renewal: the running console expires it
            assert time.monotonic() < deadline, c.faults()
            await asyncio.sleep(0.01)
        assert time.monotonic() - t_armed >= 0.1
        assert not c.master_open()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        c.close()
