"""The coordinator: the one safe state on every path, every step attempted, failed
closes fed back once, refused opens, and the sticky safe state."""

from __future__ import annotations

import pytest

from cryod.daemon.alarms import AlarmCode
from cryod.daemon.commands import (
    Abort,
    AdHocThaw,
    OutputCommand,
    ProcedureOpened,
    Record,
    RunProtocol,
    SetFreeze,
    SetMaster,
    SetThaw,
    output_of,
)
from cryod.daemon.coordinator import Coordinator, Done, Failed
from cryod.daemon.engine import Engine, EngineConfig, Phase
from cryod.daemon.safe_state import safe_state_commands
from cryod.daemon.supervisor import Supervisor

from .helpers import ENV, LIMITS, POLL_S, Harness, freeze, now, proto, snap, thaw

PROBES = ENV.probes
EVERY_OUTPUT = {output_of(c) for c in safe_state_commands(PROBES)}


def outputs_off(cmds: list[object]) -> list[OutputCommand]:
    return [c for c in cmds if isinstance(c, SetFreeze | SetThaw | SetMaster) and not c.on]


def freezing(h: Harness, t: float = 0.0, probes: tuple[int, ...] = (1,)) -> float:
    """A supervised harness freezing ``probes`` at t, every poll ticked so far."""
    h.feed(ProcedureOpened(), t)
    h.tick(t, snap(t, master_open=False))
    h.feed(RunProtocol(proto([freeze(60), thaw(30, mode="active")]), probes), t)
    assert h.state.phase is Phase.FREEZING
    return t


def ticks_until(h: Harness, t: float, t_end: float, **kw: object) -> float:
    """Tick every poll period from t to t_end with cooling tips on the open valves."""
    while t < t_end - 1e-9:
        t = round(t + POLL_S, 6)
        h.tick(t, snap(t, **kw))  # type: ignore[arg-type]
    return t


# ---- the one list ------------------------------------------------------------


def test_safe_state_is_every_output_off_master_first() -> None:
    cmds = safe_state_commands(PROBES)
    assert cmds[0] == SetMaster(on=False)
    assert [output_of(c) for c in cmds[1 : 1 + PROBES]] == [("freeze", p) for p in range(1, 9)]
    assert [output_of(c) for c in cmds[1 + PROBES :]] == [("thaw", p) for p in range(1, 9)]
    assert all(not c.on for c in cmds)
    assert len({output_of(c) for c in cmds}) == len(cmds) == 1 + 2 * PROBES


def test_safe_state_puts_what_is_on_first() -> None:
    shown = snap(1.0, freeze_open=[5], thaw_on=[7])
    cmds = safe_state_commands(PROBES, shown, first=(3,))
    assert cmds[0] == SetMaster(on=False)
    assert cmds[1:3] == [SetFreeze(probe=5, on=False), SetFreeze(probe=3, on=False)]
    thaws = [c for c in cmds if isinstance(c, SetThaw)]
    assert thaws[:2] == [SetThaw(probe=7, on=False), SetThaw(probe=3, on=False)]
    assert {output_of(c) for c in cmds} == EVERY_OUTPUT


def _assert_one_safe_state(cmds: list[object]) -> None:
    """The turn executed the whole safe state, master first, every output once."""
    off = outputs_off(cmds)
    assert off, cmds
    assert off[0] == SetMaster(on=False)
    assert {output_of(c) for c in off} >= EVERY_OUTPUT


def test_connect_drives_the_safe_state() -> None:
    h = Harness(supervise=True)
    h.coord.connected(now(0.0))
    _assert_one_safe_state(h.drain(now(0.0)))


def test_operator_abort_drives_the_safe_state_even_when_idle() -> None:
    h = Harness(supervise=True)
    h.tick(0.0, snap(0.0, master_open=False))
    _assert_one_safe_state(h.feed(Abort(), 0.0))
    assert h.state.phase is Phase.IDLE


def test_supervisor_trip_drives_the_safe_state_before_the_engine_hears() -> None:
    h = Harness(supervise=True)
    t = freezing(h)
    cmds = h.tick(t + POLL_S, snap(t + POLL_S, {1: 30.0}, supply=40000.0, freeze_open=[1]))
    _assert_one_safe_state(cmds)
    assert h.state.phase is Phase.FAULT
    records = [c for c in cmds if isinstance(c, Record)]
    trip_at = next(i for i, r in enumerate(records) if r.kind == "supervisor_trip")
    done_at = next(i for i, r in enumerate(records) if r.kind == "safe_state_executed")
    assert done_at < trip_at  # the outputs were off before the engine was told
    assert records[done_at].details["confirmed"] is True


