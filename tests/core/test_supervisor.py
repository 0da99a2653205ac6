"""The supervisor: one test per alarm condition (priority and latching asserted),
the gate on valve-open commands, and the supervisor-engine interplay."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from cryod.daemon.alarms import AlarmCode, Priority
from cryod.daemon.commands import (
    Ack,
    CloseCycle,
    Reset,
    RunProtocol,
    SetFreeze,
    SetMaster,
    SetThaw,
)
from cryod.daemon.engine import Phase
from cryod.daemon.limits import FreezePlan, SafetyLimits, Supervision
from cryod.daemon.supervisor import Supervisor, Verdict
from cryod.drivers.base import ConsoleFaults, LimitTrip, TcStatus, TripCause, Validity

from .helpers import ENV, LIMITS, POLL_S, Harness, freeze, now, proto, snap

C = AlarmCode
WATCH1 = Supervision(watched=frozenset({1}))


def wobble(t: float) -> float:
    """Sensor noise of a healthy thermocouple (a stuck one reads a constant)."""
    return 0.3 * math.sin(7.0 * t)


def plan(
    on_s: float = 60.0, floor: float = -100.0, target: float = -40.0, reach: float = 30.0
) -> Supervision:
    return Supervision(watched=frozenset({1}), plans=(FreezePlan(1, on_s, floor, target, reach),))


class S:
    """A supervisor fed a stream of snapshots every poll period."""

    def __init__(self, limits: SafetyLimits = LIMITS) -> None:
        self.sup = Supervisor(limits, ENV, POLL_S)
        self.t = 0.0
        self.verdicts: list[Verdict] = []

    def open(self, probe: int = 1) -> None:
        self.sup.note_command(SetFreeze(probe=probe, on=True), now(self.t))

    def close(self, probe: int = 1) -> None:
        self.sup.note_command(SetFreeze(probe=probe, on=False), now(self.t))

    def run(self, seconds: float, sv: Supervision = WATCH1, **kw: object) -> Verdict:
        """Advance ``seconds`` of polls; tips may be a callable of time."""
        end = self.t + seconds
        v = None
        while self.t < end - 1e-9:
            self.t = round(self.t + POLL_S, 6)
            args = dict(kw)
            tips = args.pop("tips", None)
            if callable(tips):
                tips = {1: tips(self.t)}
            v = self.sup.check(snap(self.t, tips, **args), now(self.t), sv)  # type: ignore[arg-type]
            self.verdicts.append(v)
        assert v is not None
        return v

    def raised(self) -> dict[tuple[AlarmCode, int | None], Priority]:
        return {a.key: a.priority for v in self.verdicts for a in v.raised}

    def tripped_codes(self) -> set[AlarmCode]:
        return {a.code for v in self.verdicts for a in v.trips}

    def safe_state_demanded(self) -> bool:
        """The safe state (every output off, the master valve first) was demanded."""
        return any(v.demand is not None for v in self.verdicts)


def assert_latched_until_ack_and_reset(s: S, code: AlarmCode, clear: dict[str, object]) -> None:
    """The alarm stays after its cause goes, until acknowledged AND reset."""
    s.run(0.5, **clear)  # cause gone
    assert s.sup.book.get(code, 1) or s.sup.book.get(code, None)
    assert not s.sup.permits(SetFreeze(probe=1, on=True)).ok
    r = s.sup.reset(now(s.t))
    assert not r.ok
    assert "not acknowledged" in r.reason
    s.sup.acknowledge(now(s.t))
    r = s.sup.reset(now(s.t))
    assert r.ok, r.reason
    assert s.sup.permits(SetFreeze(probe=1, on=True)).ok


def test_healthy_stream_raises_nothing() -> None:
    s = S()
    s.run(2.0)
    s.open()
    s.run(30.0, plan(), tips=lambda t: max(35 - 10 * (t - 2), -90) + wobble(t))
    s.close()
    s.run(30.0, WATCH1, tips=lambda t: min(-90 + 6 * (t - 32), 35) + wobble(t))
    assert s.raised() == {}
    assert s.sup.permits(SetFreeze(probe=1, on=True)).ok


def test_tip_too_cold_high_latched() -> None:
    s = S()
    s.open()
    s.run(1.0, plan(floor=-100.0), tips={1: -101.0})
    assert s.raised()[(C.TIP_TOO_COLD, 1)] is Priority.HIGH
    assert C.TIP_TOO_COLD in s.tripped_codes()
    s.close()
    assert_latched_until_ack_and_reset(s, C.TIP_TOO_COLD, {"tips": {1: 20.0}})


def test_tip_floor_is_never_colder_than_the_console_minimum() -> None:
    s = S()
    s.run(0.3, plan(floor=-199.0), tips={1: -151.0})
    assert (C.TIP_TOO_COLD, 1) in s.raised()


def test_cause_present_blocks_reset() -> None:
    s = S()
    s.run(0.3, WATCH1, tc={1: TcStatus.OPEN})
    s.sup.acknowledge(now(s.t))
    r = s.sup.reset(now(s.t))
    assert not r.ok
    assert "cause still present" in r.reason
    assert not s.sup.permits(SetFreeze(probe=1, on=True)).ok


def test_freeze_too_long_per_cycle() -> None:
    s = S()
    s.open()
    s.run(
        30.0 + LIMITS.on_time_grace_s - 0.2, plan(on_s=30.0), tips=lambda t: max(35 - 10 * t, -90)
    )
    assert (C.FREEZE_TOO_LONG, 1) not in s.raised()
    s.run(0.5, plan(on_s=30.0), tips={1: -90.0})
    assert s.raised()[(C.FREEZE_TOO_LONG, 1)] is Priority.HIGH
    assert C.FREEZE_TOO_LONG in s.tripped_codes()
    s.close()
    assert_latched_until_ack_and_reset(s, C.FREEZE_TOO_LONG, {"tips": {1: 20.0}})


def test_freeze_too_long_uses_site_limit_when_engine_says_more() -> None:
    lim = SafetyLimits(max_freeze_s_per_cycle=20, max_freeze_s_per_protocol=20)
    s = S(lim)
    s.open()
    s.run(23.0, plan(on_s=500.0), tips=lambda t: max(35 - 10 * t, -90))
    assert (C.FREEZE_TOO_LONG, 1) in s.raised()


def test_freeze_cumulative_per_procedure() -> None:
    lim = SafetyLimits(
        max_freeze_s_per_cycle=60, max_freeze_s_per_protocol=60, max_freeze_s_per_procedure=100
    )
    s = S(lim)
    cold = {"tips": lambda t: -80.0 + (t * 7) % 3}
    s.open()
    s.run(60.0, plan(on_s=60.0), **cold)
    s.close()
    s.run(1.0, WATCH1, tips={1: 30.0})
    s.open()
    s.run(39.0, plan(on_s=60.0), **cold)
    assert (C.FREEZE_CUMULATIVE, 1) not in s.raised()
    s.run(2.0, plan(on_s=60.0), **cold)
    assert s.raised()[(C.FREEZE_CUMULATIVE, 1)] is Priority.HIGH
    s.close()
    s.run(0.5, WATCH1, tips={1: 30.0})
    s.sup.acknowledge(now(s.t))
    assert s.sup.reset(now(s.t)).ok
    assert not s.sup.permits(SetFreeze(probe=1, on=True)).ok  # the procedure's budget is used up
    assert s.sup.permits(SetFreeze(probe=2, on=True)).ok
    s.sup.procedure_opened()
    assert s.sup.permits(SetFreeze(probe=1, on=True)).ok


def test_supply_low_medium_not_latched_trips_only_while_freezing() -> None:
    s = S()
    s.run(0.5, supply=19000.0)
    assert s.raised()[(C.SUPPLY_LOW, None)] is Priority.MEDIUM
    assert not s.tripped_codes()
    assert not s.sup.permits(SetFreeze(probe=1, on=True)).ok  # but no freeze starts
    s.run(0.5)  # back in band: clears by itself
    assert s.sup.book.get(C.SUPPLY_LOW) is None
    assert s.sup.permits(SetFreeze(probe=1, on=True)).ok
    s.open()
    s.run(0.5, plan(), supply=19000.0, tips={1: 30.0})
    assert C.SUPPLY_LOW in s.tripped_codes()
    assert not s.sup.book.get(C.SUPPLY_LOW).latching  # type: ignore[union-attr]


def test_supply_high_closes_master() -> None:
    s = S()
    s.run(0.3, supply=ENV.supply_working_kpa[1] + 100)
    assert s.raised()[(C.SUPPLY_HIGH, None)] is Priority.HIGH
    assert s.safe_state_demanded()
    assert_latched_until_ack_and_reset(s, C.SUPPLY_HIGH, {})


def test_supply_invalid_while_freezing() -> None:
    s = S()
    s.open()
    s.run(0.3, plan(), supply=None, supply_validity=Validity.INVALID, tips={1: 30.0})
    assert s.raised()[(C.SUPPLY_INVALID, None)] is Priority.HIGH
    assert C.SUPPLY_INVALID in s.tripped_codes()


def test_leak_cylinder_falling_faster_than_consumption() -> None:
    # idle: the cylinder falls 10 kPa/s while nothing consumes gas
    s2 = S()
    for _ in range(120):
        s2.t = round(s2.t + POLL_S, 6)
        v = s2.sup.check(snap(s2.t, cylinder=40000 - 10 * s2.t), now(s2.t), Supervision())
        s2.verdicts.append(v)
    assert s2.raised()[(C.SUPPLY_LEAK, None)] is Priority.HIGH
    assert s2.safe_state_demanded()


def test_no_leak_when_consumption_explains_the_drop() -> None:
    s = S()
    s.open()
    for _ in range(120):
        s.t = round(s.t + POLL_S, 6)
        tip = max(35 - 10 * s.t, -90) + (s.t * 13) % 1
        v = s.sup.check(snap(s.t, {1: tip}, cylinder=40000 - 4 * s.t), now(s.t), plan())
        s.verdicts.append(v)
    assert (C.SUPPLY_LEAK, None) not in s.raised()


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"tc": {1: TcStatus.OPEN}}, C.TC_OPEN),
        ({"tc": {1: TcStatus.SHORT}}, C.TC_SHORT),
        ({"tip_validity": {1: Validity.STALE}}, C.TC_INVALID),
    ],
)
def test_thermocouple_faults_on_watched_probe(kw: dict[str, object], code: AlarmCode) -> None:
    s = S()
    s.run(0.3, WATCH1, **kw)
    assert s.raised()[(code, 1)] is Priority.HIGH
    assert code in s.tripped_codes()
    assert_latched_until_ack_and_reset(s, code, {})


def test_unwatched_probe_without_sensor_is_ignored() -> None:
    s = S()
    s.run(1.0, WATCH1, tc={5: TcStatus.OPEN})
    assert s.raised() == {}


def test_tc_stuck_while_valve_open() -> None:
    s = S()
    s.open()
    s.run(LIMITS.tc_stuck_window_s - 1, plan(on_s=120), tips={1: -60.0})
    assert (C.TC_STUCK, 1) not in s.raised()
    s.run(2.0, plan(on_s=120), tips={1: -60.0})
    assert s.raised()[(C.TC_STUCK, 1)] is Priority.HIGH


def test_tc_rate_faster_than_physics() -> None:
    s = S()
    s.run(0.5, WATCH1, tips={1: 30.0})
    s.run(0.1, WATCH1, tips={1: -10.0})  # 40 C in 0.1 s
    assert s.raised()[(C.TC_RATE, 1)] is Priority.HIGH


def _tip_rate_verdicts(readings: list[tuple[float, float, float]]) -> set[AlarmCode]:
    """Feed probe 1's tip as (host stamp, console clock, tip C); the codes raised."""
    sup = Supervisor(LIMITS, ENV, POLL_S)
    codes: set[AlarmCode] = set()
    for host_s, console_s, tip_c in readings:
        s = replace(snap(host_s, {1: tip_c}), console_time_s=console_s)
        codes |= {a.code for a in sup.check(s, now(host_s), WATCH1).raised}
    return codes


