"""CPU of the daemon at two commits, on this machine, in alternating runs.

A full ``make bench`` on another day may run on a faster or slower machine (the
same description can hide a three-fold difference in the link's round trip), so
what a change saved is measured here: the steady 8-probe freeze over Modbus TCP
(the bench's rig, the daemon's default lease, broker and log on), once in a git
worktree of REF and once in this tree, alternately, ``--rounds`` times. Each run
is a fresh rig with ``--windows`` windows of ``--window-s`` seconds; per window
the daemon's CPU % of a core and its two busiest threads (the event loop and the
storage thread), from /proc, and the poll jitter p99 beside the bare asyncio loop's
(``tests/bench/floor.py``) in the same window. ``--slow-disk-ms N`` delays every fsync
of both daemons by N ms (``tests/bench/slowdisk.c``, as for the bench's
``jitter_ms_p99_disk_slow``); each run then prints the writer's mean batch time, which
shows the disk really was slow.

    .venv/bin/python -m tests.bench.compare HEAD~1 --rounds 3
    .venv/bin/python -m tests.bench.compare 180c435 --rounds 3 --window-s 15 --slow-disk-ms 100

Prints one line per window and, last, one JSON object with the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]


def _thread_cpu_s(pid: int) -> dict[str, float]:
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/comm") as fh:
                name = fh.read().strip()
        except OSError:
            continue
        out[f"{tid}:{name}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def child(windows: int, window_s: float, fsync_ms: int) -> int:
    """Runs inside the tree under test (its ``tests`` and ``cryod`` on sys.path)."""
    from tests.bench import scenarios, steady

    root = Path(tempfile.mkdtemp(prefix="cryod-compare-"))
    daemon_env: dict[str, str] = {}
    if fsync_ms:
        from tests.bench import slowdisk  # trees before 6724e8c have none

        lib = slowdisk.build(root)
        if lib is None:
            print("no C compiler to build tests/bench/slowdisk.c", file=sys.stderr)
            return 2
        daemon_env = slowdisk.env(lib, fsync_ms)
    with (
        scenarios.workdir(root, "steady") as wd,
        # the lease named: older trees' rigs defaulted to 500 ms, not the daemon's 1000
        scenarios.rig(wd, ["modbus-tcp"], lease_timeout_ms=1000, daemon_env=daemon_env) as (
            _s,
            d,
            _b,
        ),
    ):
        steady.start_freeze_all(d)
        time.sleep(2.0)
        for _ in range(windows):
            before = _thread_cpu_s(d.pid)
            w = steady.window(d, window_s, 20.0)
            after = _thread_cpu_s(d.pid)
            busy = sorted(
                (round(100 * (after[k] - before.get(k, 0.0)) / w["wall_s"], 2) for k in after),
                reverse=True,
            )
            print(
                json.dumps(
                    {
                        "cpu_pct_of_core": w["cpu_pct_of_core"],
                        "loop_thread_pct": busy[0],
                        "second_thread_pct": busy[1] if len(busy) > 1 else 0.0,
                        "jitter_ms_p99": w["jitter_ms"]["p99"],
                        "jitter_floor_ms_p99": w["jitter_floor_ms"]["p99"],
                    }
                ),
                flush=True,
            )
        if fsync_ms:
            print(f"writer mean batch {d.polls()['writer']['mean_batch_ms']} ms", flush=True)
    return 0


def _run(
    label: str, tree: Path, windows: int, window_s: float, fsync_ms: int
) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run(
        [sys.executable, str(HERE), "--child", str(windows), str(window_s), str(fsync_ms)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120 + windows * (window_s + 30),
        check=True,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("writer "):
            print(f"  {label}: {line}", flush=True)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _fsync_ms(text: str) -> int:
    """``--slow-disk-ms``: a whole number of milliseconds, 0 or more (slowdisk.c's
    nanosleep would retry a negative delay forever and hang the daemon's writer)."""
    try:
        ms = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of milliseconds: {text!r}") from None
    if ms < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {ms}")
    return ms


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.compare", description=__doc__)
    ap.add_argument("ref", nargs="?", default="HEAD~1", help="the commit to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--window-s", type=float, default=10.0)
    ap.add_argument(
        "--slow-disk-ms",
        type=_fsync_ms,
        default=0,
        help="delay every fsync of both daemons by this many ms (0: the real disk)",
    )
    ap.add_argument(
        "--child", nargs=3, metavar=("WINDOWS", "WINDOW_S", "FSYNC_MS"), help=argparse.SUPPRESS
    )
    args = ap.parse_args(argv)
    if args.child:
        return child(int(args.child[0]), float(args.child[1]), int(args.child[2]))
    if args.slow_disk_ms and not (shutil.which("cc") or shutil.which("gcc")):
        ap.error("--slow-disk-ms needs a C compiler (cc or gcc) to build tests/bench/slowdisk.c")
    found = subprocess.run(
        ["git", "rev-parse", "--short", "--verify", "--quiet", f"{args.ref}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        ap.error(f"ref: no commit {args.ref!r} in {REPO}")
    sha = found.stdout.strip()
    with tempfile.TemporaryDirectory(prefix="cryod-compare-") as tmp:
        ref_tree = Path(tmp) / sha
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(ref_tree), sha],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        try:
            got: dict[str, list[dict[str, Any]]] = {sha: [], "this tree": []}
            for r in range(args.rounds):
                for label, tree in ((sha, ref_tree), ("this tree", REPO)):
                    rows = _run(label, tree, args.windows, args.window_s, args.slow_disk_ms)
                    for row in rows:
                        print(f"round {r + 1} {label:>10}: {json.dumps(row)}", flush=True)
                    got[label] += rows
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(ref_tree)],
                cwd=REPO,
                capture_output=True,
                check=False,
            )
    keys = (
        "cpu_pct_of_core",
        "loop_thread_pct",
        "second_thread_pct",
        "jitter_ms_p99",
        "jitter_floor_ms_p99",
    )
    summary = {
        label: {
            "windows": len(rows),
            **{f"median_{k}": _median(rows, k) for k in keys},
            "cpu_pct_range": [
                min(r["cpu_pct_of_core"] for r in rows),
                max(r["cpu_pct_of_core"] for r in rows),
            ],
        }
        for label, rows in got.items()
        if rows
    }
    print(
        json.dumps(
            {
                "ref": sha,
                "window_s": args.window_s,
                "slow_disk_ms": args.slow_disk_ms,
                "summary": summary,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
