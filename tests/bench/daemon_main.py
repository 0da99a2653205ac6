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
import os
import sys
from typing import Any

from cryod.daemon.config import ConfigError, load_config
from cryod.daemon.control import Peer
from cryod.daemon.logging import configure_logging
from cryod.daemon.service import Daemon


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
            return {
                "pid": os.getpid(),
                "consoles": out,
                "writer": None
                if w is None
                else {
                    "written": w.samples_written,
                    "dropped": w.samples_dropped_full,
                    "queued": w.queued_samples,
                    "healthy": w.healthy,
                },
            }

        handlers["bench_polls"] = bench_polls
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
    return asyncio.run(BenchDaemon(loaded).run())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