def test_tc_rate_is_over_the_consoles_clock_not_the_hosts_jitter() -> None:
    """Found beside a CPU hog (scenario tc-stuck at speed 20): one answer handled
    late and the next on time put two readings 0.1 s of cooling apart within 0.02 s
    of host stamps, and a cooling tip raised a false tc_rate. The console measured
    0.1 s apart: 5.8 C in 0.1 s is within 60 C/s."""
    jittered = [(1.00, 1.00, 30.0), (1.08, 1.10, 29.0), (1.10, 1.20, 23.2)]
    assert C.TC_RATE not in _tip_rate_verdicts(jittered)
    # the same readings as the host stamped them would have raised it
    on_host_clock = [(h, h, c) for h, _, c in jittered]
    assert C.TC_RATE in _tip_rate_verdicts(on_host_clock)


def test_tc_rate_falls_back_to_the_host_when_the_consoles_clock_is_not_believable() -> None:
    """A console clock that stood still, went back (a reset) or ran further than the
    host saw plus the accepted staleness cannot blind the check: the host's interval."""
    ahead = POLL_S + LIMITS.stale_polls * POLL_S + 1.0
    for console_next in (1.00, 0.50, 1.00 + ahead):
        readings = [(1.00, 1.00, 30.0), (1.00 + POLL_S, console_next, -10.0)]
        assert C.TC_RATE in _tip_rate_verdicts(readings), console_next


