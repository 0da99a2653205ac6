"""The pure engine: every state x every event, record before act, interlocks,
operator commands, and durations that ignore wall-clock steps."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cryod.daemon.alarms import ALARM_SPECS, Alarm, AlarmCode
from cryod.daemon.commands import (
    OPERATOR_EVENTS,
    Abort,
    Ack,
    AdHocFreeze,
    AdHocThaw,
    CloseCycle,
    CommandFailed,
    Continue,
    CycleCommitted,
    Event,
    Extend,
    LimitsConfirmed,
    LimitsRefused,
    OpenCycle,
    ProcedureClosed,
    ProcedureOpened,
    Record,
    Reject,
    Reset,
    RunProtocol,
    SetFreeze,
    SetMaster,
    SetThaw,
    Stop,
    SupervisorTrip,
    Tick,
    WriteConsoleLimits,
    is_valve_open,
)
from cryod.daemon.engine import Engine, EngineConfig, Phase
from cryod.daemon.limits import ConsoleEnvelope, SafetyLimits
from cryod.drivers.base import ConsoleFaults, TcStatus, Validity

from .helpers import ENV, LIMITS, UTC0, Harness, freeze, hold, now, proto, snap, thaw

CLASSIC = proto([freeze(90, -60, 45), thaw(30), freeze(90, -60, 45), thaw(60, until=10)])
WITH_HOLD = proto([freeze(10), thaw(5), hold(), freeze(10), thaw(5)])
ONE_FREEZE = proto([freeze(20)])


def alarm(code: AlarmCode = AlarmCode.TIP_TOO_COLD, probe: int | None = 1) -> Alarm:
    spec = ALARM_SPECS[code]
    return Alarm(code, spec.priority, probe, "test", 0.0, UTC0)


def ready(t: float = 0.0, **kw: object) -> Harness:
    h = Harness(**kw)  # type: ignore[arg-type]
    h.feed(ProcedureOpened(), t)
    h.tick(t)
    return h


def reach(phase: Phase) -> tuple[Harness, float]:
    """A harness in ``phase`` at time t (a fresh snapshot was just ticked)."""
    t = 0.0
    if phase is Phase.IDLE:
        return ready(t), t
    if phase is Phase.PRECHECK:
        h = ready(t, auto=False)
        h.feed(RunProtocol(CLASSIC, (1,)), t)
        return h, t
    h = ready(t)
    if phase is Phase.COMPLETE:
        h.feed(AdHocThaw(1, 5.0), t)
        t = 6.0
        h.tick(t)
        return h, t
    proto_ = WITH_HOLD if phase is Phase.HOLD else CLASSIC
    h.feed(RunProtocol(proto_, (1,)), t)
    if phase is Phase.FREEZING:
        return h, t
    if phase is Phase.STOPPED:
        h.feed(Stop(), t)
        h.feed(Stop(), t)
        return h, t
    if phase is Phase.ABORTED:
        h.feed(Abort(), t)
        return h, t
    if phase is Phase.FAULT:
        h.feed(SupervisorTrip(alarm()), t)
        return h, t
    t = 90.0 if proto_ is CLASSIC else 10.0
    h.tick(t, snap(t, {1: -60.0}))
    if phase is Phase.THAWING:
        return h, t
    t += 5.0
    h.tick(t, snap(t, {1: 20.0}))
    assert phase is Phase.HOLD
    return h, t


def test_reach_builds_every_state() -> None:
    for phase in Phase:
        h, _ = reach(phase)
        assert h.state.phase is phase, phase


def events(h: Harness, t: float) -> dict[str, Event]:
    run = h.state.run
    ref = run.cycles[0].cycle_ref if run is not None and run.cycles else 999
    return {
        "run": RunProtocol(CLASSIC, (1,)),
        "adhoc_freeze": AdHocFreeze(2, 30.0),
        "adhoc_thaw": AdHocThaw(2, 10.0, "passive"),
        "stop": Stop(),
        "extend": Extend(10.0),
        "continue": Continue(),
        "abort": Abort(),
        "ack": Ack(),
        "reset": Reset(cause_gone=True),
        "proc_open": ProcedureOpened(),
        "proc_close": ProcedureClosed(),
        "tick": Tick(snap(t)),
        "tick_none": Tick(None),
        "committed": CycleCommitted(ref),
        "limits_ok": LimitsConfirmed(1),
        "limits_refused": LimitsRefused(1, "no echo"),
        "cmd_failed": CommandFailed(SetFreeze(probe=1, on=True), "timeout"),
        "trip": SupervisorTrip(alarm()),
    }


P = Phase
SAME = "same"
REST_ROW = {
    "run": P.PRECHECK,
    "adhoc_freeze": P.PRECHECK,
    "adhoc_thaw": P.THAWING,
    "cmd_failed": P.FAULT,
    "trip": P.FAULT,
}
EXPECTED: dict[Phase, dict[str, Phase | str]] = {
    P.IDLE: REST_ROW,
    P.COMPLETE: REST_ROW,
    P.STOPPED: REST_ROW,
    P.ABORTED: REST_ROW,
    P.PRECHECK: {
        "stop": P.STOPPED,
        "abort": P.ABORTED,
        "limits_refused": P.ABORTED,
        "cmd_failed": P.FAULT,
        "trip": P.FAULT,
    },
    P.FREEZING: {"stop": P.THAWING, "abort": P.ABORTED, "cmd_failed": P.FAULT, "trip": P.FAULT},
    P.THAWING: {"stop": P.HOLD, "abort": P.ABORTED, "cmd_failed": P.FAULT, "trip": P.FAULT},
    P.HOLD: {
        "continue": P.PRECHECK,
        "stop": P.STOPPED,
        "abort": P.ABORTED,
        "cmd_failed": P.FAULT,
        "trip": P.FAULT,
    },
    P.FAULT: {},
}
EVENT_NAMES = list(events(Harness(), 0.0))


@pytest.mark.parametrize("name", EVENT_NAMES)
@pytest.mark.parametrize("phase", list(Phase))
def test_every_state_times_every_event(phase: Phase, name: str) -> None:
    h, t = reach(phase)
    h.auto = False  # one event, no confirmations fed back
    before = h.state
    ev = events(h, t)[name]
    cmds = h.feed(ev, t)
    want = EXPECTED[phase].get(name, SAME)
    assert h.state.phase is (phase if want == SAME else want)
    # no single event opens a valve: only the last of the two confirmations does
    assert not [c for c in cmds if is_valve_open(c)]
    # every operator command is accepted (recorded) or rejected with a reason
    if isinstance(ev, OPERATOR_EVENTS):
        rejects = [c for c in cmds if isinstance(c, Reject)]
        accepted = [c for c in cmds if isinstance(c, Record) and c.kind == "operator"]
        assert len(rejects) + len(accepted) == 1, cmds
        if rejects:
            assert rejects[0].code
            assert h.state == before
    else:
        assert not [c for c in cmds if isinstance(c, Reject)]
    # leaving an active phase closes every cycle row it opened
    if before.phase in (P.FREEZING, P.THAWING) and h.state.phase is not before.phase:
        closed = {c.cycle_ref for c in cmds if isinstance(c, CloseCycle)}
        assert before.run is not None
        assert {c.cycle_ref for c in before.run.cycles} <= closed
    # the fault state is entered only with every output commanded off in this poll's
    # turn (a safe-state pass already made in the turn is not repeated)
    if h.state.phase is P.FAULT and before.phase is not P.FAULT:
        turn = h.turn_cmds()
        closed_probes = {c.probe for c in turn if isinstance(c, SetFreeze) and not c.on}
        thaw_off = {c.probe for c in turn if isinstance(c, SetThaw) and not c.on}
        assert closed_probes == thaw_off == set(range(1, ENV.probes + 1))
        assert SetMaster(on=False) in turn


def _opens(h: Harness) -> list[tuple[int, int]]:
    """(trace index, probe) of every SetFreeze(on)."""
    return [
        (i, c.probe)
        for i, (k, c) in enumerate(h.trace)
        if k == "cmd" and isinstance(c, SetFreeze) and c.on
    ]


@pytest.mark.parametrize("order", ["commit_first", "limits_first"])
def test_record_before_act(order: str) -> None:
    h = ready(auto=False)
    h.feed(RunProtocol(CLASSIC, (1, 2)), 0.0)
    opens = [c for c in h.cmds if isinstance(c, OpenCycle)]
    assert [o.probe for o in opens] == [1, 2]
    assert not _opens(h)
    confirms: list[Event] = [CycleCommitted(o.cycle_ref) for o in opens]
    limits: list[Event] = [LimitsConfirmed(1), LimitsConfirmed(2)]
    seq = confirms + limits if order == "commit_first" else limits + confirms
    for ev in seq[:-1]:
        h.feed(ev, 0.1)
        assert not _opens(h), ev
        assert h.state.phase is Phase.PRECHECK
    h.feed(seq[-1], 0.2)
    assert h.state.phase is Phase.FREEZING
    assert sorted(p for _, p in _opens(h)) == [1, 2]
    # every open comes after both confirmations for its probe, and after SetMaster(on=on)
    for idx, probe in _opens(h):
        before = [e for k, e in h.trace[:idx] if k == "event"]
        ref = next(o.cycle_ref for o in opens if o.probe == probe)
        assert CycleCommitted(ref) in before
        assert LimitsConfirmed(probe) in before
        assert any(isinstance(c, SetMaster) and c.on for k, c in h.trace[:idx] if k == "cmd")


def test_limits_written_are_the_supervisors() -> None:
    h = ready(auto=False)
    h.feed(RunProtocol(ONE_FREEZE, (3,)), 0.0)
    w = next(c for c in h.cmds if isinstance(c, WriteConsoleLimits))
    plan = h.engine.supervision(h.state).plan(3)
    assert plan is not None
    assert w.limits == h.sup.console_limits_for(3, plan)
    assert w.limits.max_on_time_s >= plan.on_time_s + LIMITS.console_margin.on_time_s
    assert w.limits.min_tip_c == plan.floor_tip_c - LIMITS.console_margin.tip_c


def test_limits_refused_means_no_freeze() -> None:
    h = ready(auto=False)
    h.feed(RunProtocol(ONE_FREEZE, (1,)), 0.0)
    ref = next(c for c in h.cmds if isinstance(c, OpenCycle)).cycle_ref
    h.feed(CycleCommitted(ref), 0.1)
    h.feed(LimitsRefused(1, "read-back differs"), 0.2)
    assert h.state.phase is Phase.ABORTED
    assert "limits_refused" in h.state.reason
    assert "read-back differs" in h.state.reason
    assert not _opens(h)
    close = [c for c in h.cmds if isinstance(c, CloseCycle)]
    assert [(c.cycle_ref, c.outcome) for c in close] == [(ref, "aborted")]


def test_precheck_timeout_aborts_without_opening() -> None:
    h = ready(auto=False)
    h.feed(RunProtocol(ONE_FREEZE, (1,)), 0.0)
    h.tick(LIMITS.precheck_timeout_s - 0.1)
    assert h.state.phase is Phase.PRECHECK
    h.tick(LIMITS.precheck_timeout_s + 0.1)
    assert h.state.phase is Phase.ABORTED
    assert "precheck_timeout" in h.state.reason
    assert not _opens(h)


NO_LIMITS_ENV = replace(ENV, capabilities=frozenset({"skin_channel"}))


def test_console_without_limits_refused_unless_site_allows() -> None:
    h = ready(env=NO_LIMITS_ENV)
    cmds = h.feed(RunProtocol(ONE_FREEZE, (1,)), 0.0)
    rej = [c for c in cmds if isinstance(c, Reject)]
    assert rej
    assert rej[0].code == "no_console_limits"
    allow = SafetyLimits(allow_host_only_limits=True)
    h = ready(env=NO_LIMITS_ENV, limits=allow, auto=False)
    h.feed(RunProtocol(ONE_FREEZE, (1,)), 0.0)
    oc = next(c for c in h.cmds if isinstance(c, OpenCycle))
    assert oc.host_only_limits is True
    assert not [c for c in h.cmds if isinstance(c, WriteConsoleLimits)]
    assert not _opens(h)
    h.feed(CycleCommitted(oc.cycle_ref), 0.1)
    assert _opens(h)
    assert h.state.phase is Phase.FREEZING


# ---- interlocks: each failure is a rejection with its reason -----------------


INTERLOCK_CASES = {
    "lease_not_armed": {"lease_armed": False},
    "lease_timeout_too_long": {"lease_timeout_ms": 5000},
    "console_fault": {"faults": ConsoleFaults(overpressure=True)},
    "supply_low": {"supply": 15000.0},
    "supply_high": {"supply": 32000.0},
    "supply_invalid": {"supply_validity": Validity.STALE, "supply": None},
    "tc_fault": {"tc": {1: TcStatus.OPEN}},
    "tc_invalid": {"tip_validity": {1: Validity.INVALID}},
    "tc_implausible": {"tips": {1: -5.0}},
    "valve_already_open": {"freeze_open": [1]},
}


@pytest.mark.parametrize("code", list(INTERLOCK_CASES))
def test_interlock_failure_rejects_with_reason(code: str) -> None:
    h = Harness()
    h.feed(ProcedureOpened(), 0.0)
    h.tick(0.0, snap(0.0, **INTERLOCK_CASES[code]))  # type: ignore[arg-type]
    cmds = h.feed(RunProtocol(ONE_FREEZE, (1,)), 0.0)
    rej = [c for c in cmds if isinstance(c, Reject)]
    assert [r.code for r in rej] == [code], cmds
    assert h.state.phase is Phase.IDLE
    assert not [c for c in cmds if isinstance(c, OpenCycle)]


def test_interlock_stale_and_missing_snapshot_and_no_procedure() -> None:
    h = Harness()
    h.feed(ProcedureOpened(), 0.0)
    cmds = h.feed(AdHocFreeze(1, 30.0), 0.0)
    assert [c.code for c in cmds if isinstance(c, Reject)] == ["no_snapshot"]
    h.tick(0.0)
    cmds = h.feed(AdHocFreeze(1, 30.0), 1.0)  # 1 s later: more than 3 polls old
    assert [c.code for c in cmds if isinstance(c, Reject)] == ["snapshot_stale"]
    h = Harness()
    h.tick(0.0)
    cmds = h.feed(AdHocFreeze(1, 30.0), 0.0)
    assert [c.code for c in cmds if isinstance(c, Reject)] == ["no_procedure"]


def test_later_freeze_rechecks_interlocks() -> None:
    h = ready()
    h.feed(RunProtocol(CLASSIC, (1,)), 0.0)
    h.tick(90.0, snap(90.0, {1: -60.0}))
    assert h.state.phase is Phase.THAWING
    h.tick(120.0, snap(120.0, {1: 5.0}, lease_armed=False))
    assert h.state.phase is Phase.ABORTED
    assert "lease_not_armed" in h.state.reason
    assert len(_opens(h)) == 1


def test_second_freeze_accepts_a_cold_tip_after_thaw() -> None:
    h = ready()
    h.feed(RunProtocol(CLASSIC, (1,)), 0.0)
    h.tick(90.0, snap(90.0, {1: -60.0}))
    h.tick(120.0, snap(120.0, {1: -2.0}))
    assert h.state.phase is Phase.FREEZING
    assert len(_opens(h)) == 2


# ---- operator commands ------------------------------------------------------------


def test_full_protocol_runs_to_complete_with_figures() -> None:
    h = ready()
    h.feed(RunProtocol(CLASSIC, (1,)), 0.0)
    t = 0.0
    tip = 35.0
    while h.state.phase not in (Phase.COMPLETE, Phase.ABORTED, Phase.FAULT) and t < 400:
        t = round(t + 0.5, 3)
        freezing = h.state.phase is Phase.FREEZING
        tip = max(tip - 10.0, -120.0) if freezing else min(tip + 4.0, 37.0)
        h.tick(t, snap(t, {1: tip}))
    assert h.state.phase is Phase.COMPLETE
    closes = [c for c in h.cmds if isinstance(c, CloseCycle)]
    assert [c.figures.phase for c in closes] == ["freeze", "thaw", "freeze", "thaw"]
    assert all(c.outcome == "completed" for c in closes)
    f = closes[0].figures
    assert f.valve_open_s == pytest.approx(90.0, abs=0.51)
    assert f.min_tip_c == -120.0
    assert f.time_to_target_s is not None
    assert f.time_to_target_s < 5
    assert closes[1].figures.thaw_to_0c_s is not None
    assert h.state.cumulative(1) == pytest.approx(180.0, abs=1.1)
    # the run is over: the master valve closes after the last row is closed
    last_close = max(i for i, c in enumerate(h.cmds) if isinstance(c, CloseCycle))
    assert SetMaster(on=False) in h.cmds[last_close:]


def test_stop_in_freeze_goes_to_thaw_then_ends() -> None:
    h = ready()
    h.feed(RunProtocol(CLASSIC, (1,)), 0.0)
    h.tick(10.0)
    cmds = h.feed(Stop(), 10.0)
    assert SetFreeze(probe=1, on=False) in cmds
    assert [c.outcome for c in cmds if isinstance(c, CloseCycle)] == ["stopped"]
    assert h.state.phase is Phase.THAWING
    h.tick(40.0)
    assert h.state.phase is Phase.STOPPED
    assert len(_opens(h)) == 1


def test_stop_never_starts_a_freeze() -> None:
    h, t = reach(Phase.THAWING)
    h.feed(Stop(), t)
    assert h.state.phase is Phase.HOLD
    h.tick(t + 100.0)
    assert h.state.phase is Phase.HOLD
    assert len(_opens(h)) == 1
    h.feed(Continue(), t + 100.0)
    assert h.state.phase is Phase.FREEZING
    assert len(_opens(h)) == 2


def test_hold_times_out_to_stopped() -> None:
    p = proto([freeze(10), thaw(5), hold(30.0), freeze(10)])
    h = ready()
    h.feed(RunProtocol(p, (1,)), 0.0)
    h.tick(10.0)
    h.tick(15.0)
    assert h.state.phase is Phase.HOLD
    h.tick(44.0)
    assert h.state.phase is Phase.HOLD
    h.tick(45.5)
    assert h.state.phase is Phase.STOPPED
    assert len(_opens(h)) == 1


def test_thaw_until_tip_above_ends_early() -> None:
    h = ready()
    h.feed(AdHocThaw(1, None), 0.0)
    h.tick(1.0, snap(1.0, {1: -30.0}))
    assert h.state.phase is Phase.THAWING
    h.tick(2.0, snap(2.0, {1: LIMITS.ad_hoc_thaw_until_c + 1}))
    assert h.state.phase is Phase.COMPLETE


def test_active_thaw_waits_for_its_row() -> None:
    p = proto([thaw(20, mode="active")])
    h = ready(auto=False)
    cmds = h.feed(RunProtocol(p, (1,)), 0.0)
    assert not [c for c in cmds if isinstance(c, SetThaw)]
    ref = next(c for c in cmds if isinstance(c, OpenCycle)).cycle_ref
    cmds = h.feed(CycleCommitted(ref), 0.1)
    assert SetThaw(probe=1, on=True) in cmds
    cmds = h.tick(20.2)
    assert SetThaw(probe=1, on=False) in cmds
    assert h.state.phase is Phase.COMPLETE


def test_extend_within_limits_after_console_confirms() -> None:
    h = ready(auto=False)
    h.feed(RunProtocol(ONE_FREEZE, (1,)), 0.0)
    ref = next(c for c in h.cmds if isinstance(c, OpenCycle)).cycle_ref
    h.feed(CycleCommitted(ref), 0.0)
    h.feed(LimitsConfirmed(1), 0.0)
    cmds = h.feed(Extend(15.0), 5.0)
    w = [c for c in cmds if isinstance(c, WriteConsoleLimits)]
    assert len(w) == 1
    assert w[0].limits.max_on_time_s >= 35.0
    assert h.state.run is not None
    assert h.state.run.planned_s == 20.0
    rej = h.feed(Extend(5.0), 5.0)
    assert [c.code for c in rej if isinstance(c, Reject)] == ["extension_pending"]
    h.feed(LimitsConfirmed(1), 5.1)
    assert h.state.run is not None
    assert h.state.run.planned_s == 35.0
    h.tick(34.0)
    assert h.state.phase is Phase.FREEZING
    h.tick(35.0)
    assert h.state.phase is Phase.COMPLETE


@pytest.mark.parametrize(
    ("seconds", "code"),
    [
        (0.0, "bad_extension"),
        (-5.0, "bad_extension"),
        (61.0, "bad_extension"),
        (60.0, "cycle_limit"),
    ],
)
def test_extend_rejected_beyond_limits(seconds: float, code: str) -> None:
    lim = SafetyLimits(max_freeze_s_per_cycle=60.0)
    h = ready(limits=lim)
    h.feed(RunProtocol(proto([freeze(20)], limits=lim), (1,)), 0.0)
    cmds = h.feed(Extend(seconds), 1.0)
    assert [c.code for c in cmds if isinstance(c, Reject)] == [code]


def test_cumulative_freeze_per_procedure() -> None:
    lim = SafetyLimits(
        max_freeze_s_per_cycle=60, max_freeze_s_per_protocol=60, max_freeze_s_per_procedure=100
    )
    h = ready(limits=lim)
    h.feed(AdHocFreeze(1, 60.0), 0.0)
    h.tick(60.0)
    assert h.state.phase is Phase.COMPLETE
    assert h.state.cumulative(1) == 60.0
    cmds = h.feed(AdHocFreeze(1, 50.0), 60.0)
    assert [c.code for c in cmds if isinstance(c, Reject)] == ["cumulative_freeze"]
    cmds = h.feed(AdHocFreeze(2, 50.0), 60.0)  # another probe has its own budget
    assert not [c for c in cmds if isinstance(c, Reject)]
    h.feed(Abort(), 61.0)
    h.feed(ProcedureClosed(), 61.0)
    h.feed(ProcedureOpened(), 61.0)
    h.tick(61.0)
    cmds = h.feed(AdHocFreeze(1, 50.0), 61.0)
    assert not [c for c in cmds if isinstance(c, Reject)]


def test_ad_hoc_freeze_uses_the_same_limits() -> None:
    h = ready()
    cmds = h.feed(AdHocFreeze(1, LIMITS.max_freeze_s_per_cycle + 1), 0.0)
    rej = [c for c in cmds if isinstance(c, Reject)]
    assert rej[0].code == "invalid"
    assert "max_freeze_s_per_cycle" in rej[0].detail
    cmds = h.feed(AdHocThaw(1, 10.0, "active"), 0.0)
    assert not [c for c in cmds if isinstance(c, Reject)]  # CRYOSIM-8 has helium thaw
    h2 = ready(env=replace(ENV, capabilities=frozenset({"console_limits"})))
    cmds = h2.feed(AdHocThaw(1, 10.0, "active"), 0.0)
    assert [c.code for c in cmds if isinstance(c, Reject)] == ["invalid"]


def test_active_helium_thaw_that_starts_a_run_opens_the_master_first() -> None:
    # helium comes through the master valve: a thaw from idle must open it, an
    # electric heater needs no gas, and the end of the run closes it again
    h = ready()
    cmds = h.feed(AdHocThaw(1, 10.0, "active"), 0.0)
    assert cmds.index(SetMaster(on=True)) < cmds.index(SetThaw(probe=1, on=True))
    h.tick(11.0)
    assert SetMaster(on=False) in h.cmds
    electric = replace(ENV, capabilities=frozenset({"active_thaw_electric", "console_limits"}))
    h2 = ready(env=electric)
    cmds = h2.feed(AdHocThaw(1, 10.0, "active"), 0.0)
    assert SetThaw(probe=1, on=True) in cmds
    assert SetMaster(on=True) not in cmds


def test_active_thaw_after_a_freeze_does_not_reopen_the_master() -> None:
    h = ready()
    h.feed(RunProtocol(proto([freeze(10), thaw(10, mode="active")]), (1,)), 0.0)
    h.tick(10.5, snap(10.5, {1: -60.0}))
    assert h.state.phase is Phase.THAWING
    assert SetThaw(probe=1, on=True) in h.cmds
    assert h.cmds.count(SetMaster(on=True)) == 1  # the freeze's, still open


def test_bad_probes_rejected() -> None:
    h = ready()
    for probes in [(), (1, 1), (0,), (9,)]:
        cmds = h.feed(RunProtocol(ONE_FREEZE, probes), 0.0)
        assert [c for c in cmds if isinstance(c, Reject)], probes
        assert h.state.phase is Phase.IDLE


# ---- faults ---------------------------------------------------------------------


def test_trip_ends_cycles_faulted_and_blocks_until_ack_and_reset() -> None:
    h, t = reach(Phase.FREEZING)
    ref = h.state.run.cycles[0].cycle_ref  # type: ignore[union-attr]
    cmds = h.feed(SupervisorTrip(alarm(AlarmCode.VALVE_STUCK_OPEN)), t + 1)
    assert cmds.index(SetMaster(on=False)) < cmds.index(SetFreeze(probe=1, on=False))
    assert [(c.cycle_ref, c.outcome) for c in cmds if isinstance(c, CloseCycle)] == [
        (ref, "faulted")
    ]
    assert not [c for c in cmds if isinstance(c, SetThaw) and c.on]  # no automatic thaw
    assert h.state.phase is Phase.FAULT
    for ev in (RunProtocol(ONE_FREEZE, (1,)), AdHocFreeze(1, 10.0), AdHocThaw(1, 5.0)):
        cmds = h.feed(ev, t + 2)
        assert [c.code for c in cmds if isinstance(c, Reject)] == ["fault_latched"]
    assert [c.code for c in h.feed(Reset(True), t + 3) if isinstance(c, Reject)] == [
        "not_acknowledged"
    ]
    h.feed(Ack(), t + 3)
    cmds = h.feed(Reset(False, "tc_open[1]: cause still present"), t + 3)
    assert [c.code for c in cmds if isinstance(c, Reject)] == ["cause_present"]
    assert h.state.phase is Phase.FAULT
    h.feed(Reset(True), t + 4)
    assert h.state.phase is Phase.IDLE
    h.tick(t + 4)
    cmds = h.feed(RunProtocol(ONE_FREEZE, (1,)), t + 4)
    assert not [c for c in cmds if isinstance(c, Reject)]


def test_new_trip_in_fault_needs_a_new_ack() -> None:
    h, t = reach(Phase.FAULT)
    h.feed(Ack(), t)
    h.feed(SupervisorTrip(alarm(AlarmCode.STALE_DATA, None)), t)
    cmds = h.feed(Reset(True), t)
    assert [c.code for c in cmds if isinstance(c, Reject)] == ["not_acknowledged"]


def test_failed_close_faults_and_closes_master() -> None:
    h, t = reach(Phase.FREEZING)
    cmds = h.feed(CommandFailed(SetFreeze(probe=1, on=False), "timeout"), t)
    assert h.state.phase is Phase.FAULT
    assert SetMaster(on=False) in cmds


# ---- clocks -------------------------------------------------------------------


@pytest.mark.parametrize("step_s", [3600.0, -3600.0, 86400.0 * 365])
def test_wall_clock_step_changes_no_duration(step_s: float) -> None:
    def run(utc_step: float) -> tuple[list[tuple[str, float]], list[object]]:
        h = ready()
        h.feed(RunProtocol(CLASSIC, (1,)), 0.0)
        phases = []
        t = 0.0
        tip = 35.0
        while h.state.phase is not Phase.COMPLETE and t < 400:
            t = round(t + 0.25, 3)
            if t >= 45.0:
                h.utc_offset_s = utc_step  # NTP steps the wall clock mid-freeze
            tip = max(tip - 8, -110.0) if h.state.phase is Phase.FREEZING else min(tip + 3, 37.0)
            before = h.state.phase
            h.tick(t, snap(t, {1: tip}))
            if h.state.phase is not before:
                phases.append((str(h.state.phase), t))
        figs = [c.figures for c in h.cmds if isinstance(c, CloseCycle)]
        return phases, figs

    base_phases, base_figs = run(0.0)
    phases, figs = run(step_s)
    assert phases == base_phases
    assert figs == base_figs
    assert ("thawing", 90.0) in phases


def test_utc_is_only_stamped_on_records() -> None:
    e = Engine(EngineConfig(LIMITS, ENV, 0.1))
    st = e.initial()
    st, cmds = e.step(st, ProcedureOpened(), now(5.0, utc_offset_s=1000.0))
    rec = [c for c in cmds if isinstance(c, Record)]
    assert rec
    assert rec[0].utc == now(5.0, 1000.0).utc


def test_envelope_from_profile_matches_cryosim() -> None:
    from cryod.drivers.profile import load_profile

    assert ConsoleEnvelope.from_profile(load_profile()) == ENV


def test_supervision_is_the_same_with_its_memo_as_computed_fresh() -> None:
    """The engine remembers its last supervision() answer (asked every poll); at every
    tick of two runs, with Extend and a protocol that differs only in its numbers, the
    answer equals what an engine with no memory computes."""
    colder = proto([freeze(90, -80, 45), thaw(30), freeze(90, -80, 45), thaw(60, until=10)])
    h = ready()
    seen: set[tuple[object, ...]] = set()
    t = 0.0
    for run_proto, probes in ((CLASSIC, (1, 2)), (colder, (1, 2))):
        t = round(t + 0.5, 3)
        h.tick(t, snap(t, {1: 35.0, 2: 35.0}))  # tips back at body temperature
        h.feed(RunProtocol(run_proto, probes), t)
        assert h.state.phase is Phase.FREEZING
        tip = 35.0
        extended = False
        while h.state.phase not in (Phase.COMPLETE, Phase.ABORTED, Phase.FAULT) and t < 900:
            t = round(t + 0.5, 3)
            freezing = h.state.phase is Phase.FREEZING
            tip = max(tip - 10.0, -120.0) if freezing else min(tip + 4.0, 37.0)
            h.tick(t, snap(t, {1: tip, 2: tip}))
            if freezing and not extended and t > 20:
                h.feed(Extend(30.0), t)
                extended = True
            fresh = Engine(h.engine.cfg).supervision(h.state)
            assert h.engine.supervision(h.state) == fresh
            seen.add(tuple((p.target_tip_c, p.on_time_s) for p in fresh.plans))
        assert h.state.phase is Phase.COMPLETE  # a resting phase: the next run may start
    # both protocols' targets and the extended on-time were all among the answers
    assert {f for plans in seen for f, _ in plans} == {-60.0, -80.0}
    assert {o for plans in seen for _, o in plans} >= {90.0, 120.0}
