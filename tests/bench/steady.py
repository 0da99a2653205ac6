"""Steady-state figures: poll jitter, CPU and memory of the daemon, samples logged.

A window starts by clearing the daemon's in-memory poll lateness record
(``bench_polls``) and reading /proc/PID/stat; it ends by reading both again.
Jitter is each poll's start time minus its scheduled time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from .procs import DEMO_PROCEDURE, REPO, BenchDaemon, proc_cpu_s, proc_rss_mb
from .stats import summary


def start_freeze_all(d: BenchDaemon, console: str | None = None, probes: int = 8) -> None:
    """A protocol freeze on every probe (the steady 8-probe load of the targets)."""
    args: dict[str, Any] = {} if console is None else {"console": console}
    d.call("procedure_open", {**DEMO_PROCEDURE, **args})
    d.call("run", {**args, "protocol": "classic-double-90", "probes": list(range(1, probes + 1))})
    deadline = time.monotonic() + 20
    engine: Any = None
    while time.monotonic() < deadline:
        for c in d.status()["consoles"]:
            if console is None or c["id"] == console:
                engine = c["engine"]
                if engine["state"] == "freezing":
                    return
        time.sleep(0.05)
    raise RuntimeError(f"the 8-probe freeze did not start on {console or 'c1'}: {engine}")


def window(d: BenchDaemon, seconds: float, hz: float) -> dict[str, Any]:
    """Measure one window of ``seconds`` on a running daemon."""
    floor = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.floor", str(seconds), str(hz)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    before = d.polls(clear=True)
    cpu0, t0 = proc_cpu_s(d.pid), time.monotonic()
    time.sleep(seconds)
    after = d.polls()
    cpu1, t1 = proc_cpu_s(d.pid), time.monotonic()
    out, _ = floor.communicate(timeout=seconds + 30)
    floor_ms = json.loads(out)
    wall = t1 - t0
    lateness_ms: list[float] = []
    polls = late = 0
    for b, a in zip(before["consoles"], after["consoles"], strict=True):
        lateness_ms += [x * 1000 for x in a["lateness_s"]]
        polls += a["polls"] - b["polls"]
        late += a["late_polls"] - b["late_polls"]
    n_consoles = len(after["consoles"])
    gc_ms = [p[1] * 1000 for p in after["gc_pauses"]]
    gc_gen2_ms = [p[1] * 1000 for p in after["gc_pauses"] if p[0] == 2]
    written = after["writer"]["written"] - before["writer"]["written"]
    return {
        "wall_s": round(wall, 2),
        "consoles": n_consoles,
        "poll_hz": hz,
        "polls": polls,
        "expected_polls": round(wall * hz * n_consoles),
        "late_polls": late,
        "jitter_ms": summary(lateness_ms, 3),
        "jitter_floor_ms": summary(floor_ms, 3),
        "cpu_pct_of_core": round(100 * (cpu1 - cpu0) / wall, 2),
        "rss_mb": round(proc_rss_mb(d.pid), 1),
        "samples_logged_per_s": round(written / wall, 1),
        # written plus still queued: rows the writer holds in its open batch are not in either
        "samples_accounted": written + after["writer"]["queued"] - before["writer"]["queued"],
        "samples_dropped": after["writer"]["dropped"],
        "gc_runs": len(gc_ms),
        "gc_pause_ms_max": round(max(gc_ms, default=0.0), 3),
        "gc_gen2_runs": len(gc_gen2_ms),
        "writer_queued": after["writer"]["queued"],
    }
