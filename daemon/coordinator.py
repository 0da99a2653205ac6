"""The core-to-shell contract as code: the supervisor first, then the engine, every
output-on command gated, every result fed back, the one safe state expanded.

Synchronous, pure (no I/O, no asyncio, injected ``Now``). The shell
(``console_service.py``) starts a turn, then executes effects one at a time
and reports each result::

    coord.begin_poll(snapshot, now)            # the supervisor checks first
    while (effect := coord.next_effect()) is not None:
        coord.report(effect, await execute(effect), now)
    coord.feed(operator_event, now)            # then queued operator commands
    coord.tick(now)                            # then the engine's tick and the sticky check

The core tests drive this same class with an auto-confirmer
(tests/core/helpers.py), so the fast tests exercise the shell's real
sequencing.

Effects and what the shell reports back:

* ``SetFreeze`` / ``SetThaw`` / ``SetMaster``: drive the output and confirm it;
  report ``Done()`` or ``Failed(reason, sent=...)``.
* ``OpenCycle``: commit the cycle row (record before acting); ``Done()`` or
  ``Failed``.
* ``WriteConsoleLimits``: write and read back; ``LimitsHeld(limits)`` or
  ``Failed``. The comparison is made here.
* ``CloseCycle``, ``Record``, ``Reject``, ``AlarmRaised``, ``AlarmCleared``,
  ``ValveOpened``: record them; nothing to report.

Rules decided here, once:

* **Supervisor first.** Its alarms are recorded, its safe-state demand executed
  and its trips fed to the engine before anything else in the turn.
* **Refused opens.** An output-on command the supervisor refuses is not sent,
  nor is any later output-on command of the same engine step (opening the rest
  of a batch that has already failed would only put gas where the engine is
  about to close it); closes and records of that step still run. The refused
  command alone is fed back as ``CommandFailed``, so the engine fails safe.
* **The safe state, once in effect, is not re-driven.** A full pass issues
  every step of the one list, each attempted even when an earlier one fails.
  Asked for again while it is still in effect (nothing switched on since),
  only the outputs not yet confirmed off are commanded again: a console that
  refuses one close does not cost a whole pass on every poll.
* **Failed closes.** A close that fails is fed back to the engine once, when
  its output becomes unconfirmed (the engine fails safe); until a command or a
  snapshot confirms it off it stays unconfirmed in the supervisor
  (``safe_state_unconfirmed``, high, latched), and the sticky check retries it
  every poll that reads the console, so a dead link never makes the loop spin.
* **Sticky safe state.** After every tick, an output the console reports on
  while the engine does not allow it is commanded off, unless this turn
  already commanded it (the snapshot predates the command).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from cryod.drivers.base import ConsoleLimits, Snapshot

from .alarms import Alarm, Now, ResetResult
from .commands import (
    Abort,
    Ack,
    CloseCycle,
    CommandFailed,
    CycleCommitted,
    Event,
    LimitsConfirmed,
    LimitsRefused,
    OpenCycle,
    Output,
    OutputCommand,
    ProcedureOpened,
    Record,
    Reject,
    Reset,
    SafeState,
    SetFreeze,
    SetMaster,
    SetThaw,
    SupervisorTrip,
    Tick,
    WriteConsoleLimits,
    is_valve_open,
    output_of,
)
from .engine import ACTIVE, Engine, EngineState, Phase
from .safe_state import safe_state_commands
from .supervisor import Supervisor

__all__ = [
    "AlarmCleared",
    "AlarmRaised",
    "Coordinator",
    "Done",
    "Effect",
    "Failed",
    "LimitsHeld",
    "Refused",
    "Result",
    "ValveOpened",
]

# ---------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmRaised:
    alarm: Alarm


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmCleared:
    alarm: Alarm


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """The supervisor refused an output-on command (or it was not sent because an
    earlier one of its step was refused): it never reached the console."""

    command: OutputCommand
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ValveOpened:
    """The console confirmed a freeze valve open: the cycle's freeze starts now."""

    cycle_ref: int
    probe: int


Effect = (
    SetFreeze
    | SetThaw
    | SetMaster
    | OpenCycle
    | WriteConsoleLimits
    | CloseCycle
    | Record
    | Reject
    | AlarmRaised
    | AlarmCleared
    | Refused
    | ValveOpened
)

# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """The console confirmed the command, or the row is committed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    reason: str
    sent: bool = True  # False: not sent at all (the link already failed in this poll)


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsHeld:
    """What the console holds after a limits write (None: it holds none)."""

    limits: ConsoleLimits | None


Result = Done | Failed | LimitsHeld

# ---------------------------------------------------------------- internals