def test_tip_history_is_forgotten_when_the_watch_ends() -> None:
    """Found by the benchmark: a probe left unwatched with a faulty last reading
    (-120 C, since cleared) raised tc_rate at its next watch, comparing a normal
    reading with that one from before the gap."""
    s = S()
    s.run(0.5, WATCH1, tips={1: -120.0})
    s.run(2.0, Supervision(), tips={1: 30.0})  # not watched: the fault is cleared meanwhile
    s.run(0.5, WATCH1, tips={1: 30.0})
    assert (C.TC_RATE, 1) not in s.raised()
    s.run(0.1, WATCH1, tips={1: -20.0})  # within a watch a jump is still one
    assert s.raised()[(C.TC_RATE, 1)] is Priority.HIGH


def test_stuck_open_valve_tip_still_cooling_closes_master() -> None:
    s = S()
    s.open()
    s.run(5.0, plan(), tips=lambda t: 35 - 10 * t)
    s.close()
    s.run(LIMITS.close_grace_s + 1.0, WATCH1, tips=lambda t: 35 - 10 * t)  # keeps falling
    assert s.raised()[(C.VALVE_STUCK_OPEN, 1)] is Priority.HIGH
    assert s.safe_state_demanded()


def test_stuck_open_valve_by_read_back() -> None:
    s = S()
    s.run(0.2)
    s.run(LIMITS.readback_grace_s + 0.3, Supervision(), freeze_open=[3])
    assert s.raised()[(C.VALVE_STUCK_OPEN, 3)] is Priority.HIGH
    assert s.safe_state_demanded()


