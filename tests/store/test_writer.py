"""The batched writer: throughput, durability of commit_now, and failures that
must leave it unhealthy but never crashed, hung, or blocking the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cryod.daemon.store import records
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.errors import StoreError
from cryod.daemon.store.writer import SampleRow, Writer, WriterClosed

from .conftest import cycle_open, procedure_meta, sample_rows


def sample(i: int, *, console: str = "c1", procedure_id: int | None = None) -> SampleRow:
    return SampleRow(
        console, time.time(), time.monotonic(), 1, "tip_c", float(i), "valid", procedure_id
    )


def count(db: Path, sql: str, *args: object) -> int:
    """Through a separate plain sqlite3 connection, as another process would see it."""
    con = sqlite3.connect(db)
    try:
        return int(con.execute(sql, args).fetchone()[0])
    finally:
        con.close()


async def test_batched_throughput(writer: Writer, db_path: Path) -> None:
    n = 100_000
    t0 = time.perf_counter()
    for i in range(n):
        assert writer.submit_sample(sample(i))
    await writer.flush()
    wall = time.perf_counter() - t0
    st = writer.status()
    assert st.samples_written == n
    assert st.samples_dropped_full == 0
    assert st.batches >= n // writer.batch_max
    assert len(sample_rows(db_path)) == n
    print(
        f"\nwriter throughput: {n} samples in {wall:.2f} s = {n / wall:,.0f} rows/s end to end; "
        f"{st.sample_rows_per_s:,.0f} rows/s of database time in {st.batches} batches "
        f"of <= {writer.batch_max}"
    )


async def test_commit_now_is_durable_and_ordered(writer: Writer, db_path: Path) -> None:
    for i in range(123):
        writer.submit_sample(sample(i))
    pid = await writer.commit_now(lambda s: records.open_procedure(s, procedure_meta()))
    # visible to a separate connection the moment commit_now returns...
    assert count(db_path, "SELECT count(*) FROM procedures WHERE id = ?", pid) == 1
    # ...and every sample submitted before it was committed first
    assert len(sample_rows(db_path)) == 123
    cid = await writer.commit_now(lambda s: records.open_cycle(s, cycle_open(pid)))
    assert count(db_path, "SELECT count(*) FROM cycles WHERE id = ? AND outcome IS NULL", cid) == 1


async def test_samples_are_batched_on_the_timer(writer: Writer, db_path: Path) -> None:
    t0 = time.monotonic()
    writer.submit_sample(sample(1))
    # the writer's own count: the row is visible to other connections a moment
    # before the worker's result reaches the event loop
    while writer.status().samples_written == 0:
        assert time.monotonic() - t0 < 30.0, "a lone sample was never written"
        await asyncio.sleep(0.02)
    assert time.monotonic() - t0 >= writer.batch_interval_s  # not before the timer
    assert writer.status().batches == 1
    assert len(sample_rows(db_path)) == 1


async def test_full_queue_drops_samples_only_and_counts_them(engine: Engine, db_path: Path) -> None:
    async with Writer(engine, queue_max=10) as w:
        accepted = [w.submit_sample(sample(i)) for i in range(25)]
        assert accepted.count(True) == 10
        assert w.status().samples_dropped_full == 15
        # records are never dropped, even with the sample buffer full
        pid = await w.commit_now(lambda s: records.open_procedure(s, procedure_meta()))
    assert count(db_path, "SELECT count(*) FROM procedures WHERE id = ?", pid) == 1
    assert len(sample_rows(db_path)) == 10


async def test_op_error_reaches_caller_and_writer_stays_healthy(writer: Writer) -> None:
    with pytest.raises(records.RecordError, match="does not exist"):
        await writer.commit_now(lambda s: records.open_cycle(s, cycle_open(procedure_id=42)))
    assert writer.status().healthy
    pid = await writer.commit_now(lambda s: records.open_procedure(s, procedure_meta()))
    assert pid == 1


async def test_invalid_sample_rows_are_dropped_alone(writer: Writer, db_path: Path) -> None:
    writer.submit_sample(sample(1))
    writer.submit_sample(sample(2, procedure_id=999))  # no such procedure: FK refuses it
    writer.submit_sample(sample(3))
    await writer.flush()
    st = writer.status()
    assert (st.samples_written, st.samples_dropped_invalid, st.healthy) == (2, 1, True)
    assert len(sample_rows(db_path)) == 2


async def test_disk_full_makes_writer_unhealthy_not_dead(db_path: Path) -> None:
    """SQLite's max_page_count stands in for a full disk: SQLITE_FULL either way."""
    pages = count(db_path, "PRAGMA page_count")
    eng = make_engine(db_path, extra_pragmas={"max_page_count": pages + 2})
    errors: list[StoreError] = []
    try:
        async with Writer(eng, on_error=errors.append, batch_max=500) as w:
            pid = await w.commit_now(lambda s: records.open_procedure(s, procedure_meta()))
            for i in range(5000):
                w.submit_sample(sample(i))
            big = {"text": "x" * 20_000}  # needs pages the database may not grow to
            with pytest.raises(StoreError) as info:
                await asyncio.wait_for(
                    w.commit_now(
                        lambda s: records.record_action(
                            s, who="op-a", action="note", args=big, accepted=True
                        )
                    ),
                    10,
                )
            assert info.value.kind == "disk_full"
            assert "full" in str(info.value)
            st = w.status()
            assert not st.healthy
            assert "full" in st.reason
            assert st.samples_dropped_error > 0
            assert [e.kind for e in errors] == ["disk_full"]  # reported once, not per batch
            t0 = time.perf_counter()
            assert w.submit_sample(sample(1))  # still never blocks
            assert time.perf_counter() - t0 < 0.01
        # closing completed (no hang)
    finally:
        eng.dispose()
    # what was committed before is intact, the failed transactions left nothing
    assert count(db_path, "SELECT count(*) FROM procedures WHERE id = ?", pid) == 1
    assert count(db_path, "SELECT count(*) FROM operator_actions") == 0
    assert (
        count(db_path, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check != 'ok'")
        == 0
    )


async def test_read_only_database_makes_writer_unhealthy(db_path: Path) -> None:
    eng = make_engine(db_path, readonly=True)
    errors: list[StoreError] = []
    try:
        async with Writer(eng, on_error=errors.append) as w:
            with pytest.raises(StoreError, match="readonly") as info:
                await asyncio.wait_for(
                    w.commit_now(lambda s: records.open_procedure(s, procedure_meta())), 10
                )
            assert info.value.kind == "read_only"
            w.submit_sample(sample(1))
            with pytest.raises(StoreError, match="readonly"):
                await asyncio.wait_for(w.flush(), 10)
            st = w.status()
            assert not st.healthy
            assert st.last_error is not None
            assert st.last_error.kind == "read_only"
            assert st.samples_dropped_error == 1
            assert len(errors) == 1
    finally:
        eng.dispose()


async def test_slow_disk_never_blocks_the_event_loop(db_path: Path) -> None:
    """Another connection holds the write lock: the writer stalls, the loop does not."""
    eng = make_engine(db_path, busy_timeout_ms=3000)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    try:
        async with Writer(eng, stall_s=0.3) as w:
            tick = asyncio.create_task(ticker())
            try:
                op = asyncio.create_task(
                    w.commit_now(lambda s: records.open_procedure(s, procedure_meta()))
                )
                for i in range(1000):
                    w.submit_sample(sample(i))
                await asyncio.sleep(0.6)
                st = w.status()
                assert not st.healthy
                assert "running for" in st.reason
                assert not op.done()
                blocker.execute("COMMIT")  # the disk comes back
                pid = await asyncio.wait_for(op, 30)
                await w.flush()
                assert w.status().healthy
            finally:
                tick.cancel()
                await asyncio.gather(tick, return_exceptions=True)
    finally:
        blocker.close()
        eng.dispose()
    assert pid == 1
    assert max(gaps) < 0.2, f"event loop blocked for {max(gaps):.3f} s"


async def test_closed_writer_refuses_records(engine: Engine) -> None:
    w = Writer(engine)
    await w.start()
    await w.aclose()
    with pytest.raises(WriterClosed):
        await w.commit_now(lambda s: None)
    assert not w.submit_sample(sample(1))
    assert not w.status().healthy
