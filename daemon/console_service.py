"""One console's I/O shell: the poll loop around the pure supervisor and engine.

The sequencing is the pure ``Coordinator``'s; this shell does the I/O it asks
for, one effect at a time, and reports each result back. Order on every poll,
fixed so safety never waits behind anything else:

1. read a snapshot (bounded by the driver's timeouts; a failure is ``None``);
2. the supervisor checks it (and the record's writer health) and, on a trip,
   the safe state is commanded *before* the engine hears of anything;
3. queued operator commands, then the engine's tick and the sticky safe state;
4. the lease is renewed by a write when a quarter of its timeout has passed
   since the last renewal (only when steps 1-3 completed: a stuck loop stops
   renewing, and the console closes the valves on its own);
5. samples go to the writer and telemetry to the publisher without waiting.

The one safe state (``safe_state.py``) is executed on connect, on a trip (a
storage failure is one: the supervisor's ``storage_failure`` alarm), on a
failed command, on an operator abort and on shutdown. At shutdown the lease is
disarmed only once a fresh snapshot shows every output off; otherwise it is
left to expire, and the console closes them.

Records that must be durable before acting (the cycle row before its valve
opens) are awaited; a procedure's open and close are committed beside the poll
loop (the loop only checks and changes state); everything else goes to the
``Recorder``, which writes it in order off the poll loop, so a slow disk never
delays the next poll. The clock is ``clock.py``; what ``status()`` shows is
built by ``console_status.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryod import __version__
from cryod.drivers.backoff import Backoff, BackoffPolicy
from cryod.drivers.base import Driver, DriverError, Identity, LinkError, LinkStats, Snapshot

from . import commands as C
from . import engine as E
from .alarms import Alarm
from .clock import Clock
from .config import ConsoleConfig
from .console_status import EngineStatus, LinkHealth, console_status, engine_status
from .control import ControlError
from .coordinator import (
    AlarmCleared,
    AlarmRaised,
    Coordinator,
    Done,
    Effect,
    Failed,
    LimitsHeld,
    Refused,
    Result,
    ValveOpened,
    describe,
)
from .limits import ConsoleEnvelope
from .logging import get_logger
from .protocols import Protocol as RunProtocolFile
from .recorder import Recorder
from .store.models import Outcome, Phase
from .store.records import (
    CycleClose,
    CycleOpen,
    ProcedureClose,
    ProcedureLog,
    ProcedureOpen,
    StudyOpen,
)
from .store.samples import snapshot_rows
from .store.writer import Writer, WriterStatus
from .supervisor import Supervisor

__all__ = ["SHUTDOWN_BUDGET_S", "ConsoleService", "TelemetrySink"]

log = get_logger("cryod.console")

#: the most a console's shutdown may take (the safe state and its confirmation); the
#: consoles stop in parallel, and systemd's TimeoutStopSec (20 s) leaves the rest of
#: its time for the log and MQTT (tests/service checks the unit against this)
SHUTDOWN_BUDGET_S = 10.0
#: reconnect back-off of the console link (drivers/backoff.py: the one rule)
CONNECT_BACKOFF = BackoffPolicy(first_s=0.2, max_s=5.0)


class TelemetrySink(Protocol):
    """Where the shell hands telemetry (``telemetry.console_feed.ConsoleTelemetry``);
    neither call may wait."""

    def offer_snapshot(self, snap: Snapshot, stats: LinkStats) -> None: ...

    def notify_outbox(self) -> None: ...


@dataclass
class _Request:
    """An operator command for the poll loop: an engine event, or a function run there."""

    event: C.Event | None
    fn: Callable[[], Awaitable[Any]] | None
    future: asyncio.Future[Any]


class ConsoleService:
    def __init__(
        self,
        cfg: ConsoleConfig,
        driver: Driver,
        envelope: ConsoleEnvelope,
        *,
        writer: Writer,
        plog: ProcedureLog,
        telemetry: TelemetrySink | None = None,
        adopt: tuple[int, dict[int, float]] | None = None,
    ) -> None:
        """``adopt``: a procedure a previous run left open (its id and the freeze time
        its probes already had), continued here without resuming any freeze."""
        self.cfg = cfg
        self.id = cfg.id
        self.driver = driver
        self.envelope = envelope
        self.writer = writer
        self.plog = plog
        self.telemetry = telemetry
        self.clock = Clock(cfg.time_scale)
        # the core sees durations on the (possibly scaled) engine clock
        period_s = cfg.poll_period_s * cfg.time_scale
        self.coord = Coordinator(
            engine=E.Engine(E.EngineConfig(cfg.limits, envelope, period_s)),
            supervisor=Supervisor(cfg.limits, envelope, period_s, time_scale=cfg.time_scale),
            probes=envelope.probes,
        )
        self.recorder = Recorder(
            plog, cfg.id, on_outbox=None if telemetry is None else telemetry.notify_outbox
        )
        self.identity: Identity | None = None
        self.snapshot: Snapshot | None = None  # the last poll's (None: the read failed)
        self.procedure_id: int | None = None
        self._cycle_rows: dict[int, int] = {}  # engine cycle_ref -> cycles.id
        self._inbox: asyncio.Queue[_Request] = asyncio.Queue(maxsize=64)
        self._procedure_change = asyncio.Lock()  # one procedure open or close at a time
        self.connected = False
        self.late_polls = 0
        self.polls = 0
        self.last_poll_mono: float | None = None
        self.poll_starts: deque[float] = deque(maxlen=4096)  # for the benchmark
        self._read_mono: float | None = None  # wall-monotonic time of the last snapshot read
        self._link_failed = False
        self._failing: set[str] = set()  # outputs whose last command failed (logged once)
        # wall-monotonic time the last renewal was sent (None: renew at the next poll)
        self._renewed_mono: float | None = None
        self._renew_after_s = cfg.lease_renew_s - 0.5 * cfg.poll_period_s
        self._adopt = adopt

    @property
    def engine(self) -> E.Engine:
        return self.coord.engine

    @property
    def supervisor(self) -> Supervisor:
        return self.coord.supervisor

    @property
    def state(self) -> E.EngineState:
        return self.coord.state

    # ------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Connect, go to the safe state, then poll until cancelled."""
        recorder = asyncio.create_task(self.recorder.run(), name=f"recorder-{self.id}")
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
            await self.recorder.drain()  # what is still queued

    async def _connect(self) -> None:
        backoff = Backoff(policy=CONNECT_BACKOFF)
        while True:
            try:
                await self.driver.connect()
                ident = await self.driver.identify()
                self._check_identity(ident)
                self.identity = ident
                if not await self._initial_safe_state():
                    raise LinkError("the safe state was not confirmed at connect")
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
                self.recorder.event(
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
            await asyncio.sleep(backoff.failed())

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

    async def _initial_safe_state(self) -> bool:
        """Start safe whatever the console was doing (never resume a freeze): the one
        safe state, every step attempted. True when the console confirmed every step."""
        self._link_failed = False
        self.coord.connected(self.clock.now())
        await self._run_effects()
        return not self.supervisor.unconfirmed

    async def _shutdown(self) -> None:
        """The safe state first (every step attempted, retried until the console
        confirms every output off or the lease must have taken over), then the lease
        disarmed if, and only if, a fresh snapshot shows every output off. The caller
        writes the recorder's queue and flushes the log."""
        if self.identity is not None:  # the console answered once: it may have outputs on
            try:
                async with asyncio.timeout(SHUTDOWN_BUDGET_S):
                    if await self._shutdown_safe_state():
                        await self.driver.arm_lease(0)
                        self.recorder.event("lease_disarmed", {"console": self.id})
                    else:
                        log.error(
                            "safe_state_not_confirmed_at_shutdown",
                            console=self.id,
                            outputs=[
                                f"{k}{'' if p is None else f' {p}'}"
                                for k, p in self.supervisor.unconfirmed
                            ],
                            detail="lease left armed: the console closes on its expiry",
                        )
            except (DriverError, TimeoutError) as exc:
                log.error("shutdown_incomplete", console=self.id, error=str(exc) or "timeout")
        with contextlib.suppress(DriverError, TimeoutError):
            async with asyncio.timeout(1.0):  # keeps a cancel (3.11 wait_for may drop it)
                await self.driver.close()

    async def _shutdown_safe_state(self) -> bool:
        """Execute the safe state, then poll (no lease renewal) until a fresh snapshot
        shows every output off. Gives up once the lease must have expired: from then
        on the console's own watchdog holds the outputs closed."""
        self._link_failed = False
        self.coord.shutdown(self.clock.now())
        await self._run_effects()
        lease_s = self.cfg.lease_timeout_ms / 1000
        last = self._renewed_mono if self._renewed_mono is not None else time.monotonic()
        give_up = max(last + lease_s, time.monotonic()) + 2 * self.cfg.poll_period_s
        while True:
            snap = await self._read()
            await self._supervise(snap)
            self.coord.tick(self.clock.now())
            await self._run_effects()
            if snap is not None and _all_off(snap) and not self.supervisor.unconfirmed:
                return True
            if time.monotonic() >= give_up:
                return False
            await asyncio.sleep(self.cfg.poll_period_s)

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

    async def _read(self) -> Snapshot | None:
        """One snapshot, or None when the link failed (every further command of this
        poll is then reported as not sent, without waiting out its timeouts)."""
        self._link_failed = False
        try:
            snap: Snapshot | None = self.clock.rescale(await self.driver.read_snapshot())
            self.connected = True
            self._read_mono = time.monotonic()
        except DriverError as exc:
            snap = None
            self._link_failed = isinstance(exc, LinkError)
            if self.connected:
                log.warning("poll_failed", console=self.id, error=str(exc))
            self.connected = False
        self.snapshot = snap
        return snap

    def _note_storage(self) -> None:
        """Tell the supervisor whether the procedure record can be kept."""
        fault = storage_fault(self.writer.status())
        self.supervisor.note_storage(fault is None, fault or "")

    async def _supervise(self, snap: Snapshot | None) -> None:
        """The supervisor's check of a poll result (and of the writer), its demands executed."""
        self._note_storage()
        self.coord.begin_poll(snap, self.clock.now())
        await self._run_effects()

    async def poll_once(self) -> None:
        self.polls += 1
        snap = await self._read()
        # 1. the supervisor first
        await self._supervise(snap)
        # 2. operator commands, then the tick and the sticky safe state
        while not self._inbox.empty():
            await self._serve(self._inbox.get_nowait())
        self.coord.tick(self.clock.now())
        await self._run_effects()
        # 3. renew the lease (a write) when due, only after everything above completed
        if snap is None:
            self._renewed_mono = None  # the link failed: renew as soon as it answers again
            return
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
        if self.telemetry is not None:
            self.telemetry.offer_snapshot(snap, self.driver.stats)

    def _renewal_due(self) -> bool:
        """A quarter of the lease (``cfg.lease_renew_s``) has passed since the last
        renewal; half a poll period early, so a poll that ends a little sooner than
        the last one does not push the renewal a whole period later."""
        last = self._renewed_mono
        return last is None or time.monotonic() - last >= self._renew_after_s

    def anchoring_failed(self, present: bool, detail: str = "") -> None:
        """The record's chain head is (or is no longer) failing to leave the database
        by every anchor route: ``anchor_failed`` (medium, never stops a freeze) through
        the supervisor's one alarm book, at the next check."""
        self.supervisor.note_anchoring(not present, detail)

    # ------------------------------------------------------------ effects
    async def _run_effects(self) -> None:
        """Execute what the coordinator asks for, one effect at a time, reporting
        each result back before asking for the next."""
        coord = self.coord
        while (effect := coord.next_effect()) is not None:
            result = await self._execute(effect)
            if result is not None:
                coord.report(effect, result, self.clock.now())

    async def _execute(self, effect: Effect) -> Result | None:
        if isinstance(effect, C.SetFreeze | C.SetThaw | C.SetMaster):
            return await self._drive(effect)
        if isinstance(effect, C.OpenCycle):
            return await self._open_cycle(effect)
        if isinstance(effect, C.WriteConsoleLimits):
            try:
                await self.driver.write_limits(effect.probe, effect.limits)
                return LimitsHeld(limits=await self.driver.read_limits(effect.probe))
            except DriverError as exc:
                return Failed(reason=str(exc))
        if isinstance(effect, C.CloseCycle):
            self._close_cycle(effect)
        elif isinstance(effect, C.Record):
            self.recorder.event(effect.kind, {"console": self.id, **effect.details})
            if effect.kind == "safe_state_executed" and not effect.details.get("confirmed"):
                log.error("safe_state_not_confirmed", console=self.id, **effect.details)
        elif isinstance(effect, C.Reject):
            log.info(
                "command_rejected",
                console=self.id,
                command=effect.command,
                code=effect.code,
                detail=effect.detail,
            )
        elif isinstance(effect, AlarmRaised):
            self.recorder.alarm_raised(effect.alarm, procedure_id=self.procedure_id)
        elif isinstance(effect, AlarmCleared):
            self.recorder.alarm_cleared(effect.alarm)
        elif isinstance(effect, ValveOpened):
            self._valve_opened(effect.cycle_ref)
        elif isinstance(effect, Refused):
            log.warning(
                "output_refused",
                console=self.id,
                output=describe(effect.command),
                reason=effect.reason,
            )
            self.recorder.event(
                "output_refused",
                {"console": self.id, "output": describe(effect.command), "reason": effect.reason},
            )
        return None

    async def _drive(self, cmd: C.SetFreeze | C.SetThaw | C.SetMaster) -> Result:
        """Switch one output and confirm it. Once the link failed in this poll, a
        further command would wait out its own timeouts (seconds in all) and delay the
        alarm and the engine: it is reported as not sent, and the next poll retries."""
        name = describe(cmd)
        if self._link_failed:
            self._failing.add(name)
            return Failed(reason="link down in this poll", sent=False)
        try:
            if isinstance(cmd, C.SetFreeze):
                await self.driver.set_freeze(cmd.probe, cmd.on)
            elif isinstance(cmd, C.SetThaw):
                await self.driver.set_thaw(cmd.probe, cmd.on)
            else:
                await self.driver.set_master(cmd.on)
        except DriverError as exc:
            if isinstance(exc, LinkError):
                self._link_failed = True
            if name not in self._failing:  # logged once until it succeeds again
                self._failing.add(name)
                log.error(
                    "output_command_failed",
                    console=self.id,
                    output=name,
                    on=cmd.on,
                    error=str(exc),
                )
            return Failed(reason=str(exc))
        self._failing.discard(name)
        return Done()

    async def _open_cycle(self, cmd: C.OpenCycle) -> Result:
        """Record before acting: the row is committed before anything opens."""
        if self.procedure_id is None:
            return Failed(reason="no procedure open")
        snap = self.snapshot
        supply = snap.supply_kpa.value if snap is not None and snap.supply_kpa.usable else None
        spec = CycleOpen(
            procedure_id=self.procedure_id,
            probe=cmd.probe,
            phase=Phase(cmd.phase),
            step_index=cmd.step_index,
            started_at=cmd.utc,
            started_mono=cmd.mono_s,  # the engine's time of the phase start, not of the I/O
            protocol=cmd.protocol,
            planned_s=cmd.planned_s,
            target_tip_c=cmd.target_tip_c,
            supply_start_kpa=supply,
            host_only_limits=cmd.host_only_limits,
        )
        try:
            row = await self.recorder.open_cycle(spec)  # the previous cycle's close first
        except Exception as exc:  # noqa: BLE001 - any storage failure refuses the freeze
            log.error("cycle_open_failed", console=self.id, error=str(exc))
            return Failed(reason=f"cycle not recorded: {exc}")
        self._cycle_rows[cmd.cycle_ref] = row
        return Done()

    def _valve_opened(self, cycle_ref: int) -> None:
        """The freeze really started: note it on the (already committed) cycle row."""
        row = self._cycle_rows.get(cycle_ref)
        if row is not None:
            now = self.clock.now()
            self.recorder.valve_opened(row, utc=now.utc, mono_s=now.mono_s)

    def _close_cycle(self, cmd: C.CloseCycle) -> None:
        row = self._cycle_rows.pop(cmd.cycle_ref, None)
        if row is None:
            return
        f = cmd.figures
        snap = self.snapshot
        supply_end = f.supply_end_kpa
        if supply_end is None and snap is not None:
            supply_end = snap.supply_kpa.value
        self.recorder.cycle_closed(
            CycleClose(
                cycle_id=row,
                outcome=Outcome(cmd.outcome),
                ended_at=cmd.utc,
                # a freeze ends when its valve's close was confirmed (its start is the
                # confirmed open); a thaw has no valve: it ends at the engine's decision
                ended_mono=self.clock.now().mono_s if f.phase == "freeze" else cmd.mono_s,
                min_tip_c=f.min_tip_c,
                time_to_target_s=f.time_to_target_s,
                time_below_m20_s=f.below_m20_s,
                time_below_m40_s=f.below_m40_s,
                thaw_to_0_s=f.thaw_to_0c_s,
                supply_end_kpa=supply_end,
                figures_note=f.figures_note,
            )
        )

    # ------------------------------------------------------------ operator API
    async def submit(
        self,
        event: C.Event | None = None,
        fn: Callable[[], Awaitable[Any]] | None = None,
        *,
        timeout_s: float = 10.0,
    ) -> Any:
        """Queue an operator command for the poll loop; returns its result or raises."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            self._inbox.put_nowait(_Request(event, fn, fut))
        except asyncio.QueueFull as exc:
            raise ControlError("busy", "too many commands queued") from exc
        # asyncio.timeout, not wait_for: on 3.11 wait_for returns the result when the
        # caller is cancelled in the pass the answer arrives, and the cancel is lost
        async with asyncio.timeout(timeout_s):
            return await fut

    async def _serve(self, req: _Request) -> None:
        try:
            if req.fn is not None:
                req.future.set_result(await req.fn())
                return
            assert req.event is not None
            rejects = await self._feed(req.event)
            if rejects:
                r = rejects[0]
                req.future.set_exception(ControlError(r.code, r.detail or r.code))
            else:
                req.future.set_result({"state": str(self.state.phase)})
        except Exception as exc:  # noqa: BLE001 - the operator gets the reason
            if not req.future.done():
                req.future.set_exception(exc)

    async def _feed(self, event: C.Event) -> list[C.Reject]:
        """One engine event through the coordinator, its effects executed."""
        rejects = self.coord.feed(event, self.clock.now())
        await self._run_effects()
        return rejects

    async def adopt_procedure(self, procedure_id: int, cumulative_s: dict[int, float]) -> None:
        """A procedure left open by a previous run (crash or restart): continue it, with
        the freeze time its probes already had. Its cycles were marked interrupted; no
        freeze is resumed."""
        self.procedure_id = procedure_id
        self.coord.procedure_opened(self.clock.now(), cumulative_s)
        await self._run_effects()
        self.recorder.event(
            "procedure_adopted",
            {"console": self.id, "procedure_id": procedure_id, "cumulative_freeze_s": cumulative_s},
        )

    async def open_procedure(self, meta: dict[str, Any], study: StudyOpen | None = None) -> int:
        """Open a procedure (under a study profile when ``study`` is given).

        The row is committed beside the poll loop, not in it: polls, the supervisor
        and the lease renewals go on while the writer catches up (in the poll loop,
        a commit queued behind a backlog of samples once stopped the renewals long
        enough for an idle console's lease to expire; docs/reliability.md). The
        check and the state change are the poll loop's; one procedure change at a
        time."""
        async with self._procedure_change:

            async def check() -> ProcedureOpen:
                if self.procedure_id is not None:
                    raise ControlError("procedure_open", f"procedure {self.procedure_id} is open")
                ident = self.identity
                data = dict(meta)
                data.setdefault("console", self.id)
                if ident is not None:
                    data.setdefault("console_model", ident.model)
                    data.setdefault("console_serial", ident.serial)
                    data.setdefault("console_firmware", ident.firmware)
                data.setdefault("software_version", __version__)
                data["host_only_limits"] = self.engine.cfg.host_only
                return ProcedureOpen.model_validate(data)

            record: ProcedureOpen = await self.submit(fn=check)
            pid = await self.plog.open_procedure(record, study=study)

            async def opened() -> int:
                self.procedure_id = pid
                self.coord.procedure_opened(self.clock.now())
                await self._run_effects()
                return pid

            return int(await self.submit(fn=opened))

    async def close_procedure(self, data: dict[str, Any]) -> int:
        """Close the open procedure. The engine closes it first (no cycle starts from
        then on) and samples stop carrying its id; the record's queue is written and
        the close committed beside the poll loop (as for ``open_procedure``). A close
        that could not be committed opens it again in the engine, with the freeze time
        its probes had, and the operator gets the reason."""
        async with self._procedure_change:

            async def begin() -> tuple[ProcedureClose, tuple[tuple[int, float], ...]]:
                if self.procedure_id is None:
                    raise ControlError("no_procedure", "no procedure is open")
                if self.state.phase in E.ACTIVE:
                    raise ControlError("busy", f"engine is {self.state.phase}: stop or abort first")
                close = ProcedureClose.model_validate({**data, "procedure_id": self.procedure_id})
                cumulative_s = self.state.cumulative_s
                rejects = await self._feed(C.ProcedureClosed())
                if rejects:
                    raise ControlError(rejects[0].code, rejects[0].detail or rejects[0].code)
                self.procedure_id = None
                return close, cumulative_s

            begun: tuple[ProcedureClose, tuple[tuple[int, float], ...]]
            begun = await self.submit(fn=begin)
            close, cumulative_s = begun
            try:
                await self.recorder.barrier()  # queued cycle closes land first
                await self.plog.close_procedure(close)
            except Exception:

                async def reopen() -> None:
                    self.procedure_id = close.procedure_id
                    self.coord.procedure_reopened(self.clock.now(), cumulative_s)
                    await self._run_effects()

                await self.submit(fn=reopen)
                raise
            return close.procedure_id

    async def run_protocol(self, protocol: RunProtocolFile, probes: tuple[int, ...]) -> Any:
        return await self.submit(C.RunProtocol(protocol, probes))

    async def acknowledge(self, who: str) -> Any:
        async def go() -> dict[str, Any]:
            acked = self.coord.acknowledge(self.clock.now())
            await self._run_effects()
            for alarm in acked:
                self.recorder.alarm_acknowledged(alarm, by=who)
            return {"acknowledged": [str(a.code) for a in acked]}

        return await self.submit(fn=go)

    async def reset(self) -> Any:
        async def go() -> dict[str, Any]:
            try:
                await self.driver.reset_faults()
            except DriverError as exc:
                log.warning("console_fault_reset_refused", console=self.id, error=str(exc))
            snap = None
            with contextlib.suppress(DriverError):
                snap = self.clock.rescale(await self.driver.read_snapshot())
            self._note_storage()  # a reset needs the record's writer healthy again
            result, rejects = self.coord.reset(snap, self.clock.now())
            if snap is not None and not snap.lease.armed:
                with contextlib.suppress(DriverError):
                    await self.driver.arm_lease(self.cfg.lease_timeout_ms)
                self._renewed_mono = None  # re-armed: this poll renews it
            await self._run_effects()
            if not result.ok:
                raise ControlError("cause_present", result.reason)
            if rejects:
                raise ControlError(rejects[0].code, rejects[0].detail)
            return {"state": str(self.state.phase)}

        return await self.submit(fn=go)

    # ------------------------------------------------------------ status
    def engine_status(self) -> EngineStatus:
        return engine_status(self.state, self.clock.now().mono_s)

    def active_alarms(self) -> list[tuple[Alarm, int | None]]:
        """The supervisor's active alarms, each with its id in the log (None until written)."""
        return [(a, self.recorder.alarm_row(a)) for a in self.supervisor.book.active]

    def link_health(self) -> LinkHealth:
        """Up while snapshots arrive; silent once the last one is older than the
        supervisor's stale rule (in wall seconds)."""
        read = self._read_mono
        return LinkHealth(
            connected=self.driver.stats.connected,
            snapshot_age_s=None if read is None else time.monotonic() - read,
            stale_after_s=self.clock.wall_s(self.supervisor.stale_after_s),
        )

    def status(self) -> dict[str, Any]:
        last = self.last_poll_mono
        return console_status(
            console=self.id,
            driver=self.cfg.driver,
            identity=self.identity,
            stats=self.driver.stats,
            link=self.link_health(),
            poll={
                "hz": self.cfg.poll_hz,
                "polls": self.polls,
                "late_polls": self.late_polls,
                "last_poll_age_ms": None
                if last is None
                else round((time.monotonic() - last) * 1000, 1),
            },
            engine=self.engine_status(),
            snapshot=self.snapshot,
            alarms=self.active_alarms(),
            procedure_id=self.procedure_id,
            time_scale=self.cfg.time_scale,
        )


def storage_fault(w: WriterStatus) -> str | None:
    """Why the procedure record cannot be kept, or None when it can: a write failed
    (disk full, read-only, I/O: ``kind: message``) or the writer stopped. A write
    that is only slow is not a failure here (the systemd watchdog watches that)."""
    if w.healthy:
        return None
    if w.last_error is not None:
        return str(w.last_error)
    if w.busy_for_s > 0:
        return None
    return w.reason


def _all_off(snap: Snapshot) -> bool:
    """The console reports every output off: master closed, no freeze, no thaw."""
    return not snap.master_open and not any(p.freeze_open or p.thaw_on for p in snap.probes)
