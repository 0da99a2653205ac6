"""How the writer batches: the task sleeps until a batch is due, a full batch or
an op does not wait for the timer, and no sample is lost, doubled or reordered
whatever the interleaving of samples, ops and batch limits."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cryod.daemon.store import records
from cryod.daemon.store.samples import read_rows
from cryod.daemon.store.writer import SampleRow, Writer

from .conftest import procedure_meta, sample_rows


def rows(console: str, first: int, n: int) -> list[SampleRow]:
    """``n`` rows numbered by ``value`` from ``first``."""
    now, mono = time.time(), time.monotonic()
    return [SampleRow(console, now, mono, 1, "tip_c", float(first + i), "valid") for i in range(n)]


def values(db: Path, console: str) -> list[float]:
    """The console's rows in the order they were inserted, from another connection."""
    return [float(r[5]) for r in sample_rows(db) if r[0] == console]


def count_in(session: Session, console: str) -> int:
    return sum(1 for r in read_rows(session.connection()) if r.console == console)


class WakeCountingWriter(Writer):
    """The real writer, counting how often its task wakes from its sleep."""

    wakes = 0

    async def _sleep(self) -> None:
        await super()._sleep()
        self.wakes += 1


async def wait_written(w: Writer, n: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while w.status().samples_written < n:
        assert time.monotonic() < deadline, f"only {w.status().samples_written} of {n} written"
        await asyncio.sleep(0.005)


async def test_polls_within_a_batch_do_not_wake_the_task(engine: Engine, db_path: Path) -> None:
    """20 polls inside one batch interval: one wake (the timer), one batch, one commit."""
    interval_s = 1.0  # far longer than the 20 polls below take, even on a busy machine
    async with WakeCountingWriter(engine, batch_max=5000, batch_interval_s=interval_s) as w:
        await asyncio.sleep(0.01)  # the task is asleep with nothing queued
        t0 = time.monotonic()
        for i in range(20):
            assert w.submit_samples(rows("poll", 66 * i, 66)) == 66
            await asyncio.sleep(0.005)
        assert w.wakes == 0
        assert w.status().queued_samples == 20 * 66  # waiting for the timer, not yet written
        await wait_written(w, 20 * 66)
        assert time.monotonic() - t0 >= interval_s  # not before the batch was due
        assert w.wakes == 1
        assert (w.status().batches, w.status().commits, w.status().queued_samples) == (1, 1, 0)
    assert values(db_path, "poll") == [float(i) for i in range(20 * 66)]


async def test_a_full_batch_does_not_wait_for_the_timer(engine: Engine, db_path: Path) -> None:
    async with Writer(engine, batch_max=100, batch_interval_s=3600) as w:
        for i in range(4):
            w.submit_samples(rows("full", 66 * i, 66))  # 264 rows: two full batches
        await wait_written(w, 200)
        await asyncio.sleep(0.05)
        st = w.status()
        # the last 64 rows are not a full batch: they wait for the (hour-long) timer
        assert (st.samples_written, st.batches, st.queued_samples) == (200, 2, 64)
        await w.flush()
        assert (w.status().samples_written, w.status().queued_samples) == (264, 0)
    assert values(db_path, "full") == [float(i) for i in range(264)]


async def test_an_op_flushes_the_samples_before_it_without_the_timer(engine: Engine) -> None:
    async with Writer(engine, batch_interval_s=3600) as w:
        w.submit_samples(rows("op", 0, 66))
        w.submit_sample(rows("op", 66, 1)[0])
        seen = await asyncio.wait_for(w.commit_now(lambda s: count_in(s, "op")), 5)
        assert seen == 67  # record before acting: the op sees every earlier sample
        w.submit_samples(rows("op", 67, 10))
        assert w.status().queued_samples == 10


async def test_closing_writes_what_waits_for_the_timer(engine: Engine, db_path: Path) -> None:
    async with Writer(engine, batch_interval_s=3600) as w:
        w.submit_samples(rows("close", 0, 66))
        await asyncio.sleep(0.01)
        assert w.status().samples_written == 0
    assert values(db_path, "close") == [float(i) for i in range(66)]


# one step of a producer: a poll's rows, one sample, an op, or a pause (ms)
Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("rows"), st.integers(0, 30)),
        st.tuples(st.just("one"), st.just(1)),
        st.tuples(st.just("op"), st.just(0)),
        st.tuples(st.just("pause"), st.integers(0, 4)),
    ),
    max_size=30,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    script=steps,
    batch_max=st.integers(1, 40),
    queue_max=st.integers(1, 120),
    interval_ms=st.integers(1, 30),
)
def test_every_accepted_sample_is_written_once_in_order(
    engine: Engine,
    db_path: Path,
    script: list[Step],
    batch_max: int,
    queue_max: int,
    interval_ms: int,
) -> None:
    """Against the plain model: the rows written are exactly the accepted rows,
    in submission order; each op sees exactly the rows accepted before it;
    every row offered is written or counted as dropped."""
    console = f"p{time.monotonic_ns()}"  # this example's rows, in the shared database

    async def run() -> tuple[list[float], list[tuple[int, int]], Any, int]:
        accepted: list[float] = []
        ops: list[tuple[int, int]] = []  # (rows accepted before the op, rows it saw)
        offered = 0
        async with Writer(
            engine, batch_max=batch_max, queue_max=queue_max, batch_interval_s=interval_ms / 1000
        ) as w:
            pending: list[tuple[int, asyncio.Task[int]]] = []
            for kind, n in script:
                if kind == "rows":
                    batch = rows(console, offered, n)
                    taken = w.submit_samples(batch)
                    accepted += [r.value or 0.0 for r in batch[:taken]]  # a prefix is taken
                    offered += n
                elif kind == "one":
                    row = rows(console, offered, 1)[0]
                    if w.submit_sample(row):
                        accepted.append(float(offered))
                    offered += 1
                elif kind == "op":
                    op = asyncio.ensure_future(w.commit_now(lambda s: count_in(s, console)))
                    await asyncio.sleep(0)  # the op is queued when its task first runs
                    pending.append((len(accepted), op))
                else:
                    await asyncio.sleep(n / 1000)
            for before, op in pending:
                ops.append((before, await op))
            await w.flush()
            st_ = w.status()
        return accepted, ops, st_, offered

    accepted, ops, status, offered = asyncio.run(run())
    assert values(db_path, console) == accepted
    assert all(before == seen for before, seen in ops)
    assert status.samples_written == len(accepted)
    assert status.samples_dropped_full == offered - len(accepted)
    assert status.samples_dropped_error == status.samples_dropped_invalid == 0
    assert status.queued_samples == 0
    assert status.healthy


