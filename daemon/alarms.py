"""Alarm codes, IEC 60601-1-8 priorities, latching, and ack/clear/reset bookkeeping.

Pure: no I/O, no clock of its own (``Now`` is injected by the caller).

Priorities follow the manufacturer's risk analysis IEC 60601-1-8 asks for
(docs/safety.md has the table): **high** when the condition can cause
irreversible injury at once and the response must be immediate (cold injury
beyond the target, gas where it should not be, loss of the monitoring that
protects the patient during a freeze); **medium** when harm develops over
minutes or the treatment becomes ineffective (supply low, target not
reached); **low** for conditions needing awareness only.

Latching: a high-priority alarm stays active until it is acknowledged AND
reset with its cause gone. Medium and low alarms clear themselves when the
condition goes away (acknowledging only silences them). The stable ``code``
strings are part of the external interface (log, MQTT, scenario files):
never rename one.

Usage (by the supervisor)::

    book = AlarmBook()
    raised, cleared = book.update(present_conditions, now)
    book.acknowledge(now); result = book.reset(now)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

__all__ = [
    "ALARM_SPECS",
    "Alarm",
    "AlarmBook",
    "AlarmCode",
    "AlarmSpec",
    "Condition",
    "Now",
    "Priority",
    "ResetResult",
    "SafeWhen",
]


@dataclass(frozen=True, slots=True)
class Now:
    """The injected clock: ``mono_s`` (monotonic) for every duration, ``utc`` for records.

    A wall-clock step (NTP) changes ``utc`` only; nothing in the core ever
    subtracts two ``utc`` values.
    """

    mono_s: float
    utc: datetime


class Priority(enum.StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class SafeWhen(enum.StrEnum):
    """When an alarm demands the safe state (all freeze valves closed)."""

    NEVER = "never"
    IF_FREEZING = "if_freezing"  # only while a freeze valve is commanded open
    ALWAYS = "always"


class AlarmCode(enum.StrEnum):
    TIP_TOO_COLD = "tip_too_cold"
    FREEZE_TOO_LONG = "freeze_too_long"
    FREEZE_CUMULATIVE = "freeze_cumulative"
    SUPPLY_LOW = "supply_low"
    SUPPLY_HIGH = "supply_high"
    SUPPLY_INVALID = "supply_invalid"
    SUPPLY_LEAK = "supply_leak"
    TC_OPEN = "tc_open"
    TC_SHORT = "tc_short"
    TC_INVALID = "tc_invalid"
    TC_STUCK = "tc_stuck"
    TC_RATE = "tc_rate"
    VALVE_STUCK_OPEN = "valve_stuck_open"
    NO_COOLING = "no_cooling"
    TARGET_NOT_REACHED = "target_not_reached"
    SKIN_COLD = "skin_cold"
    SKIN_COOL = "skin_cool"
    SKIN_TC_FAULT = "skin_tc_fault"
    STALE_DATA = "stale_data"
    LEASE_DISARMED = "lease_disarmed"
    CONSOLE_LEASE_EXPIRED = "console_lease_expired"
    CONSOLE_OVERPRESSURE = "console_overpressure"
    CONSOLE_LIMIT_TRIP = "console_limit_trip"
    SAFE_STATE_UNCONFIRMED = "safe_state_unconfirmed"
    ANCHOR_FAILED = "anchor_failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmSpec:
    """Priority, when the alarm demands the safe state (``safe_state.py``: every
    output off, the master valve included), and a summary."""

    code: AlarmCode
    priority: Priority
    safe: SafeWhen
    summary: str

    @property
    def latching(self) -> bool:
        return self.priority is Priority.HIGH


def _spec(
    code: AlarmCode, prio: Priority, safe: SafeWhen, summary: str
) -> tuple[AlarmCode, AlarmSpec]:
    return code, AlarmSpec(code=code, priority=prio, safe=safe, summary=summary)


H, M, L = Priority.HIGH, Priority.MEDIUM, Priority.LOW
A, F, N = SafeWhen.ALWAYS, SafeWhen.IF_FREEZING, SafeWhen.NEVER
C = AlarmCode

ALARM_SPECS: dict[AlarmCode, AlarmSpec] = dict(
    [
        _spec(C.TIP_TOO_COLD, H, A, "tip colder than the protocol/console minimum"),
        _spec(C.FREEZE_TOO_LONG, H, A, "freeze valve open longer than allowed"),
        _spec(C.FREEZE_CUMULATIVE, H, A, "cumulative freeze time of the procedure exceeded"),
        _spec(C.SUPPLY_LOW, M, F, "supply pressure below the working band"),
        _spec(C.SUPPLY_HIGH, H, A, "supply pressure above the maximum"),
        _spec(C.SUPPLY_INVALID, H, F, "supply pressure reading invalid"),
        _spec(C.SUPPLY_LEAK, H, A, "supply falling faster than consumption explains"),
        _spec(C.TC_OPEN, H, A, "tip thermocouple open"),
        _spec(C.TC_SHORT, H, A, "tip thermocouple shorted"),
        _spec(C.TC_INVALID, H, A, "tip temperature invalid or stale"),
        _spec(C.TC_STUCK, H, A, "tip temperature not changing while a valve is open"),
        _spec(C.TC_RATE, H, A, "tip temperature changing faster than physics allows"),
        _spec(C.VALVE_STUCK_OPEN, H, A, "gas still flowing after the freeze valve closed"),
        _spec(C.NO_COOLING, H, A, "tip not cooling after the freeze valve opened"),
        _spec(C.TARGET_NOT_REACHED, M, N, "target tip temperature not reached in time"),
        _spec(C.SKIN_COLD, H, A, "skin temperature below its limit"),
        _spec(C.SKIN_COOL, M, N, "skin temperature approaching its limit"),
        _spec(C.SKIN_TC_FAULT, M, N, "skin thermocouple invalid"),
        _spec(C.STALE_DATA, H, A, "no valid snapshot for too long"),
        _spec(C.LEASE_DISARMED, H, F, "console lease not armed while freezing"),
        _spec(C.CONSOLE_LEASE_EXPIRED, H, A, "console lease expired (console closed valves)"),
        _spec(C.CONSOLE_OVERPRESSURE, H, A, "console hard over-pressure limit"),
        _spec(C.CONSOLE_LIMIT_TRIP, H, A, "a console-held per-probe limit tripped"),
        _spec(
            C.SAFE_STATE_UNCONFIRMED,
            H,
            A,
            "an output commanded off was not confirmed off by the console",
        ),
        # raised by the daemon (not the supervisor): the record is kept, but its chain head
        # is not leaving the database by every route; never a reason to stop a freeze
        _spec(C.ANCHOR_FAILED, M, N, "the record's chain head cannot be anchored"),
    ]
)
del H, M, L, A, F, N, C


@dataclass(frozen=True, slots=True)
class Condition:
    """One alarm condition present in a check: the code, the probe (None = console)
    and a detail for the record (numbers, never patient data)."""

    code: AlarmCode
    probe: int | None = None
    detail: str = ""

    @property
    def key(self) -> tuple[AlarmCode, int | None]:
        return (self.code, self.probe)

    @property
    def spec(self) -> AlarmSpec:
        return ALARM_SPECS[self.code]


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm as raised: stable code, priority, probe, detail and when."""

    code: AlarmCode
    priority: Priority
    probe: int | None
    detail: str
    raised_mono_s: float
    raised_utc: datetime
    present: bool = True  # the condition is still present
    acknowledged: bool = False

    @property
    def key(self) -> tuple[AlarmCode, int | None]:
        return (self.code, self.probe)

    @property
    def spec(self) -> AlarmSpec:
        return ALARM_SPECS[self.code]

    @property
    def latching(self) -> bool:
        return self.spec.latching