def test_stuck_open_valve_tip_not_warming() -> None:
    s = S()
    s.open()
    s.run(10.0, plan(), tips=lambda t: max(35 - 15 * t, -100.0))
    s.close()
    s.run(LIMITS.warm_check_s + 1, WATCH1, tips=lambda t: -100.0 + (t * 10) % 1)
    assert s.raised()[(C.VALVE_STUCK_OPEN, 1)] is Priority.HIGH


def test_no_cooling_after_valve_open() -> None:
    s = S()
    s.run(0.5, tips={1: 35.0})
    s.open()
    s.run(LIMITS.cooling_check_s - 0.5, plan(), tips=lambda t: 35.0 - (t * 10) % 2)
    assert (C.NO_COOLING, 1) not in s.raised()
    s.run(1.0, plan(), tips=lambda t: 35.0 - (t * 10) % 2)
    assert s.raised()[(C.NO_COOLING, 1)] is Priority.HIGH
    assert s.safe_state_demanded()


def test_target_not_reached_medium_no_trip() -> None:
    s = S()
    s.open()
    s.run(35.0, plan(target=-40.0, reach=30.0), tips=lambda t: max(35 - 10 * t, -30.0) + wobble(t))
    assert s.raised()[(C.TARGET_NOT_REACHED, 1)] is Priority.MEDIUM
    assert not s.tripped_codes()


