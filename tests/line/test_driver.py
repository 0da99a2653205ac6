"""The serial-line driver against cryosim over a real pty."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import statistics
import struct
import termios
import time
from importlib.metadata import entry_points

import pytest

from cryod.drivers.base import ConsoleLimits, LinkError, RejectedError, TcStatus, Validity
from cryod.drivers.lineproto import telemetry_max_len
from cryod.drivers.serial_line import SerialLineDriver

from .conftest import Sim


def pending_bytes(fd: int) -> int:
    """Bytes waiting in a terminal's input queue (FIONREAD)."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


async def poll_until(driver: SerialLineDriver, pred, timeout_s: float = 3.0):  # type: ignore[no-untyped-def]
    """Read snapshots until pred(snapshot) holds (LinkError tolerated meanwhile)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = await driver.read_snapshot()
        except LinkError:
            await asyncio.sleep(0.02)
            continue
        if pred(last):
            return last
    raise AssertionError(f"condition not met within {timeout_s} s; last snapshot {last}")


def test_entry_point_and_options() -> None:
    (ep,) = [e for e in entry_points(group="cryod.drivers") if e.name == "serial-line"]
    assert ep.load() is SerialLineDriver
    with pytest.raises(ValueError, match=r"site\.toml\.drivers\.bogus"):
        SerialLineDriver.from_options({"port": "/dev/x", "bogus": 1}, source="site.toml.drivers")
    with pytest.raises(ValueError, match=r"src\.port"):
        SerialLineDriver.from_options({}, source="src")
    with pytest.raises(ValueError, match=r"src\.retries"):
        SerialLineDriver.from_options({"port": "/dev/x", "retries": -1}, source="src")


def test_poll_rate_from_baud_rate() -> None:
    d = SerialLineDriver.from_options({"port": "/dev/x"})
    # 8 probes: TEL up to 364 bytes; 115200 baud 8N1 = 11520 chars/s, 20 % kept for replies
    assert d.min_poll_period_s() == pytest.approx(364 * 10 / 115200 / 0.8)
    d.check_poll_rate(20)
    with pytest.raises(ValueError, match=r"maximum 25\.3 Hz"):
        d.check_poll_rate(30)
    with pytest.raises(ValueError, match=r"telemetry_hz.*maximum 2\.1 Hz"):
        SerialLineDriver.from_options({"port": "/dev/x", "baudrate": 9600, "telemetry_hz": 5})


async def test_identify_and_plausible_values(driver: SerialLineDriver) -> None:
    ident = await driver.identify()
    assert (ident.model, ident.probes, ident.gas) == ("CRYOSIM-8", 8, "argon")
    assert ident.has_console_limits
    snaps = [await driver.read_snapshot() for _ in range(5)]
    for s in snaps:
        assert 20700 <= s.supply_kpa.value <= 31000  # type: ignore[operator]
        assert s.supply_kpa.unit == "kPa"
        assert 30000 < s.cylinder_kpa.value <= 42000  # type: ignore[operator]
        assert s.skin_c is not None
        assert 30 < s.skin_c.value < 40  # type: ignore[operator]
        for p in s.probes:
            assert p.tip_c.validity == Validity.VALID
            assert 30 < p.tip_c.value < 40  # type: ignore[operator]
            assert not p.freeze_open
        assert not s.lease.armed
    # never repeated: sequence and console time strictly increase
    assert [s.seq for s in snaps] == sorted({s.seq for s in snaps})
    times = [s.console_time_s for s in snaps]
    assert times == sorted(set(times))


async def test_freeze_and_thaw_reach_the_event_log(sim: Sim, driver: SerialLineDriver) -> None:
    await driver.arm_lease(2000)
    await driver.set_master(True)
    await driver.set_freeze(1, True)
    s = await poll_until(driver, lambda s: s.probe(1).tip_c.value < -100, timeout_s=5)
    assert s.probe(1).freeze_open  # argon below -100 C within 60 s simulated (speed 20)
    await driver.set_freeze(1, False)
    await driver.set_thaw(1, True)
    s = await poll_until(driver, lambda s: s.probe(1).thaw_on and not s.probe(1).freeze_open)
    await driver.set_thaw(1, False)
    await driver.set_master(False)
    s = await poll_until(driver, lambda s: not s.master_open and not s.probe(1).thaw_on)
    valves = [(e["valve"], e["probe"], e["open"], e["cause"]) for e in sim.events("valve")]
    assert valves == [
        ("master", None, True, "command"),
        ("freeze", 1, True, "command"),
        ("freeze", 1, False, "command"),
        ("thaw", 1, True, "command"),
        ("thaw", 1, False, "command"),
        ("master", None, False, "command"),
    ]


async def test_lease_beats_renew_reads_do_not(sim: Sim, driver: SerialLineDriver) -> None:
    await driver.arm_lease(1000)  # beats every 0.1 s: a 0.9 s stall of the machine is fine
    await driver.set_master(True)
    await driver.set_freeze(2, True)
    t_end = time.monotonic() + 3.0  # three lease periods, kept alive by BEAT alone
    while time.monotonic() < t_end:
        await asyncio.sleep(0.1)
        await driver.renew_lease()
    assert sim.console.probe(2).freeze_open
    assert sim.console.lease_expiry_count() == 0
    # now only reads (snapshots, faults, limits, identity), until the lease runs out
    last_write = time.monotonic()
    deadline = last_write + 10  # bounds a failing test only
    while not (await driver.read_faults()).lease_expired:
        assert time.monotonic() < deadline, "reads alone kept the lease alive"
        await driver.read_limits(2)
        await driver.identify()
        with contextlib.suppress(LinkError):
            await driver.read_snapshot()
        await asyncio.sleep(0.02)  # the poll interval, not a condition
    s = await poll_until(driver, lambda s: s.lease.expired)
    # not before its timeout, from when the last beat reached the console (it did
    # before the call returned; the event log's times are rounded to the microsecond)
    (expired,) = sim.events("lease_expired")
    assert expired["renewed_mono_t_s"] <= last_write + 1e-6
    assert expired["mono_t_s"] - expired["renewed_mono_t_s"] >= 1.0 - 2e-6
    assert not s.probe(2).freeze_open
    assert not s.master_open
    assert s.lease.expiry_count == 1
    causes = {(e["valve"], e["cause"]) for e in sim.events("valve") if not e["open"]}
    assert ("freeze", "lease_expired") in causes
    assert ("master", "lease_expired") in causes
    with pytest.raises(RejectedError, match="fault_latched"):
        await driver.set_master(True)
    await driver.reset_faults()
    assert not (await driver.read_faults()).any


async def test_limits_round_trip_over_the_wire(driver: SerialLineDriver) -> None:
    await driver.arm_lease(1000)
    limits = ConsoleLimits(
        max_on_time_s=92.5, min_tip_c=-151.5, max_supply_kpa=33500, consecutive=4
    )
    await driver.write_limits(5, limits)
    assert await driver.read_limits(5) == limits
    assert await driver.read_limits(6) is None
    s = await driver.read_snapshot()
    assert s.probe(5).limits_armed
    assert not s.probe(6).limits_armed
    await driver.disarm_limits(5)
    assert await driver.read_limits(5) is None


async def test_console_limit_trip_is_reported(sim: Sim, driver: SerialLineDriver) -> None:
    await driver.arm_lease(2000)
    await driver.write_limits(1, ConsoleLimits(2.0, -150, 34000, 3))
    await driver.set_master(True)
    await driver.set_freeze(1, True)
    s = await poll_until(driver, lambda s: s.faults.console_limit, timeout_s=3)
    assert not s.probe(1).freeze_open
    assert s.faults.trips[0].probe == 1
    faults = await driver.read_faults()
    assert faults.console_limit
    assert faults.trips[0].cause.name == "MAX_ON_TIME"
    assert faults.trips[0].console_time_s > 0
    await driver.set_master(False)


async def test_open_thermocouple_is_invalid_not_a_number(
    sim: Sim, driver: SerialLineDriver
) -> None:
    sim.console.inject("tc-open", probe=4)
    s = await poll_until(driver, lambda s: s.probe(4).tc_status == TcStatus.OPEN)
    assert s.probe(4).tip_c.validity == Validity.INVALID
    assert s.probe(4).tip_c.value is None


@pytest.mark.parametrize(
    ("kind", "value"),
    [("disconnect", None), ("comms-silent", None), ("comms-corrupt", None), ("comms-slow", 400.0)],
)
async def test_recovers_from_comms_faults(
    sim: Sim, driver: SerialLineDriver, kind: str, value: float | None
) -> None:
    await driver.read_snapshot()
    stats0 = driver.stats.as_dict()
    sim.console.inject(kind, value=value)
    errors = 0
    t0 = time.monotonic()
    for _ in range(2):
        with pytest.raises(LinkError):
            await driver.read_snapshot()
        with pytest.raises(LinkError):
            await driver.renew_lease()
        errors += 2
    elapsed = time.monotonic() - t0
    assert elapsed < 8, "every call is bounded by its timeout and retries"
    sim.console.clear(kind)
    s = await poll_until(driver, lambda s: True, timeout_s=3)
    await driver.renew_lease()
    assert s.supply_kpa.usable
    stats = driver.stats.as_dict()
    assert stats["timeouts"] + stats["bad_frames"] > stats0["timeouts"] + stats0["bad_frames"]
    assert stats["retries"] > stats0["retries"]
    if kind == "comms-corrupt":
        assert stats["bad_frames"] > stats0["bad_frames"]
    if kind == "disconnect":
        states = [e["state"] for e in sim.events("connection")]
        assert states[-2:] == ["closed", "opened"]


async def test_reconnects_when_the_port_vanishes(sim: Sim, driver: SerialLineDriver) -> None:
    await driver.read_snapshot()
    await sim.restart_server()  # old pty gone, a new one behind the same path
    failed = False
    for _ in range(20):
        try:
            await driver.read_snapshot()
        except LinkError:
            failed = True
            break
        await asyncio.sleep(0.02)
    assert failed, "a vanished port is reported at once, not papered over"
    s = await poll_until(driver, lambda s: True, timeout_s=5)
    assert s.supply_kpa.usable
    assert driver.stats.reconnects >= 1
    assert driver.stats.connected


async def test_figures_tel_period_and_round_trip(driver: SerialLineDriver) -> None:
    """Measure the telemetry period and the command round trip on the pty."""
    ages, calls = [], []
    for _ in range(40):
        t0 = time.monotonic()
        s = await driver.read_snapshot()
        calls.append(time.monotonic() - t0)
        ages.append(time.monotonic() - s.t_mono)
    for _ in range(100):
        await driver.renew_lease()
    rtt = driver.rtt_p50_s()
    period = statistics.median(driver.tel_intervals)
    print(
        f"\nline protocol on pty: TEL period p50 {period * 1000:.1f} ms "
        f"(configured {1000 / driver.options.telemetry_hz:.0f} ms), snapshot age at return "
        f"p50 {statistics.median(ages) * 1000:.2f} ms max {max(ages) * 1000:.2f} ms, "
        f"read_snapshot call p50 {statistics.median(calls) * 1000:.1f} ms, "
        f"command round trip p50 {rtt * 1000:.3f} ms"  # type: ignore[operator]
    )
    assert rtt is not None
    assert rtt < driver.options.timeout_s
    assert period == pytest.approx(1 / driver.options.telemetry_hz, rel=0.2)
    assert max(ages) <= driver.max_age_s


async def test_backlog_after_a_stalled_reader_is_not_fresh(
    sim: Sim, driver: SerialLineDriver
) -> None:
    """A host that fell behind reads a burst of old TEL frames at once; their
    reception time says nothing about their age, so none is handed out."""
    await driver.read_snapshot()
    loop = asyncio.get_running_loop()
    port = driver._port
    assert port is not None
    loop.remove_reader(port.fd)  # the host stalls; the console keeps sending
    try:
        # more bytes queued than one TEL frame can have: at least two frames are waiting
        one_frame = telemetry_max_len(8)
        deadline = loop.time() + 10
        while pending_bytes(port.fd) <= one_frame:
            assert loop.time() < deadline, f"{pending_bytes(port.fd)} bytes queued"
            await asyncio.sleep(0.02)
        sim.console.inject("comms-silent")  # ... then the console stops
    finally:
        loop.add_reader(port.fd, driver._on_readable)
    backlogs = driver.backlogs
    with pytest.raises(LinkError):
        await driver.read_snapshot()
    assert driver.backlogs == backlogs + 1
    sim.console.clear("comms-silent")
    s = await poll_until(driver, lambda s: True)
    assert s.supply_kpa.usable
