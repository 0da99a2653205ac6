"""Migration 0003's trade, measured: the samples index of revision 0002
(procedure, probe, channel, time) against 0003's (procedure, time).

    python -m tests.bench.sample_index [--minutes 30]

For each schema, on a database made by the real migrations: the CPU of
inserting an 8-probe freeze (per second of samples, over 10 s) at 20 Hz (66 rows per poll, one
transaction per 5 polls, WAL and synchronous=FULL as the daemon sets them)
after ``--minutes`` of samples are already logged, and the wall time of the
two queries that read samples: the report's series (daemon/report/data.py
``_load_samples``) and the crash recovery's last sample and minimum tip of one
cycle (daemon/store/recovery.py). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from cryod.daemon.report.data import _load_samples
from cryod.daemon.store import migrate
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.samples import CONSOLE_CHANNELS, PROBE_CHANNELS

_INSERT = (
    "INSERT INTO samples (console, t_utc, t_mono, probe, channel, value, validity, procedure_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
POLL_S = 0.05
SECONDS = 10  # of samples inserted for the CPU figure


def _poll_rows(t: float) -> list[tuple[Any, ...]]:
    rows = [("c1", t, t, 0, ch, 1.0, "valid", 1) for ch in CONSOLE_CHANNELS]
    rows += [("c1", t, t, p, ch, -40.0, "valid", 1) for p in range(1, 9) for ch in PROBE_CHANNELS]
    return rows


def _measure(revision: str, minutes: float, root: Path) -> dict[str, Any]:
    db = root / f"samples-{revision}.db"
    migrate.upgrade(db, revision)
    engine = make_engine(db)
    try:
        raw = engine.raw_connection()
        con = raw.driver_connection
        assert con is not None
        con.execute("PRAGMA foreign_keys = OFF")  # no procedure row: the same for both
        t = 1.0e9
        polls = int(minutes * 60 / POLL_S)
        con.execute("BEGIN")
        for _ in range(polls):
            con.executemany(_INSERT, _poll_rows(t))
            t += POLL_S
        con.execute("COMMIT")
        cpu0 = time.thread_time()
        for _ in range(4 * SECONDS):  # batches of 5 polls: 4 a second at 20 Hz
            con.execute("BEGIN IMMEDIATE")
            for _ in range(5):
                con.executemany(_INSERT, _poll_rows(t))
                t += POLL_S
            con.execute("COMMIT")
        insert_ms = (time.thread_time() - cpu0) * 1000 / SECONDS
        raw.close()
        with Session(engine) as s:
            t0 = time.perf_counter()
            _load_samples(s, 1, 1.0e9, set(range(1, 9)))  # all 8 probes froze
            report_s = time.perf_counter() - t0
            start = 1.0e9 + minutes * 60 / 3  # a cycle that began a third of the way in
            t0 = time.perf_counter()
            s.connection().exec_driver_sql(
                "SELECT max(t_utc), min(value) FROM samples WHERE procedure_id = 1 AND probe = 3"
                " AND channel = 'tip_c' AND t_utc >= ? AND validity IN ('valid', 'questionable')",
                (start,),
            ).all()
            recovery_s = time.perf_counter() - t0
    finally:
        engine.dispose()
    return {
        "insert_cpu_ms_per_s_of_samples": round(insert_ms, 2),
        "report_query_s": round(report_s, 3),
        "recovery_query_s": round(recovery_s, 4),
        "database_mb": round(db.stat().st_size / 2**20, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=30.0, help="samples already logged")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cryod-index-") as tmp:
        out = {
            "minutes_logged": args.minutes,
            "0002 (procedure, probe, channel, time)": _measure("0002", args.minutes, Path(tmp)),
            "0003 (procedure, time)": _measure("0003", args.minutes, Path(tmp)),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
