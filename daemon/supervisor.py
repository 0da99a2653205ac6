"""The safety supervisor: independent of the engine, always able to force the safe state.

Pure (no I/O, injected clock ``Now``). The shell drives it:

    sup = Supervisor(limits, envelope, poll_period_s)
    verdict = sup.check(snapshot_or_None, now, engine.supervision(state))   # every poll, first
    if verdict.demand: execute verdict.demand.commands(n_probes), then feed
        SupervisorTrip(alarm) to the engine for each alarm in verdict.trips
    for cmd in engine_commands:
        if is_valve_open(cmd) and not sup.permits(cmd).ok: refuse it (CommandFailed)
        else: execute cmd; sup.note_command(cmd, now)
    sup.procedure_opened()            # on ProcedureOpened (resets cumulative on-time)
    sup.acknowledge(now); sup.reset(now) -> ResetResult

What the engine tells it (``Supervision``) only narrows what it watches and
which freeze plan applies; every bound is also checked against the site
limits here, and on-time is measured here from the commands the shell
actually executed (``note_command``), not taken from the engine.

Once a safe-state alarm is raised the supervisor is *tripped*: ``permits``
refuses every valve-open command until ``reset`` succeeds (every latched
alarm acknowledged and its cause gone, and no safe-state alarm present).

``console_limits_for(probe, plan)`` derives the limits handed down to the
console for a freeze: the supervisor's own, widened by the site's
``ConsoleMargin`` so the supervisor trips first and the console is the
backstop (issue 10).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryod.drivers.base import ConsoleLimits, Snapshot, TcStatus

from .alarms import Alarm, AlarmBook, AlarmCode, Condition, Now, ResetResult, SafeWhen
from .engine import Command, SetFreeze, SetMaster, SetThaw, is_valve_open
from .limits import ConsoleEnvelope, FreezePlan, SafetyLimits, Supervision, console_limits_for

__all__ = ["Permit", "SafeStateDemand", "Supervisor", "Verdict"]


@dataclass(frozen=True, slots=True)
class Permit:
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SafeStateDemand:
    """All freeze valves and thaws closed; the master valve too on a valve/gas fault."""

    close_master: bool
    reasons: tuple[str, ...]

    def commands(self, probes: int) -> list[Command]:
        out: list[Command] = []
        if self.close_master:
            out.append(SetMaster(False))
        out.extend(SetFreeze(p, False) for p in range(1, probes + 1))
        out.extend(SetThaw(p, False) for p in range(1, probes + 1))
        return out


@dataclass(frozen=True, slots=True)
class Verdict:
    raised: tuple[Alarm, ...]  # new this check (log them all)
    cleared: tuple[Alarm, ...]  # non-latching alarms whose condition went away
    trips: tuple[Alarm, ...]  # new alarms that demand the safe state (feed to the engine)
    demand: SafeStateDemand | None  # set when trips is not empty
    active: tuple[Alarm, ...]

    @property
    def tripped(self) -> bool:
        return bool(self.trips)


@dataclass(slots=True)
class _Valve:
    """What was commanded for one probe's freeze valve, and what followed."""

    open_since: float | None = None
    tip_at_open: float | None = None
    closed_at: float | None = None
    tip_at_close: float | None = None
    closed_accum_s: float = 0.0  # on-time of closed freezes, this procedure
    thaw_on: bool = False
    mismatch_since: float | None = None


@dataclass(slots=True)
class _Tip:
    last_t: float | None = None
    last_c: float | None = None
    window: deque[tuple[float, float]] = field(default_factory=deque)


def _slope(points: Iterable[tuple[float, float]]) -> float:
    """Least-squares slope: robust to sensor noise, unlike two end points."""
    pts = list(points)
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    den = sum((t - mt) ** 2 for t, _ in pts)
    return 0.0 if den == 0 else sum((t - mt) * (v - mv) for t, v in pts) / den