@dataclass(frozen=True, slots=True)
class ResetResult:
    ok: bool  # every latched alarm was cleared
    cleared: tuple[Alarm, ...] = ()
    held: tuple[tuple[Alarm, str], ...] = ()  # alarms still active, with the reason

    @property
    def reason(self) -> str:
        return "; ".join(
            f"{a.code}{'' if a.probe is None else f'[{a.probe}]'}: {why}" for a, why in self.held
        )


@dataclass(slots=True)
class AlarmBook:
    """The active alarms, keyed by (code, probe). Mutable, but pure (no I/O)."""

    _active: dict[tuple[AlarmCode, int | None], Alarm] = field(default_factory=dict)

    @property
    def active(self) -> tuple[Alarm, ...]:
        return tuple(self._active.values())

    def get(self, code: AlarmCode, probe: int | None = None) -> Alarm | None:
        return self._active.get((code, probe))

    def latched(self) -> tuple[Alarm, ...]:
        return tuple(a for a in self._active.values() if a.latching)

    def update(
        self, present: Iterable[Condition], now: Now
    ) -> tuple[tuple[Alarm, ...], tuple[Alarm, ...]]:
        """Apply one check's conditions; return (newly raised, self-cleared).

        A condition already active is not raised again. A non-latching alarm
        whose condition is gone clears; a latching one stays (present=False)
        until ``reset``.
        """
        present_by_key = {c.key: c for c in present}
        raised: list[Alarm] = []
        cleared: list[Alarm] = []
        for key, cond in present_by_key.items():
            cur = self._active.get(key)
            if cur is None:
                alarm = Alarm(
                    cond.code, cond.spec.priority, cond.probe, cond.detail, now.mono_s, now.utc
                )
                self._active[key] = alarm
                raised.append(alarm)
            elif not cur.present:
                self._active[key] = replace(cur, present=True, detail=cond.detail)
        for key, cur in list(self._active.items()):
            if key in present_by_key:
                continue
            if cur.latching:
                if cur.present:
                    self._active[key] = replace(cur, present=False)
            else:
                del self._active[key]
                cleared.append(replace(cur, present=False))
        return tuple(raised), tuple(cleared)

    def acknowledge(self) -> tuple[Alarm, ...]:
        """Acknowledge every active alarm; returns those newly acknowledged."""
        newly = []
        for key, cur in self._active.items():
            if not cur.acknowledged:
                self._active[key] = replace(cur, acknowledged=True)
                newly.append(self._active[key])
        return tuple(newly)

    def reset(self) -> ResetResult:
        """Clear latched alarms that are acknowledged and whose cause is gone."""
        cleared: list[Alarm] = []
        held: list[tuple[Alarm, str]] = []
        for key, cur in list(self._active.items()):
            if not cur.latching:
                continue
            if not cur.acknowledged:
                held.append((cur, "not acknowledged"))
            elif cur.present:
                held.append((cur, "cause still present"))
            else:
                del self._active[key]
                cleared.append(cur)
        return ResetResult(ok=not held, cleared=tuple(cleared), held=tuple(held))
