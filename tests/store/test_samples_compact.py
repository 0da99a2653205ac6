"""The compact sample form on its own: states stored as changes, a full poll where a
batch or a procedure starts, a channel that stops being polled, and a batch read back
by its chain entry's sequence (what the record channel re-sends)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from cryod.daemon.store import records
from cryod.daemon.store.samples import (
    SampleRow,
    batch_by_seq,
    pack_polls,
    read_rows,
    unpack_polls,
)
from cryod.daemon.store.writer import Writer
from cryod.integrity import batch_digest

from .conftest import procedure_meta


def poll(t: float, pid: int | None, valve: float, *, trip: bool = True) -> list[SampleRow]:
    rows = [
        SampleRow("c1", t, t, 0, "supply_kpa", 25000.0 + t, "valid", pid),
        SampleRow("c1", t, t, 0, "master_open", valve, "valid", pid),
        SampleRow("c1", t, t, 1, "tip_c", None, "stale", pid),
        SampleRow("c1", t, t, 1, "freeze_open", valve, "valid", pid),
    ]
    if trip:
        rows.append(SampleRow("c1", t, t, 1, "trip", 0.0, "valid", pid))
    return rows


def test_states_are_stored_when_they_change_and_read_back_exactly() -> None:
    rows = (
        poll(1.0, None, 0.0)
        + poll(2.0, None, 0.0)  # nothing changed: no state row
        + poll(3.0, None, 1.0)  # both valves opened
        + poll(4.0, 7, 1.0)  # a procedure starts: a full poll
        + poll(5.0, 7, 1.0, trip=False)  # trip no longer polled
    )
    polls = pack_polls(rows, 10)
    assert [p.id for p in polls] == [10, 11, 12, 13, 14]
    assert [p.full_state for p in polls] == [1, 0, 0, 1, 0]
    assert [len(p.states) for p in polls] == [3, 0, 2, 3, 1]
    assert polls[2].states == ((0, "master_open", 1.0, 0), (1, "freeze_open", 1.0, 0))
    assert polls[4].states == ((1, "trip", None, None),)
    assert polls[0].probes == ((1, None, 3, None, None),)  # stale tip, no return polled
    assert polls[0].skin_v is None  # not polled
    assert [tuple(r) for r in unpack_polls(polls)] == [tuple(r) for r in rows]


async def test_a_batch_reads_back_by_its_chain_sequence(engine: Engine, db_path: Path) -> None:
    async with Writer(engine, batch_max=10, batch_interval_s=3600.0) as w:
        pid = await w.commit_now(lambda s: records.open_procedure(s, procedure_meta()))
        for i in range(6):
            w.submit_samples(poll(float(i), pid, float(i > 2)))
        await w.flush()
    with engine.connect() as conn:
        seqs = [r[0] for r in conn.exec_driver_sql("SELECT seq FROM audit WHERE kind = 'samples'")]
        assert len(seqs) == 3  # two polls (10 values) a batch
        got = [batch_by_seq(conn, seq) for seq in seqs]
        assert batch_by_seq(conn, 1) is None  # not a sample batch
        rows = read_rows(conn)
    for found in got:
        assert found is not None
        payload, data = found
        assert batch_digest(data) == payload["digest"]
    assert rows == [r for i in range(6) for r in poll(float(i), pid, float(i > 2))]