def _slope_stderr(points: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope and its standard error (0 when it cannot be estimated)."""
    pts = list(points)
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    den = sum((t - mt) ** 2 for t, _ in pts)
    if den == 0:
        return 0.0, 0.0
    slope = sum((t - mt) * (v - mv) for t, v in pts) / den
    if n <= 2:
        return slope, 0.0
    resid = sum((v - (mv + slope * (t - mt))) ** 2 for t, v in pts)
    return slope, (resid / (n - 2) / den) ** 0.5


class Supervisor:
    def __init__(
        self, limits: SafetyLimits, envelope: ConsoleEnvelope, poll_period_s: float
    ) -> None:
        if poll_period_s <= 0:
            raise ValueError("poll_period_s must be > 0")
        self.limits = limits
        self.envelope = envelope
        self.poll_period_s = poll_period_s
        self.book = AlarmBook()
        self._tripped = False
        self._valves = {p: _Valve() for p in range(1, envelope.probes + 1)}
        self._tips = {p: _Tip() for p in range(1, envelope.probes + 1)}
        self._master_on = False
        self._last_good_mono: float | None = None
        self._started_mono: float | None = None
        self._cyl: deque[tuple[float, float]] = deque()
        self._cyl_open: deque[tuple[float, int]] = deque()

    # ---- inputs -----------------------------------------------------------
    @property
    def stale_after_s(self) -> float:
        return self.limits.stale_polls * self.poll_period_s

    def procedure_opened(self, cumulative_s: dict[int, float] | None = None) -> None:
        """Cumulative freeze time counts per procedure; a procedure adopted after a
        restart brings the freeze time already recorded for each probe."""
        for p, v in self._valves.items():
            v.closed_accum_s = (cumulative_s or {}).get(p, 0.0)

    def note_command(self, cmd: Command, now: Now) -> None:
        """The shell executed ``cmd`` (call after every valve command)."""
        t = now.mono_s
        if isinstance(cmd, SetMaster):
            self._master_on = cmd.on
            return
        if not isinstance(cmd, SetFreeze | SetThaw) or cmd.probe not in self._valves:
            return
        v = self._valves[cmd.probe]
        tip = self._tips[cmd.probe].last_c
        if isinstance(cmd, SetThaw):
            v.thaw_on = cmd.on
            return
        if cmd.on and v.open_since is None:
            v.open_since, v.tip_at_open = t, tip
            v.closed_at = v.tip_at_close = None
        elif not cmd.on and v.open_since is not None:
            v.closed_accum_s += t - v.open_since
            v.open_since = None
            v.closed_at, v.tip_at_close = t, tip

    # ---- queries ------------------------------------------------------------
    @property
    def tripped(self) -> bool:
        return self._tripped

    def on_time_s(self, probe: int, now: Now) -> float:
        v = self._valves[probe]
        return 0.0 if v.open_since is None else now.mono_s - v.open_since

    def cumulative_s(self, probe: int, now: Now) -> float:
        return self._valves[probe].closed_accum_s + self.on_time_s(probe, now)

    def permits(self, cmd: Command) -> Permit:
        """Gate for every valve-open command; closing is always permitted."""
        if not is_valve_open(cmd):
            return Permit(True)
        if self._tripped:
            codes = ", ".join(sorted({str(a.code) for a in self.book.active})) or "trip not reset"
            return Permit(False, f"supervisor tripped: {codes}")
        blocking = [a for a in self.book.active if a.spec.safe is not SafeWhen.NEVER]
        if blocking:
            return Permit(False, "alarm active: " + ", ".join(str(a.code) for a in blocking))
        if self._last_good_mono is None:
            return Permit(False, "no valid snapshot yet")
        if isinstance(cmd, SetFreeze):
            v = self._valves.get(cmd.probe)
            if v is None:
                return Permit(False, f"probe {cmd.probe} unknown")
            if v.closed_accum_s >= self.limits.max_freeze_s_per_procedure:
                return Permit(False, "cumulative freeze time of the procedure used up")
        return Permit(True)

    def console_limits_for(self, probe: int, plan: FreezePlan) -> ConsoleLimits:
        """Limits for the console to hold during this freeze: the supervisor's own
        bounds (plan bounded by the site limits) widened by the console margin."""
        if probe != plan.probe:
            raise ValueError(f"plan is for probe {plan.probe}, not {probe}")
        return console_limits_for(
            on_time_s=min(plan.on_time_s, self.limits.max_freeze_s_per_cycle),
            floor_tip_c=max(plan.floor_tip_c, self.envelope.min_tip_c),
            supervisor_max_supply_kpa=self.envelope.supervisor_max_supply_kpa,
            margin=self.limits.console_margin,
        )

    # ---- operator -------------------------------------------------------------
    def acknowledge(self, now: Now) -> tuple[Alarm, ...]:
        return self.book.acknowledge()

    def reset(self, now: Now) -> ResetResult:
        """Clear the trip once every latched alarm is acknowledged and its cause
        gone, and no safe-state alarm is present."""
        result = self.book.reset()
        held = list(result.held)
        for a in self.book.active:
            if not a.latching and a.spec.safe is SafeWhen.ALWAYS:
                held.append((a, "cause still present"))
        if held:
            return ResetResult(ok=False, cleared=result.cleared, held=tuple(held))
        self._tripped = False
        return result

    # ---- the check ------------------------------------------------------------
    def check(self, snap: Snapshot | None, now: Now, sup: Supervision) -> Verdict:
        """Check one poll result (None when the poll failed)."""
        t = now.mono_s
        if self._started_mono is None:
            self._started_mono = t
        conds: list[Condition] = []
        fresh = snap is not None and t - snap.t_mono <= self.stale_after_s
        if snap is not None and fresh:
            self._last_good_mono = snap.t_mono
        ref = self._last_good_mono if self._last_good_mono is not None else self._started_mono
        if t - ref > self.stale_after_s:
            conds.append(
                Condition(AlarmCode.STALE_DATA, None, f"no valid snapshot for {t - ref:.2f} s")
            )
        freezing = any(v.open_since is not None for v in self._valves.values())
        if snap is not None and fresh:
            conds.extend(self._check_snapshot(snap, t, sup))
        conds.extend(self._check_on_time(t, sup))
        raised, cleared = self.book.update(conds, now)
        trips = tuple(
            a
            for a in raised
            if a.spec.safe is SafeWhen.ALWAYS or (a.spec.safe is SafeWhen.IF_FREEZING and freezing)
        )
        demand = None
        if trips:
            self._tripped = True
            demand = SafeStateDemand(
                close_master=any(a.spec.close_master for a in trips),
                reasons=tuple(str(a.code) for a in trips),
            )
        return Verdict(raised, cleared, trips, demand, self.book.active)

    def _check_on_time(self, t: float, sup: Supervision) -> list[Condition]:
        out = []
        lim = self.limits
        for p, v in self._valves.items():
            if v.open_since is None:
                continue
            on = t - v.open_since
            plan = sup.plan(p)
            allowed = lim.max_freeze_s_per_cycle
            if plan is not None:
                allowed = min(allowed, plan.on_time_s)
            # the engine closes the valve at a poll, so it may be up to one period late
            if on > allowed + lim.on_time_grace_s + self.poll_period_s:
                out.append(
                    Condition(AlarmCode.FREEZE_TOO_LONG, p, f"on {on:.1f} s > {allowed:.1f} s")
                )
            cum = v.closed_accum_s + on
            if cum > lim.max_freeze_s_per_procedure:
                out.append(
                    Condition(
                        AlarmCode.FREEZE_CUMULATIVE,
                        p,
                        f"{cum:.1f} s > {lim.max_freeze_s_per_procedure} s this procedure",
                    )
                )
        return out

    def _check_snapshot(self, snap: Snapshot, t: float, sup: Supervision) -> list[Condition]:
        lim, env = self.limits, self.envelope
        out: list[Condition] = []
        freezing = any(v.open_since is not None for v in self._valves.values())
        # console faults and the lease
        f = snap.faults
        if f.lease_expired or snap.lease.expired:
            out.append(Condition(AlarmCode.CONSOLE_LEASE_EXPIRED, None, "console lease expired"))
        if f.overpressure:
            out.append(Condition(AlarmCode.CONSOLE_OVERPRESSURE, None, "console hard limit"))
        if f.console_limit:
            trips = [f"probe {tr.probe}: {tr.cause.name}" for tr in f.trips]
            out.append(Condition(AlarmCode.CONSOLE_LIMIT_TRIP, None, "; ".join(trips)))
        if freezing and not snap.lease.armed:
            out.append(Condition(AlarmCode.LEASE_DISARMED, None, "lease not armed while freezing"))
        # supply
        out.extend(self._check_supply(snap, t))
        # skin (only while probes are in use: an unplaced skin sensor reads room air)
        in_use = freezing or bool(sup.watched)
        if snap.skin_c is not None and env.has_skin_channel and in_use:
            s = snap.skin_c
            if not s.usable or s.value is None:
                out.append(Condition(AlarmCode.SKIN_TC_FAULT, None, f"skin {s.validity}"))
            elif s.value < lim.skin_min_c:
                out.append(Condition(AlarmCode.SKIN_COLD, None, f"skin {s.value} C"))
            elif s.value < lim.skin_warn_c:
                out.append(Condition(AlarmCode.SKIN_COOL, None, f"skin {s.value} C"))
        # probes
        for ps in snap.probes:
            p = ps.probe
            if p not in self._valves:
                continue
            out.extend(self._check_probe(snap, p, t, sup))
        return out

    def _check_supply(self, snap: Snapshot, t: float) -> list[Condition]:
        lim, env = self.limits, self.envelope
        out: list[Condition] = []
        r = snap.supply_kpa
        lo, hi = env.supply_working_kpa
        if not r.usable or r.value is None:
            out.append(Condition(AlarmCode.SUPPLY_INVALID, None, f"supply {r.validity}"))
        elif r.value > hi:
            out.append(Condition(AlarmCode.SUPPLY_HIGH, None, f"supply {r.value} kPa > {hi}"))
        elif r.value < lo:
            out.append(Condition(AlarmCode.SUPPLY_LOW, None, f"supply {r.value} kPa < {lo}"))
        # leak: the cylinder falls faster than the open valves explain
        c = snap.cylinder_kpa
        if c.usable and c.value is not None:
            self._cyl.append((c.t_mono, c.value))
            # consumption is explained by the valves open at any time in the window,
            # not only now (a valve that just closed still shows in the slope)
            self._cyl_open.append(
                (c.t_mono, sum(1 for v in self._valves.values() if v.open_since is not None))
            )
            while self._cyl and c.t_mono - self._cyl[0][0] > lim.leak_window_s:
                self._cyl.popleft()
            while self._cyl_open and c.t_mono - self._cyl_open[0][0] > lim.leak_window_s:
                self._cyl_open.popleft()
            span = c.t_mono - self._cyl[0][0]
            if span >= 0.9 * lim.leak_window_s and len(self._cyl) >= 5:
                slope, stderr = _slope_stderr(self._cyl)
                rate = -slope
                n_open = max(n for _, n in self._cyl_open)
                allowed = lim.leak_idle_kpa_per_s + n_open * lim.consumption_kpa_per_s_per_probe
                # significant, not gauge noise: the fall must exceed what the open
                # valves explain by three standard errors of the fitted slope
                if rate - 3.0 * stderr > allowed:
                    out.append(
                        Condition(
                            AlarmCode.SUPPLY_LEAK,
                            None,
                            f"cylinder falling {rate:.1f} kPa/s > {allowed:.1f} kPa/s "
                            f"with {n_open} valve(s) open",
                        )
                    )
        return out

    def _check_probe(self, snap: Snapshot, p: int, t: float, sup: Supervision) -> list[Condition]:
        lim, env = self.limits, self.envelope
        out: list[Condition] = []
        ps = snap.probe(p)
        v = self._valves[p]
        tipst = self._tips[p]
        commanded_open = v.open_since is not None
        watched = p in sup.watched or commanded_open or ps.freeze_open or v.closed_at is not None
        # read-back: a valve open that was not commanded open (or the reverse)
        if ps.freeze_open != commanded_open:
            if v.mismatch_since is None:
                v.mismatch_since = t
            if t - v.mismatch_since >= lim.readback_grace_s and ps.freeze_open:
                out.append(
                    Condition(
                        AlarmCode.VALVE_STUCK_OPEN, p, "freeze valve reads open, commanded closed"
                    )
                )
        else:
            v.mismatch_since = None
        if not watched:
            return out
        tip = ps.tip_c
        if ps.tc_status is TcStatus.OPEN:
            out.append(Condition(AlarmCode.TC_OPEN, p, "thermocouple open"))
            return out
        if ps.tc_status is TcStatus.SHORT:
            out.append(Condition(AlarmCode.TC_SHORT, p, "thermocouple shorted"))
            return out
        if not tip.usable or tip.value is None or t - tip.t_mono > self.stale_after_s:
            out.append(Condition(AlarmCode.TC_INVALID, p, f"tip {tip.validity}"))
            return out
        c, tc = tip.value, tip.t_mono
        # rate of change between consecutive usable samples
        if tipst.last_t is not None and tipst.last_c is not None and tc > tipst.last_t:
            dt = tc - tipst.last_t
            jump = abs(c - tipst.last_c)
            if jump > max(lim.tc_rate_min_jump_c, lim.tc_max_rate_c_per_s * dt):
                out.append(Condition(AlarmCode.TC_RATE, p, f"{jump:.1f} C in {dt:.2f} s"))
        if tipst.last_t is None or tc > tipst.last_t:
            tipst.last_t, tipst.last_c = tc, c
            tipst.window.append((tc, c))
            while tipst.window and tc - tipst.window[0][0] > lim.tc_stuck_window_s:
                tipst.window.popleft()
        # floor
        plan = sup.plan(p)
        floor = max(plan.floor_tip_c if plan is not None else lim.floor_tip_c, env.min_tip_c)
        if c < floor:
            out.append(Condition(AlarmCode.TIP_TOO_COLD, p, f"tip {c} C < {floor} C"))
        # stuck: no change over the window while a valve is open
        if (commanded_open or v.thaw_on) and tipst.window:
            since = v.open_since if v.open_since is not None else tipst.window[0][0]
            span = tc - tipst.window[0][0]
            if t - since >= lim.tc_stuck_window_s and span >= lim.tc_stuck_window_s * 0.8:
                vals = [x for _, x in tipst.window]
                if max(vals) - min(vals) <= lim.tc_stuck_epsilon_c:
                    out.append(
                        Condition(AlarmCode.TC_STUCK, p, f"tip {c} C unchanged for {span:.1f} s")
                    )
        if commanded_open and v.open_since is not None:
            if v.tip_at_open is None:
                v.tip_at_open = c
            on = t - v.open_since
            if on >= lim.cooling_check_s and v.tip_at_open - c < lim.cooling_min_drop_c:
                out.append(
                    Condition(
                        AlarmCode.NO_COOLING,
                        p,
                        f"tip fell {v.tip_at_open - c:.1f} C in {on:.1f} s "
                        f"(< {lim.cooling_min_drop_c} C)",
                    )
                )
            if plan is not None and on > plan.reach_within_s and c > plan.target_tip_c:
                out.append(
                    Condition(
                        AlarmCode.TARGET_NOT_REACHED,
                        p,
                        f"tip {c} C above target {plan.target_tip_c} C after {on:.0f} s",
                    )
                )
        elif v.closed_at is not None:
            if v.tip_at_close is None:
                v.tip_at_close = c
            since_close = t - v.closed_at
            others_open = any(x.open_since is not None for x in self._valves.values())
            if since_close >= lim.close_grace_s and c < v.tip_at_close - lim.still_cooling_drop_c:
                out.append(
                    Condition(
                        AlarmCode.VALVE_STUCK_OPEN,
                        p,
                        f"tip {c} C still cooling {since_close:.1f} s after close "
                        f"(was {v.tip_at_close} C)",
                    )
                )
            elif (
                since_close >= lim.warm_check_s
                and not others_open
                and v.tip_at_close < 0
                and c < v.tip_at_close + lim.warm_min_rise_c
                and c < 0
            ):
                out.append(
                    Condition(
                        AlarmCode.VALVE_STUCK_OPEN,
                        p,
                        f"tip {c} C not warming {since_close:.1f} s after close",
                    )
                )
            elif c >= 0 or since_close > 10 * lim.warm_check_s:
                v.closed_at = v.tip_at_close = None  # thawed: nothing left to watch
        return out

    # ---- helpers for the shell --------------------------------------------
    def latched_codes(self) -> Iterable[str]:
        return tuple(str(a.code) for a in self.book.latched())
