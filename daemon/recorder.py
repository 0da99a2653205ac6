"""The recorder of one console: what happened, written in order, off the poll loop.

The shell queues a record with one method per kind (an audit event, an alarm
raised, cleared or acknowledged, a freeze valve confirmed open, a cycle
closed) and goes on with the poll; ``run()`` writes them one after another
through the procedure log, so a slow disk never delays the next poll. Records
that must be durable *before* the daemon acts (the cycle row before its valve
opens) do not go through the queue: ``open_cycle`` waits for the queue to
drain (``barrier``), then commits.

A storage failure is logged, never fatal here: the writer's health drives the
supervisor's ``storage_failure`` alarm (``ConsoleService.poll_once``) and the
systemd watchdog.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .alarms import Alarm, AlarmCode
from .logging import get_logger
from .store.records import CycleClose, CycleOpen, ProcedureLog

__all__ = ["Recorder"]

log = get_logger("cryod.console")

AlarmKey = tuple[AlarmCode, int | None]


@dataclass(frozen=True, slots=True)
class _Event:
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _AlarmRaised:
    alarm: Alarm
    procedure_id: int | None


@dataclass(frozen=True, slots=True)
class _AlarmCleared:
    key: AlarmKey


@dataclass(frozen=True, slots=True)
class _AlarmAcknowledged:
    key: AlarmKey
    by: str


@dataclass(frozen=True, slots=True)
class _ValveOpened:
    cycle_id: int
    utc: dt.datetime
    mono_s: float


@dataclass(frozen=True, slots=True)
class _CycleClosed:
    spec: CycleClose


@dataclass(frozen=True, slots=True)
class _Barrier:
    done: asyncio.Future[None]


_Record = _Event | _AlarmRaised | _AlarmCleared | _AlarmAcknowledged | _ValveOpened | _CycleClosed


class Recorder:
    """Queues the records of one console and writes them in order (``run``)."""

    def __init__(
        self,
        plog: ProcedureLog,
        console: str,
        *,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        """``on_outbox``: called after a write that added an MQTT outbox row (alarm
        and cycle events), so the publisher delivers it without waiting."""
        self._plog = plog
        self._console = console
        self._on_outbox = on_outbox
        self._queue: asyncio.Queue[_Record | _Barrier] = asyncio.Queue()
        self._alarm_rows: dict[AlarmKey, int] = {}

    # ------------------------------------------------------------ queued records
    def event(self, kind: str, payload: dict[str, Any]) -> None:
        """An audit event (``kind`` with its details)."""
        self._queue.put_nowait(_Event(kind, payload))

    def alarm_raised(self, alarm: Alarm, *, procedure_id: int | None) -> None:
        log.warning(
            "alarm_raised",
            console=self._console,
            code=str(alarm.code),
            priority=str(alarm.priority),
            probe=alarm.probe,
            detail=alarm.detail,
        )
        self._queue.put_nowait(_AlarmRaised(alarm, procedure_id))

    def alarm_cleared(self, alarm: Alarm) -> None:
        log.info("alarm_cleared", console=self._console, code=str(alarm.code), probe=alarm.probe)
        self._queue.put_nowait(_AlarmCleared(alarm.key))

    def alarm_acknowledged(self, alarm: Alarm, *, by: str) -> None:
        self._queue.put_nowait(_AlarmAcknowledged(alarm.key, by))

    def valve_opened(self, cycle_id: int, *, utc: dt.datetime, mono_s: float) -> None:
        """The freeze really started: noted on the (already committed) cycle row."""
        self._queue.put_nowait(_ValveOpened(cycle_id, utc, mono_s))

    def cycle_closed(self, spec: CycleClose) -> None:
        self._queue.put_nowait(_CycleClosed(spec))

    # ------------------------------------------------------------ awaited records
    async def open_cycle(self, spec: CycleOpen) -> int:
        """Record before acting: the previous cycle's close lands first, then the new
        row is committed; returns its id. Raises on a storage failure."""
        await self.barrier()
        return await self._plog.open_cycle(spec)

    async def barrier(self) -> None:
        """Return once every record queued so far has been written (or failed)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Barrier(done))
        await done

    def alarm_row(self, alarm: Alarm) -> int | None:
        """The database id of an active alarm, once its raise is written."""
        return self._alarm_rows.get(alarm.key)

    # ------------------------------------------------------------ the writing task
    async def run(self) -> None:
        """Write queued records in order, until cancelled."""
        while True:
            await self._write_logged(await self._queue.get())

    async def drain(self) -> None:
        """Write what is queued now (at shutdown, after ``run`` was cancelled)."""
        while not self._queue.empty():
            await self._write_logged(self._queue.get_nowait())

    async def _write_logged(self, item: _Record | _Barrier) -> None:
        try:
            await self._write(item)
        except Exception as exc:  # noqa: BLE001 - keep recording what can be recorded
            log.error("record_failed", console=self._console, error=str(exc))

    async def _write(self, item: _Record | _Barrier) -> None:
        plog = self._plog
        match item:
            case _Barrier(done):
                if not done.done():
                    done.set_result(None)
            case _Event(kind, payload):
                await plog.record_event(kind, payload)
            case _AlarmRaised(alarm, procedure_id):
                self._alarm_rows[alarm.key] = await plog.raise_alarm(
                    console=self._console,
                    code=str(alarm.code),
                    priority=str(alarm.priority),
                    message=alarm.detail,
                    probe=alarm.probe,
                    procedure_id=procedure_id,
                    at=alarm.raised_utc,
                )
                self._outbox_written()
            case _AlarmCleared(key):
                row = self._alarm_rows.pop(key, None)
                if row is not None:
                    await plog.clear_alarm(row)
                    self._outbox_written()
            case _AlarmAcknowledged(key, by):
                row = self._alarm_rows.get(key)
                if row is not None:
                    await plog.ack_alarm(row, by=by)
                    self._outbox_written()  # the "acknowledged" event
            case _ValveOpened(cycle_id, utc, mono_s):
                await plog.mark_valve_open(cycle_id, utc, mono_s)
            case _CycleClosed(spec):
                summary = await plog.close_cycle(spec)
                self._outbox_written()
                log.info(
                    "cycle_closed",
                    console=self._console,
                    cycle=spec.cycle_id,
                    outcome=str(spec.outcome),
                    min_tip_c=spec.min_tip_c,
                    summary_keys=len(summary or {}),
                )

    def _outbox_written(self) -> None:
        if self._on_outbox is not None:
            self._on_outbox()