def test_skin_cold_high_and_cool_medium() -> None:
    s = S()
    s.run(0.3, WATCH1, skin=LIMITS.skin_warn_c - 1)
    assert s.raised()[(C.SKIN_COOL, None)] is Priority.MEDIUM
    assert not s.tripped_codes()
    s.run(0.3, WATCH1, skin=LIMITS.skin_min_c - 1)
    assert s.raised()[(C.SKIN_COLD, None)] is Priority.HIGH
    assert C.SKIN_COLD in s.tripped_codes()
    assert_latched_until_ack_and_reset(s, C.SKIN_COLD, {})


def test_skin_ignored_when_no_probe_in_use() -> None:
    s = S()
    s.run(1.0, Supervision(), skin=20.0)  # sensor not yet on the patient
    assert s.raised() == {}


def test_stale_data_high_latched() -> None:
    s = S()
    s.run(0.5)
    for _ in range(LIMITS.stale_polls):
        s.t = round(s.t + POLL_S, 6)
        s.verdicts.append(s.sup.check(None, now(s.t), WATCH1))
    assert (C.STALE_DATA, None) not in s.raised()
    s.t = round(s.t + POLL_S, 6)
    s.verdicts.append(s.sup.check(None, now(s.t), WATCH1))
    assert s.raised()[(C.STALE_DATA, None)] is Priority.HIGH
    assert_latched_until_ack_and_reset(s, C.STALE_DATA, {})


def test_stale_data_detail_says_wall_seconds_at_simulated_speed() -> None:
    """At simulated speed the core's clock runs ``time_scale`` times the wall clock:
    the detail gives wall seconds, and the simulated ones as such."""
    scale = 20.0
    sup = Supervisor(LIMITS, ENV, POLL_S * scale, time_scale=scale)
    sup.check(snap(0.0), now(0.0), WATCH1)
    t = 0.0
    while sup.book.get(C.STALE_DATA) is None:
        t = round(t + POLL_S * scale, 6)
        sup.check(None, now(t), WATCH1)
    alarm = sup.book.get(C.STALE_DATA)
    assert alarm is not None
    wall_s = t / scale
    assert alarm.detail == f"no valid snapshot for {wall_s:.2f} s ({t:.2f} s simulated at x20)"
    assert wall_s <= (LIMITS.stale_polls + 1) * POLL_S + 1e-9  # the wall-clock rule
    real = Supervisor(LIMITS, ENV, POLL_S)
    real.check(snap(0.0), now(0.0), WATCH1)
    real.check(None, now(1.0), WATCH1)
    stale = real.book.get(C.STALE_DATA)
    assert stale is not None
    assert stale.detail == "no valid snapshot for 1.00 s"


