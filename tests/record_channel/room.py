"""A room's record made with the store's own functions, and the record channel's
messages read back from it (what the channel would publish, without a broker)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine

from cryod.daemon.record_channel.message import RecordEncoder, record_document
from cryod.daemon.record_channel.source import content_of, head_seq, profile_of, read_entries
from cryod.daemon.store.models import Outcome
from cryod.daemon.store.records import (
    REDACTED,
    CycleClose,
    ProcedureClose,
    ProcedureLog,
    check_patient_ref,
)
from cryod.daemon.store.writer import SampleRow, Writer
from cryod.integrity import format_time
from tests.store.conftest import cycle_open, procedure_meta

SITE, NODE = "site-a", "unnamed"
PATIENT_REF = "MN-0042"


def encoder() -> RecordEncoder:
    return RecordEncoder(check_patient_ref, REDACTED)


def poll_rows(procedure_id: int | None, n_polls: int, t0: float) -> list[SampleRow]:
    rows = []
    for i in range(n_polls):
        t = t0 + i * 0.05
        for probe in (0, 1, 2):
            rows.append(SampleRow("c1", t, 100.0 + i * 0.05, probe, "tip_c", -40.0 - i, "valid",
                                  procedure_id))  # fmt: skip
    return rows


async def record_procedure(writer: Writer, *, cycles: int = 2) -> int:
    """Samples outside a procedure, then a procedure with cycles, an alarm, operator
    actions and samples, closed. Returns its id."""
    plog = ProcedureLog(writer)
    writer.submit_samples(poll_rows(None, 8, time.time()))
    await writer.flush()
    pid = await plog.open_procedure(procedure_meta(patient_ref=PATIENT_REF))
    await plog.record_action(
        who="op-a", action="procedure_open", args={"patient_ref": PATIENT_REF, "side": "left"},
        accepted=True, console="c1", procedure_id=pid,
    )  # fmt: skip
    for n in range(cycles):
        cid = await plog.open_cycle(cycle_open(pid, probe=1 + n % 2))
        writer.submit_samples(poll_rows(pid, 10, time.time()))
        await writer.flush()
        await plog.close_cycle(
            CycleClose(cycle_id=cid, outcome=Outcome.COMPLETED, ended_at=dt.datetime.now(dt.UTC),
                       ended_mono=time.monotonic(), min_tip_c=-71.25 - n, time_below_m20_s=None,
                       figures_note="no samples below -20 C")
        )  # fmt: skip
    aid = await plog.raise_alarm(
        console="c1", code="tip_high", priority="medium", message="tip warm", probe=1,
        procedure_id=pid,
    )  # fmt: skip
    await plog.ack_alarm(aid, by="op-a")
    await plog.clear_alarm(aid)
    await plog.close_procedure(
        ProcedureClose(procedure_id=pid, closed_by="op-a", notes="ok", adverse_events=[])
    )
    writer.submit_samples(poll_rows(None, 4, time.time()))
    await writer.flush()
    return pid


def messages(engine: Engine, first: int = 1, last: int | None = None) -> Iterator[bytes]:
    """The encoded record message of every entry first..last (default: to the head)."""
    enc = encoder()
    with engine.connect() as conn:
        end = head_seq(conn) if last is None else last
        for entry in read_entries(conn, first, end):
            rows, block, withheld = content_of(conn, entry)
            doc = record_document(
                site=SITE, node=NODE, entry=entry, rows=rows, block=block,
                profile=profile_of(conn, entry), withheld=withheld,
                sent_at=format_time(dt.datetime.now(dt.UTC)),
            )  # fmt: skip
            yield enc.encode(doc)


def doc(raw: bytes) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(raw)
    return out


async def more_entries(writer: Writer, n: int) -> None:
    """``n`` more chain entries (events with no row of their own)."""
    plog = ProcedureLog(writer)
    for i in range(n):
        await plog.record_event("engine_state", {"state": "idle", "n": i})
