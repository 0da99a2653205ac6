"""Bytes per stored poll and the storage thread's time, old sample model against the new.

    python -m tests.bench.storage [--seconds 120] [--probes 8] [--hz 20] [--batch-s 1.0]

For each model, a fresh database made by the real migrations receives the same
run: an 8-probe console polled at 20 Hz for ``--seconds`` of samples (tip
temperatures following a freeze and thaw with noise, pressures with noise,
valves and lease changing a few times, a stale reading now and then), in one
transaction per ``--batch-s`` of polls with its chain entry, WAL and
synchronous=FULL as the daemon sets them.

- ``compact`` (revision 0006, what cryod writes): the real ``Writer``.
- ``rows`` (before 0006): one ``samples`` row per value and a
  ``cryod.samples/1`` chain entry per batch, as the writer of revision 0005
  did (plain multi-row INSERTs).

Bytes per poll is the database file's size after a WAL checkpoint
(``PRAGMA wal_checkpoint(TRUNCATE)``) minus the size of the same database
before the run, divided by the polls. The storage time is the CPU time of the
thread doing the inserts per second of samples, and its inverse: how many polls
a second that thread could store with every value logged. Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import tempfile
import time
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

from cryod.daemon.store import migrate
from cryod.daemon.store.chain import cover_batch
from cryod.daemon.store.db import immediate_transaction, make_engine
from cryod.daemon.store.samples import SampleRow
from cryod.daemon.store.writer import Writer
from cryod.integrity import SAMPLES_V1

_INSERT_V1 = (
    "INSERT INTO samples (console, t_utc, t_mono, probe, channel, value, validity, procedure_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def polls(seconds: float, probes: int, hz: float, seed: int = 747) -> Iterator[list[SampleRow]]:
    """One recorded-like run: every poll's rows, in ``snapshot_rows`` order."""
    rng = random.Random(seed)
    n = int(seconds * hz)
    t_utc0, t_mono0 = 1.78e9, 5000.0
    freeze_from, freeze_to = 0.1 * n, 0.6 * n
    for i in range(n):
        dt_s = i / hz
        t_utc, t_mono = t_utc0 + dt_s, t_mono0 + dt_s
        freezing = freeze_from <= i < freeze_to
        rows = [
            SampleRow("c1", t_utc, t_mono, 0, "supply_kpa", 25500.0 + rng.gauss(0, 40), "valid"),
            SampleRow("c1", t_utc, t_mono, 0, "cylinder_kpa", 38000.0 - 0.4 * dt_s, "valid"),
            SampleRow("c1", t_utc, t_mono, 0, "skin_c", 31.0 + rng.gauss(0, 0.05), "valid"),
            SampleRow("c1", t_utc, t_mono, 0, "master_open", float(freezing), "valid"),
            SampleRow("c1", t_utc, t_mono, 0, "supply_low", 0.0, "valid"),
            SampleRow("c1", t_utc, t_mono, 0, "lease_armed", float(freezing), "valid"),
            SampleRow("c1", t_utc, t_mono, 0, "lease_expired", 0.0, "valid"),
            SampleRow("c1", t_utc, t_mono, 0, "fault_overpressure", 0.0, "valid"),
            SampleRow("c1", t_utc, t_mono, 0, "fault_console_limit", 0.0, "valid"),
            SampleRow("c1", t_utc, t_mono, 0, "console_time_s", 100.0 + dt_s, "valid"),
        ]
        for p in range(1, probes + 1):
            if freezing:
                tip = -80.0 + 110.0 * math.exp(-(i - freeze_from) / (8 * hz)) + rng.gauss(0, 0.2)
            else:
                tip = 33.0 + rng.gauss(0, 0.1)
            stale = rng.random() < 0.002
            rows += [
                SampleRow(
                    "c1", t_utc, t_mono, p, "tip_c", None if stale else tip,
                    "stale" if stale else "valid",
                ),
                SampleRow("c1", t_utc, t_mono, p, "return_kpa", 180.0 + rng.gauss(0, 3), "valid"),
                SampleRow("c1", t_utc, t_mono, p, "tc_status", 0.0, "valid"),
                SampleRow("c1", t_utc, t_mono, p, "freeze_open", float(freezing), "valid"),
                SampleRow("c1", t_utc, t_mono, p, "thaw_on", 0.0, "valid"),
                SampleRow("c1", t_utc, t_mono, p, "limits_armed", float(freezing), "valid"),
                SampleRow("c1", t_utc, t_mono, p, "trip", 0.0, "valid"),
            ]  # fmt: skip
        yield rows


