"""The vocabulary between the pure core and the I/O shell: events in, commands out.

Pure data, no behaviour. The engine (``engine.py``) turns events into
commands; the supervisor (``supervisor.py``) watches the commands the shell
executed; the coordinator (``coordinator.py``) sequences both. Keeping the
types here means the supervisor never imports the engine: "independent of the
engine" is true in the imports (an import contract in ``make lint`` keeps it).

Commands are keyword-only: ``SetFreeze(probe=1, on=False)`` says what it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryod.drivers.base import ConsoleLimits, Snapshot

from .alarms import Alarm
from .figures import CycleFigures
from .protocols import Protocol

__all__ = [
    "OPERATOR_EVENTS",
    "Abort",
    "AbortCause",
    "Ack",
    "AdHocFreeze",
    "AdHocThaw",
    "CloseCycle",
    "Command",
    "CommandFailed",
    "Continue",
    "CycleCommitted",
    "Event",
    "Extend",
    "LimitsConfirmed",
    "LimitsRefused",
    "OpenCycle",
    "Outcome",
    "Output",
    "OutputCommand",
    "ProcedureClosed",
    "ProcedureOpened",
    "Record",
    "Reject",
    "Reset",
    "RunProtocol",
    "SafeState",
    "SetFreeze",
    "SetMaster",
    "SetThaw",
    "Stop",
    "SupervisorTrip",
    "Tick",
    "WriteConsoleLimits",
    "is_closing",
    "is_valve_open",
    "output_of",
]

# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class RunProtocol:
    protocol: Protocol
    probes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AdHocFreeze:
    probe: int
    seconds: float


@dataclass(frozen=True, slots=True)
class AdHocThaw:
    probe: int
    seconds: float | None = None
    mode: str = "passive"


@dataclass(frozen=True, slots=True)
class Stop:
    """End the current phase early (a freeze goes to its thaw, then the run ends)."""


@dataclass(frozen=True, slots=True)
class Extend:
    seconds: float


@dataclass(frozen=True, slots=True)
class Continue:
    """Leave a hold."""


AbortCause = Literal["operator", "shutdown"]


@dataclass(frozen=True, slots=True)
class Abort:
    """The safe state now, and the run ends ``aborted``. ``cause`` says who asked:
    the operator (``cryoctl abort``) or the daemon stopping. (A storage failure is
    the supervisor's ``storage_failure`` alarm: a trip, and the engine faults.)"""

    cause: AbortCause = "operator"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    pass


@dataclass(frozen=True, slots=True)
class Reset:
    cause_gone: bool  # from supervisor.reset(now).ok, after the console's faults were reset
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ProcedureOpened:
    pass


@dataclass(frozen=True, slots=True)
class ProcedureClosed:
    pass


@dataclass(frozen=True, slots=True)
class Tick:
    snapshot: Snapshot | None  # None: the poll failed


@dataclass(frozen=True, slots=True)
class CycleCommitted:
    cycle_ref: int


@dataclass(frozen=True, slots=True)
class LimitsConfirmed:
    probe: int


@dataclass(frozen=True, slots=True)
class LimitsRefused:
    probe: int
    reason: str


@dataclass(frozen=True, slots=True)
class CommandFailed:
    command: Command
    reason: str


@dataclass(frozen=True, slots=True)
class SupervisorTrip:
    alarm: Alarm


Event = (
    RunProtocol
    | AdHocFreeze
    | AdHocThaw
    | Stop
    | Extend
    | Continue
    | Abort
    | Ack
    | Reset
    | ProcedureOpened
    | ProcedureClosed
    | Tick
    | CycleCommitted
    | LimitsConfirmed
    | LimitsRefused
    | CommandFailed
    | SupervisorTrip
)
OPERATOR_EVENTS = (
    RunProtocol,
    AdHocFreeze,
    AdHocThaw,
    Stop,
    Extend,
    Continue,
    Abort,
    Ack,
    Reset,
    ProcedureOpened,
    ProcedureClosed,
)

# ---------------------------------------------------------------- commands

Outcome = Literal["completed", "stopped", "aborted", "faulted"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenCycle:
    """Commit the cycle row, then feed ``CycleCommitted(cycle_ref)``."""

    cycle_ref: int  # engine-allocated, unique per engine lifetime; the shell maps it to its row
    probe: int
    phase: Literal["freeze", "thaw"]
    step_index: int
    protocol: str
    planned_s: float | None  # freeze: planned duration; thaw: its time cap
    target_tip_c: float | None = None
    floor_tip_c: float | None = None
    thaw_mode: str | None = None
    until_tip_above_c: float | None = None
    host_only_limits: bool
    ad_hoc: bool
    utc: datetime
    mono_s: float  # the engine's time of the phase start


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteConsoleLimits:
    """Write the limits and read them back; the coordinator compares."""

    probe: int
    limits: ConsoleLimits


@dataclass(frozen=True, slots=True, kw_only=True)
class SetFreeze:
    probe: int
    on: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SetThaw:
    probe: int
    on: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SetMaster:
    on: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SafeState:
    """Every output of the console to its safe value, in the one order of
    ``safe_state.py``. The engine asks for it; the coordinator expands it."""

    reason: str
    first: tuple[int, ...] = ()  # the run's probes: closed first when no report shows them


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseCycle:
    cycle_ref: int
    probe: int
    outcome: Outcome
    figures: CycleFigures
    utc: datetime
    mono_s: float  # the engine's time of the decision


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    command: str
    code: str
    detail: str
    utc: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    kind: str
    details: dict[str, object]
    utc: datetime


OutputCommand = SetFreeze | SetThaw | SetMaster
Command = (
    OpenCycle
    | WriteConsoleLimits
    | SetFreeze
    | SetThaw
    | SetMaster
    | SafeState
    | CloseCycle
    | Reject
    | Record
)

#: one output of the console: ("master", None), ("freeze", probe) or ("thaw", probe)
Output = tuple[Literal["master", "freeze", "thaw"], int | None]


def output_of(cmd: OutputCommand) -> Output:
    """The console output a command drives."""
    if isinstance(cmd, SetMaster):
        return ("master", None)
    if isinstance(cmd, SetFreeze):
        return ("freeze", cmd.probe)
    return ("thaw", cmd.probe)


def is_valve_open(cmd: object) -> bool:
    """True for a command that switches an output on (these pass supervisor.permits)."""
    return isinstance(cmd, SetFreeze | SetThaw | SetMaster) and cmd.on


def is_closing(cmd: object) -> bool:
    """True for a command that switches an output off (always permitted)."""
    return isinstance(cmd, SetFreeze | SetThaw | SetMaster) and not cmd.on