def test_storage_failure_high_latched_until_the_writer_is_healthy() -> None:
    """The record's writer failing is an alarm of the one book: high, latched, the
    safe state demanded even while idle; reset refused while it still fails."""
    s = S()
    s.run(0.5)
    s.sup.note_storage(False, "disk_full: database or disk is full")
    v = s.run(POLL_S)
    assert s.raised()[(C.STORAGE_FAILURE, None)] is Priority.HIGH
    assert C.STORAGE_FAILURE in {a.code for a in v.trips}
    assert v.demand is not None
    alarm = s.sup.book.get(C.STORAGE_FAILURE)
    assert alarm is not None
    assert alarm.detail == "disk_full: database or disk is full"
    s.sup.acknowledge(now(s.t))
    s.run(1.0)
    r = s.sup.reset(now(s.t))
    assert not r.ok
    assert "storage_failure: cause still present" in r.reason
    assert not s.sup.permits(SetFreeze(probe=1, on=True)).ok
    s.sup.note_storage(True)
    s.run(0.5)  # healthy again: still latched until the reset
    assert s.sup.book.get(C.STORAGE_FAILURE) is not None
    assert not s.sup.permits(SetFreeze(probe=1, on=True)).ok
    r = s.sup.reset(now(s.t))
    assert r.ok, r.reason
    assert s.sup.book.get(C.STORAGE_FAILURE) is None
    assert s.sup.permits(SetFreeze(probe=1, on=True)).ok


def test_old_snapshot_counts_as_stale() -> None:
    s = S()
    s.run(0.5)
    old = snap(s.t)
    for _ in range(6):
        s.t = round(s.t + POLL_S, 6)
        s.verdicts.append(s.sup.check(old, now(s.t), WATCH1))
    assert (C.STALE_DATA, None) in s.raised()


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"lease_expired": True}, C.CONSOLE_LEASE_EXPIRED),
        ({"faults": ConsoleFaults(overpressure=True)}, C.CONSOLE_OVERPRESSURE),
        (
            {
                "faults": ConsoleFaults(
                    console_limit=True, trips=(LimitTrip(1, TripCause.MIN_TIP, 3.2),)
                )
            },
            C.CONSOLE_LIMIT_TRIP,
        ),
    ],
)
def test_console_faults(kw: dict[str, object], code: AlarmCode) -> None:
    s = S()
    s.run(0.3, WATCH1, **kw)
    assert s.raised()[(code, None)] is Priority.HIGH
    assert code in s.tripped_codes()
    assert_latched_until_ack_and_reset(s, code, {})


def test_lease_disarmed_while_freezing() -> None:
    s = S()
    s.open()
    s.run(0.3, plan(), lease_armed=False, tips={1: 30.0})
    assert s.raised()[(C.LEASE_DISARMED, None)] is Priority.HIGH


def test_permits_gate() -> None:
    s = S()
    assert not s.sup.permits(SetFreeze(probe=1, on=True)).ok  # no snapshot yet
    s.run(0.2)
    for cmd in (SetFreeze(probe=1, on=True), SetThaw(probe=1, on=True), SetMaster(on=True)):
        assert s.sup.permits(cmd).ok
    s.run(0.2, WATCH1, tc={1: TcStatus.OPEN})
    for cmd in (SetFreeze(probe=1, on=True), SetThaw(probe=1, on=True), SetMaster(on=True)):
        p = s.sup.permits(cmd)
        assert not p.ok
        assert "tc_open" in p.reason
    for cmd in (SetFreeze(probe=1, on=False), SetThaw(probe=1, on=False), SetMaster(on=False)):
        assert s.sup.permits(cmd).ok


def test_console_limits_wider_than_supervisor() -> None:
    sup = Supervisor(LIMITS, ENV, POLL_S)
    fp = FreezePlan(2, 150.0, -120.0, -40.0, 60.0)
    cl = sup.console_limits_for(2, fp)
    m = LIMITS.console_margin
    assert cl.max_on_time_s == pytest.approx(150.0 + max(m.on_time_s, 150.0 * m.on_time_frac))
    assert cl.max_on_time_s > 150.0 + LIMITS.on_time_grace_s  # supervisor trips first
    assert cl.min_tip_c == -130.0
    assert cl.max_supply_kpa == pytest.approx(ENV.supply_working_kpa[1] * (1 + m.supply_frac))
    assert cl.max_supply_kpa < ENV.supply_max_kpa
    assert cl.consecutive == m.consecutive
    with pytest.raises(ValueError, match="probe"):
        sup.console_limits_for(1, fp)


# ---- supervisor and engine together ------------------------------------------------


