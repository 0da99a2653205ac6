"""Builders for the pure-core tests: snapshots, clocks, and a harness that is the
real coordinator with an auto-confirmer in place of the I/O shell."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryod.daemon.alarms import Alarm, Now
from cryod.daemon.commands import (
    Command,
    Event,
    OpenCycle,
    OutputCommand,
    SetFreeze,
    SetMaster,
    SetThaw,
    Tick,
    WriteConsoleLimits,
)
from cryod.daemon.coordinator import (
    AlarmCleared,
    AlarmRaised,
    Coordinator,
    Done,
    Failed,
    LimitsHeld,
    Refused,
    ValveOpened,
)
from cryod.daemon.engine import Engine, EngineConfig, EngineState
from cryod.daemon.limits import ConsoleEnvelope, SafetyLimits, Supervision
from cryod.daemon.protocols import Protocol, parse_protocol
from cryod.daemon.supervisor import Permit, Supervisor, Verdict
from cryod.drivers.base import (
    ConsoleFaults,
    LeaseStatus,
    ProbeState,
    Reading,
    Snapshot,
    TcStatus,
    Validity,
)

UTC0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CAPS = frozenset({"active_thaw_helium", "skin_channel", "console_limits"})
ENV = ConsoleEnvelope(
    probes=8,
    min_tip_c=-150.0,
    supply_working_kpa=(20700.0, 31000.0),
    supply_max_kpa=34500.0,
    capabilities=CAPS,
)
LIMITS = SafetyLimits()
POLL_S = 0.1
RETURN_FLOWING_KPA = 85.0  # return line while gas flows (domain.md: 69-103 kPa); vented: 0


def now(t: float, utc_offset_s: float = 0.0) -> Now:
    return Now(mono_s=t, utc=UTC0 + timedelta(seconds=t + utc_offset_s))


def rd(
    value: float | None, t: float, unit: str = "degC", validity: Validity = Validity.VALID
) -> Reading:
    return Reading(value, unit, t, 1.7e9 + t, validity)


def snap(
    t: float,
    tips: Mapping[int, float | None] | None = None,
    *,
    supply: float | None = 25000.0,
    cylinder: float | None = 40000.0,
    skin: float | None = 36.0,
    lease_armed: bool = True,
    lease_timeout_ms: int = 1000,
    lease_expired: bool = False,
    faults: ConsoleFaults | None = None,
    freeze_open: Iterable[int] = (),
    thaw_on: Iterable[int] = (),
    tc: Mapping[int, TcStatus] | None = None,
    tip_validity: Mapping[int, Validity] | None = None,
    returns: Mapping[int, float | None] | None = None,
    return_validity: Mapping[int, Validity] | None = None,
    supply_validity: Validity = Validity.VALID,
    probes: int = 8,
    seq: int = 0,
    master_open: bool = True,
) -> Snapshot:
    tips = dict(tips or {})
    tc = dict(tc or {})
    tv = dict(tip_validity or {})
    rets, rv = dict(returns or {}), dict(return_validity or {})
    opened, thawing = set(freeze_open), set(thaw_on)
    ps = []
    for p in range(1, probes + 1):
        status = tc.get(p, TcStatus.OK)
        value = tips.get(p, 35.0)
        validity = tv.get(p, Validity.VALID if status is TcStatus.OK else Validity.INVALID)
        if not validity.usable:
            value = None
        # by default the return line follows the valve as read back (flowing or vented)
        ret = rets.get(p, RETURN_FLOWING_KPA if p in opened else 0.0)
        ret_validity = rv.get(p, Validity.VALID if ret is not None else Validity.INVALID)
        if not ret_validity.usable:
            ret = None
        ps.append(
            ProbeState(
                probe=p,
                tip_c=rd(value, t, "degC", validity),
                return_kpa=rd(ret, t, "kPa", ret_validity),
                tc_status=status,
                freeze_open=p in opened,
                thaw_on=p in thawing,
                limits_armed=True,
            )
        )
    return Snapshot(
        seq=seq,
        t_mono=t,
        t_utc=1.7e9 + t,
        console_time_s=t,
        supply_kpa=rd(
            supply, t, "kPa", supply_validity if supply is not None else Validity.INVALID
        ),
        cylinder_kpa=rd(
            cylinder, t, "kPa", Validity.VALID if cylinder is not None else Validity.INVALID
        ),
        skin_c=None if skin is None else rd(skin, t),
        master_open=master_open,
        supply_low=False,
        lease=LeaseStatus(
            armed=lease_armed, timeout_ms=lease_timeout_ms, expired=lease_expired, expiry_count=0
        ),
        faults=faults or ConsoleFaults(lease_expired=lease_expired),
        probes=tuple(ps),
    )


def proto(
    steps: list[dict[str, object]], name: str = "test", limits: SafetyLimits = LIMITS
) -> Protocol:
    data = {
        "schema": "cryod.protocol/1",
        "protocol": {"name": name, "title": name, "source": "test", "example": True},
        "steps": steps,
    }
    return parse_protocol(data, limits, ENV.min_tip_c, ENV.capabilities, source="<test>")


def freeze(d: float, target: float = -40.0, reach: float | None = None) -> dict[str, object]:
    return {"kind": "freeze", "duration_s": d, "target_tip_c": target, "reach_within_s": reach or d}


def thaw(
    d: float | None = None, mode: str = "passive", until: float | None = None
) -> dict[str, object]:
    s: dict[str, object] = {"kind": "thaw", "mode": mode}
    if d is not None:
        s["duration_s"] = d
    if until is not None:
        s["until_tip_above_c"] = until
    return s


def hold(max_s: float | None = None) -> dict[str, object]:
    s: dict[str, object] = {"kind": "hold", "message": "check"}
    if max_s is not None:
        s["max_s"] = max_s
    return s


class UnsupervisedForEngineTests(Supervisor):
    """A supervisor that sees nothing and permits everything, for the engine's own
    tests only (their snapshots are sparse: a real supervisor would trip on stale
    data between them). Every other core test, and every shell, runs the real one."""

    def check(self, snap: Snapshot | None, now_: Now, sup: Supervision) -> Verdict:
        return Verdict((), (), (), None, ())

    def permits(self, cmd: Command) -> Permit:
        return Permit(True)


@dataclass
class Harness:
    """The real ``Coordinator`` with an auto-confirmer: the shell's sequencing as it
    ships, with every console command confirmed at once and no I/O.

    ``trace`` holds ("event", e) for what the test fed and ("cmd", c) for every
    command executed, in order. ``auto`` confirms OpenCycle and WriteConsoleLimits
    at once (otherwise the test feeds the confirmations). ``supervise`` runs the
    real supervisor; without it only the engine's own tests run
    (``UnsupervisedForEngineTests``). ``fail`` makes output commands fail: a
    callable given each command, returning a reason (or None to confirm it).
    ``poll_s`` is the poll period on the engine's clock (simulated seconds at a
    simulated speed: 0.05 s x 50 = 2.5 s).
    """

    limits: SafetyLimits = LIMITS
    poll_s: float = POLL_S
    env: ConsoleEnvelope = ENV
    auto: bool = True
    supervise: bool = False
    utc_offset_s: float = 0.0
    fail: Callable[[OutputCommand], str | None] | None = None
    coord: Coordinator = field(init=False)
    trace: list[tuple[str, object]] = field(default_factory=list)
    refused: list[Command] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)

    def __post_init__(self) -> None:
        sup_cls = Supervisor if self.supervise else UnsupervisedForEngineTests
        self.coord = Coordinator(
            engine=Engine(EngineConfig(self.limits, self.env, self.poll_s)),
            supervisor=sup_cls(self.limits, self.env, self.poll_s),
            probes=self.env.probes,
        )

    @property
    def engine(self) -> Engine:
        return self.coord.engine

    @property
    def sup(self) -> Supervisor:
        return self.coord.supervisor

    @property
    def state(self) -> EngineState:
        return self.coord.state

    @state.setter
    def state(self, value: EngineState) -> None:
        self.coord.state = value

    @property
    def cmds(self) -> list[Command]:
        return [c for k, c in self.trace if k == "cmd"]  # type: ignore[misc]

    def turn_cmds(self) -> list[Command]:
        """The commands executed since the last tick began this poll's turn."""
        starts = [i for i, (k, e) in enumerate(self.trace) if k == "event" and isinstance(e, Tick)]
        return [c for k, c in self.trace[starts[-1] if starts else 0 :] if k == "cmd"]  # type: ignore[misc]

    def feed(self, ev: Event, t: float) -> list[Command]:
        """Feed one event (a Tick runs the supervisor first, as every poll does) and
        execute everything it leads to; returns the commands executed."""
        n = now(t, self.utc_offset_s)
        self.trace.append(("event", ev))
        if isinstance(ev, Tick):
            self.coord.begin_poll(ev.snapshot, n)
            self.coord.tick(n)
        else:
            self.coord.feed(ev, n)
        return self.drain(n)

    def drain(self, n: Now) -> list[Command]:
        out: list[Command] = []
        while (effect := self.coord.next_effect()) is not None:
            if isinstance(effect, AlarmRaised):
                self.alarms.append(effect.alarm)
                continue
            if isinstance(effect, Refused):
                self.refused.append(effect.command)
                continue
            if isinstance(effect, AlarmCleared | ValveOpened):
                continue
            self.trace.append(("cmd", effect))
            out.append(effect)
            if isinstance(effect, SetFreeze | SetThaw | SetMaster):
                why = None if self.fail is None else self.fail(effect)
                self.coord.report(effect, Done() if why is None else Failed(reason=why), n)
            elif self.auto and isinstance(effect, OpenCycle):
                self.coord.report(effect, Done(), n)
            elif self.auto and isinstance(effect, WriteConsoleLimits):
                self.coord.report(effect, LimitsHeld(limits=effect.limits), n)
        return out

    def tick(self, t: float, s: Snapshot | None = None, **kw: object) -> list[Command]:
        """Tick with a snapshot at ``t`` (a default healthy one unless given)."""
        if s is None and kw.get("none"):
            return self.feed(Tick(None), t)
        return self.feed(Tick(s if s is not None else snap(t)), t)