def test_storage_failure_trips_drives_the_safe_state_and_faults_until_healthy() -> None:
    """The writer's failure is the supervisor's storage_failure alarm: a trip like any
    other (safe state first, the engine faults), and no freeze until ack + reset with
    the writer healthy again."""
    h = Harness(supervise=True)
    t = freezing(h)
    h.sup.note_storage(False, "disk_full: no space")
    t += POLL_S
    cmds = h.tick(t, snap(t, {1: -30.0}, freeze_open=[1]))
    _assert_one_safe_state(cmds)
    assert h.state.phase is Phase.FAULT
    assert h.state.trips == ("storage_failure",)
    alarm = h.sup.book.get(AlarmCode.STORAGE_FAILURE)
    assert alarm is not None
    assert (alarm.priority, alarm.latching, alarm.detail) == ("high", True, "disk_full: no space")
    # no new freeze while the record cannot be kept
    rejected = h.feed(RunProtocol(proto([freeze(60), thaw(30)]), (2,)), t)
    assert not any(isinstance(c, SetFreeze) and c.on for c in rejected)
    assert h.state.phase is Phase.FAULT
    # ack + reset refused while the writer still fails
    h.coord.acknowledge(now(t))
    h.drain(now(t))
    result, _ = h.coord.reset(snap(t), now(t))
    h.drain(now(t))
    assert not result.ok
    assert "storage_failure: cause still present" in result.reason
    assert h.state.phase is Phase.FAULT
    # healthy again: the reset clears it
    h.sup.note_storage(True)
    t += POLL_S
    h.tick(t)
    result, rejects = h.coord.reset(snap(t), now(t))
    h.drain(now(t))
    assert result.ok, result.reason
    assert rejects == []
    assert h.state.phase is Phase.IDLE
    assert h.sup.book.get(AlarmCode.STORAGE_FAILURE) is None


@pytest.mark.parametrize("active", [True, False])
def test_shutdown_drives_the_safe_state(active: bool) -> None:
    h = Harness(supervise=True)
    t = freezing(h) if active else 0.0
    h.coord.shutdown(now(t))
    cmds = h.drain(now(t))
    _assert_one_safe_state(cmds)
    if active:
        assert h.state.phase is Phase.ABORTED
        assert "shutdown" in h.state.reason
        assert [r.kind for r in cmds if isinstance(r, Record) and r.kind == "abort"] == ["abort"]


def test_active_thaw_is_switched_off_by_the_safe_state() -> None:
    h = Harness(supervise=True)
    h.feed(ProcedureOpened(), 0.0)
    h.tick(0.0)
    h.feed(AdHocThaw(2, 30.0, "active"), 0.0)
    assert SetThaw(probe=2, on=True) in h.cmds
    cmds = h.feed(Abort(), 0.0)
    off = outputs_off(cmds)
    # the thaw that is on comes first among the thaw outputs
    assert next(c for c in off if isinstance(c, SetThaw)) == SetThaw(probe=2, on=False)


# ---- every step attempted, failures fed back once ---------------------------------


def test_every_step_is_attempted_when_each_fails_and_nothing_spins() -> None:
    h = Harness(supervise=True, fail=lambda c: None if c.on else "timeout")
    t = freezing(h)
    cmds = h.feed(Abort(), t)
    # all 17 steps tried once, in the one order; the engine failed safe once and
    # its second safe-state request did not repeat the pass
    assert outputs_off(cmds) == safe_state_commands(PROBES, h.coord.snapshot, (1,))
    assert h.state.phase is Phase.FAULT
    done = [c for c in cmds if isinstance(c, Record) and c.kind == "safe_state_executed"]
    assert len(done) == 1
    assert done[0].details["confirmed"] is False
    assert len(done[0].details["not_confirmed"]) == 1 + 2 * PROBES  # type: ignore[arg-type]
    failed = [c for c in cmds if isinstance(c, Record) and c.kind == "command_failed"]
    assert failed  # the engine heard of it
    assert set(h.sup.unconfirmed) == EVERY_OUTPUT


def test_unconfirmed_outputs_alarm_until_a_snapshot_shows_them_off() -> None:
    h = Harness(supervise=True, fail=lambda c: None if c.on else "link down")
    t = freezing(h)
    h.feed(Abort(), t)
    # the next poll: the console still reports probe 1 open (the close never arrived)
    t = round(t + POLL_S, 6)
    h.tick(t, snap(t, {1: 20.0}, freeze_open=[1], master_open=False))
    codes = [a.code for a in h.alarms]
    assert AlarmCode.SAFE_STATE_UNCONFIRMED in codes
    # the sticky check retried the close (it failed again: still unconfirmed)
    assert h.turn_cmds().count(SetFreeze(probe=1, on=False)) == 1
    # the lease closed everything at the console: a snapshot confirms it
    h.fail = None
    t = round(t + POLL_S, 6)
    h.tick(t, snap(t, {1: 20.0}, master_open=False))
    assert h.sup.unconfirmed == ()
    alarm = h.sup.book.get(AlarmCode.SAFE_STATE_UNCONFIRMED)
    assert alarm is not None
    assert not alarm.present  # latched: gone, but held until ack and reset
    assert alarm.latching