def _size(db: Path) -> int:
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    return db.stat().st_size


async def write_compact(db: Path, run: list[list[SampleRow]], per_batch: int) -> float:
    """The real writer, a batch every ``per_batch`` polls; returns CPU seconds of its
    storage thread."""
    engine = make_engine(db)
    rows_per_poll = len(run[0])
    w = Writer(
        engine,
        queue_max=len(run) * rows_per_poll + 1,
        batch_max=per_batch * rows_per_poll,
        batch_interval_s=3600.0,
    )
    await w.start()
    cpu: list[float] = []
    assert w._executor is not None
    w._executor.submit(lambda: cpu.append(time.thread_time())).result()
    try:
        for rows in run:
            w.submit_samples(rows)
            if w.status().queued_samples >= w.batch_max:
                while w.status().queued_samples >= w.batch_max:
                    await asyncio.sleep(0)
        await w.flush()
        w._executor.submit(lambda: cpu.append(time.thread_time())).result()
        st = w.status()
        assert st.samples_written == len(run) * rows_per_poll, st
    finally:
        await w.aclose()
        engine.dispose()
    return cpu[1] - cpu[0]


def write_rows_v1(db: Path, run: list[list[SampleRow]], per_batch: int) -> float:
    """Revision 0005's writer: a row per value and a cryod.samples/1 entry per batch."""
    engine = make_engine(db)
    t0 = time.thread_time()
    try:
        for b in range(0, len(run), per_batch):
            rows = list(chain.from_iterable(run[b : b + per_batch]))
            with immediate_transaction(engine) as dbapi:
                (before,) = dbapi.execute("SELECT max(id) FROM samples").fetchone()
                dbapi.executemany(_INSERT_V1, [tuple(r) for r in rows])
                first = (before or 0) + 1
                canonical = [
                    (first + k, r[7], r[0], r[1], r[2], r[3], r[4], r[5], r[6])
                    for k, r in enumerate(rows)
                ]
                cover_batch(
                    dbapi, first, first + len(rows) - 1, canonical, len(rows), encoding=SAMPLES_V1
                )
    finally:
        engine.dispose()
    return time.thread_time() - t0


def measure(
    model: str, seconds: float, probes: int, hz: float, batch_s: float, root: Path
) -> dict[str, Any]:
    db = root / f"{model}.db"
    migrate.upgrade(db, "head" if model == "compact" else "0005")
    before = _size(db)
    run = list(polls(seconds, probes, hz))
    per_batch = max(1, round(batch_s * hz))
    if model == "compact":
        cpu_s = asyncio.run(write_compact(db, run, per_batch))
    else:
        cpu_s = write_rows_v1(db, run, per_batch)
    after = _size(db)
    return {
        "model": model,
        "polls": len(run),
        "values_per_poll": len(run[0]),
        "bytes_per_poll": round((after - before) / len(run), 1),
        "storage_thread_ms_per_s": round(cpu_s * 1000 / seconds, 2),
        # polls per second of the storage thread's CPU: the poll rate it could carry
        # with every value logged, on one console (the daemon's max_poll_hz is the
        # whole daemon's figure)
        "storage_capacity_polls_per_s": round(len(run) / cpu_s) if cpu_s > 0 else None,
    }


def run(
    seconds: float = 120.0, probes: int = 8, hz: float = 20.0, batch_s: float = 1.0
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cryod-storage-") as tmp:
        root = Path(tmp)
        out = {m: measure(m, seconds, probes, hz, batch_s, root) for m in ("rows", "compact")}
    return {
        "seconds": seconds,
        "probes": probes,
        "hz": hz,
        "batch_s": batch_s,
        **out,
        "ratio": round(out["rows"]["bytes_per_poll"] / out["compact"]["bytes_per_poll"], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--batch-s", type=float, default=1.0)
    args = ap.parse_args()
    print(json.dumps(run(args.seconds, args.probes, args.hz, args.batch_s)))


if __name__ == "__main__":
    main()