@dataclass(slots=True)
class _Turn:
    """What one poll (or connect, or shutdown) has done so far."""

    touched: set[Output] = field(default_factory=set)  # commanded in this turn
    commanded_off: set[Output] = field(default_factory=set)  # and last commanded off
    refused_batches: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _Pass:
    """One execution of the safe-state list, for its record."""

    reasons: list[str]
    pending: int
    not_confirmed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Queued:
    effect: Effect
    batch: int  # the engine step (or supervisor demand) it came from
    safe_pass: _Pass | None = None


class Coordinator:
    """Sequences one console's supervisor and engine; the shell does the I/O."""

    def __init__(self, *, engine: Engine, supervisor: Supervisor, probes: int) -> None:
        self.engine = engine
        self.supervisor = supervisor
        self.probes = probes
        self.state: EngineState = engine.initial()
        self.snapshot: Snapshot | None = None  # the last poll's (None: the poll failed)
        self._now: Now | None = None
        self._events: deque[Event] = deque()
        self._effects: deque[_Queued] = deque()
        self._after_tick = False
        self._turn = _Turn()
        self._safe_in_effect = False  # a pass was made and nothing switched on since
        self._batch = 0
        self._rejects: list[Reject] = []
        self._handed: _Queued | None = None  # the effect the shell is executing

    # ---- starting a turn ----------------------------------------------------
    def begin_turn(self, now: Now) -> None:
        """A new poll, connect or shutdown: commands of earlier turns may be retried."""
        self._turn = _Turn()
        self._now = now

    def connected(self, now: Now) -> None:
        """The link (re)connected: the safe state first, whatever the console was doing."""
        self.begin_turn(now)
        self._queue_safe_state(["connect"], first=(), full=True)

    def begin_poll(self, snapshot: Snapshot | None, now: Now) -> None:
        """A poll result (None: the read failed). The supervisor checks it first."""
        self.begin_turn(now)
        self.snapshot = snapshot
        self._supervise(snapshot, now)

    def feed(self, event: Event, now: Now) -> list[Reject]:
        """An operator command or any other engine event; returns nothing until its
        effects are executed (``rejects`` then lists what the engine refused)."""
        self._now = now
        self._rejects = []
        self._events.append(event)
        return self._rejects

    def tick(self, now: Now) -> None:
        """The engine's tick with this poll's snapshot, then the sticky safe state."""
        self._now = now
        self._events.append(Tick(self.snapshot))
        self._after_tick = True

    def shutdown(self, now: Now, detail: str = "daemon stopping") -> None:
        """The daemon is stopping: abort any run and drive the safe state."""
        self.begin_turn(now)
        self._safe_in_effect = False  # the whole list again, whatever was done before
        if self.state.phase in ACTIVE:
            self._events.append(Abort(cause="shutdown", detail=detail))
        else:
            self._queue_safe_state(["shutdown"], first=(), full=True)

    # ---- operator bookkeeping that is not an engine event --------------------
    def procedure_opened(self, now: Now, cumulative_s: dict[int, float] | None = None) -> None:
        """A procedure opened (or was adopted after a restart with the freeze time
        its probes already had): the supervisor counts from there, the engine too."""
        self.supervisor.procedure_opened(cumulative_s)
        self._now = now
        self._step(ProcedureOpened())
        if cumulative_s:
            self.state = replace(self.state, cumulative_s=tuple(sorted(cumulative_s.items())))

    def procedure_reopened(self, now: Now, cumulative_s: tuple[tuple[int, float], ...]) -> None:
        """A close the record could not commit: the procedure is open again in the
        engine with the freeze time its probes had (the supervisor's count of it was
        never reset)."""
        self._now = now
        self._step(ProcedureOpened())
        self.state = replace(self.state, cumulative_s=cumulative_s)

    def acknowledge(self, now: Now) -> tuple[Alarm, ...]:
        acked = self.supervisor.acknowledge(now)
        self.feed(Ack(), now)
        return acked

    def reset(self, snapshot: Snapshot | None, now: Now) -> tuple[ResetResult, list[Reject]]:
        """The reset sequence: a fresh snapshot through the supervisor (after the
        console's faults were reset), ``supervisor.reset``, then the engine's Reset.
        Returns the supervisor's result and what the engine refused (filled in once
        the effects are executed)."""
        self._now = now
        verdict = self.supervisor.check(snapshot, now, self.engine.supervision(self.state))
        self._queue_alarms(verdict.raised, verdict.cleared)
        result = self.supervisor.reset(now)
        for alarm in result.cleared:
            self._push(AlarmCleared(alarm=alarm), batch=self._next_batch())
        rejects = self.feed(Reset(cause_gone=result.ok, reason=result.reason), now)
        return result, rejects

    # ---- the effect loop -------------------------------------------------------
    def next_effect(self) -> Effect | None:
        """The next thing for the shell to do, or None when the turn's work is done.

        The shell executes one effect at a time and reports its result (for the
        effects that have one) before asking for the next."""
        while True:
            if self._effects:
                queued = self._effects.popleft()
                if is_valve_open(queued.effect) and not self._permitted(queued):
                    continue
                self._handed = queued
                return queued.effect
            if self._events:
                self._step(self._events.popleft())
                continue
            if self._after_tick:
                self._after_tick = False
                self._sticky_safe_state()
                continue
            self._handed = None
            return None

    def report(self, effect: Effect, result: Result, now: Now) -> None:
        """What the shell's execution of ``effect`` gave."""
        handed = self._handed
        if handed is None or handed.effect is not effect:
            raise RuntimeError(f"report for {effect!r}, which is not the effect handed out")
        self._now = now
        if isinstance(effect, SetFreeze | SetThaw | SetMaster):
            self._output_result(effect, result, handed.safe_pass, now)
        elif isinstance(effect, OpenCycle):
            if isinstance(result, Done):
                self._events.append(CycleCommitted(effect.cycle_ref))
            else:
                self._events.append(CommandFailed(effect, _reason(result)))
        elif isinstance(effect, WriteConsoleLimits):
            self._events.append(_limits_outcome(effect, result))

    @property
    def busy(self) -> bool:
        """Work is queued for the shell."""
        return bool(self._effects or self._events or self._after_tick)

    # ---- internals -------------------------------------------------------------
    def _supervise(self, snapshot: Snapshot | None, now: Now) -> None:
        verdict = self.supervisor.check(snapshot, now, self.engine.supervision(self.state))
        self._queue_alarms(verdict.raised, verdict.cleared)
        if verdict.demand is not None:
            run = self.state.run
            self._queue_safe_state(
                list(verdict.demand.reasons), first=() if run is None else run.probes
            )
        for alarm in verdict.trips:
            self._events.append(SupervisorTrip(alarm))

    def _queue_alarms(self, raised: Iterable[Alarm], cleared: Iterable[Alarm]) -> None:
        batch = self._next_batch()
        for alarm in raised:  # recorded before any slow command
            self._push(AlarmRaised(alarm=alarm), batch=batch)
        for alarm in cleared:
            self._push(AlarmCleared(alarm=alarm), batch=batch)

    def _next_batch(self) -> int:
        self._batch += 1
        return self._batch

    def _push(self, effect: Effect, *, batch: int, safe_pass: _Pass | None = None) -> None:
        self._effects.append(_Queued(effect, batch, safe_pass))

    def _step(self, event: Event) -> None:
        assert self._now is not None, "begin a turn first"
        self.state, cmds = self.engine.step(self.state, event, self._now)
        batch = self._next_batch()
        for cmd in cmds:
            if isinstance(cmd, SafeState):
                self._queue_safe_state([cmd.reason], first=cmd.first)
                continue
            if isinstance(cmd, Reject):
                self._rejects.append(cmd)
            self._push(cmd, batch=batch)

    def _queue_safe_state(
        self, reasons: list[str], *, first: Iterable[int], full: bool = False
    ) -> None:
        """Expand the one safe state (``safe_state.py``) into effects: the whole list,
        or, while a pass is still in effect, only the outputs not confirmed off and
        not already commanded in this turn."""
        turn = self._turn
        cmds = [
            c
            for c in safe_state_commands(self.probes, self.snapshot, first)
            if output_of(c) not in turn.commanded_off  # already tried in this turn
        ]
        if self._safe_in_effect and not full:
            pending = set(self.supervisor.unconfirmed) - turn.touched
            cmds = [c for c in cmds if output_of(c) in pending]
            if not cmds:
                return
        self._safe_in_effect = True
        if not cmds:
            return
        batch = self._next_batch()
        record = _Pass(reasons=reasons, pending=len(cmds))
        for cmd in cmds:
            self._push(cmd, batch=batch, safe_pass=record)

    def _permitted(self, queued: _Queued) -> bool:
        """The gate for every output-on command (see "Refused opens" above)."""
        effect = queued.effect
        assert isinstance(effect, SetFreeze | SetThaw | SetMaster)
        assert self._now is not None
        if queued.batch in self._turn.refused_batches:
            why = "not sent: an earlier output-on command of its step was refused"
            self._effects.appendleft(_Queued(Refused(command=effect, reason=why), queued.batch))
            return False
        permit = self.supervisor.permits(effect)
        if permit.ok:
            return True
        self._turn.refused_batches.add(queued.batch)
        why = f"supervisor: {permit.reason}"
        self._effects.appendleft(_Queued(Refused(command=effect, reason=why), queued.batch))
        self._events.append(CommandFailed(effect, why))
        return False

    def _output_result(
        self, cmd: OutputCommand, result: Result, safe_pass: _Pass | None, now: Now
    ) -> None:
        turn = self._turn
        output = output_of(cmd)
        turn.touched.add(output)
        if cmd.on:
            turn.commanded_off.discard(output)
        else:
            turn.commanded_off.add(output)
        if isinstance(result, Done):
            self.supervisor.note_command(cmd, now)
            if cmd.on:
                self._safe_in_effect = False
                if isinstance(cmd, SetFreeze):
                    self._note_valve_opened(cmd.probe)
            self._pass_step(safe_pass, cmd, None, now)
            return
        reason = _reason(result)
        if isinstance(result, Failed) and not result.sent:
            reason = f"not sent: {reason}"
        self._pass_step(safe_pass, cmd, reason, now)
        if not cmd.on:
            known = output in self.supervisor.unconfirmed
            self.supervisor.note_not_confirmed(cmd, now, reason)
            if known:
                return  # the engine heard of it already; the sticky check retries it
        self._events.append(CommandFailed(cmd, reason))

    def _pass_step(
        self, safe_pass: _Pass | None, cmd: OutputCommand, failure: str | None, now: Now
    ) -> None:
        """Count a safe-state step; after the last one, record what the pass achieved:
        never more than the console confirmed."""
        if safe_pass is None:
            return
        if failure is not None:
            safe_pass.not_confirmed.append(f"{describe(cmd)}: {failure}")
        safe_pass.pending -= 1
        if safe_pass.pending == 0:
            self._effects.appendleft(
                _Queued(
                    Record(
                        kind="safe_state_executed",
                        details={
                            "reasons": safe_pass.reasons,
                            "confirmed": not safe_pass.not_confirmed,
                            "not_confirmed": safe_pass.not_confirmed,
                        },
                        utc=now.utc,
                    ),
                    self._next_batch(),
                )
            )

    def _note_valve_opened(self, probe: int) -> None:
        run = self.state.run
        cyc = None if run is None else run.cycle(probe)
        if cyc is not None:
            self._push(ValveOpened(cycle_ref=cyc.cycle_ref, probe=probe), batch=self._batch)

    def allowed_on(self) -> frozenset[Output]:
        """The outputs the engine means to be on now; every other one should be off."""
        st = self.state
        run = st.run
        allowed: set[Output] = set()
        if st.phase in ACTIVE:
            allowed.add(("master", None))
        if run is not None and st.phase is Phase.FREEZING:
            allowed.update(("freeze", p) for p in run.probes)
        if run is not None and st.phase is Phase.THAWING:
            allowed.update(("thaw", c.probe) for c in run.cycles if c.thaw_on)
        return frozenset(allowed)

    def _sticky_safe_state(self) -> None:
        """An output the console reports on that the engine does not allow is
        commanded off, every poll, until it is (unless this turn commanded it: the
        snapshot was read before)."""
        snap = self.snapshot
        if snap is None:
            return
        assert self._now is not None
        allowed = self.allowed_on()
        shown: list[OutputCommand] = []
        if snap.master_open:
            shown.append(SetMaster(on=False))
        shown.extend(SetFreeze(probe=p.probe, on=False) for p in snap.probes if p.freeze_open)
        shown.extend(SetThaw(probe=p.probe, on=False) for p in snap.probes if p.thaw_on)
        batch = self._next_batch()
        for cmd in shown:
            output = output_of(cmd)
            if output in allowed or output in self._turn.touched:
                continue
            self._push(
                Record(
                    kind="output_on_unexpectedly",
                    details={"output": describe(cmd), "engine": str(self.state.phase)},
                    utc=self._now.utc,
                ),
                batch=batch,
            )
            self._push(cmd, batch=batch)


def describe(cmd: OutputCommand) -> str:
    """``freeze 3``, ``thaw 1``, ``master``: how records name an output."""
    kind, probe = output_of(cmd)
    return kind if probe is None else f"{kind} {probe}"


def _reason(result: Result) -> str:
    return result.reason if isinstance(result, Failed) else f"unexpected result {result!r}"


def _limits_outcome(cmd: WriteConsoleLimits, result: Result) -> Event:
    if isinstance(result, Failed):
        return LimitsRefused(cmd.probe, f"console did not take the limits: {result.reason}")
    if not isinstance(result, LimitsHeld):
        return LimitsRefused(cmd.probe, f"unexpected result {result!r}")
    if result.limits != cmd.limits:
        return LimitsRefused(
            cmd.probe,
            f"console did not echo the limits back (holds {result.limits}, sent {cmd.limits})",
        )
    return LimitsConfirmed(cmd.probe)
