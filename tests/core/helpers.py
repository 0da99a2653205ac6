"""Builders for the pure-core tests: snapshots, clocks, and a harness that
plays the I/O shell's part (confirms cycle rows and limits, runs the supervisor
first and gates valve-open commands) without any I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryod.daemon.alarms import Now
from cryod.daemon.engine import (
    Command,
    CommandFailed,
    CycleCommitted,
    Engine,
    EngineConfig,
    EngineState,
    Event,
    LimitsConfirmed,
    OpenCycle,
    SupervisorTrip,
    Tick,
    WriteConsoleLimits,
    is_valve_open,
)
from cryod.daemon.limits import ConsoleEnvelope, SafetyLimits
from cryod.daemon.protocols import Protocol, parse_protocol
from cryod.daemon.supervisor import Supervisor, Verdict
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
        master_open=True,
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


@dataclass
class Harness:
    """Engine + (optionally) supervisor, driven like the shell drives them.

    ``trace`` holds ("event", e) and ("cmd", c) in the order they happened.
    ``auto`` confirms OpenCycle and WriteConsoleLimits at once.
    """

    limits: SafetyLimits = LIMITS
    env: ConsoleEnvelope = ENV
    auto: bool = True
    supervise: bool = False
    utc_offset_s: float = 0.0
    engine: Engine = field(init=False)
    state: EngineState = field(init=False)
    sup: Supervisor = field(init=False)
    trace: list[tuple[str, object]] = field(default_factory=list)
    refused: list[Command] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = Engine(EngineConfig(self.limits, self.env, POLL_S))
        self.state = self.engine.initial()
        self.sup = Supervisor(self.limits, self.env, POLL_S)

    @property
    def cmds(self) -> list[Command]:
        return [c for k, c in self.trace if k == "cmd"]  # type: ignore[misc]

    def feed(self, ev: Event, t: float) -> list[Command]:
        n = now(t, self.utc_offset_s)
        if self.supervise and isinstance(ev, Tick):
            verdict = self.sup.check(ev.snapshot, n, self.engine.supervision(self.state))
            if verdict.demand is not None:
                for c in verdict.demand.commands(self.env.probes):
                    self.trace.append(("supervisor", c))
                    self.sup.note_command(c, n)
            self.verdicts.append(verdict)
            for a in verdict.trips:
                self.feed(SupervisorTrip(a), t)
        self.trace.append(("event", ev))
        self.state, cmds = self.engine.step(self.state, ev, n)
        out = list(cmds)
        follow: list[Event] = []
        for c in cmds:
            if self.supervise and is_valve_open(c) and not self.sup.permits(c).ok:
                # a refused command fails the rest of its batch (shell contract)
                self.refused.append(c)
                follow.append(CommandFailed(c, self.sup.permits(c).reason))
                break
            self.trace.append(("cmd", c))
            if self.supervise:
                self.sup.note_command(c, n)
            if self.auto and isinstance(c, OpenCycle):
                follow.append(CycleCommitted(c.cycle_ref))
            if self.auto and isinstance(c, WriteConsoleLimits):
                follow.append(LimitsConfirmed(c.probe))
        for f in follow:
            out.extend(self.feed(f, t))
        return out

    def tick(self, t: float, s: Snapshot | None = None, **kw: object) -> list[Command]:
        """Tick with a snapshot at ``t`` (a default healthy one unless given)."""
        if s is None and kw.get("none"):
            return self.feed(Tick(None), t)
        return self.feed(Tick(s if s is not None else snap(t)), t)
