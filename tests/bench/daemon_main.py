"""``cryod run`` for the benchmark: the real daemon, plus one read-only control command.

The service keeps each console's poll lateness in memory
(``ConsoleService.poll_starts``) but does not publish it; rather than widen
the production status, this entry point runs the unchanged ``Daemon`` in
process and adds ``bench_polls``, which returns (and optionally clears) those
figures. Everything else, start-up order and sd_notify included, is the same
code path as ``cryod run``.
"""

from __future__ import annotations

import asyncio
import gc
import io
import os
import sys
import time
from typing import Any

from cryod.daemon.config import ConfigError, load_config
from cryod.daemon.control import Peer
from cryod.daemon.logging import configure_logging
from cryod.daemon.service import Daemon


class GcPauses:
    """Durations of the cyclic garbage collector's runs (they stop the event loop)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._t0 = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((int(info["generation"]), time.perf_counter() - self._t0))


GC = GcPauses()


class BenchDaemon(Daemon):
    def _handlers(self) -> dict[str, Any]:
        handlers = super()._handlers()

        async def bench_polls(args: dict[str, Any], peer: Peer) -> Any:
            out = []
            for svc in self.consoles.values():
                out.append(
                    {
                        "id": svc.id,
                        "polls": svc.polls,
                        "late_polls": svc.late_polls,
                        "lateness_s": list(svc.poll_starts),
                    }
                )
                if args.get("clear"):
                    svc.poll_starts.clear()
            w = self.writer.status() if self.writer is not None else None
            pauses = list(GC.pauses)
            if args.get("clear"):
                GC.pauses.clear()
            return {
                "pid": os.getpid(),
                "gc_pauses": pauses,
                "consoles": out,
                "writer": None
                if w is None
                else {
                    "written": w.samples_written,
                    "dropped": w.samples_dropped_full,
                    "queued": w.queued_samples,
                    "healthy": w.healthy,
                    "mean_batch_ms": None
                    if not w.batches or not w.sample_rows_per_s
                    else round(1000 * w.samples_written / w.sample_rows_per_s / w.batches, 2),
                },
            }

        async def bench_tasks(args: dict[str, Any], peer: Peer) -> Any:
            """Every asyncio task and where it waits (to diagnose a stall)."""
            out = []
            for task in asyncio.all_tasks():
                buf = io.StringIO()
                task.print_stack(limit=8, file=buf)
                out.append(buf.getvalue())
            return out

        handlers["bench_polls"] = bench_polls
        handlers["bench_tasks"] = bench_tasks
        return handlers


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.bench.daemon_main CONFIG", file=sys.stderr)
        return 2
    try:
        loaded = load_config(argv[0])
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2
    configure_logging(loaded.cfg.daemon.log_level)
    profile_to = os.environ.get("CRYOD_BENCH_CPROFILE")
    if not profile_to:
        return asyncio.run(BenchDaemon(loaded).run())
    # where the event loop's CPU goes (the writer's worker thread is not included)
    import cProfile

    prof = cProfile.Profile(time.thread_time)
    prof.enable()
    try:
        return asyncio.run(BenchDaemon(loaded).run())
    finally:
        prof.disable()
        prof.dump_stats(profile_to)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
