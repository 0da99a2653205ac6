"""CPU cost of logging samples at the steady 8-probe load, per thread.

Runs the real Writer on a fresh migrated temp database and feeds it one
8-probe Snapshot (66 rows) per poll at ``--hz`` (20 Hz: 1 320 rows/s), in real
time so the batch timer and commit cadence are the daemon's. Reports CPU
milliseconds per second of samples:

- event loop: ``snapshot_rows`` + ``submit_samples`` (timed per poll) and the
  whole loop thread with samples minus the same poll loop without samples
  (what the writer task adds);
- worker: the storage thread (insert + commit), with the user/system split
  from /proc (clock ticks: coarse).

The database starts with ``--prefill-polls`` polls already logged (default
6000: five minutes of an 8-probe freeze), as in a procedure under way.

``--before DIR`` loads writer.py, samples.py and db.py from DIR instead (e.g.
``git show HEAD:daemon/store/writer.py > DIR/writer.py``) to compare;
``--batch-interval-s``, ``--batch-max`` and ``--pragma NAME=VALUE`` show what
the commit cadence and SQLite settings would change; ``--exec SQL`` runs a
statement on the fresh database first (e.g. ``DROP INDEX ...``: what it costs).

    .venv/bin/python -m tests.store.bench_writer --seconds 10 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from cryod.daemon.store import migrate, records
from cryod.drivers.base import (
    ConsoleFaults,
    LeaseStatus,
    ProbeState,
    Reading,
    Snapshot,
    TcStatus,
    Validity,
)

from .conftest import procedure_meta

INSERT_SAMPLE = (
    "INSERT INTO samples (console, t_utc, t_mono, probe, channel, value, validity, procedure_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def snapshot(seq: int, probes: int = 8) -> Snapshot:
    t_mono, t_utc = 1000.0 + seq * 0.05, 1_700_000_000.0 + seq * 0.05

    def r(value: float, unit: str) -> Reading:
        return Reading(value, unit, t_mono, t_utc, Validity.VALID)

    return Snapshot(
        seq=seq,
        t_mono=t_mono,
        t_utc=t_utc,
        console_time_s=seq * 0.05,
        supply_kpa=r(25000.0 - seq, "kPa"),
        cylinder_kpa=r(41000.0 - seq, "kPa"),
        skin_c=r(36.5, "degC"),
        master_open=True,
        supply_low=False,
        lease=LeaseStatus(armed=True, timeout_ms=1000, expired=False, expiry_count=0),
        faults=ConsoleFaults(),
        probes=tuple(
            ProbeState(
                probe=n,
                tip_c=r(-40.0 - n - seq * 0.01, "degC"),
                return_kpa=r(90.0 + n, "kPa"),
                tc_status=TcStatus.OK,
                freeze_open=True,
                thaw_on=False,
                limits_armed=True,
            )
            for n in range(1, probes + 1)
        ),
    )


def load_modules(before: Path | None) -> tuple[ModuleType, ModuleType, ModuleType]:
    """(writer, samples, db): the package's, or the copies in ``before``."""
    if before is None:
        from cryod.daemon.store import db, samples, writer

        return writer, samples, db
    mods = []
    for name in ("db", "writer", "samples"):
        source = (before / f"{name}.py").read_text().replace("from .writer ", "from .writer_b ")
        full = f"cryod.daemon.store.{name}_b"
        spec = importlib.util.spec_from_loader(full, loader=None)
        assert spec is not None
        mod = importlib.util.module_from_spec(spec)
        mod.__package__ = "cryod.daemon.store"
        sys.modules[full] = mod
        exec(compile(source, str(before / f"{name}.py"), "exec"), mod.__dict__)
        mods.append(mod)
    db, writer, samples = mods
    return writer, samples, db