def test_trip_faults_the_engine_and_no_valve_reopens_until_reset() -> None:
    h = Harness(supervise=True)
    from cryod.daemon.commands import ProcedureOpened

    h.feed(ProcedureOpened(), 0.0)
    h.tick(0.0)
    h.feed(RunProtocol(proto([freeze(60)]), (1,)), 0.0)
    assert h.state.phase is Phase.FREEZING
    t = 0.0
    for _ in range(20):
        t = round(t + 0.1, 3)
        h.tick(t, snap(t, {1: 35 - 20 * t}))
    t = round(t + 0.1, 3)
    h.tick(t, snap(t, {1: -6.0}, tc={1: TcStatus.OPEN}))  # thermocouple fails mid-freeze
    assert h.state.phase is Phase.FAULT
    trip_at = max(i for i, (k, e) in enumerate(h.trace) if k == "event")
    after_trip = [c for k, c in h.trace[trip_at:] if k == "cmd"]
    assert after_trip[:2] == [SetMaster(on=False), SetFreeze(probe=1, on=False)]
    closes = [c for c in h.cmds if isinstance(c, CloseCycle)]
    assert [c.outcome for c in closes] == ["faulted"]
    # ack + reset while the cause is still present: refused by both
    h.feed(Ack(), t)
    h.sup.acknowledge(now(t))
    r = h.sup.reset(now(t))
    h.feed(Reset(r.ok, r.reason), t)
    assert not r.ok
    assert h.state.phase is Phase.FAULT
    # even an engine that asked would be refused by the gate
    assert not h.sup.permits(SetFreeze(probe=1, on=True)).ok
    # cause gone: reset clears both, and a new freeze may open
    t += 0.1
    h.tick(t, snap(t, {1: -4.0}))
    r = h.sup.reset(now(t))
    h.feed(Reset(r.ok, r.reason), t)
    assert r.ok
    assert h.state.phase is Phase.IDLE
    for tip in (4.0, 12.0, 20.0):  # the tip warms back into the plausible window
        t += 5.0
        h.tick(t, snap(t, {1: tip}))
    assert not h.sup.book.active
    opened_before = len([c for c in h.cmds if isinstance(c, SetFreeze) and c.on])
    h.feed(RunProtocol(proto([freeze(60)]), (1,)), t)
    assert h.state.phase is Phase.FREEZING, h.cmds[-3:]
    assert len([c for c in h.cmds if isinstance(c, SetFreeze) and c.on]) == opened_before + 1


def test_gate_refuses_engine_valve_open_while_tripped() -> None:
    """The engine cannot override the supervisor: a trip the engine has not yet
    seen still blocks the valve-open commands it emits."""
    h = Harness(supervise=True)
    from cryod.daemon.commands import ProcedureOpened

    h.feed(ProcedureOpened(), 0.0)
    h.tick(0.0)
    # the supervisor trips on something the engine is not told about
    h.sup.check(snap(0.05, supply=40000.0), now(0.05), Supervision())
    assert h.sup.tripped
    h.feed(RunProtocol(proto([freeze(60)]), (1,)), 0.05)
    assert not [c for c in h.cmds if isinstance(c, SetFreeze) and c.on]
    # the refused open, and the rest of its step never sent (coordinator's rule)
    assert h.refused == [SetMaster(on=True), SetFreeze(probe=1, on=True)]
    assert h.state.phase is Phase.FAULT


def test_trip_holds_after_a_self_clearing_alarm_until_reset() -> None:
    """A medium alarm that tripped a freeze clears by itself, but the trip (and
    so the gate) holds until an explicit reset."""
    s = S()
    s.open()
    s.run(0.3, plan(), supply=19000.0, tips={1: 30.0})
    assert C.SUPPLY_LOW in s.tripped_codes()
    s.close()
    s.run(0.5, WATCH1, tips={1: 30.0})
    assert s.sup.book.get(C.SUPPLY_LOW) is None
    assert not s.sup.permits(SetFreeze(probe=1, on=True)).ok
    assert s.sup.reset(now(s.t)).ok
    assert s.sup.permits(SetFreeze(probe=1, on=True)).ok
