"""Start-up recovery: open cycles become ``interrupted``, ended at the last sample."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine

from cryod.daemon.store import records, recovery
from cryod.daemon.store.audit import verify
from cryod.daemon.store.models import format_utc
from cryod.daemon.store.writer import SampleRow, Writer

from .conftest import cycle_open, procedure_meta


async def test_open_cycles_are_marked_interrupted(
    writer: Writer, engine: Engine, db_path: Path
) -> None:
    log = records.ProcedureLog(writer)
    pid = await log.open_procedure(procedure_meta())
    c1 = await log.open_cycle(cycle_open(pid, probe=1))
    c2 = await log.open_cycle(cycle_open(pid, probe=2))
    t0 = time.time()
    for i in range(10):  # probe 1 polled for 1 s of (fake) time, coldest -61
        writer.submit_sample(
            SampleRow(
                "c1", t0 + i * 0.1, time.monotonic() + i * 0.1, 1, "tip_c", -52.0 - i, "valid", pid
            )
        )
    writer.submit_sample(
        SampleRow("c1", t0 + 1.0, time.monotonic() + 1, 1, "tip_c", None, "stale", pid)
    )
    await writer.flush()
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    report = recovery.recover(engine, now=now)
    assert [c.cycle_id for c in report.interrupted] == [c1, c2]
    assert report.open_procedures == [pid]
    con = sqlite3.connect(db_path)
    try:
        got = con.execute(
            "SELECT id, outcome, ended_at, min_tip_c, duration_s FROM cycles ORDER BY id"
        ).fetchall()
        kinds = [r[0] for r in con.execute("SELECT kind FROM audit ORDER BY seq")]
    finally:
        con.close()
    last_sample = format_utc(dt.datetime.fromtimestamp(t0 + 1.0, dt.UTC))
    assert got[0][:4] == (c1, "interrupted", last_sample, -61.0)
    assert got[1][:4] == (c2, "interrupted", format_utc(now), None)  # no samples: recovery time
    assert all(r[4] is not None and r[4] >= 0 for r in got)
    # each interrupted cycle's row is covered again, with its event
    assert kinds[-5:] == ["row", "cycle_interrupted", "row", "cycle_interrupted", "recovery"]
    assert verify(db_path).ok
    # a second start finds nothing to do
    assert recovery.recover(engine).interrupted == []


def test_integrity_check_ok_and_detects_damage(db_path: Path, tmp_path: Path) -> None:
    assert recovery.integrity_check(db_path) == []
    broken = tmp_path / "broken.db"
    con = sqlite3.connect(broken)
    con.execute("CREATE TABLE t (x INTEGER PRIMARY KEY, y TEXT)")
    con.execute("CREATE INDEX ix_t_y ON t (y)")
    con.executemany("INSERT INTO t (y) VALUES (?)", [(f"v{i}" * 50,) for i in range(2000)])
    con.commit()
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    (root,) = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'ix_t_y'").fetchone()
    con.close()
    with open(broken, "r+b") as fh:  # scribble over an index page
        fh.seek((root - 1) * page_size)
        fh.write(b"\xff" * page_size)
    problems = recovery.integrity_check(broken)
    assert problems
    assert problems != ["ok"]
