"""The return-line sign of a stuck-open freeze valve (docs/reliability.md, the
masked double fault): once the line has had ``return_vent_s`` to vent after a
close, a return pressure above ``return_vented_max_kpa``, or a reading that
cannot be used, raises ``valve_stuck_open``, whatever the thermocouple says.

Synthetic streams for the edges (a property test against the plain rule), then
the simulator's own physics (noise, the return line's time constant, a thaw)
for the normal close and for tc-stuck + valve-stuck-open.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cryod.daemon.alarms import Alarm, AlarmCode
from cryod.daemon.engine import SetFreeze, SetMaster, SetThaw
from cryod.daemon.limits import ConsoleEnvelope, FreezePlan, SafetyLimits, Supervision
from cryod.daemon.safe_state import safe_state_commands
from cryod.daemon.supervisor import Supervisor, Verdict
from cryod.drivers.base import Validity
from cryod.drivers.profile import load_profile
from tests.sim.helpers import make

from .helpers import ENV, LIMITS, POLL_S, RETURN_FLOWING_KPA, now, snap

C = AlarmCode
WATCH1 = Supervision(watched=frozenset({1}))
PLAN1 = Supervision(watched=frozenset({1}), plans=(FreezePlan(1, 120.0, -150.0, -40.0, 60.0),))
ELECTRIC = ConsoleEnvelope(
    probes=8,
    min_tip_c=-150.0,
    supply_working_kpa=(20700.0, 31000.0),
    supply_max_kpa=34500.0,
    capabilities=frozenset({"active_thaw_electric", "skin_channel", "console_limits"}),
)
Ret = float | None | Callable[[float], float | None]


def wobble(t: float) -> float:
    return 0.3 * math.sin(7.0 * t)


class Stream:
    """A supervisor fed one synthetic snapshot per poll; probe 1 is the one used."""

    def __init__(self, limits: SafetyLimits = LIMITS, env: ConsoleEnvelope = ENV) -> None:
        self.sup = Supervisor(limits, env, POLL_S)
        self.t = 0.0
        self.thaw = False
        self.verdicts: list[Verdict] = []

    def cmd(self, c: SetFreeze | SetThaw) -> None:
        if isinstance(c, SetThaw):
            self.thaw = c.on
        self.sup.note_command(c, now(self.t))

    def run(
        self,
        seconds: float,
        tip: Callable[[float], float],
        ret: Ret,
        sv: Supervision = WATCH1,
        return_validity: Validity = Validity.VALID,
    ) -> None:
        end = self.t + seconds
        while self.t < end - 1e-9:
            self.t = round(self.t + POLL_S, 6)
            r = ret(self.t) if callable(ret) else ret
            v = self.sup.check(
                snap(
                    self.t,
                    {1: tip(self.t)},
                    returns={1: r},
                    return_validity={1: return_validity if r is not None else Validity.INVALID},
                    thaw_on=[1] if self.thaw else [],
                ),
                now(self.t),
                sv,
            )
            self.verdicts.append(v)

    def freeze(self, seconds: float = 10.0) -> float:
        """Open probe 1, cool it to -90 C with gas flowing, close it; returns the close time."""
        self.cmd(SetFreeze(probe=1, on=True))
        t0 = self.t
        self.run(
            seconds, lambda t: max(35 - 15 * (t - t0), -90) + wobble(t), RETURN_FLOWING_KPA, PLAN1
        )
        self.cmd(SetFreeze(probe=1, on=False))
        return self.t

    def stuck_open(self) -> list[Alarm]:
        return [a for v in self.verdicts for a in v.raised if a.key == (C.VALVE_STUCK_OPEN, 1)]

    def safe_state_demanded(self) -> bool:
        """The safe state (every output off, the master valve first) was demanded."""
        return any(v.demand is not None for v in self.verdicts)


def warming(t_close: float) -> Callable[[float], float]:
    """A passive thaw after the close: the tip rises 1 C/s (with sensor noise)."""
    return lambda t: -90 + (t - t_close) + wobble(t)


def vented(t_close: float, tau_s: float = 0.5) -> Callable[[float], float]:
    """The return line after a real close: first-order decay to atmospheric."""
    return lambda t: RETURN_FLOWING_KPA * math.exp(-(t - t_close) / tau_s)


# ---- the masked double fault, at the unit level ---------------------------------


def test_frozen_thermocouple_hid_a_stuck_valve_from_the_tip_signs() -> None:
    """The finding: with the tip frozen and the return vented, nothing is raised
    before ``warm_check_s`` (the tip signs alone are slow here)."""
    s = Stream()
    tc = s.freeze()
    s.run(LIMITS.warm_check_s - 1, lambda t: -90.0, vented(tc))
    assert s.stuck_open() == []


def test_return_line_catches_a_stuck_valve_behind_a_frozen_thermocouple() -> None:
    s = Stream()
    tc = s.freeze()
    s.run(LIMITS.return_vent_s + 1, lambda t: -90.0, RETURN_FLOWING_KPA)  # tip frozen
    (alarm,) = s.stuck_open()
    assert LIMITS.return_vent_s <= alarm.raised_mono_s - tc < LIMITS.return_vent_s + POLL_S + 1e-9
    assert "return line 85.0 kPa" in alarm.detail
    assert "gas still flowing" in alarm.detail
    assert s.safe_state_demanded()


def test_return_line_catches_a_stuck_valve_closed_before_the_tip_froze() -> None:
    """A freeze stopped while the tip is still above 0 C ends the tip watch at once;
    the return line still shows the gas."""
    s = Stream()
    s.cmd(SetFreeze(probe=1, on=True))
    s.run(1.0, lambda t: 35 - 15 * t, RETURN_FLOWING_KPA, PLAN1)
    s.cmd(SetFreeze(probe=1, on=False))
    tip_now = 35 - 15 * s.t
    s.run(LIMITS.return_vent_s + 1, lambda t: tip_now + 0.1 * wobble(t), RETURN_FLOWING_KPA)
    assert len(s.stuck_open()) == 1
    assert s.safe_state_demanded()


def test_return_line_catches_a_stuck_valve_with_the_thermocouple_open() -> None:
    """The return sign runs before the tip checks return on an invalid tip."""
    sup = Supervisor(LIMITS, ENV, POLL_S)
    sup.note_command(SetFreeze(probe=1, on=True), now(0.0))
    sup.check(snap(0.1, {1: 20.0}, returns={1: RETURN_FLOWING_KPA}), now(0.1), PLAN1)
    sup.note_command(SetFreeze(probe=1, on=False), now(0.1))
    t = 0.1 + LIMITS.return_vent_s
    v = sup.check(
        snap(t, tip_validity={1: Validity.INVALID}, returns={1: RETURN_FLOWING_KPA}), now(t), WATCH1
    )
    assert {a.code for a in v.raised} >= {C.VALVE_STUCK_OPEN, C.TC_INVALID}


# ---- no false alarm on a normal close ---------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    tau_s=st.floats(0.05, 0.9),
    noise_kpa=st.floats(0.0, 2.0),
    phase=st.floats(0.0, 6.0),
)
def test_normal_close_never_raises(tau_s: float, noise_kpa: float, phase: float) -> None:
    """Any return line that vents within ``return_vent_s`` (the simulator's tau is
    0.5 s; with 0.9 s even 102 kPa is down to 3.6 kPa at 3 s), with noise."""
    s = Stream()
    tc = s.freeze()
    decay = vented(tc, tau_s)
    s.run(
        30.0,
        warming(tc),
        lambda t: max(0.0, decay(t) + noise_kpa * math.sin(13.0 * t + phase)),
    )
    assert s.stuck_open() == []
    assert s.sup.permits(SetFreeze(probe=1, on=True)).ok


def test_helium_thaw_after_the_close_is_not_a_stuck_valve() -> None:
    """Helium leaves through the return line: no sign while the thaw runs; the
    line then gets ``return_vent_s`` again from the end of the thaw."""
    s = Stream()
    tc = s.freeze()
    s.run(0.5, warming(tc), vented(tc))
    s.cmd(SetThaw(probe=1, on=True))
    s.run(20.0, warming(tc), RETURN_FLOWING_KPA)  # helium in the return line
    s.cmd(SetThaw(probe=1, on=False))
    t_off = s.t
    s.run(LIMITS.return_vent_s + 5, warming(tc), vented(t_off))
    assert s.stuck_open() == []


def test_stuck_valve_after_a_helium_thaw_is_caught() -> None:
    s = Stream()
    tc = s.freeze()
    s.cmd(SetThaw(probe=1, on=True))
    s.run(5.0, warming(tc), RETURN_FLOWING_KPA)
    assert s.stuck_open() == []
    s.cmd(SetThaw(probe=1, on=False))
    t_off = s.t
    s.run(LIMITS.return_vent_s + 1, warming(tc), RETURN_FLOWING_KPA)
    (alarm,) = s.stuck_open()
    assert (
        LIMITS.return_vent_s <= alarm.raised_mono_s - t_off < LIMITS.return_vent_s + POLL_S + 1e-9
    )
    assert "after gas thaw" in alarm.detail


def test_electric_thaw_does_not_excuse_a_pressurised_return() -> None:
    """No thaw gas on an electric console: a high return during its thaw is the freeze gas."""
    s = Stream(env=ELECTRIC)
    tc = s.freeze()
    s.cmd(SetThaw(probe=1, on=True))
    s.run(LIMITS.return_vent_s + 1, warming(tc), RETURN_FLOWING_KPA)
    assert len(s.stuck_open()) == 1


# ---- invalid and stale readings are a fault, not a number ---------------------------


@pytest.mark.parametrize("validity", [Validity.INVALID, Validity.STALE])
def test_unusable_return_after_the_vent_time_is_a_fault(validity: Validity) -> None:
    s = Stream()
    tc = s.freeze()
    s.run(LIMITS.return_vent_s + 1, warming(tc), 0.0, return_validity=validity)
    (alarm,) = s.stuck_open()
    assert f"return pressure {validity}" in alarm.detail
    assert "cannot confirm the gas stopped" in alarm.detail


def test_unusable_return_while_venting_is_not_yet_needed() -> None:
    s = Stream()
    tc = s.freeze()
    s.run(LIMITS.return_vent_s - 0.5, warming(tc), None)
    s.run(5.0, warming(tc), vented(tc))
    assert s.stuck_open() == []


def test_an_old_return_reading_counts_as_stale() -> None:
    """A reading determined more than ``stale_polls`` ago in an otherwise fresh
    snapshot is not used as a number, even though it says VALID and reads 0."""
    sup = Supervisor(LIMITS, ENV, POLL_S)
    sup.note_command(SetFreeze(probe=1, on=True), now(0.0))
    sup.note_command(SetFreeze(probe=1, on=False), now(5.0))
    t = 5.0 + LIMITS.return_vent_s + POLL_S
    s = snap(t, {1: -80.0}, returns={1: 0.0})
    old = replace(s.probes[0].return_kpa, t_mono=t - 4 * sup.stale_after_s)
    s = replace(s, probes=(replace(s.probes[0], return_kpa=old), *s.probes[1:]))
    v = sup.check(s, now(t), WATCH1)
    (alarm,) = [a for a in v.raised if a.code is C.VALVE_STUCK_OPEN]
    assert "return pressure stale" in alarm.detail


# ---- the watch is bounded ---------------------------------------------------------


def test_watch_ends_once_vented_and_thawed() -> None:
    """After the line has vented and the tip thawed, the return line of an idle
    probe is not watched: a later bad reading raises nothing."""
    s = Stream()
    tc = s.freeze(3.0)
    s.run(120.0, lambda t: min(-10 + (t - tc), 30.0), vented(tc))  # thawed at tc + 10 s
    assert s.stuck_open() == []
    s.run(2.0, lambda t: 30.0, None)
    s.run(2.0, lambda t: 30.0, RETURN_FLOWING_KPA)
    assert s.stuck_open() == []


def test_master_closed_by_the_trip_clears_the_cause_and_reset_succeeds() -> None:
    s = Stream()
    tc = s.freeze()
    s.run(LIMITS.return_vent_s + 1, warming(tc), RETURN_FLOWING_KPA)
    assert s.safe_state_demanded()
    s.sup.note_command(SetMaster(on=False), now(s.t))
    t_master = s.t
    s.run(2.0, warming(tc), vented(t_master))  # gas stopped: the cause is gone
    s.sup.acknowledge(now(s.t))
    assert s.sup.reset(now(s.t)).ok


# ---- property: the plain rule -------------------------------------------------------


def first_bad_poll(
    returns: Sequence[float | None], t_close: float, vent_s: float, limit_kpa: float
) -> float | None:
    """The plain rule: the first poll at least ``vent_s`` after the close whose
    return reading is unusable or above the limit."""
    for i, r in enumerate(returns):
        t = round(t_close + (i + 1) * POLL_S, 6)
        if t - t_close >= vent_s and (r is None or r > limit_kpa):
            return t
    return None


@settings(max_examples=150, deadline=None)
@given(
    vent_s=st.sampled_from([0.3, 1.0, 3.0]),
    limit_kpa=st.sampled_from([5.0, 20.0, 60.0]),
    data=st.data(),
)
def test_raised_exactly_when_the_plain_rule_says(
    vent_s: float, limit_kpa: float, data: st.DataObject
) -> None:
    value = st.one_of(
        st.none(),
        st.floats(0.0, 120.0),
        st.sampled_from([0.0, limit_kpa, RETURN_FLOWING_KPA]),
    )
    returns = data.draw(st.lists(value, min_size=1, max_size=80))
    limits = SafetyLimits(return_vent_s=vent_s, return_vented_max_kpa=limit_kpa)
    s = Stream(limits)
    tc = s.freeze()
    it = iter(returns)
    s.run(len(returns) * POLL_S, warming(tc), lambda t: next(it))
    expected = first_bad_poll(returns, tc, vent_s, limit_kpa)
    raised = s.stuck_open()
    assert (raised[0].raised_mono_s if raised else None) == expected


# ---- the simulator's physics ------------------------------------------------------


class SimRig:
    """cryosim's console model driven in-process (hand clock, speed 1) and the
    supervisor fed what its sensors report every poll, as the shell would."""

    def __init__(self) -> None:
        self.c, self.clock = make(speed=1.0, seed=7)
        self.env = ConsoleEnvelope.from_profile(load_profile())
        self.sup = Supervisor(LIMITS, self.env, POLL_S)
        self.verdicts: list[Verdict] = []
        self.c.set_lease_timeout(1000)
        self.do(SetMaster(on=True))

    @property
    def t(self) -> float:
        return self.clock.t

    def do(self, cmd: SetFreeze | SetThaw | SetMaster) -> None:
        if isinstance(cmd, SetMaster):
            self.c.set_master(cmd.on)
        elif isinstance(cmd, SetFreeze):
            self.c.set_freeze(cmd.probe, cmd.on)
        else:
            self.c.set_thaw(cmd.probe, cmd.on)
        self.sup.note_command(cmd, now(self.t))

    def run(self, seconds: float, sv: Supervision = WATCH1) -> None:
        polls = round(seconds / POLL_S)
        for _ in range(polls):
            for _ in range(round(POLL_S / 0.01)):
                self.clock.t = round(self.clock.t + 0.01, 6)
                self.c.step(0.01)
            self.c.renew_lease()
            p = self.c.probe(1)
            s = snap(
                self.t,
                {1: p.tip_c},
                returns={1: p.return_kpa},
                supply=self.c.supply_kpa(),
                cylinder=self.c.cylinder_kpa(),
                skin=self.c.skin_c(),
                freeze_open=[1] if p.freeze_open else [],
                thaw_on=[1] if p.thaw_on else [],
            )
            v = self.sup.check(s, now(self.t), sv)
            self.verdicts.append(v)
            if v.demand is not None:
                for cmd in safe_state_commands(self.env.probes, s):
                    self.do(cmd)

    def raised(self) -> list[Alarm]:
        return [a for v in self.verdicts for a in v.raised]


@pytest.mark.parametrize("thaw", [False, True])
def test_simulated_normal_close_raises_nothing(thaw: bool) -> None:
    r = SimRig()
    r.do(SetFreeze(probe=1, on=True))
    r.run(30.0, PLAN1)
    r.do(SetFreeze(probe=1, on=False))
    if thaw:
        r.run(0.5)
        r.do(SetThaw(probe=1, on=True))
        r.run(20.0)
        r.do(SetThaw(probe=1, on=False))
    r.run(30.0)
    assert [a for a in r.raised() if a.code is not C.TARGET_NOT_REACHED] == []


def test_simulated_tc_stuck_and_valve_stuck_open_caught_by_the_return_line() -> None:
    r = SimRig()
    r.do(SetFreeze(probe=1, on=True))
    r.run(20.0, PLAN1)
    r.c.inject("tc-stuck", probe=1)
    r.run(0.3, PLAN1)
    r.c.inject("valve-stuck-open", probe=1)
    r.run(0.3, PLAN1)
    r.do(SetFreeze(probe=1, on=False))
    t_close = r.t
    r.run(LIMITS.return_vent_s + 2.0)
    (alarm,) = [a for a in r.raised() if a.code is C.VALVE_STUCK_OPEN]
    assert "return line" in alarm.detail
    assert alarm.raised_mono_s - t_close < LIMITS.return_vent_s + POLL_S + 1e-6
    assert not r.c.master_open()  # the demand closed the master: the gas stopped
    assert r.c.probe(1).return_kpa < LIMITS.return_vented_max_kpa


# ---- the limits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("return_vented_max_kpa", 0.0),
        ("return_vented_max_kpa", -1.0),
        ("return_vented_max_kpa", 69.0),  # the flowing range starts there: never fires
        ("return_vent_s", 0.0),
        ("return_vent_s", 61.0),
    ],
)
def test_return_limits_are_rejected_out_of_range(field: str, bad: float) -> None:
    with pytest.raises(ValidationError, match=field):
        SafetyLimits.from_mapping({field: bad})


def test_return_limits_for_sim_speed() -> None:
    """The vent time is physics (scaled); the pressure limit is not."""
    fast = SafetyLimits(return_vent_s=3.0, return_vented_max_kpa=20.0).for_sim_speed(10.0)
    assert fast.return_vent_s == pytest.approx(0.3)
    assert fast.return_vented_max_kpa == 20.0


# ---- a thermocouple found untrustworthy is no reference after the close -----------


def _stuck_then_closed(s: Stream) -> tuple[float, float]:
    """Open probe 1, cool it, then its reading freezes at -10 C until ``tc_stuck``
    trips and the valve is closed; returns (time of the close, the frozen reading)."""
    s.cmd(SetFreeze(probe=1, on=True))
    t0 = s.t
    s.run(3.0, lambda t: 35 - 15 * (t - t0), RETURN_FLOWING_KPA, PLAN1)
    frozen = 35 - 15 * (s.t - t0)
    s.run(LIMITS.tc_stuck_window_s + 1.0, lambda t: frozen, RETURN_FLOWING_KPA, PLAN1)
    assert any(a.key == (C.TC_STUCK, 1) for v in s.verdicts for a in v.raised)
    s.cmd(SetFreeze(probe=1, on=False))
    return s.t, frozen


def test_a_stuck_thermocouple_that_comes_unstuck_after_the_close_is_no_stuck_valve() -> None:
    """Found by the fault matrix: the tip had gone on cooling behind the frozen
    reading, so when the reading came back it was colder than at the close, which the
    tip watch took for gas still flowing. The return line vents: no stuck valve."""
    s = Stream()
    tc, frozen = _stuck_then_closed(s)
    true_tip = frozen - 50.0  # where the tip really got to
    s.run(
        LIMITS.warm_check_s + 1.0,
        lambda t: true_tip + (t - tc) + wobble(t),  # unstuck: the real, warming tip
        vented(tc),
    )
    assert s.stuck_open() == []


def test_a_stuck_thermocouple_still_stuck_after_the_close_is_no_stuck_valve() -> None:
    """A reading that stays frozen does not warm: that is the thermocouple's fault
    (already alarmed), not a sign about the valve."""
    s = Stream()
    tc, frozen = _stuck_then_closed(s)
    s.run(LIMITS.warm_check_s + 1.0, lambda t: frozen, vented(tc))
    assert s.stuck_open() == []


def test_a_stuck_valve_behind_a_thermocouple_found_stuck_is_still_caught() -> None:
    s = Stream()
    tc, frozen = _stuck_then_closed(s)
    s.run(LIMITS.return_vent_s + 1.0, lambda t: frozen - 50.0 - (t - tc), RETURN_FLOWING_KPA)
    (alarm,) = s.stuck_open()
    assert "return line" in alarm.detail
    assert LIMITS.return_vent_s <= alarm.raised_mono_s - tc < LIMITS.return_vent_s + POLL_S + 1e-9
    assert s.safe_state_demanded()


def test_the_tip_watch_is_back_at_the_next_opening() -> None:
    """Distrust lasts for one opening: after a clean open and close, a tip still
    cooling is a stuck valve again."""
    s = Stream()
    tc, _ = _stuck_then_closed(s)
    s.run(75.0, lambda t: min(-40.0 + (t - tc), 35.0), vented(tc))  # thawed to 35 C
    assert s.stuck_open() == []
    tc2 = s.freeze()  # the same supervisor: the thermocouple is fine again
    s.run(LIMITS.close_grace_s + 1.0, lambda t: -90.0 - 10 * (t - tc2), vented(tc2))
    (alarm,) = s.stuck_open()
    assert "still cooling" in alarm.detail