def proc_thread_s(native_id: int) -> tuple[float, float]:
    """(user, system) seconds of one thread of this process, from /proc."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) * TICK_S, int(fields[12]) * TICK_S


async def one_run(mods: tuple[ModuleType, ...], args: argparse.Namespace) -> dict[str, float]:
    writer_mod, samples_mod, db_mod = mods
    seconds, hz = args.seconds, args.hz
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.db"
        migrate.upgrade(path)
        for sql in args.exec:  # an experiment on the schema, e.g. what an index costs
            with sqlite3.connect(path) as con:
                con.execute(sql)
        pragmas = dict(p.split("=", 1) for p in args.pragma)
        engine = db_mod.make_engine(path, extra_pragmas=pragmas or None)
        options = {
            name: value
            for name, value in (
                ("batch_interval_s", args.batch_interval_s),
                ("batch_max", args.batch_max),
            )
            if value is not None
        }
        try:
            async with writer_mod.Writer(engine, **options) as writer:
                return await _measure(writer, samples_mod, seconds, hz, args.prefill_polls)
        finally:
            engine.dispose()


async def _measure(
    writer: Any, samples_mod: ModuleType, seconds: float, hz: float, prefill_polls: int
) -> dict[str, float]:
    pid = await writer.commit_now(lambda s: records.open_procedure(s, procedure_meta()))
    if prefill_polls:  # a procedure already under way: the indexes' depth and spread
        old = [tuple(r) for r in samples_mod.snapshot_rows(snapshot(0), "c1", pid)]
        params = [
            (c, t - k, t - k, *rest) for k in range(prefill_polls, 0, -1) for c, t, _, *rest in old
        ]
        await writer.commit_now(lambda s: s.connection().exec_driver_sql(INSERT_SAMPLE, params))
    loop = asyncio.get_running_loop()
    ident, native = await loop.run_in_executor(
        writer._executor, lambda: (threading.get_ident(), threading.get_native_id())
    )
    worker_clock = time.pthread_getcpuclockid(ident)
    snaps = [snapshot(i) for i in range(20)]
    period = 1.0 / hz
    polls = round(seconds * hz)
    rows = len(samples_mod.snapshot_rows(snaps[0], "c1", pid))

    async def loop_cpu(feed: bool) -> tuple[float, ...]:
        """(loop s, produce s, worker s, worker user s, worker system s) over the window."""
        produce = 0.0
        t_next = loop.time()
        main0, w0, (u0, s0) = (
            time.thread_time(),
            time.clock_gettime(worker_clock),
            proc_thread_s(native),
        )
        for i in range(polls):
            t_next += period
            await asyncio.sleep(t_next - loop.time())
            if feed:
                p0 = time.thread_time()
                writer.submit_samples(samples_mod.snapshot_rows(snaps[i % 20], "c1", pid))
                produce += time.thread_time() - p0
        main1, w1, (u1, s1) = (
            time.thread_time(),
            time.clock_gettime(worker_clock),
            proc_thread_s(native),
        )
        return main1 - main0, produce, w1 - w0, u1 - u0, s1 - s0

    # warm up (first batches, page cache), then the window with samples and without
    for i in range(round(hz)):
        writer.submit_samples(samples_mod.snapshot_rows(snaps[i % 20], "c1", pid))
        await asyncio.sleep(period)
    await writer.flush()
    batches0 = writer.status().batches
    fed = await loop_cpu(True)
    batches = writer.status().batches - batches0
    await writer.flush()
    idle = await loop_cpu(False)
    st = writer.status()
    assert st.samples_dropped_full == st.samples_dropped_error == st.samples_dropped_invalid == 0
    assert st.samples_written == rows * (polls + round(hz)), st
    per_s = 1000.0 / seconds  # CPU s over the window -> CPU ms per second of samples
    return {
        "rows_per_s": rows * hz,
        "loop_total_ms": (fed[0] - idle[0]) * per_s,
        "loop_produce_ms": fed[1] * per_s,
        "loop_writer_task_ms": (fed[0] - idle[0] - fed[1]) * per_s,
        "worker_ms": (fed[2] - idle[2]) * per_s,
        "worker_user_ms": (fed[3] - idle[3]) * per_s,
        "worker_sys_ms": (fed[4] - idle[4]) * per_s,
        "batches_per_s": batches / seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--before", type=Path, default=None)
    ap.add_argument("--batch-interval-s", type=float, default=None, help="default: the Writer's")
    ap.add_argument("--batch-max", type=int, default=None, help="default: the Writer's")
    ap.add_argument("--pragma", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--exec", action="append", default=[], metavar="SQL", help="run it first")
    ap.add_argument("--dir", default=None, help="where the temp database goes")
    ap.add_argument(
        "--prefill-polls", type=int, default=6000, help="rows already logged (polls of 66)"
    )
    args = ap.parse_args()
    mods = load_modules(args.before)
    results = [asyncio.run(one_run(mods, args)) for _ in range(args.runs)]
    print(f"{'(CPU ms per s of samples)':28} {'min':>7} {'median':>7}")
    for key in results[0]:
        vals = [r[key] for r in results]
        print(f"{key:28} {min(vals):7.2f} {statistics.median(vals):7.2f}")


if __name__ == "__main__":
    main()
