"""One console's I/O shell: the poll loop around the pure supervisor and engine.

Order on every poll, fixed so safety never waits behind anything else:

1. read a snapshot (bounded by the driver's timeouts; a failure is ``None``);
2. the supervisor checks it and, on a trip, the safe state is commanded
   *before* the engine hears of anything;
3. queued operator commands, then the engine's tick; every command the
   engine returns is executed in order, each valve-open one gated by
   ``supervisor.permits``;
4. the lease is renewed by a write when a quarter of its timeout has passed
   since the last renewal (only when steps 1-3 completed: a stuck loop stops
   renewing, and the console closes the valves on its own);
5. samples go to the writer and telemetry to the publisher without waiting.

Records that must be durable before acting (the cycle row before its valve
opens) are awaited; everything else is recorded in order by a separate
recorder task so a slow disk never delays the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cryod import __version__
from cryod.drivers.base import Driver, DriverError, Identity, LinkError, Reading, Snapshot

from . import engine as E
from .alarms import Alarm, AlarmBook, AlarmCode, Condition, Now
from .config import ConsoleConfig
from .limits import ConsoleEnvelope
from .logging import get_logger
from .protocols import Protocol
from .store.models import Outcome, Phase
from .store.records import CycleClose, CycleOpen, ProcedureClose, ProcedureLog, ProcedureOpen
from .store.samples import snapshot_rows
from .store.writer import Writer
from .supervisor import Supervisor

__all__ = ["ConsoleService", "OperatorError"]

log = get_logger("cryod.console")


class OperatorError(Exception):
    """An operator command was refused; ``code`` is stable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class _Request:
    event: E.Event | None
    fn: Callable[[], Any] | None
    future: asyncio.Future[Any]


@dataclass
class StorageAlarm:
    """The storage-failure alarm (high priority, latched): the record of the procedure can
    no longer be kept, so no freeze may go on or start until an operator acknowledges it
    and resets with the writer healthy again. Kept here, not in the supervisor's alarm
    book, because its cause is the host's disk, not a console reading."""

    kind: str
    detail: str
    raised_utc: dt.datetime
    acked: bool = False
    handled: bool = False  # the safe state was commanded for it


STORAGE_ALARM_CODE = "storage_failure"
_RUN_EVENTS = (E.RunProtocol, E.AdHocFreeze, E.AdHocThaw)


