"""The Modbus drivers against cryosim over loopback TCP and a pty (same tests, both links)."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from cryod.drivers.base import ConsoleLimits, RejectedError, TcStatus, Validity
from cryod.drivers.modbus import ModbusRtuDriver, ModbusTcpDriver
from tests.timing import LoopLag

from .conftest import SPEED, Sim, read_until, renew_until

Drv = ModbusTcpDriver | ModbusRtuDriver


async def test_identify_and_plausible_snapshot(sim: Sim, driver: Drv) -> None:
    ident = await driver.identify()
    assert ident.model == "CRYOSIM-8"
    assert ident.probes == 8
    assert ident.gas == "argon"
    assert ident.serial == sim.console.serial
    assert ident.firmware == "sim-1.0"
    assert ident.has_console_limits
    assert "skin_channel" in ident.capabilities
    t0 = time.monotonic()
    a = await driver.read_snapshot()
    b = await driver.read_snapshot()
    assert b.seq == a.seq + 1
    assert b.t_mono >= a.t_mono >= t0
    assert b.console_time_s >= a.console_time_s
    lo, hi = sim.console.profile.console.supply_working_kpa
    assert a.supply_kpa.usable
    assert lo - 1000 <= (a.supply_kpa.value or 0) <= hi + 1000
    assert a.cylinder_kpa.usable
    assert (a.cylinder_kpa.value or 0) > lo
    assert a.skin_c is not None
    assert a.skin_c.usable
    assert len(a.probes) == 8
    for p in a.probes:
        assert p.tip_c.validity is Validity.VALID
        assert 15 < (p.tip_c.value or 0) < 45
        assert p.tip_c.unit == "degC"
        assert p.tc_status is TcStatus.OK
        assert not p.freeze_open
        assert not p.thaw_on
    assert not a.lease.armed
    assert not a.faults.any
    assert driver.stats.bad_frames == 0
    assert driver.stats.transactions >= 3


async def test_open_thermocouple_is_invalid_not_a_number(sim: Sim, driver: Drv) -> None:
    sim.console.inject("tc-open", probe=4)
    sim.console.step(0.0)  # one console tick now: the fault reaches the measured values
    snap = await driver.read_snapshot()
    p4 = snap.probe(4)
    assert p4.tc_status is TcStatus.OPEN
    assert p4.tip_c.validity is Validity.INVALID
    assert p4.tip_c.value is None
    assert snap.probe(3).tip_c.usable
    sim.console.inject("tc-short", probe=5)
    sim.console.step(0.0)
    snap = await driver.read_snapshot()
    assert snap.probe(5).tip_c.validity is Validity.INVALID
    assert snap.probe(5).tc_status is TcStatus.SHORT


async def test_freeze_and_thaw_show_in_the_event_log(sim: Sim, driver: Drv) -> None:
    await driver.arm_lease(1000)
    await driver.set_master(True)
    await driver.set_freeze(2, True)
    start = (await driver.read_snapshot()).probe(2).tip_c.value or 0
    # argon cools the tip (about 1 s of wall time at speed 20); writes keep the lease alive
    snap = await renew_until(driver, lambda s: (s.probe(2).tip_c.value or 0) < start - 30)
    assert snap.probe(2).freeze_open
    assert snap.master_open
    await driver.set_freeze(2, False)
    await driver.set_thaw(2, True)
    assert (await driver.read_snapshot()).probe(2).thaw_on
    await driver.set_thaw(2, False)
    await driver.set_master(False)
    valves = [(e["valve"], e["probe"], e["open"], e["cause"]) for e in sim.events("valve")]
    assert ("freeze", 2, True, "command") in valves
    assert ("freeze", 2, False, "command") in valves
    assert ("thaw", 2, True, "command") in valves
    assert ("thaw", 2, False, "command") in valves
    assert valves.index(("freeze", 2, True, "command")) < valves.index(
        ("freeze", 2, False, "command")
    )
    assert not sim.console.probe(2).freeze_open


async def test_commands_refused_without_lease_give_a_reason(sim: Sim, driver: Drv) -> None:
    with pytest.raises(RejectedError, match="lease not armed"):
        await driver.set_freeze(1, True)
    assert not sim.console.probe(1).freeze_open
    with pytest.raises(ValueError, match=r"outside 100\.\.60000"):
        await driver.arm_lease(50)  # rejected, never clamped
    with pytest.raises(ValueError, match="probe 9"):
        await driver.set_freeze(9, True)
    assert not sim.console.lease_armed()


async def test_lease_expiry_closes_valves_within_a_tick_and_latches(sim: Sim, driver: Drv) -> None:
    timeout_ms = 1000  # renewals every 0.1 s: a 0.9 s stall of this machine is tolerated
    await driver.arm_lease(timeout_ms)
    await driver.set_master(True)
    await driver.set_freeze(1, True)
    for _ in range(15):  # writes renew: 1.5 s > the timeout, still open
        await asyncio.sleep(0.1)
        await driver.renew_lease()
    last_write = time.monotonic()
    assert (await driver.read_snapshot()).probe(1).freeze_open
    async with LoopLag() as lag:  # the simulator ticks on this loop: it is as late as we are
        snap = await read_until(driver, lambda s: s.lease.expired)  # reads do not renew it
    assert not snap.probe(1).freeze_open
    assert snap.faults.lease_expired
    assert snap.lease.expired
    assert snap.lease.expiry_count == 1
    expired = sim.events("lease_expired")
    assert len(expired) == 1
    # timed from when our last renewal reached the console (it did before the call
    # returned), not from when this loop got round to reading the clock afterwards;
    # the event log's times are rounded to the microsecond
    renewed = expired[0]["renewed_mono_t_s"]
    assert renewed <= last_write + 1e-6
    late_s = expired[0]["mono_t_s"] - renewed
    tick_s = sim.console.profile.console.tick_s
    assert timeout_ms / 1000 - 2e-6 <= late_s <= timeout_ms / 1000 + tick_s + 0.03 + lag.max_s, (
        late_s,
        lag.max_s,
    )
    closes = [e for e in sim.events("valve") if e["cause"] == "lease_expired"]
    assert {(e["valve"], e["probe"]) for e in closes} >= {("freeze", 1), ("master", None)}
    # latched: refused with the reason until reset
    with pytest.raises(RejectedError, match="lease_expired"):
        await driver.set_freeze(1, True)
    await driver.reset_faults()
    assert not (await driver.read_faults()).any
    await driver.arm_lease(0)


async def test_console_limits_round_trip(sim: Sim, driver: Drv) -> None:
    assert await driver.read_limits(3) is None
    limits = ConsoleLimits(
        max_on_time_s=150.5, min_tip_c=-120.3, max_supply_kpa=33000, consecutive=3
    )
    await driver.write_limits(3, limits)
    assert await driver.read_limits(3) == limits
    assert sim.console.limits(3) == limits
    assert (await driver.read_snapshot()).probe(3).limits_armed
    assert await driver.read_limits(4) is None


async def test_console_limit_trip_reported(sim: Sim, driver: Drv) -> None:
    await driver.arm_lease(1000)
    await driver.write_limits(
        1, ConsoleLimits(max_on_time_s=2.0, min_tip_c=-190, max_supply_kpa=34000, consecutive=1)
    )
    await driver.set_master(True)
    await driver.set_freeze(1, True)
    # 2 s of on-time, simulated (0.1 s of wall time at speed 20)
    snap = await renew_until(driver, lambda s: s.faults.console_limit)
    assert not snap.probe(1).freeze_open
    assert snap.faults.console_limit
    assert [(t.probe, t.cause.name) for t in snap.faults.trips] == [(1, "MAX_ON_TIME")]
    assert sim.events("console_limit")[0]["probe"] == 1


async def test_snapshot_round_trip_time(driver: Drv, record_property: object) -> None:
    samples = []
    for _ in range(200):
        t = time.perf_counter()
        await driver.read_snapshot()
        samples.append(time.perf_counter() - t)
    p50_ms = statistics.median(samples) * 1000
    p99_ms = statistics.quantiles(samples, n=100)[98] * 1000
    print(f"\n{driver.name} snapshot round trip: p50 {p50_ms:.2f} ms, p99 {p99_ms:.2f} ms")
    assert p50_ms < 50  # generous bound; the figure is printed for the report
    assert driver.min_poll_period_s() < 0.05
    _ = SPEED
