"""Issue 9, fault 4: kill -9 at random points while cycles are being written.

Built on the store's own kill child (tests/store/kill_child.py: writes cycles
and samples through the real Writer and prints each fact only after its
COMMIT) and its ``run_and_kill``; this test scales it up and splits the kills
over parallel workers, each on its own database. After every kill, as at a
restart: ``PRAGMA integrity_check`` is ok, every committed cycle and sample
is there, recovery marks every cycle left open ``interrupted`` and nothing
else, and the audit chain verifies.

``CRYOD_KILL9_TOTAL`` kills in all (CI: 100; the issue's 500 is a documented
run, see docs/reliability.md), ``CRYOD_KILL9_WORKERS`` in parallel (2),
``CRYOD_SEED`` replays the random kill points.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cryod.daemon.store import migrate, recovery
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.record_check import check_record
from tests.store.test_kill9 import run_and_kill

from .rig import env_int, record, seed_from_env

TOTAL = env_int("CRYOD_KILL9_TOTAL", 100)
WORKERS = env_int("CRYOD_KILL9_WORKERS", 2)


def _check_after_kill(db: Path, engine: Any, console: str, lines: list[str]) -> dict[str, int]:
    opened = {int(ln.split()[1]) for ln in lines if ln.startswith("C ")}
    closed = {int(ln.split()[1]) for ln in lines if ln.startswith("X ")}
    committed_samples = max(int(ln.split()[2]) for ln in lines if ln[:1] in ("C", "X"))
    assert recovery.integrity_check(db) == [], f"{console}: integrity_check failed"
    report = recovery.recover(engine)
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        outcome = dict(
            con.execute(
                "SELECT c.id, c.outcome FROM cycles c JOIN procedures p"
                " ON p.id = c.procedure_id WHERE p.console = ?",
                (console,),
            ).fetchall()
        )
        # 'seq' changes every poll, so every poll has its state row (stored as changes)
        (have,) = con.execute(
            "SELECT count(DISTINCT s.value) FROM sample_states s"
            " JOIN sample_polls p ON p.id = s.poll_id"
            " WHERE p.console = ? AND s.channel = 'seq' AND s.value < ?",
            (console, committed_samples),
        ).fetchone()
        (still_open,) = con.execute("SELECT count(*) FROM cycles WHERE outcome IS NULL").fetchone()
    finally:
        con.close()
    assert opened <= set(outcome), f"{console}: committed cycles lost {opened - set(outcome)}"
    assert all(outcome[c] == "completed" for c in closed), f"{console}: a closed cycle changed"
    interrupted = {c.cycle_id for c in report.interrupted}
    # recovery marked exactly the cycles that were still open, and no reported close
    assert interrupted == {c for c, o in outcome.items() if o == "interrupted"}, outcome
    assert not interrupted & closed, f"{console}: a committed close was undone"
    assert set(outcome.values()) <= {"completed", "interrupted"}, outcome
    # a close may be committed but not yet reported when the kill lands: at most the last one
    unreported = set(outcome) - closed - interrupted
    assert len(unreported) <= 1, f"{console}: {unreported}"
    assert all(c > max(closed | {0}) for c in unreported), (unreported, closed)
    assert still_open == 0
    assert have == committed_samples, f"{console}: committed samples lost"
    # the record (rows and sample batches, not only the audit trail) verifies clean
    report = check_record(db)
    assert report.ok, report.lines()
    return {
        "cycles": len(outcome),
        "completed": len(closed),
        "interrupted": len(interrupted),
        "samples": committed_samples,
    }


def _worker(
    n: int, kills: int, db: Path, seed: int, totals: dict[str, int], errors: list[str]
) -> None:
    rng = random.Random(f"{seed}-{n}")
    engine = make_engine(db)
    try:
        for k in range(kills):
            console = f"w{n}k{k}"
            lines = run_and_kill(db, console, rng)
            got = _check_after_kill(db, engine, console, lines)
            for key, v in got.items():
                totals[key] = totals.get(key, 0) + v
            totals["kills"] = totals.get("kills", 0) + 1
    except BaseException as exc:  # reported by the test thread
        errors.append(f"worker {n}: {exc!r}")
    finally:
        engine.dispose()


@pytest.mark.timeout(120 + TOTAL)
def test_kill9_while_writing_cycles(tmp_path: Path) -> None:
    seed = seed_from_env()
    per = [TOTAL // WORKERS + (1 if i < TOTAL % WORKERS else 0) for i in range(WORKERS)]
    totals: list[dict[str, int]] = [{} for _ in range(WORKERS)]
    errors: list[str] = []
    dbs = []
    for n in range(WORKERS):
        (tmp_path / f"w{n}").mkdir()
        dbs.append(tmp_path / f"w{n}" / "cryod.db")
        migrate.upgrade_on_start(dbs[-1])
    t0 = time.monotonic()
    threads = [
        threading.Thread(
            target=_worker, args=(n, per[n], dbs[n], seed, totals[n], errors), name=f"kill9-{n}"
        )
        for n in range(WORKERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert errors == [], errors
    sums = {k: sum(t.get(k, 0) for t in totals) for k in totals[0]}
    assert sums["kills"] == TOTAL
    assert sums["interrupted"] > 0  # the kills did land while cycles were open
    record(
        "kill9_writes",
        {
            "seed": seed,
            "kills": TOTAL,
            "workers": WORKERS,
            "integrity_ok": f"{TOTAL}/{TOTAL}",
            "committed_cycles_lost": 0,
            "cycles": sums["cycles"],
            "completed": sums["completed"],
            "interrupted_marked": sums["interrupted"],
            "committed_samples_checked": sums["samples"],
            "elapsed_s": round(elapsed, 1),
        },
    )
