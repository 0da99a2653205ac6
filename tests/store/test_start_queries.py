"""What the daemon reads when it starts: its session number and the procedures a
previous run left open, with the freeze time each probe already had."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import Engine

from cryod.daemon.store import queries, records
from cryod.daemon.store.models import Outcome, Phase
from cryod.daemon.store.writer import Writer

from .conftest import cycle_open, procedure_meta


async def test_next_session_counts_the_starts_recorded(writer: Writer) -> None:
    log = records.ProcedureLog(writer)
    assert await writer.commit_now(queries.next_session) == 1
    await log.record_event("daemon_started", {"session": 1})
    await log.record_event("daemon_stopped", {"session": 1})  # not a start
    await log.record_event("daemon_started", {"session": 2})
    assert await writer.commit_now(queries.next_session) == 3


async def _freeze(log: records.ProcedureLog, pid: int, probe: int, seconds: float) -> int:
    spec = cycle_open(pid, probe=probe)
    cid = await log.open_cycle(spec)
    await log.close_cycle(
        records.CycleClose(
            cycle_id=cid,
            outcome=Outcome.COMPLETED,
            ended_at=spec.started_at + dt.timedelta(seconds=seconds),
            ended_mono=spec.started_mono + seconds,
        )
    )
    return cid


async def test_open_procedures_per_console_with_each_probes_freeze_time(
    writer: Writer, engine: Engine
) -> None:
    log = records.ProcedureLog(writer)
    closed = await log.open_procedure(procedure_meta(console="c1"))
    await _freeze(log, closed, 1, 50.0)
    await log.close_procedure(
        records.ProcedureClose(procedure_id=closed, closed_by="op", adverse_events=[])
    )
    c1 = await log.open_procedure(procedure_meta(console="c1"))
    await _freeze(log, c1, 1, 90.0)
    await _freeze(log, c1, 1, 30.0)
    await _freeze(log, c1, 2, 45.0)
    await log.open_cycle(cycle_open(c1, probe=3))  # never ended: no freeze time known
    thaw = dataclasses.replace(cycle_open(c1, probe=2), phase=Phase.THAW)
    await log.open_cycle(thaw)  # a thaw is not freeze time
    c2 = await log.open_procedure(procedure_meta(console="c2"))
    await writer.flush()
    found = queries.open_procedures(engine)
    assert set(found) == {"c1", "c2"}  # the closed procedure is not adopted
    assert found["c1"].procedure_id == c1
    assert found["c1"].freeze_s == pytest.approx({1: 120.0, 2: 45.0})
    assert found["c2"] == queries.OpenProcedure(c2, {})
    pid, freeze_s = found["c1"]  # what ConsoleService(adopt=...) unpacks
    assert (pid, set(freeze_s)) == (c1, {1, 2})