class Clock:
    """Monotonic time for durations (optionally scaled for a simulated console), UTC for records."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._t0 = time.monotonic()

    def now(self) -> Now:
        return Now(self.mono(time.monotonic()), dt.datetime.now(dt.UTC))

    def mono(self, t: float) -> float:
        """A raw monotonic time on this clock."""
        return self._t0 + (t - self._t0) * self.scale

    def rescale(self, snap: Snapshot) -> Snapshot:
        """Put a snapshot's determination times on the scaled clock (simulated consoles only),
        so the core compares like with like."""
        if self.scale == 1.0:
            return snap

        def r(x: Reading) -> Reading:
            return replace(x, t_mono=self.mono(x.t_mono))

        return replace(
            snap,
            t_mono=self.mono(snap.t_mono),
            supply_kpa=r(snap.supply_kpa),
            cylinder_kpa=r(snap.cylinder_kpa),
            skin_c=None if snap.skin_c is None else r(snap.skin_c),
            probes=tuple(
                replace(p, tip_c=r(p.tip_c), return_kpa=r(p.return_kpa)) for p in snap.probes
            ),
        )


class ConsoleService:
    def __init__(
        self,
        cfg: ConsoleConfig,
        driver: Driver,
        envelope: ConsoleEnvelope,
        *,
        writer: Writer,
        plog: ProcedureLog,
        publisher: Any = None,
        session: int = 0,
    ) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.driver = driver
        self.envelope = envelope
        self.writer = writer
        self.plog = plog
        self.publisher = publisher
        self.session = session
        self.clock = Clock(cfg.time_scale)
        # the core sees durations on the (possibly scaled) engine clock
        period_s = cfg.poll_period_s * cfg.time_scale
        self.engine = E.Engine(E.EngineConfig(cfg.limits, envelope, period_s))
        self.state = self.engine.initial()
        self.supervisor = Supervisor(cfg.limits, envelope, period_s)
        self.identity: Identity | None = None
        self.snapshot: Snapshot | None = None
        self.procedure_id: int | None = None
        self._cycle_rows: dict[int, int] = {}  # engine cycle_ref -> cycles.id
        self._alarm_rows: dict[tuple[str, int | None], int] = {}
        self._inbox: asyncio.Queue[_Request] = asyncio.Queue(maxsize=64)
        self._records: asyncio.Queue[Callable[[], Any]] = asyncio.Queue()
        self._rejects: list[E.Reject] = []
        self.connected = False
        self.late_polls = 0
        self.polls = 0
        self.last_poll_mono: float | None = None
        self.poll_starts: deque[float] = deque(maxlen=4096)  # for the benchmark
        self.safe_state_commands = 0
        self._touched: set[tuple[str, int]] = set()
        self._link_failed = False
        # wall-monotonic time the last renewal was sent (None: renew at the next poll)
        self._renewed_mono: float | None = None
        self._renew_after_s = cfg.lease_renew_s - 0.5 * cfg.poll_period_s
        self._adopt: tuple[int, dict[int, float]] | None = None  # set by the daemon at start
        self.storage_alarm: StorageAlarm | None = None
        self._stopping = False
        # conditions found outside the console (external_condition), e.g. anchor_failed
        self._external: dict[AlarmCode, Condition] = {}
        self._external_book = AlarmBook()

    # ------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Connect, go to the safe state, then poll until cancelled."""
        recorder = asyncio.create_task(self._recorder(), name=f"recorder-{self.id}")
        try:
            await self._connect()
            if self._adopt is not None:
                await self.adopt_procedure(*self._adopt)
            await self._poll_loop()
        finally:
            await self._shutdown()
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder

    async def _connect(self) -> None:
        delay = 0.2
        while True:
            try:
                await self.driver.connect()
                ident = await self.driver.identify()
                self._check_identity(ident)
                self.identity = ident
                await self._initial_safe_state()
                await self.driver.arm_lease(self.cfg.lease_timeout_ms)
                self._renewed_mono = None  # a new lease: the first poll renews it
                self.connected = True
                log.info(
                    "console_connected",
                    console=self.id,
                    model=ident.model,
                    serial=ident.serial,
                    probes=ident.probes,
                )
                self._record(
                    "console_connected",
                    {
                        "console": self.id,
                        "model": ident.model,
                        "serial": ident.serial,
                        "firmware": ident.firmware,
                    },
                )
                return
            except DriverError as exc:
                log.warning("console_connect_failed", console=self.id, error=str(exc))
                with contextlib.suppress(DriverError):
                    await self.driver.close()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    def _check_identity(self, ident: Identity) -> None:
        if ident.probes != self.envelope.probes:
            raise RuntimeError(
                f"console {self.id} reports {ident.probes} probes, its profile says "
                f"{self.envelope.probes}: wrong profile for this console"
            )
        if self.cfg.time_scale != 1.0 and not ident.model.upper().startswith("CRYOSIM"):
            raise RuntimeError(
                f"console {self.id}: time_scale {self.cfg.time_scale} is only allowed on a "
                f"simulated console, but it identifies as {ident.model!r}"
            )

    async def _initial_safe_state(self) -> None:
        """Start safe whatever the console was doing: never resume a freeze."""
        await self.driver.safe_state()
        for p in range(1, self.envelope.probes + 1):
            with contextlib.suppress(DriverError):
                await self.driver.set_thaw(p, False)

    async def _shutdown(self) -> None:
        """Safe state first, then the engine's records; the caller flushes the log."""
        self._stopping = True
        if self.connected:
            try:
                await asyncio.wait_for(self.driver.safe_state(), 2.0)
            except (DriverError, TimeoutError) as exc:
                log.error("safe_state_on_shutdown_failed", console=self.id, error=str(exc))
            now = self.clock.now()
            if self.state.phase in E.ACTIVE:
                self.state, cmds = self.engine.step(self.state, E.Abort(), now)
                for cmd in cmds:
                    if isinstance(cmd, E.CloseCycle | E.Record):
                        await self._execute(cmd, now)
            with contextlib.suppress(DriverError, TimeoutError):
                await asyncio.wait_for(self.driver.arm_lease(0), 1.0)
        with contextlib.suppress(DriverError, TimeoutError):
            await asyncio.wait_for(self.driver.close(), 1.0)
        # let the recorder write what is queued
        while not self._records.empty():
            fn = self._records.get_nowait()
            with contextlib.suppress(Exception):
                await fn()

    # ------------------------------------------------------------ poll loop
    async def _poll_loop(self) -> None:
        period = self.cfg.poll_period_s
        start = time.monotonic()
        k = 0
        while True:
            k += 1
            deadline = start + k * period
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.late_polls += 1
                missed = int(-delay // period)
                if missed:
                    k += missed  # skip the slots we missed rather than bursting
            t0 = time.monotonic()
            self.poll_starts.append(t0 - deadline)
            await self.poll_once()
            self.last_poll_mono = time.monotonic()

    async def poll_once(self) -> None:
        self.polls += 1
        self._touched.clear()  # valves commanded during this poll
        self._link_failed = False  # set by the first link error of this poll
        try:
            snap: Snapshot | None = self.clock.rescale(await self.driver.read_snapshot())
            self.connected = True
        except DriverError as exc:
            snap = None
            self._link_failed = isinstance(exc, LinkError)
            if self.connected:
                log.warning("poll_failed", console=self.id, error=str(exc))
            self.connected = False
        self.snapshot = snap
        now = self.clock.now()
        # 1. the supervisor first
        verdict = self.supervisor.check(snap, now, self.engine.supervision(self.state))
        for alarm in verdict.raised:  # queued at once, before any slow command
            self._alarm_raised(alarm)
        for alarm in verdict.cleared:
            self._alarm_cleared(alarm)
        if verdict.demand is not None:
            await self._safe_state(verdict.demand, now)
        for alarm in verdict.trips:
            await self._feed(E.SupervisorTrip(alarm), now)
        if self.storage_alarm is not None and not self.storage_alarm.handled:
            await self._storage_safe_state(self.storage_alarm, now)
        # 2. operator commands, then the tick
        while not self._inbox.empty():
            await self._serve(self._inbox.get_nowait())
        await self._feed(E.Tick(snap), self.clock.now())
        if snap is not None and self.state.phase is not E.Phase.PRECHECK:
            await self._enforce_closed(snap)
        # 3. renew the lease (a write) when due, only after everything above completed
        if snap is None:
            self._renewed_mono = None  # the link failed: renew as soon as it answers again
        else:
            if self._renewal_due():
                sent = time.monotonic()  # the console's deadline runs from after this
                try:
                    await self.driver.renew_lease()
                    self._renewed_mono = sent
                except DriverError as exc:
                    self._renewed_mono = None
                    log.warning("lease_renew_failed", console=self.id, error=str(exc))
            # 4. samples and telemetry, never waiting
            self.writer.submit_samples(snapshot_rows(snap, self.id, self.procedure_id))
            if self.publisher is not None:
                self.publisher.offer_snapshot(self.id, snap, self.driver.stats)

    def _renewal_due(self) -> bool:
        """A quarter of the lease (``cfg.lease_renew_s``) has passed since the last
        renewal; half a poll period early, so a poll that ends a little sooner than
        the last one does not push the renewal a whole period later."""
        last = self._renewed_mono
        return last is None or time.monotonic() - last >= self._renew_after_s

    async def _safe_state(self, demand: Any, now: Now) -> None:
        self.safe_state_commands += 1
        log.error(
            "safe_state",
            console=self.id,
            reasons=list(demand.reasons),
            close_master=demand.close_master,
        )
        for cmd in self._open_first(demand.commands(self.envelope.probes)):
            try:
                await self._drive(cmd)
                self.supervisor.note_command(cmd, now)
            except DriverError as exc:
                log.error(
                    "safe_state_command_failed", console=self.id, command=repr(cmd), error=str(exc)
                )
        self._record(
            "safe_state",
            {
                "console": self.id,
                "reasons": list(demand.reasons),
                "close_master": demand.close_master,
            },
        )

    def _open_first(self, cmds: list[Any]) -> list[Any]:
        """Safe-state commands with what is open now first (the master, when demanded,
        before all): each command is a write and a read-back, so on a slow link the
        order decides how long gas keeps flowing. Every command still runs."""
        snap = self.snapshot
        if snap is None:
            return cmds
        freezing = {p.probe for p in snap.probes if p.freeze_open}
        thawing = {p.probe for p in snap.probes if p.thaw_on}

        def rank(cmd: Any) -> int:
            if isinstance(cmd, E.SetMaster):
                return 0
            if isinstance(cmd, E.SetFreeze) and cmd.probe in freezing:
                return 1
            if isinstance(cmd, E.SetThaw) and cmd.probe in thawing:
                return 2
            return 3

        return sorted(cmds, key=rank)  # stable: otherwise the supervisor's order

    def storage_failed(self, kind: str, detail: str) -> None:
        """The writer reported a storage failure: raise the latched high-priority alarm;
        the next poll ends any freeze (record before acting can no longer hold)."""
        if self.storage_alarm is not None:
            self.storage_alarm.detail = detail
            return
        self.storage_alarm = StorageAlarm(kind, detail, dt.datetime.now(dt.UTC))
        log.error(
            "alarm_raised",
            console=self.id,
            code=STORAGE_ALARM_CODE,
            priority="high",
            probe=None,
            detail=f"{kind}: {detail}",
        )

    def external_condition(self, code: AlarmCode, present: bool, detail: str = "") -> None:
        """A condition the daemon found outside the console (e.g. ``anchor_failed``):
        raised, recorded, shown and cleared like the supervisor's alarms, in a book of
        its own. Its spec decides what it demands; these never end a freeze."""
        if present:
            self._external[code] = Condition(code, None, detail)
        else:
            self._external.pop(code, None)
        raised, cleared = self._external_book.update(self._external.values(), self.clock.now())
        for alarm in raised:
            self._alarm_raised(alarm)
        for alarm in cleared:
            self._alarm_cleared(alarm)

    async def _storage_safe_state(self, alarm: StorageAlarm, now: Now) -> None:
        alarm.handled = True
        if self.state.phase not in E.ACTIVE:
            return
        self.safe_state_commands += 1
        log.error("safe_state", console=self.id, reasons=[STORAGE_ALARM_CODE], close_master=True)
        # the engine's abort, with the real reason shown from the first moment on
        state, cmds = self.engine.step(self.state, E.Abort(), now)
        self.state = replace(state, reason=f"{STORAGE_ALARM_CODE}: {alarm.kind}")
        for cmd in cmds:
            follow = await self._execute(cmd, now)
            if follow is not None:
                await self._feed(follow, now)

    # ------------------------------------------------------------ engine I/O
    async def _feed(self, event: E.Event, now: Now) -> list[E.Reject]:
        """Step the engine and execute what it returns, feeding confirmations back."""
        rejects: list[E.Reject] = []
        work: deque[E.Event] = deque([event])
        failed_closes: set[E.Command] = set()
        while work:
            ev = work.popleft()
            self.state, cmds = self.engine.step(self.state, ev, now)
            for cmd in cmds:
                if isinstance(cmd, E.Reject):
                    rejects.append(cmd)
                follow = await self._execute(cmd, now)
                if isinstance(follow, E.CommandFailed) and _closing(follow.command):
                    # a close that failed makes the engine fail safe, which asks for the
                    # same closes again: feed each failure once, then leave the retry to
                    # the next poll (_enforce_closed) so the loop never spins on a dead link
                    if follow.command in failed_closes:
                        continue
                    failed_closes.add(follow.command)
                if follow is not None:
                    work.append(follow)
        return rejects

    async def _enforce_closed(self, snap: Snapshot) -> None:
        """Sticky safe state: a freeze valve the console reports open while the engine
        does not mean it to be is commanded closed again, every poll, until it is."""
        run = self.state.run
        meant = (
            set(run.probes) if run is not None and self.state.phase is E.Phase.FREEZING else set()
        )
        for p in snap.probes:
            # the snapshot was read before this poll's commands: skip what they changed
            if (
                p.freeze_open
                and p.probe not in meant
                and ("SetFreeze", p.probe) not in self._touched
            ):
                log.error(
                    "freeze_valve_open_unexpectedly",
                    console=self.id,
                    probe=p.probe,
                    engine=str(self.state.phase),
                )
                try:
                    await self.driver.set_freeze(p.probe, False)
                    self.supervisor.note_command(E.SetFreeze(p.probe, False), self.clock.now())
                except DriverError as exc:
                    log.error("close_retry_failed", console=self.id, probe=p.probe, error=str(exc))
        if (
            snap.master_open
            and self.state.phase not in E.ACTIVE
            and ("master", 0) not in self._touched
        ):
            # the master valve closes whenever no run is active
            log.error(
                "master_valve_open_unexpectedly", console=self.id, engine=str(self.state.phase)
            )
            try:
                await self.driver.set_master(False)
                self.supervisor.note_command(E.SetMaster(False), self.clock.now())
            except DriverError as exc:
                log.error("close_retry_failed", console=self.id, valve="master", error=str(exc))

    async def _execute(self, cmd: E.Command, now: Now) -> E.Event | None:
        if isinstance(cmd, E.OpenCycle):
            return await self._open_cycle(cmd, now)
        if isinstance(cmd, E.WriteConsoleLimits):
            return await self._write_limits(cmd)
        if isinstance(cmd, E.SetFreeze | E.SetThaw | E.SetMaster):
            if E.is_valve_open(cmd):
                permit = self.supervisor.permits(cmd)
                if not permit.ok:
                    return E.CommandFailed(cmd, f"supervisor: {permit.reason}")
            try:
                await self._drive(cmd)
            except DriverError as exc:
                return E.CommandFailed(cmd, str(exc))
            self.supervisor.note_command(cmd, now)
            if isinstance(cmd, E.SetFreeze) and cmd.on:
                self._valve_opened(cmd.probe, self.clock.now())  # when the console confirmed
            return None
        if isinstance(cmd, E.CloseCycle):
            self._close_cycle(cmd, now)
            return None
        if isinstance(cmd, E.Reject):
            log.info(
                "command_rejected",
                console=self.id,
                command=cmd.command,
                code=cmd.code,
                detail=cmd.detail,
            )
            return None
        if isinstance(cmd, E.Record):
            self._record(cmd.kind, {"console": self.id, **cmd.details})
            return None
        raise TypeError(f"unknown engine command {cmd!r}")

    async def _drive(self, cmd: E.SetFreeze | E.SetThaw | E.SetMaster) -> None:
        self._touched.add(
            ("master", 0) if isinstance(cmd, E.SetMaster) else (type(cmd).__name__, cmd.probe)
        )
        if self._link_failed:
            # the link already failed in this poll: each further command would wait out its
            # own timeouts (seconds in all) and delay the alarm and the engine; the lease
            # covers the console meanwhile and the next poll retries (_enforce_closed)
            raise LinkError("link down in this poll; command not sent")
        try:
            if isinstance(cmd, E.SetFreeze):
                await self.driver.set_freeze(cmd.probe, cmd.on)
            elif isinstance(cmd, E.SetThaw):
                await self.driver.set_thaw(cmd.probe, cmd.on)
            else:
                await self.driver.set_master(cmd.on)
        except LinkError:
            self._link_failed = True
            raise

    async def _open_cycle(self, cmd: E.OpenCycle, now: Now) -> E.Event:
        """Record before acting: the row is committed before anything opens."""
        if self.procedure_id is None:
            return E.CommandFailed(cmd, "no procedure open")
        await self._records_barrier()  # the previous cycle's close lands first
        snap = self.snapshot
        supply = snap.supply_kpa.value if snap is not None and snap.supply_kpa.usable else None
        spec = CycleOpen(
            procedure_id=self.procedure_id,
            probe=cmd.probe,
            phase=Phase(cmd.phase),
            step_index=cmd.step_index,
            started_at=cmd.utc,
            started_mono=now.mono_s,  # the engine's time of the phase start, not of the I/O
            protocol=cmd.protocol,
            planned_s=cmd.planned_s,
            target_tip_c=cmd.target_tip_c,
            supply_start_kpa=supply,
            host_only_limits=cmd.host_only_limits,
        )
        try:
            row = await self.plog.open_cycle(spec)
        except Exception as exc:  # noqa: BLE001 - any storage failure refuses the freeze
            log.error("cycle_open_failed", console=self.id, error=str(exc))
            return E.CommandFailed(cmd, f"cycle not recorded: {exc}")
        self._cycle_rows[cmd.cycle_ref] = row
        return E.CycleCommitted(cmd.cycle_ref)

    async def _write_limits(self, cmd: E.WriteConsoleLimits) -> E.Event:
        try:
            await self.driver.write_limits(cmd.probe, cmd.limits)
            held = await self.driver.read_limits(cmd.probe)
        except DriverError as exc:
            return E.LimitsRefused(cmd.probe, f"console did not take the limits: {exc}")
        if held != cmd.limits:
            return E.LimitsRefused(
                cmd.probe, f"console did not echo the limits back (holds {held}, sent {cmd.limits})"
            )
        return E.LimitsConfirmed(cmd.probe)

    def _valve_opened(self, probe: int, now: Now) -> None:
        """The freeze really started: note it on the (already committed) cycle row."""
        run = self.state.run
        cyc = None if run is None else run.cycle(probe)
        row = None if cyc is None else self._cycle_rows.get(cyc.cycle_ref)
        if row is None:
            return
        rid = row

        async def write() -> None:
            await self.plog.mark_valve_open(rid, now.utc, now.mono_s)

        self._records.put_nowait(write)

    def _close_cycle(self, cmd: E.CloseCycle, now: Now) -> None:
        row = self._cycle_rows.pop(cmd.cycle_ref, None)
        if row is None:
            return
        f = cmd.figures
        snap = self.snapshot
        spec = CycleClose(
            cycle_id=row,
            outcome=Outcome(cmd.outcome),
            ended_at=cmd.utc,
            # a freeze ends when its valve's close was confirmed (its start is the
            # confirmed open); a thaw has no valve: it ends at the engine's decision
            ended_mono=self.clock.now().mono_s if f.phase == "freeze" else now.mono_s,
            min_tip_c=f.min_tip_c,
            time_to_target_s=f.time_to_target_s,
            time_below_m20_s=f.below_m20_s,
            time_below_m40_s=f.below_m40_s,
            thaw_to_0_s=f.thaw_to_0c_s,
            supply_end_kpa=f.supply_end_kpa
            if f.supply_end_kpa is not None
            else (snap.supply_kpa.value if snap is not None else None),
        )
        pub = self.publisher

        async def close() -> None:
            summary = await self.plog.close_cycle(spec)
            if pub is not None:
                pub.notify_outbox()
            log.info(
                "cycle_closed",
                console=self.id,
                cycle=row,
                outcome=cmd.outcome,
                min_tip_c=f.min_tip_c,
                summary_keys=len(summary or {}),
            )

        self._records.put_nowait(close)

    # ------------------------------------------------------------ records
    def _record(self, kind: str, payload: dict[str, Any]) -> None:
        async def write() -> None:
            await self.plog.record_event(kind, payload)

        self._records.put_nowait(write)

    def _alarm_raised(self, alarm: Alarm) -> None:
        log.warning(
            "alarm_raised",
            console=self.id,
            code=str(alarm.code),
            priority=str(alarm.priority),
            probe=alarm.probe,
            detail=alarm.detail,
        )
        key = (str(alarm.code), alarm.probe)
        pid = self.procedure_id

        async def write() -> None:
            self._alarm_rows[key] = await self.plog.raise_alarm(
                console=self.id,
                code=str(alarm.code),
                priority=str(alarm.priority),
                message=alarm.detail,
                probe=alarm.probe,
                procedure_id=pid,
                at=alarm.raised_utc,
            )
            if self.publisher is not None:
                self.publisher.notify_outbox()

        self._records.put_nowait(write)

    def _alarm_cleared(self, alarm: Alarm) -> None:
        key = (str(alarm.code), alarm.probe)

        async def write() -> None:
            row = self._alarm_rows.pop(key, None)
            if row is not None:
                await self.plog.clear_alarm(row)
                if self.publisher is not None:
                    self.publisher.notify_outbox()

        self._records.put_nowait(write)

    async def _records_barrier(self) -> None:
        """Return once every record queued so far has been written (or failed)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def mark() -> None:
            done.set_result(None)

        self._records.put_nowait(mark)
        await done

    async def _recorder(self) -> None:
        """Writes queued records in order; a storage failure is logged, never fatal here
        (the writer's health drives the watchdog and the storage alarm)."""
        while True:
            fn = await self._records.get()
            try:
                await fn()
            except Exception as exc:  # noqa: BLE001 - keep recording what can be recorded
                log.error("record_failed", console=self.id, error=str(exc))

    # ------------------------------------------------------------ operator API
    async def submit(
        self,
        event: E.Event | None = None,
        fn: Callable[[], Any] | None = None,
        *,
        timeout_s: float = 10.0,
    ) -> Any:
        """Queue an operator command for the poll loop; returns its result or raises."""
        if isinstance(event, _RUN_EVENTS) and self.storage_alarm is not None:
            raise OperatorError(
                STORAGE_ALARM_CODE,
                f"storage failure ({self.storage_alarm.kind}): acknowledge and reset first",
            )
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            self._inbox.put_nowait(_Request(event, fn, fut))
        except asyncio.QueueFull as exc:
            raise OperatorError("busy", "too many commands queued") from exc
        return await asyncio.wait_for(fut, timeout_s)

    async def _serve(self, req: _Request) -> None:
        try:
            if req.fn is not None:
                result = req.fn()
                if asyncio.iscoroutine(result):
                    result = await result
                req.future.set_result(result)
                return
            assert req.event is not None
            rejects = await self._feed(req.event, self.clock.now())
            if rejects:
                r = rejects[0]
                req.future.set_exception(OperatorError(r.code, r.detail or r.code))
            else:
                req.future.set_result({"state": str(self.state.phase)})
        except Exception as exc:  # noqa: BLE001 - the operator gets the reason
            if not req.future.done():
                req.future.set_exception(exc)

    async def adopt_procedure(self, procedure_id: int, cumulative_s: dict[int, float]) -> None:
        """A procedure left open by a previous run (crash or restart): continue it, with
        the freeze time its probes already had. Its cycles were marked interrupted; no
        freeze is resumed."""
        self.procedure_id = procedure_id
        self.supervisor.procedure_opened(cumulative_s)
        now = self.clock.now()
        await self._feed(E.ProcedureOpened(), now)
        self.state = replace(self.state, cumulative_s=tuple(sorted(cumulative_s.items())))
        self._record(
            "procedure_adopted",
            {"console": self.id, "procedure_id": procedure_id, "cumulative_freeze_s": cumulative_s},
        )

    async def open_procedure(self, meta: dict[str, Any]) -> int:
        async def go() -> int:
            if self.procedure_id is not None:
                raise OperatorError("procedure_open", f"procedure {self.procedure_id} is open")
            ident = self.identity
            data = dict(meta)
            data.setdefault("console", self.id)
            if ident is not None:
                data.setdefault("console_model", ident.model)
                data.setdefault("console_serial", ident.serial)
                data.setdefault("console_firmware", ident.firmware)
            data.setdefault("software_version", __version__)
            data["host_only_limits"] = self.engine.cfg.host_only
            pid = await self.plog.open_procedure(ProcedureOpen.model_validate(data))
            self.procedure_id = pid
            self.supervisor.procedure_opened()
            await self._feed(E.ProcedureOpened(), self.clock.now())
            return pid

        return int(await self.submit(fn=go))

    async def close_procedure(self, data: dict[str, Any]) -> int:
        async def go() -> int:
            if self.procedure_id is None:
                raise OperatorError("no_procedure", "no procedure is open")
            if self.state.phase in E.ACTIVE:
                raise OperatorError("busy", f"engine is {self.state.phase}: stop or abort first")
            await self._records_barrier()  # queued cycle closes land first
            pid = self.procedure_id
            close = ProcedureClose.model_validate({**data, "procedure_id": pid})
            await self.plog.close_procedure(close)
            await self._feed(E.ProcedureClosed(), self.clock.now())
            self.procedure_id = None
            return pid

        return int(await self.submit(fn=go))

    async def run_protocol(self, protocol: Protocol, probes: tuple[int, ...]) -> Any:
        return await self.submit(E.RunProtocol(protocol, probes))

    async def acknowledge(self, who: str) -> Any:
        async def go() -> dict[str, Any]:
            now = self.clock.now()
            acked = self.supervisor.acknowledge(now) + self._external_book.acknowledge()
            await self._feed(E.Ack(), now)
            storage = []
            if self.storage_alarm is not None and not self.storage_alarm.acked:
                self.storage_alarm.acked = True
                storage = [STORAGE_ALARM_CODE]
            for a in acked:
                row = self._alarm_rows.get((str(a.code), a.probe))
                if row is not None:
                    rid = row

                    async def write(rid: int = rid) -> None:
                        await self.plog.ack_alarm(rid, by=who)
                        if self.publisher is not None:  # the "acknowledged" outbox event
                            self.publisher.notify_outbox()

                    self._records.put_nowait(write)
            return {"acknowledged": [str(a.code) for a in acked] + storage}

        return await self.submit(fn=go)

    async def reset(self) -> Any:
        async def go() -> dict[str, Any]:
            if self.storage_alarm is not None:
                if not self.storage_alarm.acked:
                    raise OperatorError("not_acknowledged", "acknowledge the alarms first")
                w = self.writer.status()
                if not w.healthy:
                    raise OperatorError("cause_present", f"storage still failing: {w.reason}")
                self.storage_alarm = None
                log.info("alarm_cleared", console=self.id, code=STORAGE_ALARM_CODE)
                if self.state.phase is not E.Phase.FAULT:
                    return {"state": str(self.state.phase)}
            try:
                await self.driver.reset_faults()
            except DriverError as exc:
                log.warning("console_fault_reset_refused", console=self.id, error=str(exc))
            snap = None
            with contextlib.suppress(DriverError):
                snap = self.clock.rescale(await self.driver.read_snapshot())
            now = self.clock.now()
            verdict = self.supervisor.check(snap, now, self.engine.supervision(self.state))
            for alarm in verdict.raised:
                self._alarm_raised(alarm)
            result = self.supervisor.reset(now)
            for a in result.cleared:
                self._alarm_cleared(a)
            if snap is not None and not snap.lease.armed:
                with contextlib.suppress(DriverError):
                    await self.driver.arm_lease(self.cfg.lease_timeout_ms)
                self._renewed_mono = None  # re-armed: this poll renews it
            rejects = await self._feed(E.Reset(result.ok, result.reason), now)
            if not result.ok:
                raise OperatorError("cause_present", result.reason)
            if rejects:
                raise OperatorError(rejects[0].code, rejects[0].detail)
            return {"state": str(self.state.phase)}

        return await self.submit(fn=go)

    # ------------------------------------------------------------ status
    def _storage_alarm_status(self) -> list[dict[str, Any]]:
        a = self.storage_alarm
        if a is None:
            return []
        return [
            {
                "id": None,
                "code": STORAGE_ALARM_CODE,
                "priority": "high",
                "probe": None,
                "message": f"{a.kind}: {a.detail}",
                "raised_at": a.raised_utc.isoformat(),
                "acked": a.acked,
                "latched": True,
                "present": not self.writer.status().healthy,
            }
        ]

    def engine_status(self) -> dict[str, Any]:
        """The engine part of ``status()`` (telemetry reads it 4 times a second)."""
        st = self.state
        run = st.run
        engine: dict[str, Any] = {"state": str(st.phase), "reason": st.reason}
        if run is not None:
            step = run.step
            remaining = None
            planned = (
                run.planned_s if run.planned_s is not None else getattr(step, "duration_s", None)
            )
            if planned is not None and st.phase in (E.Phase.FREEZING, E.Phase.THAWING):
                remaining = max(0.0, planned - (self.clock.now().mono_s - run.phase_start_mono_s))
            engine.update(
                phase=getattr(step, "kind", type(step).__name__.replace("Step", "").lower()),
                step=run.step_index + 1,
                steps=len(run.protocol.steps),
                remaining_s=remaining,
                protocol=run.protocol.name,
                probes=list(run.probes),
            )
        return engine

    def alarms_status(self) -> list[dict[str, Any]]:
        """The active alarms of ``status()``, the storage alarm included."""
        return [
            {
                "id": self._alarm_rows.get((str(a.code), a.probe)),
                "code": str(a.code),
                "priority": str(a.priority),
                "probe": a.probe,
                "message": a.detail,
                "raised_at": a.raised_utc.isoformat(),
                "raised_ts_ms": int(a.raised_utc.timestamp() * 1000),
                "acked": a.acknowledged,
                "latched": a.latching,
                "present": a.present,
            }
            for a in self.supervisor.book.active + self._external_book.active
        ] + self._storage_alarm_status()

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "driver": self.cfg.driver,
            "identity": None
            if self.identity is None
            else {
                "model": self.identity.model,
                "serial": self.identity.serial,
                "firmware": self.identity.firmware,
                "probes": self.identity.probes,
                "gas": self.identity.gas,
                "capabilities": sorted(self.identity.capabilities),
            },
            "link": self.driver.stats.as_dict(),
            "poll": {
                "hz": self.cfg.poll_hz,
                "polls": self.polls,
                "late_polls": self.late_polls,
                "last_poll_age_ms": None
                if self.last_poll_mono is None
                else round((time.monotonic() - self.last_poll_mono) * 1000, 1),
            },
            "engine": self.engine_status(),
            "snapshot": snapshot_dict(self.snapshot),
            "alarms": self.alarms_status(),
            "procedure": None
            if self.procedure_id is None
            else {"id": self.procedure_id, "open": True},
            "time_scale": self.cfg.time_scale,
        }


def _closing(cmd: E.Command) -> bool:
    return isinstance(cmd, E.SetFreeze | E.SetThaw | E.SetMaster) and not cmd.on


def _reading(r: Any) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"value": r.value, "validity": str(r.validity)}


def snapshot_dict(snap: Snapshot | None) -> dict[str, Any] | None:
    if snap is None:
        return None
    return {
        "seq": snap.seq,
        "t_utc_ms": int(snap.t_utc * 1000),
        "console_time_s": snap.console_time_s,
        "supply_kpa": _reading(snap.supply_kpa),
        "cylinder_kpa": _reading(snap.cylinder_kpa),
        "skin_c": _reading(snap.skin_c),
        "master_open": snap.master_open,
        "supply_low": snap.supply_low,
        "lease": {
            "armed": snap.lease.armed,
            "timeout_ms": snap.lease.timeout_ms,
            "expired": snap.lease.expired,
            "expiry_count": snap.lease.expiry_count,
        },
        "faults": snap.faults.names(),
        "probes": [
            {
                "probe": p.probe,
                "tip_c": p.tip_c.value,
                "validity": str(p.tip_c.validity),
                "tc_status": p.tc_status.name.lower(),
                "return_kpa": p.return_kpa.value,
                "freeze_open": p.freeze_open,
                "thaw_on": p.thaw_on,
                "limits_armed": p.limits_armed,
                "trip": p.trip.name.lower(),
            }
            for p in snap.probes
        ],
    }
