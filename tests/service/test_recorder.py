"""The console's recorder: one method per record kind, written in order off the poll loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from cryod.daemon.alarms import ALARM_SPECS, Alarm, AlarmCode
from cryod.daemon.logging import configure_logging, reset_logging
from cryod.daemon.recorder import Recorder
from cryod.daemon.store.models import Outcome, Phase
from cryod.daemon.store.records import CycleClose, CycleOpen

UTC0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def alarm(code: AlarmCode = AlarmCode.STORAGE_FAILURE, probe: int | None = None) -> Alarm:
    return Alarm(code, ALARM_SPECS[code].priority, probe, "detail", 1.0, UTC0)


def closed(cycle_id: int, outcome: Outcome) -> CycleClose:
    return CycleClose(cycle_id=cycle_id, outcome=outcome, ended_at=UTC0, ended_mono=2.0)


class FakeLog:
    """A procedure log that records the calls; ``gate`` holds every write until set;
    ``fail`` makes the named call raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: set[str] = set()
        self._next = 100

    async def _do(self, name: str, arg: Any) -> int:
        await self.gate.wait()
        if name in self.fail:
            raise OSError(f"{name}: disk I/O error")
        self.calls.append((name, arg))
        self._next += 1
        return self._next

    async def record_event(self, kind: str, payload: dict[str, Any]) -> None:
        await self._do("event", kind)

    async def raise_alarm(self, **kw: Any) -> int:
        return await self._do("raise", kw["code"])

    async def clear_alarm(self, row: int) -> None:
        await self._do("clear", row)

    async def ack_alarm(self, row: int, *, by: str) -> None:
        await self._do("ack", (row, by))

    async def mark_valve_open(self, row: int, at: dt.datetime, mono: float) -> None:
        await self._do("valve", row)

    async def open_cycle(self, spec: CycleOpen) -> int:
        return await self._do("open_cycle", spec.probe)

    async def close_cycle(self, spec: CycleClose) -> dict[str, Any]:
        await self._do("close_cycle", spec.cycle_id)
        return {}


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    configure_logging("info", json=True, stream=buf)
    yield buf
    reset_logging()


def _events(buf: io.StringIO, event: str) -> list[dict[str, Any]]:
    out = []
    for line in buf.getvalue().splitlines():
        rec = json.loads(line[line.index("{") :])
        if rec["event"] == event:
            out.append(rec)
    return out


async def test_records_are_written_in_order_and_alarms_find_their_rows() -> None:
    plog = FakeLog()
    outbox: list[str] = []
    rec = Recorder(plog, "c1", on_outbox=lambda: outbox.append("woken"))  # type: ignore[arg-type]
    task = asyncio.create_task(rec.run())
    plog.gate.clear()  # everything below is queued before anything is written
    a = alarm(AlarmCode.TC_OPEN, 2)
    rec.event("console_connected", {"console": "c1"})
    rec.alarm_raised(a, procedure_id=3)
    rec.alarm_acknowledged(a, by="op")  # queued before the raise's row exists
    rec.alarm_cleared(a)
    rec.valve_opened(7, utc=UTC0, mono_s=1.0)
    rec.cycle_closed(closed(7, Outcome.COMPLETED))
    assert plog.calls == []  # nothing waited for the disk
    plog.gate.set()
    await rec.barrier()
    row = 102  # the raise was the second write
    assert plog.calls == [
        ("event", "console_connected"),
        ("raise", "tc_open"),
        ("ack", (row, "op")),
        ("clear", row),
        ("valve", 7),
        ("close_cycle", 7),
    ]
    assert outbox == ["woken"] * 4  # raise, ack, clear, cycle close: each an outbox row
    assert rec.alarm_row(a) is None  # cleared
    task.cancel()


async def test_alarm_row_is_known_once_written() -> None:
    plog = FakeLog()
    rec = Recorder(plog, "c1")  # type: ignore[arg-type]
    task = asyncio.create_task(rec.run())
    a = alarm()
    rec.alarm_raised(a, procedure_id=None)
    await rec.barrier()
    assert rec.alarm_row(a) == 101
    task.cancel()


async def test_a_failed_write_is_logged_and_the_next_one_still_written(
    log_lines: io.StringIO,
) -> None:
    plog = FakeLog()
    plog.fail = {"raise"}
    rec = Recorder(plog, "c1")  # type: ignore[arg-type]
    task = asyncio.create_task(rec.run())
    rec.alarm_raised(alarm(), procedure_id=None)
    rec.event("after", {})
    await rec.barrier()
    assert plog.calls == [("event", "after")]
    (failed,) = _events(log_lines, "record_failed")
    assert failed["error"] == "raise: disk I/O error"
    (raised,) = _events(log_lines, "alarm_raised")
    assert (raised["code"], raised["priority"]) == ("storage_failure", "high")
    task.cancel()


async def test_open_cycle_waits_for_what_was_queued_before_it() -> None:
    """Record before acting: the previous cycle's close lands before the new row."""
    plog = FakeLog()
    rec = Recorder(plog, "c1")  # type: ignore[arg-type]
    task = asyncio.create_task(rec.run())
    rec.cycle_closed(closed(5, Outcome.ABORTED))
    spec = CycleOpen(
        procedure_id=1, probe=3, phase=Phase.FREEZE, step_index=0, started_at=UTC0, started_mono=0.0
    )
    row = await rec.open_cycle(spec)
    assert plog.calls == [("close_cycle", 5), ("open_cycle", 3)]
    assert row == 102
    task.cancel()


async def test_drain_writes_what_is_queued_after_the_task_stopped() -> None:
    plog = FakeLog()
    rec = Recorder(plog, "c1")  # type: ignore[arg-type]
    rec.event("lease_disarmed", {"console": "c1"})
    rec.event("daemon_stopping", {})
    await rec.drain()
    assert plog.calls == [("event", "lease_disarmed"), ("event", "daemon_stopping")]