def test_not_sent_is_recorded_as_not_sent() -> None:
    coord = Coordinator(
        engine=Engine(EngineConfig(LIMITS, ENV, POLL_S)),
        supervisor=Supervisor(LIMITS, ENV, POLL_S),
        probes=PROBES,
    )
    coord.connected(now(0.0))
    first = True
    records = []
    while (effect := coord.next_effect()) is not None:
        if isinstance(effect, SetFreeze | SetThaw | SetMaster):
            result = Failed(reason="timeout") if first else Failed(reason="link down", sent=False)
            first = False
            coord.report(effect, result, now(0.0))
        elif isinstance(effect, Record):
            records.append(effect)
    done = next(r for r in records if r.kind == "safe_state_executed")
    lines = done.details["not_confirmed"]
    assert isinstance(lines, list)
    assert lines[0] == "master: timeout"
    assert all(line.endswith("not sent: link down") for line in lines[1:])


def test_a_report_for_another_effect_is_refused() -> None:
    coord = Coordinator(
        engine=Engine(EngineConfig(LIMITS, ENV, POLL_S)),
        supervisor=Supervisor(LIMITS, ENV, POLL_S),
        probes=PROBES,
    )
    coord.connected(now(0.0))
    effect = coord.next_effect()
    assert effect == SetMaster(on=False)
    with pytest.raises(RuntimeError, match="not the effect handed out"):
        coord.report(SetFreeze(probe=1, on=False), Done(), now(0.0))


# ---- refused opens ---------------------------------------------------------------


def test_a_refused_open_stops_the_rest_of_its_step_and_faults() -> None:
    h = Harness(supervise=True)
    h.feed(ProcedureOpened(), 0.0)
    h.tick(0.0)
    h.sup.procedure_opened({2: LIMITS.max_freeze_s_per_procedure})  # probe 2 used up
    h.feed(RunProtocol(proto([freeze(10)]), (1, 2, 3)), 0.0)
    # master and probe 1 opened; probe 2 refused; probe 3 never sent
    assert h.refused == [SetFreeze(probe=2, on=True), SetFreeze(probe=3, on=True)]
    opened = [c for c in h.cmds if isinstance(c, SetFreeze) and c.on]
    assert opened == [SetFreeze(probe=1, on=True)]
    assert h.state.phase is Phase.FAULT
    # what did open was closed again in the same turn, by the whole safe state
    last_open = max(i for i, c in enumerate(h.cmds) if c == SetFreeze(probe=1, on=True))
    _assert_one_safe_state(h.cmds[last_open:])


# ---- the sticky safe state ---------------------------------------------------------


def test_outputs_on_that_the_engine_does_not_allow_are_switched_off() -> None:
    h = Harness(supervise=True)
    h.tick(0.0)
    cmds = h.tick(0.1, snap(0.1, thaw_on=[3]))  # master shown open (snap's default) too
    assert SetThaw(probe=3, on=False) in cmds
    assert SetMaster(on=False) in cmds
    kinds = [
        c.details["output"]
        for c in cmds
        if isinstance(c, Record) and c.kind == "output_on_unexpectedly"
    ]
    assert sorted(kinds) == ["master", "thaw 3"]


def test_a_freezing_probe_is_left_alone_and_another_one_closed() -> None:
    h = Harness(supervise=True)
    t = freezing(h)
    t = round(t + POLL_S, 6)
    cmds = h.tick(t, snap(t, {1: 20.0}, freeze_open=[1, 4]))
    assert SetFreeze(probe=4, on=False) in cmds
    assert SetFreeze(probe=1, on=False) not in cmds
    assert h.state.phase is Phase.FREEZING


def test_a_close_that_keeps_failing_is_retried_every_poll_and_reported_once() -> None:
    stuck = SetThaw(probe=3, on=False)
    h = Harness(supervise=True, fail=lambda c: "refused" if c == stuck else None)
    h.tick(0.0, snap(0.0, master_open=False))
    t = 0.0
    for _ in range(3):
        t = round(t + POLL_S, 6)
        h.tick(t, snap(t, thaw_on=[3], master_open=False))
        assert h.turn_cmds().count(stuck) == 1  # retried once per poll, no more
    assert h.state.phase is Phase.FAULT  # the failure reached the engine...
    failed = [c for c in h.cmds if isinstance(c, Record) and c.kind == "command_failed"]
    assert len(failed) == 1  # ...once
    assert h.state.trips.count("command_failed:SetThaw") == 1
    assert "safe_state_unconfirmed" in h.state.trips  # and the supervisor latched it
    # the first failure faulted the engine, whose safe state was one full pass;
    # later demands (the unconfirmed-output alarm) retried the one output, not the list
    passes = [c for c in h.cmds if isinstance(c, Record) and c.kind == "safe_state_executed"]
    assert passes[0].details["not_confirmed"] == []
    assert all(p.details["not_confirmed"] == ["thaw 3: refused"] for p in passes[1:])
    assert len([c for c in h.cmds if isinstance(c, SetFreeze) and not c.on]) == PROBES
