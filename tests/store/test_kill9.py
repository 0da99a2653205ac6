"""kill -9 at random points: every reported commit survives, the file passes
integrity_check, the audit chain verifies, and recovery closes open cycles.

``CRYOD_KILL9_RUNS`` sets how many kills (default 20) for a longer soak.
"""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from cryod.daemon.store import recovery
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.record_check import check_record

from .conftest import sample_rows

CHILD = Path(__file__).with_name("kill_child.py")
RUNS = int(os.environ.get("CRYOD_KILL9_RUNS", "20"))
ROOT = Path(__file__).resolve().parents[2]


def run_and_kill(db: Path, console: str, rng: random.Random) -> list[str]:
    """Start the child, kill -9 it at a random point after its first cycle, return its output."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), console],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    out = b""
    try:
        deadline = time.monotonic() + 20
        while b"\nC " not in out and not out.startswith(b"C "):
            assert time.monotonic() < deadline, f"child never opened a cycle: {out!r}"
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"child exited: {proc.stderr.read().decode()}"
                out += chunk
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        out += proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return out.decode().splitlines()


def test_kill9_durability(db_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CRYOD_KILL9_SEED", "747")))
    engine = make_engine(db_path)
    totals = {"cycles": 0, "closed": 0, "interrupted": 0, "samples": 0}
    try:
        for run in range(RUNS):
            console = f"run{run}"
            lines = run_and_kill(db_path, console, rng)
            opened = {int(ln.split()[1]) for ln in lines if ln.startswith("C ")}
            closed = {int(ln.split()[1]) for ln in lines if ln.startswith("X ")}
            committed_samples = max(int(ln.split()[2]) for ln in lines if ln[0] in "CX")
            # a restart: integrity first, then recovery
            assert recovery.integrity_check(db_path) == []
            report = recovery.recover(engine)
            con = sqlite3.connect(db_path)
            try:
                outcome = dict(
                    con.execute(
                        "SELECT c.id, c.outcome FROM cycles c JOIN procedures p"
                        " ON p.id = c.procedure_id WHERE p.console = ?",
                        (console,),
                    ).fetchall()
                )
                have = len(
                    {
                        r[5]
                        for r in sample_rows(engine)
                        if r[0] == console and r[4] == "seq" and r[5] < committed_samples
                    }
                )
                (still_open,) = con.execute(
                    "SELECT count(*) FROM cycles WHERE outcome IS NULL"
                ).fetchone()
            finally:
                con.close()
            assert opened <= set(outcome), f"run {run}: committed cycles lost"
            assert all(outcome[c] == "completed" for c in closed)
            interrupted = {c.cycle_id for c in report.interrupted}
            # a kill between a close's COMMIT and the child's report leaves a completed
            # cycle the child never reported: every cycle is completed or interrupted
            completed = {c for c, o in outcome.items() if o == "completed"}
            assert closed <= completed
            assert interrupted | completed == set(outcome)
            assert not interrupted & completed
            assert all(outcome[c] == "interrupted" for c in interrupted)
            assert still_open == 0
            assert have == committed_samples, f"run {run}: committed samples lost"
            # the whole record verifies: every row and every sample batch committed
            # before the kill matches its chain entry (same transaction), none half-written
            record = check_record(db_path)
            assert record.ok, record.lines()
            totals["cycles"] += len(outcome)
            totals["closed"] += len(closed)
            totals["interrupted"] += len(interrupted)
            totals["samples"] += committed_samples
    finally:
        engine.dispose()
    assert totals["interrupted"] > 0  # the kills did land mid-cycle
    print(f"\nkill -9 x{RUNS}: {totals}")