def varied(n: int, procedure_id: int | None) -> list[SampleRow]:
    """Rows that differ in every column, NULLs included: a shifted column shows."""
    out = []
    for i in range(n):
        out.append(
            SampleRow(
                f"c{i % 3}",
                1_700_000_000.0 + i / 7,
                1000.0 + i / 3,
                i % 9,
                ("tip_c", "return_kpa", "trip")[i % 3],
                None if i % 5 == 0 else -40.0 - i,
                ("valid", "stale", "invalid", "questionable")[i % 4],
                procedure_id if i % 2 else None,
            )
        )
    return out


def stored(db: Path) -> list[tuple[Any, ...]]:
    return sample_rows(db)


async def test_every_column_lands_in_order_across_whole_inserts_and_the_rest(
    engine: Engine, db_path: Path
) -> None:
    """One batch of 2 x 32 + 37 rows: multi-row INSERTs plus rows one by one."""
    async with Writer(engine, batch_max=500, batch_interval_s=3600) as w:
        pid = await w.commit_now(lambda s: records.open_procedure(s, procedure_meta()))
        sent = varied(101, pid)
        w.submit_samples(sent[:66])
        w.submit_samples(sent[66:])
        await w.flush()
        assert (w.status().samples_written, w.status().batches) == (101, 1)
    assert stored(db_path) == [tuple(r) for r in sent]


async def test_a_refused_row_inside_a_multi_row_insert_is_dropped_alone(
    engine: Engine, db_path: Path
) -> None:
    async with Writer(engine, batch_interval_s=3600) as w:
        sent = varied(70, None)
        bad = sent[40]._replace(procedure_id=999)  # no such procedure: the FK refuses it
        w.submit_samples([*sent[:40], bad, *sent[41:]])
        await w.flush()
        st = w.status()
        assert (st.samples_written, st.samples_dropped_invalid, st.healthy) == (69, 1, True)
    assert stored(db_path) == [tuple(r) for r in sent[:40] + sent[41:]]
