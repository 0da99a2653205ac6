"""The freeze/thaw protocol engine: a pure state machine.

    new_state, commands = engine.step(state, event, now)

No I/O, no asyncio, no clock of its own: ``now`` (``Now``: ``mono_s`` for
every duration, ``utc`` for records) comes with each event, so the engine is
tested exhaustively without sleeping, and a wall-clock step cannot change a
duration. ``EngineState`` is immutable.

The contract with the I/O shell is code, not prose: ``coordinator.py``
steps this engine and the supervisor, gates every output-on command through
the supervisor, feeds confirmations back (``CycleCommitted``,
``LimitsConfirmed``/``LimitsRefused``, ``CommandFailed``) and expands
``SafeState`` into the one ordered list of ``safe_state.py``. What the engine
guarantees on its side:

* Record before acting: it never emits ``SetFreeze(on=True)`` for a probe
  before its cycle row is committed AND its console limits are confirmed
  (unless the site allows host-only limits on a console without the
  ``console_limits`` capability; the cycle then says ``host_only_limits``).
* Every way into fault or abort emits ``SafeState`` before the records of the
  cycles it ends. ``engine.supervision(state)`` is what the supervisor needs to
  know about the run.
* Reset sequence: ``driver.reset_faults()``, a fresh snapshot through the
  supervisor, ``supervisor.reset(now)``, then ``Reset(cause_gone=result.ok,
  reason=result.reason)``.

States: idle, precheck (cycle rows and console limits being confirmed before
the freeze valves open), freezing, thawing, hold, complete, stopped,
aborted, fault. A run may start from idle/complete/stopped/aborted; fault
leaves only by Ack then Reset with the cause gone.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from cryod.drivers.base import ConsoleLimits, Snapshot

from .alarms import Now
from .commands import (
    Abort,
    Ack,
    AdHocFreeze,
    AdHocThaw,
    CloseCycle,
    Command,
    CommandFailed,
    Continue,
    CycleCommitted,
    Event,
    Extend,
    LimitsConfirmed,
    LimitsRefused,
    OpenCycle,
    Outcome,
    ProcedureClosed,
    ProcedureOpened,
    Record,
    Reject,
    Reset,
    RunProtocol,
    SafeState,
    SetFreeze,
    SetMaster,
    SetThaw,
    Stop,
    Tick,
    WriteConsoleLimits,
)
from .figures import FigureTracker, SnapshotFold, gap_rule_s
from .interlocks import InterlockFailure, check_freeze_interlocks
from .limits import (
    ConsoleEnvelope,
    FreezePlan,
    SafetyLimits,
    Supervision,
    console_limits_for,
)
from .protocols import (
    FreezeStep,
    HoldStep,
    Protocol,
    ProtocolError,
    ThawStep,
    ad_hoc_freeze,
    ad_hoc_thaw,
    effective_floor_c,
    validate_protocol,
)

__all__ = [
    "ACTIVE",
    "RESTING",
    "Engine",
    "EngineConfig",
    "EngineState",
    "Phase",
]


class Phase(enum.StrEnum):
    IDLE = "idle"
    PRECHECK = "precheck"
    FREEZING = "freezing"
    THAWING = "thawing"
    HOLD = "hold"
    COMPLETE = "complete"
    STOPPED = "stopped"
    ABORTED = "aborted"
    FAULT = "fault"


RESTING = frozenset({Phase.IDLE, Phase.COMPLETE, Phase.STOPPED, Phase.ABORTED})
ACTIVE = frozenset({Phase.PRECHECK, Phase.FREEZING, Phase.THAWING, Phase.HOLD})

# ---------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class EngineConfig:
    limits: SafetyLimits
    envelope: ConsoleEnvelope
    poll_period_s: float

    @property
    def host_only(self) -> bool:
        """Freezes run without console-held limits (site explicitly allows it)."""
        return not self.envelope.has_console_limits and self.limits.allow_host_only_limits

    @property
    def figure_gap_s(self) -> float:
        """The figures' gap rule on this engine's clock (``poll_period_s`` is in the
        engine's seconds: simulated ones at a simulated speed)."""
        return gap_rule_s(poll_period_s=self.poll_period_s, stale_polls=self.limits.stale_polls)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeCycle:
    probe: int
    cycle_ref: int
    committed: bool = False
    limits_ok: bool = False
    thaw_on: bool = False
    tracker: FigureTracker | None = None

    def with_tracker(self, tracker: FigureTracker) -> ProbeCycle:
        """This cycle with ``tracker`` (itself when the tracker did not change)."""
        if tracker is self.tracker:
            return self
        return replace(self, tracker=tracker)


@dataclass(frozen=True, slots=True)
class Run:
    protocol: Protocol
    probes: tuple[int, ...]
    ad_hoc: bool
    step_index: int = 0
    phase_start_mono_s: float = 0.0
    planned_s: float | None = None  # freeze: duration incl. confirmed extensions
    pending_extend_s: float = 0.0
    ext_confirmed: frozenset[int] = frozenset()
    cycles: tuple[ProbeCycle, ...] = ()
    ending: bool = False  # a Stop during the freeze: run ends after its thaw
    precheck_deadline_mono_s: float | None = None
    freezes_done: int = 0

    @property
    def step(self) -> FreezeStep | ThawStep | HoldStep:
        return self.protocol.steps[self.step_index]

    def cycle(self, probe: int) -> ProbeCycle | None:
        for c in self.cycles:
            if c.probe == probe:
                return c
        return None


@dataclass(frozen=True, slots=True)
class EngineState:
    phase: Phase = Phase.IDLE
    run: Run | None = None
    snapshot: Snapshot | None = None
    procedure_open: bool = False
    cumulative_s: tuple[tuple[int, float], ...] = ()  # per probe, this procedure
    next_ref: int = 1
    trips: tuple[str, ...] = ()  # supervisor alarms / failures behind the fault
    acked: bool = False
    reason: str = ""  # why the last run ended or the fault happened

    def cumulative(self, probe: int) -> float:
        return dict(self.cumulative_s).get(probe, 0.0)


# ---------------------------------------------------------------- engine


@dataclass(frozen=True, slots=True)
class _Out:
    """Accumulates commands while handling one event."""

    now: Now
    cmds: list[Command] = field(default_factory=list)

    def add(self, *cmds: Command) -> None:
        self.cmds.extend(cmds)

    def record(self, kind: str, **details: object) -> None:
        self.cmds.append(Record(kind=kind, details=dict(details), utc=self.now.utc))

    def reject(self, event: object, code: str, detail: str = "") -> None:
        self.cmds.append(
            Reject(command=type(event).__name__, code=code, detail=detail, utc=self.now.utc)
        )


_UNSUPERVISED = Supervision()


class Engine:
    """Pure transition function over ``EngineState``; holds only immutable config."""

    def __init__(self, config: EngineConfig) -> None:
        self.cfg = config
        # the last supervision() answer and everything it was computed from (asked every
        # poll, it changes only with the step): a memo, not state
        self._supervision_memo: tuple[Protocol, tuple[object, ...], Supervision] | None = None

    def initial(self) -> EngineState:
        return EngineState()

    # ---- queries ------------------------------------------------------
    def supervision(self, st: EngineState) -> Supervision:
        """The probes in use and the freeze plans the supervisor checks against."""
        run = st.run
        if run is None or st.phase not in ACTIVE:
            return _UNSUPERVISED
        freezing = st.phase in (Phase.PRECHECK, Phase.FREEZING)
        key = (freezing, run.step_index, run.planned_s, run.probes)
        memo = self._supervision_memo
        if memo is not None and memo[0] is run.protocol and memo[1] == key:
            return memo[2]
        plans: tuple[FreezePlan, ...] = ()
        step = run.step
        if freezing and isinstance(step, FreezeStep):
            plans = tuple(self._plan(p, step, run.planned_s or step.duration_s) for p in run.probes)
        sup = Supervision(watched=frozenset(run.probes), plans=plans)
        self._supervision_memo = (run.protocol, key, sup)
        return sup

    def _plan(self, probe: int, step: FreezeStep, on_time_s: float) -> FreezePlan:
        floor = effective_floor_c(step, self.cfg.limits, self.cfg.envelope.min_tip_c)
        return FreezePlan(probe, on_time_s, floor, step.target_tip_c, step.reach_within_s)

    def console_limits(self, plan: FreezePlan) -> ConsoleLimits:
        return console_limits_for(
            on_time_s=plan.on_time_s,
            floor_tip_c=plan.floor_tip_c,
            supervisor_max_supply_kpa=self.cfg.envelope.supervisor_max_supply_kpa,
            margin=self.cfg.limits.console_margin,
        )

    # ---- the transition function ----------------------------------------
    def step(self, st: EngineState, event: Event, now: Now) -> tuple[EngineState, list[Command]]:
        out = _Out(now)
        new = self._dispatch(st, event, out)
        if new.phase is not st.phase:
            out.cmds.insert(
                0,
                Record(
                    kind="state", details={"from": str(st.phase), "to": str(new.phase)}, utc=now.utc
                ),
            )
        return new, out.cmds

    def _dispatch(self, st: EngineState, ev: Event, out: _Out) -> EngineState:
        if isinstance(ev, Tick):
            return self._tick(st, ev, out)
        if isinstance(ev, RunProtocol | AdHocFreeze | AdHocThaw):
            return self._start_run(st, ev, out)
        if isinstance(ev, Stop):
            return self._stop(st, ev, out)
        if isinstance(ev, Extend):
            return self._extend(st, ev, out)
        if isinstance(ev, Continue):
            if st.phase is not Phase.HOLD or st.run is None:
                out.reject(ev, "not_in_hold", f"state is {st.phase}")
                return st
            out.record("operator", command="continue", step=st.run.step_index)
            return self._enter_step(st, st.run, st.run.step_index + 1, out)
        if isinstance(ev, Abort):
            if ev.cause == "operator":
                out.record("operator", command="abort", state=str(st.phase))
                reason = "operator abort"
            else:
                out.record("abort", cause=ev.cause, detail=ev.detail, state=str(st.phase))
                reason = f"{ev.cause}: {ev.detail}" if ev.detail else ev.cause
            return self._safe(st, out, "aborted", Phase.ABORTED, reason)
        if isinstance(ev, Ack):
            out.record("operator", command="ack", state=str(st.phase))
            return replace(st, acked=True) if st.phase is Phase.FAULT else st
        if isinstance(ev, Reset):
            return self._reset(st, ev, out)
        if isinstance(ev, ProcedureOpened):
            if st.procedure_open:
                out.reject(ev, "procedure_already_open")
                return st
            out.record("operator", command="procedure_opened")
            return replace(st, procedure_open=True, cumulative_s=())
        if isinstance(ev, ProcedureClosed):
            if not st.procedure_open:
                out.reject(ev, "no_procedure")
                return st
            if st.phase in ACTIVE:
                out.reject(ev, "run_active", f"state is {st.phase}")
                return st
            out.record("operator", command="procedure_closed")
            return replace(st, procedure_open=False)
        if isinstance(ev, CycleCommitted):
            return self._committed(st, ev, out)
        if isinstance(ev, LimitsConfirmed):
            return self._limits_confirmed(st, ev, out)
        if isinstance(ev, LimitsRefused):
            return self._limits_refused(st, ev.probe, ev.reason, out)
        if isinstance(ev, CommandFailed):
            return self._command_failed(st, ev, out)
        # SupervisorTrip
        alarm = ev.alarm
        out.record("supervisor_trip", code=str(alarm.code), probe=alarm.probe, detail=alarm.detail)
        st = self._safe(st, out, "faulted", Phase.FAULT, f"supervisor: {alarm.code}")
        return replace(st, trips=_with(st.trips, str(alarm.code)), acked=False)

    # ---- operator commands ----------------------------------------------
    def _start_run(
        self, st: EngineState, ev: RunProtocol | AdHocFreeze | AdHocThaw, out: _Out
    ) -> EngineState:
        if st.phase is Phase.FAULT:
            out.reject(ev, "fault_latched", ", ".join(st.trips) or st.reason)
            return st
        if st.phase in ACTIVE:
            out.reject(ev, "run_active", f"state is {st.phase}")
            return st
        lim, env = self.cfg.limits, self.cfg.envelope
        try:
            if isinstance(ev, RunProtocol):
                probes = tuple(ev.probes)
                proto = validate_protocol(
                    ev.protocol, lim, env.min_tip_c, env.capabilities, source=ev.protocol.name
                )
            elif isinstance(ev, AdHocFreeze):
                probes = (ev.probe,)
                proto = ad_hoc_freeze(ev.seconds, lim, env.min_tip_c, env.capabilities)
            else:
                probes = (ev.probe,)
                proto = ad_hoc_thaw(ev.seconds, ev.mode, lim, env.min_tip_c, env.capabilities)
        except ProtocolError as exc:
            out.reject(ev, "invalid", str(exc))
            return st
        if not probes or len(set(probes)) != len(probes):
            out.reject(ev, "bad_probes", f"probes {probes}: need one or more distinct probes")
            return st
        bad = [p for p in probes if not 1 <= p <= env.probes]
        if bad:
            out.reject(ev, "bad_probe", f"probes {bad} outside 1..{env.probes}")
            return st
        if not st.procedure_open:
            out.reject(ev, "no_procedure", "open a procedure first")
            return st
        for p in probes:
            total = st.cumulative(p) + proto.total_freeze_s
            if total > lim.max_freeze_s_per_procedure:
                out.reject(
                    ev,
                    "cumulative_freeze",
                    f"probe {p}: {total:.0f} s would exceed max_freeze_s_per_procedure "
                    f"{lim.max_freeze_s_per_procedure} s",
                )
                return st
        run = Run(protocol=proto, probes=probes, ad_hoc=not isinstance(ev, RunProtocol))
        first = proto.steps[0]
        if isinstance(first, FreezeStep):
            fails = self._interlocks(st, run, out.now)
            if fails:
                out.reject(ev, fails[0].code, "; ".join(str(f) for f in fails))
                return st
        out.record(
            "operator",
            command=type(ev).__name__,
            protocol=proto.name,
            probes=list(probes),
            ad_hoc=run.ad_hoc,
        )
        return self._enter_step(replace(st, reason=""), run, 0, out)

    def _stop(self, st: EngineState, ev: Stop, out: _Out) -> EngineState:
        run = st.run
        if st.phase not in ACTIVE or run is None:
            out.reject(ev, "nothing_to_stop", f"state is {st.phase}")
            return st
        out.record("operator", command="stop", state=str(st.phase), step=run.step_index)
        idx = run.step_index
        steps = run.protocol.steps
        if st.phase is Phase.PRECHECK:
            st = self._close_current(st, run, out, "stopped")
            return self._end_run(st, out, Phase.STOPPED, "stopped before the freeze began")
        if st.phase is Phase.FREEZING:
            st = self._close_current(st, run, out, "stopped")
            run = replace(st.run or run, ending=True)
            if idx + 1 < len(steps) and isinstance(steps[idx + 1], ThawStep):
                return self._enter_step(st, run, idx + 1, out)
            return self._end_run(st, out, Phase.STOPPED, "freeze stopped by the operator")
        if st.phase is Phase.THAWING:
            st = self._close_current(st, run, out, "stopped")
            run = st.run or run
            if run.ending or idx + 1 >= len(steps):
                return self._end_run(st, out, Phase.STOPPED, "thaw stopped by the operator")
            if isinstance(steps[idx + 1], FreezeStep):
                # a Stop never starts a freeze: wait for Continue
                out.record("hold", step=idx, reason="thaw stopped before a freeze")
                run = replace(run, phase_start_mono_s=out.now.mono_s, planned_s=None, cycles=())
                return replace(st, phase=Phase.HOLD, run=run)
            return self._enter_step(st, run, idx + 1, out)
        # HOLD
        return self._end_run(st, out, Phase.STOPPED, "stopped in a hold")

    def _extend(self, st: EngineState, ev: Extend, out: _Out) -> EngineState:
        run = st.run
        lim = self.cfg.limits
        if st.phase is not Phase.FREEZING or run is None or run.planned_s is None:
            out.reject(ev, "not_freezing", f"state is {st.phase}")
            return st
        step = run.step
        assert isinstance(step, FreezeStep)
        if not 0 < ev.seconds <= lim.max_extend_s:
            out.reject(ev, "bad_extension", f"{ev.seconds} s outside (0, {lim.max_extend_s}] s")
            return st
        if run.pending_extend_s:
            out.reject(ev, "extension_pending", "the last extension is not confirmed yet")
            return st
        new_total = run.planned_s + ev.seconds
        if new_total > lim.max_freeze_s_per_cycle:
            out.reject(
                ev,
                "cycle_limit",
                f"{new_total} s would exceed max_freeze_s_per_cycle {lim.max_freeze_s_per_cycle} s",
            )
            return st
        for p in run.probes:
            cum = st.cumulative(p) + new_total
            if cum > lim.max_freeze_s_per_procedure:
                out.reject(
                    ev,
                    "cumulative_freeze",
                    f"probe {p}: {cum:.0f} s would exceed max_freeze_s_per_procedure "
                    f"{lim.max_freeze_s_per_procedure} s",
                )
                return st
        out.record("operator", command="extend", seconds=ev.seconds, new_total_s=new_total)
        if self.cfg.host_only:
            out.record("extended", planned_s=new_total, host_only_limits=True)
            return replace(st, run=replace(run, planned_s=new_total))
        for p in run.probes:
            limits = self.console_limits(self._plan(p, step, new_total))
            out.add(WriteConsoleLimits(probe=p, limits=limits))
        return replace(st, run=replace(run, pending_extend_s=ev.seconds, ext_confirmed=frozenset()))

    def _reset(self, st: EngineState, ev: Reset, out: _Out) -> EngineState:
        if st.phase is not Phase.FAULT:
            out.reject(ev, "no_fault", f"state is {st.phase}")
            return st
        if not st.acked:
            out.reject(ev, "not_acknowledged", "acknowledge the alarms first")
            return st
        if not ev.cause_gone:
            out.reject(ev, "cause_present", ev.reason or "the supervisor still holds an alarm")
            return st
        out.record("operator", command="reset", trips=list(st.trips))
        return replace(st, phase=Phase.IDLE, trips=(), acked=False, reason="")

    # ---- confirmations ----------------------------------------------------
    def _committed(self, st: EngineState, ev: CycleCommitted, out: _Out) -> EngineState:
        run = st.run
        cyc = (
            None
            if run is None
            else next((c for c in run.cycles if c.cycle_ref == ev.cycle_ref), None)
        )
        if run is None or cyc is None or st.phase not in ACTIVE:
            out.record("late_confirmation", what="cycle_committed", cycle_ref=ev.cycle_ref)
            return st
        run = self._with_cycle(run, replace(cyc, committed=True))
        st = replace(st, run=run)
        if st.phase is Phase.PRECHECK:
            return self._open_if_ready(st, run, out)
        step = run.step
        if st.phase is Phase.THAWING and isinstance(step, ThawStep) and step.mode == "active":
            if run.freezes_done == 0 and "active_thaw_helium" in self.cfg.envelope.capabilities:
                # helium reaches the probe through the master valve, which only a
                # freeze of this run has opened; a thaw that starts the run opens it
                out.add(SetMaster(on=True))
            out.add(SetThaw(probe=cyc.probe, on=True))
            return replace(
                st, run=self._with_cycle(run, replace(cyc, committed=True, thaw_on=True))
            )
        return st

    def _limits_confirmed(self, st: EngineState, ev: LimitsConfirmed, out: _Out) -> EngineState:
        run = st.run
        cyc = None if run is None else run.cycle(ev.probe)
        if run is None or cyc is None:
            out.record("late_confirmation", what="limits_confirmed", probe=ev.probe)
            return st
        if st.phase is Phase.PRECHECK:
            run = self._with_cycle(run, replace(cyc, limits_ok=True))
            return self._open_if_ready(replace(st, run=run), run, out)
        if st.phase is Phase.FREEZING and run.pending_extend_s and run.planned_s is not None:
            confirmed = run.ext_confirmed | {ev.probe}
            if confirmed >= set(run.probes):
                total = run.planned_s + run.pending_extend_s
                out.record("extended", planned_s=total)
                run = replace(run, planned_s=total, pending_extend_s=0.0, ext_confirmed=frozenset())
            else:
                run = replace(run, ext_confirmed=confirmed)
            return replace(st, run=run)
        out.record("late_confirmation", what="limits_confirmed", probe=ev.probe)
        return st

    def _limits_refused(self, st: EngineState, probe: int, reason: str, out: _Out) -> EngineState:
        run = st.run
        if run is not None and st.phase is Phase.PRECHECK:
            out.record("freeze_refused", code="limits_refused", probe=probe, reason=reason)
            st = self._close_current(st, run, out, "aborted")
            return self._end_run(st, out, Phase.ABORTED, f"limits_refused: probe {probe}: {reason}")
        if run is not None and st.phase is Phase.FREEZING and run.pending_extend_s:
            out.record("extension_refused", probe=probe, reason=reason)
            return replace(st, run=replace(run, pending_extend_s=0.0, ext_confirmed=frozenset()))
        out.record("late_confirmation", what="limits_refused", probe=probe, reason=reason)
        return st

    def _command_failed(self, st: EngineState, ev: CommandFailed, out: _Out) -> EngineState:
        cmd = ev.command
        out.record("command_failed", command=type(cmd).__name__, reason=ev.reason)
        if isinstance(cmd, OpenCycle | WriteConsoleLimits) and st.phase is Phase.PRECHECK:
            probe = cmd.probe
            return self._limits_refused(st, probe, f"{type(cmd).__name__} failed: {ev.reason}", out)
        if isinstance(cmd, WriteConsoleLimits) and st.phase is Phase.FREEZING:
            return self._limits_refused(st, cmd.probe, ev.reason, out)
        # a valve command or the audit log failed: the state of the console or
        # of the record is unknown, so fail safe
        reason = f"{type(cmd).__name__} failed: {ev.reason}"
        st = self._safe(st, out, "faulted", Phase.FAULT, reason)
        return replace(
            st, trips=_with(st.trips, f"command_failed:{type(cmd).__name__}"), acked=False
        )

    # ---- time ---------------------------------------------------------------
    def _tick(self, st: EngineState, ev: Tick, out: _Out) -> EngineState:
        snap = ev.snapshot
        run = st.run
        if snap is not None:
            if run is not None and st.phase in (Phase.FREEZING, Phase.THAWING):
                run = self._fold_figures(run, snap)
                st = replace(st, snapshot=snap, run=run)
            else:
                st = replace(st, snapshot=snap)
        if run is None or st.phase not in ACTIVE:
            return st
        now = out.now.mono_s
        elapsed = now - run.phase_start_mono_s
        if st.phase is Phase.PRECHECK:
            deadline = run.precheck_deadline_mono_s
            if deadline is not None and now > deadline:
                out.record("freeze_refused", code="precheck_timeout")
                st = self._close_current(st, run, out, "aborted")
                return self._end_run(
                    st, out, Phase.ABORTED, "precheck_timeout: confirmations missing"
                )
            return st
        step = run.step
        if st.phase is Phase.FREEZING and run.planned_s is not None and elapsed >= run.planned_s:
            st = self._close_current(st, run, out, "completed")
            return self._enter_step(st, st.run or run, run.step_index + 1, out)
        if st.phase is Phase.THAWING and isinstance(step, ThawStep):
            cap = step.duration_s if step.duration_s is not None else self.cfg.limits.max_thaw_s
            done = elapsed >= cap
            if not done and step.until_tip_above_c is not None and st.snapshot is not None:
                done = self._all_above(st.snapshot, run.probes, step.until_tip_above_c, now)
            if done:
                if step.until_tip_above_c is not None and elapsed >= cap:
                    out.record("thaw_until_not_reached", until_tip_above_c=step.until_tip_above_c)
                st = self._close_current(st, run, out, "completed")
                run = st.run or run
                if run.ending:
                    return self._end_run(st, out, Phase.STOPPED, "freeze stopped by the operator")
                return self._enter_step(st, run, run.step_index + 1, out)
            return st
        if st.phase is Phase.HOLD and run.planned_s is not None and elapsed >= run.planned_s:
            out.record("hold_timeout", step=run.step_index, max_s=run.planned_s)
            return self._end_run(st, out, Phase.STOPPED, "hold timed out without continue")
        return st

    @staticmethod
    def _fold_figures(run: Run, snap: Snapshot) -> Run:
        """Fold one snapshot into every cycle's figures (``run`` itself when none changed)."""
        fold = SnapshotFold(snap)
        n_probes = len(snap.probes)
        cycles = []
        changed = False
        for c in run.cycles:
            tracker = c.tracker
            if tracker is None or c.probe > n_probes:
                cycles.append(c)
                continue
            folded = c.with_tracker(fold.update(tracker, snap.probe(c.probe)))
            changed = changed or folded is not c
            cycles.append(folded)
        return replace(run, cycles=tuple(cycles)) if changed else run

    def _all_above(self, snap: Snapshot, probes: Sequence[int], level: float, now: float) -> bool:
        max_age = self.cfg.limits.stale_polls * self.cfg.poll_period_s
        for p in probes:
            if p > len(snap.probes):
                return False
            tip = snap.probe(p).tip_c
            if not tip.usable or tip.value is None or tip.value < level:
                return False
            if now - tip.t_mono > max_age:
                return False
        return True

    # ---- helpers --------------------------------------------------------------
    def _interlocks(self, st: EngineState, run: Run, now: Now) -> list[InterlockFailure]:
        return check_freeze_interlocks(
            snapshot=st.snapshot,
            now_mono_s=now.mono_s,
            probes=run.probes,
            limits=self.cfg.limits,
            envelope=self.cfg.envelope,
            poll_period_s=self.cfg.poll_period_s,
            procedure_open=st.procedure_open,
            latched_alarms=st.trips,
            first_freeze=run.freezes_done == 0,
        )

    @staticmethod
    def _with_cycle(run: Run, cyc: ProbeCycle) -> Run:
        return replace(run, cycles=tuple(cyc if c.probe == cyc.probe else c for c in run.cycles))

    def _enter_step(self, st: EngineState, run: Run, idx: int, out: _Out) -> EngineState:
        """Start step ``idx`` of ``run`` (or finish the run past its last step)."""
        now = out.now
        steps = run.protocol.steps
        run = replace(run, cycles=(), pending_extend_s=0.0, ext_confirmed=frozenset())
        if idx >= len(steps):
            return self._end_run(st, out, Phase.COMPLETE, "protocol complete")
        step = steps[idx]
        run = replace(run, step_index=idx, phase_start_mono_s=now.mono_s)
        ref = st.next_ref
        if isinstance(step, HoldStep):
            out.record("hold", step=idx, message=step.message, max_s=step.max_s)
            return replace(st, phase=Phase.HOLD, run=replace(run, planned_s=step.max_s))
        if isinstance(step, ThawStep):
            cycles = []
            for p in run.probes:
                out.add(
                    OpenCycle(
                        cycle_ref=ref,
                        probe=p,
                        phase="thaw",
                        step_index=idx,
                        protocol=run.protocol.name,
                        planned_s=step.duration_s
                        if step.duration_s is not None
                        else self.cfg.limits.max_thaw_s,
                        thaw_mode=step.mode,
                        until_tip_above_c=step.until_tip_above_c,
                        host_only_limits=self.cfg.host_only,
                        ad_hoc=run.ad_hoc,
                        utc=now.utc,
                        mono_s=now.mono_s,
                    )
                )
                tracker = FigureTracker.start(
                    phase="thaw",
                    start_mono_s=now.mono_s,
                    probes_sharing=len(run.probes),
                    max_gap_s=self.cfg.figure_gap_s,
                )
                cycles.append(ProbeCycle(probe=p, cycle_ref=ref, tracker=tracker))
                ref += 1
            run = replace(run, cycles=tuple(cycles), planned_s=step.duration_s)
            return replace(st, phase=Phase.THAWING, run=run, next_ref=ref)
        # freeze: interlocks again (a later freeze of the run, or the first one)
        if run.freezes_done > 0:
            fails = self._interlocks(st, run, now)
            if fails:
                out.record("freeze_refused", code=fails[0].code, failures=[str(f) for f in fails])
                return self._end_run(st, out, Phase.ABORTED, f"interlock: {fails[0]}")
        for p in run.probes:
            if st.cumulative(p) + step.duration_s > self.cfg.limits.max_freeze_s_per_procedure:
                out.record("freeze_refused", code="cumulative_freeze", probe=p)
                return self._end_run(st, out, Phase.ABORTED, f"cumulative_freeze: probe {p}")
        host_only = self.cfg.host_only
        cycles = []
        for p in run.probes:
            plan = self._plan(p, step, step.duration_s)
            out.add(
                OpenCycle(
                    cycle_ref=ref,
                    probe=p,
                    phase="freeze",
                    step_index=idx,
                    protocol=run.protocol.name,
                    planned_s=step.duration_s,
                    target_tip_c=step.target_tip_c,
                    floor_tip_c=plan.floor_tip_c,
                    host_only_limits=host_only,
                    ad_hoc=run.ad_hoc,
                    utc=now.utc,
                    mono_s=now.mono_s,
                )
            )
            if not host_only:
                out.add(WriteConsoleLimits(probe=p, limits=self.console_limits(plan)))
            cycles.append(ProbeCycle(probe=p, cycle_ref=ref, limits_ok=host_only))
            ref += 1
        run = replace(
            run,
            cycles=tuple(cycles),
            planned_s=step.duration_s,
            precheck_deadline_mono_s=now.mono_s + self.cfg.limits.precheck_timeout_s,
        )
        return replace(st, phase=Phase.PRECHECK, run=run, next_ref=ref)

    def _open_if_ready(self, st: EngineState, run: Run, out: _Out) -> EngineState:
        """Open the freeze valves once every row is committed and every probe's
        limits are confirmed: record before acting."""
        if not all(c.committed and c.limits_ok for c in run.cycles):
            return st
        step = run.step
        assert isinstance(step, FreezeStep)
        now = out.now.mono_s
        out.add(SetMaster(on=True))
        cycles = []
        for c in run.cycles:
            out.add(SetFreeze(probe=c.probe, on=True))
            tracker = FigureTracker.start(
                phase="freeze",
                start_mono_s=now,
                target_tip_c=step.target_tip_c,
                probes_sharing=len(run.probes),
                max_gap_s=self.cfg.figure_gap_s,
            )
            cycles.append(replace(c, tracker=tracker))
        run = replace(
            run,
            cycles=tuple(cycles),
            phase_start_mono_s=now,
            planned_s=step.duration_s,
            precheck_deadline_mono_s=None,
            freezes_done=run.freezes_done + 1,
        )
        return replace(st, phase=Phase.FREEZING, run=run)

    def _close_current(
        self,
        st: EngineState,
        run: Run,
        out: _Out,
        outcome: Outcome,
        *,
        close_outputs: bool = True,
    ) -> EngineState:
        """End the current phase: close its valves (unless the safe state already
        closes every output) and every open cycle row."""
        now = out.now.mono_s
        cum = dict(st.cumulative_s)
        if st.phase is Phase.FREEZING:
            if close_outputs:
                for c in run.cycles:
                    out.add(SetFreeze(probe=c.probe, on=False))
            for p in run.probes:
                cum[p] = cum.get(p, 0.0) + (now - run.phase_start_mono_s)
        if st.phase is Phase.THAWING and close_outputs:
            for c in run.cycles:
                if c.thaw_on:
                    out.add(SetThaw(probe=c.probe, on=False))
        for c in run.cycles:
            tracker = c.tracker or FigureTracker.start(
                phase="freeze" if st.phase is Phase.PRECHECK else "thaw",
                start_mono_s=now,
                max_gap_s=self.cfg.figure_gap_s,
            )
            if st.phase is Phase.FREEZING or c.thaw_on:
                tracker = tracker.valve_closed(now)
            out.add(
                CloseCycle(
                    cycle_ref=c.cycle_ref,
                    probe=c.probe,
                    outcome=outcome,
                    figures=tracker.figures(now),
                    utc=out.now.utc,
                    mono_s=now,
                )
            )
        return replace(st, run=replace(run, cycles=()), cumulative_s=tuple(sorted(cum.items())))

    def _end_run(self, st: EngineState, out: _Out, phase: Phase, reason: str) -> EngineState:
        """The run is over: no gas is needed until the next one, so the master
        valve closes (a freeze valve failing open later then releases nothing)."""
        out.add(SetMaster(on=False))
        out.record("run_ended", outcome=str(phase), reason=reason)
        return replace(st, phase=phase, run=None, reason=reason)

    def _safe(
        self, st: EngineState, out: _Out, outcome: Outcome, phase: Phase, reason: str
    ) -> EngineState:
        """The safe state (every output off, in the one order of ``safe_state.py``),
        then every open cycle ended with ``outcome``: the valves close first and
        the record of how the cycle ended follows."""
        run = st.run
        out.add(SafeState(reason=reason, first=() if run is None else run.probes))
        if run is not None and st.phase in ACTIVE:
            st = self._close_current(st, run, out, outcome, close_outputs=False)
        out.record("safe_state", reason=reason)
        keep = phase if (phase is Phase.FAULT or st.phase in ACTIVE) else st.phase
        return replace(st, phase=keep, run=None, reason=reason)


def _with(items: tuple[str, ...], item: str) -> tuple[str, ...]:
    """``items`` with ``item`` added once (a cause already behind the fault stays once)."""
    return items if item in items else (*items, item)
