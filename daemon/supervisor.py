"""The safety supervisor: independent of the engine, always able to force the safe state.

Pure (no I/O, injected clock ``Now``). The shell drives it:

    sup = Supervisor(limits, envelope, poll_period_s)
    sup.note_storage(writer_healthy, why)   # the record's writer, before every check
    sup.note_anchoring(anchored, why)       # the chain head's anchor routes
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

A stuck-open freeze valve shows three ways after a commanded close: the
read-back, the tip still cooling (or not warming), and the probe's return line
still under pressure once it has had ``return_vent_s`` to vent. The last needs
no thermocouple, so a frozen or failed one cannot hide the valve.

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
from dataclasses import dataclass

from cryod.drivers.base import ConsoleLimits, ProbeState, Snapshot, TcStatus

from .alarms import Alarm, AlarmBook, AlarmCode, Condition, Now, ResetResult, SafeWhen
from .commands import (
    Command,
    Output,
    OutputCommand,
    SetFreeze,
    SetMaster,
    SetThaw,
    is_valve_open,
    output_of,
)
from .limits import ConsoleEnvelope, FreezePlan, SafetyLimits, Supervision, console_limits_for

__all__ = ["Permit", "SafeStateDemand", "SlidingFit", "SlidingRange", "Supervisor", "Verdict"]


@dataclass(frozen=True, slots=True)
class Permit:
    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SafeStateDemand:
    """The safe state is demanded (``safe_state.py`` says what it is), and why."""

    reasons: tuple[str, ...]


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
    # no gas should pass the probe from here (the close, or a later end of a gas
    # thaw); None: the return line is not watched
    vent_from: float | None = None
    vent_after: str = "close"  # what started the vent, for the alarm detail
    # the tip reading was found untrustworthy since the valve opened (open, shorted,
    # invalid, jumping, stuck): no reference for the watch after the close
    tip_suspect: bool = False


@dataclass(slots=True)
class _Tip:
    """A probe's tip history while it is watched; forgotten when the watch ends, so
    the first reading of the next watch is not compared with one from before the gap
    (that one may be a fault since cleared: a jump no thermocouple made)."""

    window: SlidingRange  # usable tip readings of the stuck window
    last_t: float | None = None
    last_c: float | None = None
    last_console_s: float | None = None  # the console's clock at the last reading


def _sample_interval_s(host_dt_s: float, console_dt_s: float, allowance_s: float) -> float:
    """The time between two tip samples, for the rate check.

    The console's clock says when it measured; the host's stamps say when the
    answer was processed, so they carry transport and scheduling jitter. One
    answer handled 30 ms late and the next on time squeezes the host's interval
    (at simulated speed 20 that is 0.6 s of cooling in no time: a false
    ``tc_rate`` at freeze start, seen beside a CPU hog). The console's interval
    is used when its clock advanced, by no more than the host saw plus the
    staleness the supervisor accepts anyway; a clock that reset, stood still or
    ran away falls back to the host's interval, so a console clock cannot make
    the check blinder than a reading it already accepts as fresh."""
    if 0.0 < console_dt_s <= host_dt_s + allowance_s:
        return console_dt_s
    return host_dt_s


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


class SlidingRange:
    """Max and min of the samples of the last ``window_s`` seconds, O(1) amortised
    per sample (the tc-stuck check and the valve count run every poll).

    Eviction is the plain deque's: after an append, samples leave oldest first
    while ``t - first_t > window_s``. The monotonic queues hold (index, value)
    and drop what has left by index, so they agree with that rule even for
    timestamps out of order.
    """

    __slots__ = ("_hi", "_lo", "_next", "_t", "window_s")

    def __init__(self, window_s: float) -> None:
        if not window_s >= 0:
            raise ValueError(f"window_s {window_s} must be >= 0")
        self.window_s = window_s
        self._t: deque[float] = deque()
        self._hi: deque[tuple[int, float]] = deque()  # values decreasing: front is the max
        self._lo: deque[tuple[int, float]] = deque()  # values increasing: front is the min
        self._next = 0  # index of the next sample

    def __len__(self) -> int:
        return len(self._t)

    @property
    def first_t(self) -> float:
        return self._t[0]

    @property
    def max(self) -> float:
        return self._hi[0][1]

    @property
    def min(self) -> float:
        return self._lo[0][1]

    def append(self, t: float, x: float) -> None:
        i = self._next
        self._next = i + 1
        ts, hi, lo = self._t, self._hi, self._lo
        ts.append(t)
        while hi and hi[-1][1] <= x:
            hi.pop()
        hi.append((i, x))
        while lo and lo[-1][1] >= x:
            lo.pop()
        lo.append((i, x))
        while t - ts[0] > self.window_s:  # never the sample just appended
            ts.popleft()
        first = self._next - len(ts)
        while hi[0][0] < first:
            hi.popleft()
        while lo[0][0] < first:
            lo.popleft()


def _distrust_tip(v: _Valve) -> None:
    """The tip reading was found untrustworthy. Its values say nothing about the valve
    after a close (a stuck reading that comes unstuck looks like a tip still cooling,
    and a stuck one like a tip not warming), so there is no tip watch for this close,
    or for the next one of this opening; the return line still watches it
    (``_check_return``), and the thermocouple alarm stands on its own."""
    v.tip_suspect = True
    if v.open_since is None:
        _end_tip_watch(v)


def _end_tip_watch(v: _Valve) -> None:
    v.closed_at = v.tip_at_close = None


class _Sums:
    """Sums of ``t - t_ref``, ``v - v_ref`` and their products over a set of samples."""

    __slots__ = ("st", "stt", "stv", "sv", "svv", "t_ref", "v_ref")

    def __init__(self, t_ref: float, v_ref: float) -> None:
        self.t_ref, self.v_ref = t_ref, v_ref
        self.st = self.sv = self.stt = self.stv = self.svv = 0.0

    def add(self, t: float, v: float) -> None:
        dt, dv = t - self.t_ref, v - self.v_ref
        self.st += dt
        self.sv += dv
        self.stt += dt * dt
        self.stv += dt * dv
        self.svv += dv * dv

    def sub(self, t: float, v: float) -> None:
        dt, dv = t - self.t_ref, v - self.v_ref
        self.st -= dt
        self.sv -= dv
        self.stt -= dt * dt
        self.stv -= dt * dv
        self.svv -= dv * dv


class SlidingFit:
    """Least-squares line through the (t, v) samples of the last ``window_s``
    seconds, O(1) per sample: the leak window may hold 12 000 points.

    Running sums centred on a reference sample, so they stay small next to a
    cylinder's ~20 000 kPa. Rounding cannot build up: a fresh set of sums
    (centred on the newest sample) starts collecting new samples, and replaces
    the current one once every sample older than it has left the window, so no
    set of sums lives longer than about two windows (all sums start afresh when
    a gap empties the window). This bounds drift like a periodic exact
    recompute would, without an O(window) pause on the poll.
    Eviction as ``SlidingRange``. ``_slope_stderr`` is the plain reference.
    """

    __slots__ = ("_cur", "_next", "_pending", "points", "window_s")

    def __init__(self, window_s: float) -> None:
        if not window_s >= 0:
            raise ValueError(f"window_s {window_s} must be >= 0")
        self.window_s = window_s
        self.points: deque[tuple[float, float]] = deque()
        self._cur = _Sums(0.0, 0.0)  # over every sample in ``points``
        self._next: _Sums | None = None  # over the samples newer than the oldest _pending
        self._pending = 0  # samples in ``points`` that ``_next`` does not hold

    def __len__(self) -> int:
        return len(self.points)

    @property
    def first_t(self) -> float:
        return self.points[0][0]

    def append(self, t: float, v: float) -> None:
        pts = self.points
        pts.append((t, v))
        self._cur.add(t, v)
        if self._next is not None:
            self._next.add(t, v)
        while t - pts[0][0] > self.window_s:  # never the sample just appended
            ot, ov = pts.popleft()
            self._cur.sub(ot, ov)
            if self._next is not None:
                self._pending -= 1
                if self._pending == 0:  # it holds exactly the samples left: take it
                    self._cur, self._next = self._next, None
        if len(pts) == 1:  # the first sample, or all before it left (a gap): start afresh
            self._cur, self._next = _Sums(t, v), None  # one sample at the reference: all 0
        if self._next is None:
            self._next, self._pending = _Sums(t, v), len(pts)

    def fit(self) -> tuple[float, float]:
        """Slope and its standard error, as ``_slope_stderr(self.points)``."""
        n = len(self.points)
        s = self._cur
        st, sv = s.st, s.sv
        den = s.stt - st * st / n
        if not den > 1e-9 * s.stt:
            # all times (nearly) equal: the sums cannot tell, the reference can
            return _slope_stderr(self.points)
        sxy = s.stv - st * sv / n
        slope = sxy / den
        if n <= 2:
            return slope, 0.0
        resid = max(s.svv - sv * sv / n - slope * sxy, 0.0)
        return slope, (resid / (n - 2) / den) ** 0.5


class Supervisor:
    def __init__(
        self,
        limits: SafetyLimits,
        envelope: ConsoleEnvelope,
        poll_period_s: float,
        *,
        time_scale: float = 1.0,
    ) -> None:
        """``poll_period_s`` is on the clock ``now`` runs on; ``time_scale`` says how
        much faster than the wall clock that is (a simulated console), so an alarm's
        detail can give wall seconds."""
        if poll_period_s <= 0:
            raise ValueError("poll_period_s must be > 0")
        if not time_scale > 0:
            raise ValueError("time_scale must be > 0")
        self.limits = limits
        self.envelope = envelope
        self.poll_period_s = poll_period_s
        self.time_scale = time_scale
        self.book = AlarmBook()
        self._tripped = False
        self._valves = {p: _Valve() for p in range(1, envelope.probes + 1)}
        self._tips = {
            p: _Tip(SlidingRange(limits.tc_stuck_window_s)) for p in range(1, envelope.probes + 1)
        }
        # a helium thaw leaves through the probe's return line like the freeze gas
        self._gas_thaw = "active_thaw_helium" in envelope.capabilities
        self._master_on = False
        self._last_good_mono: float | None = None
        self._started_mono: float | None = None
        self._cyl = SlidingFit(limits.leak_window_s)  # cylinder kPa over the leak window
        self._cyl_open = SlidingRange(limits.leak_window_s)  # freeze valves open, same window
        # outputs commanded off that the console has not confirmed off, and why
        self._unconfirmed: dict[Output, tuple[OutputCommand, str]] = {}
        self._storage_fault: str | None = None  # why the record cannot be kept, or None
        self._anchor_fault: str | None = None  # why the chain head is not anchored, or None

    # ---- inputs -----------------------------------------------------------
    @property
    def stale_after_s(self) -> float:
        return self.limits.stale_polls * self.poll_period_s

    def procedure_opened(self, cumulative_s: dict[int, float] | None = None) -> None:
        """Cumulative freeze time counts per procedure; a procedure adopted after a
        restart brings the freeze time already recorded for each probe."""
        for p, v in self._valves.items():
            v.closed_accum_s = (cumulative_s or {}).get(p, 0.0)

    def note_not_confirmed(self, cmd: OutputCommand, now: Now, reason: str) -> None:
        """A command switching an output off failed or could not be sent: the output
        is unconfirmed (the ``safe_state_unconfirmed`` alarm at the next check) until a
        later command succeeds or a snapshot shows it off."""
        if not cmd.on:
            self._unconfirmed[output_of(cmd)] = (cmd, reason)

    def note_storage(self, healthy: bool, detail: str = "") -> None:
        """The procedure record's writer is healthy or not (the shell says so before
        every check): while it is not, ``storage_failure`` is present. Record before
        acting can no longer hold, so no freeze may go on or start."""
        self._storage_fault = None if healthy else (detail or "storage failing")

    def note_anchoring(self, healthy: bool, detail: str = "") -> None:
        """The record's chain head leaves the database by every anchor route, or not:
        while it does not, ``anchor_failed`` is present (medium: the record is still
        kept, so it never stops a freeze; docs/integrity.md)."""
        self._anchor_fault = None if healthy else (detail or "anchoring failing")

    @property
    def unconfirmed(self) -> tuple[Output, ...]:
        """Outputs commanded off and not yet confirmed off, in command order."""
        return tuple(self._unconfirmed)

    def note_command(self, cmd: Command, now: Now) -> None:
        """The shell executed ``cmd`` and the console confirmed it (call after every
        output command)."""
        if isinstance(cmd, SetMaster | SetFreeze | SetThaw):
            self._unconfirmed.pop(output_of(cmd), None)
        t = now.mono_s
        if isinstance(cmd, SetMaster):
            self._master_on = cmd.on
            return
        if not isinstance(cmd, SetFreeze | SetThaw) or cmd.probe not in self._valves:
            return
        v = self._valves[cmd.probe]
        tip = self._tips[cmd.probe].last_c
        if isinstance(cmd, SetThaw):
            if v.thaw_on and not cmd.on and self._gas_thaw and v.vent_from is not None:
                v.vent_from, v.vent_after = t, "gas thaw"  # the line vents again from here
            v.thaw_on = cmd.on
            return
        if cmd.on and v.open_since is None:
            v.open_since, v.tip_at_open = t, tip
            v.closed_at = v.tip_at_close = v.vent_from = None
            v.tip_suspect = False
        elif not cmd.on and v.open_since is not None:
            v.closed_accum_s += t - v.open_since
            v.open_since = None
            v.closed_at, v.tip_at_close = t, tip
            v.vent_from, v.vent_after = t, "close"
            if v.tip_suspect:
                _end_tip_watch(v)

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
            conds.append(Condition(AlarmCode.STALE_DATA, None, self._silence(t - ref)))
        if self._storage_fault is not None:
            conds.append(Condition(AlarmCode.STORAGE_FAILURE, None, self._storage_fault))
        if self._anchor_fault is not None:
            conds.append(Condition(AlarmCode.ANCHOR_FAILED, None, self._anchor_fault))
        # valves change only in note_command, never during a check: count them once
        n_open = sum(1 for v in self._valves.values() if v.open_since is not None)
        freezing = n_open > 0
        plans = {pl.probe: pl for pl in reversed(sup.plans)}  # first plan wins, as sup.plan()
        if snap is not None and fresh:
            self._confirm_from(snap, now)
            conds.extend(self._check_snapshot(snap, t, sup, n_open, plans))
        conds.extend(self._check_on_time(t, plans))
        if self._unconfirmed:
            detail = "; ".join(
                f"{kind}{'' if probe is None else f' {probe}'}: {why}"
                for (kind, probe), (_, why) in self._unconfirmed.items()
            )
            conds.append(Condition(AlarmCode.SAFE_STATE_UNCONFIRMED, None, detail))
        raised, cleared = self.book.update(conds, now)
        trips = tuple(
            a
            for a in raised
            if a.spec.safe is SafeWhen.ALWAYS or (a.spec.safe is SafeWhen.IF_FREEZING and freezing)
        )
        demand = None
        if trips:
            self._tripped = True
            demand = SafeStateDemand(reasons=tuple(str(a.code) for a in trips))
        return Verdict(raised, cleared, trips, demand, self.book.active)

    def _silence(self, silent_s: float) -> str:
        """The stale-data detail in wall-clock seconds (and simulated ones when scaled)."""
        wall = f"no valid snapshot for {silent_s / self.time_scale:.2f} s"
        if self.time_scale == 1.0:
            return wall
        return f"{wall} ({silent_s:.2f} s simulated at x{self.time_scale:g})"

    def _confirm_from(self, snap: Snapshot, now: Now) -> None:
        """A fresh snapshot that shows an unconfirmed output off confirms it: the
        close is noted from here (the console's lease may have done it)."""
        for output, (cmd, _) in list(self._unconfirmed.items()):
            kind, probe = output
            if kind == "master":
                off = not snap.master_open
            elif probe is None or not 1 <= probe <= len(snap.probes):
                continue
            elif kind == "freeze":
                off = not snap.probe(probe).freeze_open
            else:
                off = not snap.probe(probe).thaw_on
            if off:
                self.note_command(cmd, now)

    def _check_on_time(self, t: float, plans: dict[int, FreezePlan]) -> list[Condition]:
        out = []
        lim = self.limits
        for p, v in self._valves.items():
            if v.open_since is None:
                continue
            on = t - v.open_since
            plan = plans.get(p)
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

    def _check_snapshot(
        self,
        snap: Snapshot,
        t: float,
        sup: Supervision,
        n_open: int,
        plans: dict[int, FreezePlan],
    ) -> list[Condition]:
        lim, env = self.limits, self.envelope
        out: list[Condition] = []
        freezing = n_open > 0
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
        out.extend(self._check_supply(snap, n_open))
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
            out.extend(self._check_probe(snap, p, t, sup, n_open, plans.get(p)))
        return out

    def _check_supply(self, snap: Snapshot, n_open_now: int) -> list[Condition]:
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
            self._cyl.append(c.t_mono, c.value)
            # consumption is explained by the valves open at any time in the window,
            # not only now (a valve that just closed still shows in the slope)
            self._cyl_open.append(c.t_mono, n_open_now)
            span = c.t_mono - self._cyl.first_t
            if span >= 0.9 * lim.leak_window_s and len(self._cyl) >= 5:
                slope, stderr = self._cyl.fit()
                rate = -slope
                n_open = int(self._cyl_open.max)
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

    def _check_probe(
        self,
        snap: Snapshot,
        p: int,
        t: float,
        sup: Supervision,
        n_open: int,
        plan: FreezePlan | None,
    ) -> list[Condition]:
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
        if v.vent_from is not None:  # before the tip checks: it must not depend on them
            out.extend(self._check_return(ps, v, t))
        if not watched:
            if tipst.last_t is not None:  # history covers watched time only: forget it
                self._tips[p] = _Tip(SlidingRange(lim.tc_stuck_window_s))
            return out
        tip = ps.tip_c
        if ps.tc_status is TcStatus.OPEN:
            out.append(Condition(AlarmCode.TC_OPEN, p, "thermocouple open"))
            _distrust_tip(v)
            return out
        if ps.tc_status is TcStatus.SHORT:
            out.append(Condition(AlarmCode.TC_SHORT, p, "thermocouple shorted"))
            _distrust_tip(v)
            return out
        if not tip.usable or tip.value is None or t - tip.t_mono > self.stale_after_s:
            out.append(Condition(AlarmCode.TC_INVALID, p, f"tip {tip.validity}"))
            _distrust_tip(v)
            return out
        c, tc = tip.value, tip.t_mono
        # rate of change between consecutive usable samples, over the console's clock
        if tipst.last_t is not None and tipst.last_c is not None and tc > tipst.last_t:
            console_dt = (
                snap.console_time_s - tipst.last_console_s
                if tipst.last_console_s is not None
                else 0.0
            )
            dt = _sample_interval_s(tc - tipst.last_t, console_dt, self.stale_after_s)
            jump = abs(c - tipst.last_c)
            if jump > max(lim.tc_rate_min_jump_c, lim.tc_max_rate_c_per_s * dt):
                out.append(Condition(AlarmCode.TC_RATE, p, f"{jump:.1f} C in {dt:.2f} s"))
                _distrust_tip(v)
        window = tipst.window
        if tipst.last_t is None or tc > tipst.last_t:
            tipst.last_t, tipst.last_c = tc, c
            tipst.last_console_s = snap.console_time_s
            window.append(tc, c)
        # floor
        floor = max(plan.floor_tip_c if plan is not None else lim.floor_tip_c, env.min_tip_c)
        if c < floor:
            out.append(Condition(AlarmCode.TIP_TOO_COLD, p, f"tip {c} C < {floor} C"))
        # stuck: no change over the window while a valve is open
        if (commanded_open or v.thaw_on) and window:
            since = v.open_since if v.open_since is not None else window.first_t
            span = tc - window.first_t
            if (
                t - since >= lim.tc_stuck_window_s
                and span >= lim.tc_stuck_window_s * 0.8
                and window.max - window.min <= lim.tc_stuck_epsilon_c
            ):
                out.append(
                    Condition(AlarmCode.TC_STUCK, p, f"tip {c} C unchanged for {span:.1f} s")
                )
                _distrust_tip(v)
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
            others_open = n_open > 0
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

    def _check_return(self, ps: ProbeState, v: _Valve, t: float) -> list[Condition]:
        """Gas still flowing after the close, from the return line alone: once it has
        had ``return_vent_s`` to vent it must read near atmospheric. A reading that
        cannot be used cannot confirm that, so it is a fault too. Watched until the
        line has vented and the tip watch is over (``closed_at`` cleared)."""
        lim = self.limits
        if v.thaw_on and self._gas_thaw:
            return []  # thaw gas in the return line: no sign either way
        vent_from = v.vent_from
        if vent_from is None:
            return []
        since = t - vent_from
        if since < lim.return_vent_s:
            return []  # still venting
        r = ps.return_kpa
        p = ps.probe
        if not r.usable or r.value is None or t - r.t_mono > self.stale_after_s:
            state = "stale" if r.usable and r.value is not None else str(r.validity)
            return [
                Condition(
                    AlarmCode.VALVE_STUCK_OPEN,
                    p,
                    f"return pressure {state} {since:.1f} s after {v.vent_after}: "
                    "cannot confirm the gas stopped",
                )
            ]
        if r.value > lim.return_vented_max_kpa:
            return [
                Condition(
                    AlarmCode.VALVE_STUCK_OPEN,
                    p,
                    f"return line {r.value:.1f} kPa > {lim.return_vented_max_kpa:g} kPa "
                    f"{since:.1f} s after {v.vent_after}: gas still flowing",
                )
            ]
        if v.closed_at is None:
            v.vent_from = None  # vented, and the tip watch is over: nothing left to watch
        return []

    # ---- helpers for the shell --------------------------------------------
    def latched_codes(self) -> Iterable[str]:
        return tuple(str(a.code) for a in self.book.latched())
