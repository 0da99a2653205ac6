"""``make soak``: hours of simulated procedures at high speed with random faults.

One cryod runs the whole time against cryosim over Modbus TCP:
open a procedure, run classic-double-90, close it, again and again; at random
moments a random fault is injected mid-freeze, cleared, acknowledged and reset
as an operator would. Every ``--sample-s`` the daemon's RSS, open file
descriptors and database size are sampled. The console is power-cycled every
``--swap-every`` runs (a new gas cylinder: the simulator has no refill), so the
daemon also reconnects and re-arms the lease many times.

Bounded means: RSS and file descriptors of the second half stay within a
margin of the first half's maximum, and the database grows by the samples it
stores, not faster (bytes per stored poll stable). The summary table and
one final JSON line are printed; the exit status is 0 only if every bound held
and the daemon never died.

    python -m tests.soak.run --hours 8            # the full soak
    python -m tests.soak.run --hours 0.1          # ~6 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryod.daemon.control import ControlError
from cryod.simulators.console import FAULT_KINDS, PROBE_FAULTS
from tests.e2e import harness
from tests.e2e.harness import Daemon, Sim, daemon_config
from tests.reliability.rig import fresh_procedure, log_problems, recover, valve_events, wait_for

RSS_MARGIN_KB = 16 * 1024  # second half may exceed the first half's peak by this much
FD_MARGIN = 4
BYTES_PER_ROW_DRIFT = 0.25  # relative change of db bytes per sample row, middle to end


def _proc_stats(pid: int) -> tuple[int, int]:
    rss = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _db_stats(db: Path) -> tuple[int, int, int]:
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.exists())
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        # stored polls (revision 0006: one row per poll, its probes and state changes apart)
        (rows,) = con.execute("SELECT count(*) FROM sample_polls").fetchone()
        (cycles,) = con.execute("SELECT count(*) FROM cycles").fetchone()
    finally:
        con.close()
    return size, int(rows), int(cycles)


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.samples: list[dict[str, Any]] = []
        self.runs = 0
        self.faults: dict[str, int] = {}
        self.swaps = 0
        self.errors: list[str] = []
        self.t0 = time.monotonic()
        self.next_sample = self.t0
        self.sim: Sim | None = None
        self.daemon: Daemon | None = None
        self.port: int | None = None

    # ------------------------------------------------------------ processes
    def _sim(self, seed: int) -> Sim:
        """cryosim on Modbus TCP, on the same port every time (the daemon's config)."""
        if self.port is None:
            sim = Sim(self.workdir, speed=self.args.speed, seed=seed)
            self.port = sim.port
            return sim
        real, harness.free_port = harness.free_port, lambda: self.port
        try:
            return Sim(self.workdir, speed=self.args.speed, seed=seed)
        finally:
            harness.free_port = real

    def start(self) -> None:
        self.sim = self._sim(self.args.seed)
        cfg = daemon_config(self.workdir, self.sim, speed=self.args.speed, lease_timeout_ms=500)
        self.daemon = Daemon(cfg, self.workdir)

    def swap_console(self) -> None:
        """Power-cycle the console (a full cylinder); the daemon must relink and re-arm."""
        assert self.sim is not None
        assert self.daemon is not None
        self.sim.stop()
        self.sim = self._sim(self.rng.randrange(1000))
        self.swaps += 1
        d = self.daemon
        wait_for(
            lambda: (s := d.status())["link"]["connected"] and s["snapshot"] is not None,
            30,
            "the daemon to relink",
            every=0.2,
        )
        recover(d, self.sim, timeout=30)
        wait_for(lambda: d.status()["snapshot"]["lease"]["armed"], 10, "the lease re-armed")

    def stop(self) -> int:
        rc = -1
        if self.daemon is not None and self.daemon.proc.poll() is None:
            rc = self.daemon.stop()
        if self.sim is not None:
            self.sim.stop()
        return rc

    # ------------------------------------------------------------ work
    def sample(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.next_sample:
            return
        self.next_sample = now + self.args.sample_s
        assert self.daemon is not None
        rss, fds = _proc_stats(self.daemon.proc.pid)
        size, rows, cycles = _db_stats(self.workdir / "cryod.db")
        st = self.daemon.status()
        self.samples.append(
            {
                "t_min": round((now - self.t0) / 60, 1),
                "rss_kb": rss,
                "fds": fds,
                "db_bytes": size,
                "sample_rows": rows,
                "cycles": cycles,
                "runs": self.runs,
                "faults": sum(self.faults.values()),
                "late_polls": st["poll"]["late_polls"],
            }
        )
        s = self.samples[-1]
        print(
            f"{s['t_min']:7.1f} min  rss {rss / 1024:6.1f} MiB  fds {fds:3d}  "
            f"db {size / 2**20:7.1f} MiB  rows {rows:9d}  runs {self.runs:4d}  "
            f"faults {s['faults']:4d}",
            flush=True,
        )

    def wait_run_end(self, timeout: float) -> str:
        assert self.daemon is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sample()
            state = str(self.daemon.status()["engine"]["state"])
            if state not in ("precheck", "freezing", "thawing", "hold"):
                return state
            time.sleep(0.2)
        return "timeout"

    def one_run(self) -> None:
        assert self.sim is not None
        assert self.daemon is not None
        d, sim = self.daemon, self.sim
        probe = 1 + self.runs % 8
        fresh_procedure(d)
        t = time.monotonic()
        d.call("run", {"protocol": "classic-double-90", "probes": [probe]})
        self.runs += 1
        inject = self.rng.random() < self.args.fault_rate
        if inject:
            wait_for(lambda: valve_events(sim, probe=probe, is_open=True, after=t), 10, "valve")
            time.sleep(self.rng.uniform(0.2, 90 / self.args.speed * 0.8))
            kind = self.rng.choice(FAULT_KINDS)
            args = ["fault", kind]
            if kind in PROBE_FAULTS:
                args += ["--probe", str(probe)]
            if kind == "temp-offset":
                args += ["--value", "-80"]
            sim.ctl(*args)
            self.faults[kind] = self.faults.get(kind, 0) + 1
            time.sleep(self.rng.uniform(0.5, 2.0))
            sim.ctl("clear")
            if str(d.status()["engine"]["state"]) in ("precheck", "freezing", "thawing", "hold"):
                with contextlib.suppress(ControlError):
                    d.call("abort")
        end = self.wait_run_end(60 + 400 / self.args.speed)
        if end == "timeout":
            self.errors.append(f"run {self.runs}: did not end")
        recover(d, sim, timeout=30)
        d.call("procedure_close", {"notes": "soak", "adverse_events": []})

    def loop(self) -> None:
        deadline = self.t0 + self.args.hours * 3600
        self.sample(force=True)
        while time.monotonic() < deadline:
            if self.daemon is None or self.daemon.proc.poll() is not None:
                self.errors.append("cryod died")
                return
            try:
                self.one_run()
                if self.runs % self.args.swap_every == 0:
                    self.swap_console()
            except (AssertionError, ControlError, OSError) as exc:
                self.errors.append(f"run {self.runs}: {exc}")
                if len(self.errors) > 10:
                    return
        self.sample(force=True)

    # ------------------------------------------------------------ verdict
    def verdict(self, rc: int) -> dict[str, Any]:
        s = self.samples
        half = max(1, len(s) // 2)
        first, second = s[:half], s[half:] or s[-1:]
        rss_peak1 = max(x["rss_kb"] for x in first)
        rss_peak2 = max(x["rss_kb"] for x in second)
        fds1 = max(x["fds"] for x in first)
        fds2 = max(x["fds"] for x in second)

        def per_row(x: dict[str, Any]) -> float:
            return float(x["db_bytes"]) / max(1, x["sample_rows"])

        # the WAL (up to ~4 MiB before a checkpoint) dominates a small database: compare
        # the end with the middle of the run once the middle holds enough rows
        mid = s[len(s) // 2]
        drift = (
            abs(per_row(s[-1]) - per_row(mid)) / per_row(mid)
            if mid["sample_rows"] >= 100_000
            else 0.0
        )
        checks = {
            "rss_bounded": rss_peak2 <= rss_peak1 + RSS_MARGIN_KB,
            "fds_bounded": fds2 <= fds1 + FD_MARGIN,
            "db_bytes_per_row_stable": drift <= BYTES_PER_ROW_DRIFT,
            "daemon_exit_0": rc == 0,
            "no_errors": not self.errors,
            "no_exceptions_logged": not log_problems(self.workdir / "cryod.log"),
        }
        return {
            "soak": "cryod",
            "hours": round((time.monotonic() - self.t0) / 3600, 3),
            "speed": self.args.speed,
            "seed": self.args.seed,
            "runs": self.runs,
            "console_swaps": self.swaps,
            "faults": self.faults,
            "rss_kb_first_half_peak": rss_peak1,
            "rss_kb_second_half_peak": rss_peak2,
            "rss_kb_start": s[0]["rss_kb"],
            "rss_kb_end": s[-1]["rss_kb"],
            "fds_first_half_peak": fds1,
            "fds_second_half_peak": fds2,
            "db_bytes_end": s[-1]["db_bytes"],
            "db_bytes_per_sample_row": round(per_row(s[-1]), 1),
            "db_bytes_per_row_drift": round(drift, 3),
            "sample_rows": s[-1]["sample_rows"],
            "cycles": s[-1]["cycles"],
            "errors": self.errors,
            "checks": checks,
            "ok": all(checks.values()),
            "workdir": str(self.workdir),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.soak.run", description=__doc__.split("\n")[0])
    p.add_argument("--hours", type=float, default=8.0)
    p.add_argument("--speed", type=float, default=20.0, help="simulated seconds per wall second")
    p.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples")
    p.add_argument("--fault-rate", type=float, default=0.3, help="share of runs with a fault")
    p.add_argument("--swap-every", type=int, default=25, help="runs between console power-cycles")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workdir", default=None, help="kept after the run (default: a new temp dir)")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 2**31)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cryod-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"soak: {args.hours} h at speed {args.speed}, seed {args.seed}, workdir {workdir}")
    soak = Soak(args, workdir)
    rc = -1
    try:
        soak.start()
        soak.loop()
    except KeyboardInterrupt:
        soak.errors.append("interrupted")
    finally:
        rc = soak.stop()
    result = soak.verdict(rc)
    print()
    print(
        f"{'min':>7} {'rss MiB':>8} {'fds':>4} {'db MiB':>8} {'rows':>9} {'cycles':>6} {'runs':>5}"
    )
    for s in soak.samples:
        print(
            f"{s['t_min']:7.1f} {s['rss_kb'] / 1024:8.1f} {s['fds']:4d} "
            f"{s['db_bytes'] / 2**20:8.1f} {s['sample_rows']:9d} {s['cycles']:6d} {s['runs']:5d}"
        )
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
