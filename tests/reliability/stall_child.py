"""Child for the event-loop stall test: cryod's ``Daemon`` in this process, whose
event loop is then blocked on purpose.

Usage: ``python stall_child.py CONFIG DELAY_S STALL_S``. Once the console's
engine is freezing it waits ``DELAY_S``, prints ``STALL <monotonic>``, blocks
the whole loop with ``time.sleep(STALL_S)`` (as a runaway computation or a
blocking call on the loop would) and prints ``RESUMED <monotonic>``. No hook
in the daemon: the blocking coroutine is ours, scheduled on the daemon's loop.
"""

from __future__ import annotations

import asyncio
import sys
import time

from cryod.daemon.config import load_config
from cryod.daemon.logging import configure_logging
from cryod.daemon.service import Daemon


async def _stall(daemon: Daemon, delay_s: float, stall_s: float) -> None:
    while not any(str(svc.state.phase) == "freezing" for svc in daemon.consoles.values()):
        await asyncio.sleep(0.01)
    await asyncio.sleep(delay_s)
    print(f"STALL {time.monotonic():.6f}", flush=True)
    time.sleep(stall_s)  # the loop is blocked: no poll, no lease renewal, no ping
    print(f"RESUMED {time.monotonic():.6f}", flush=True)


async def main(config: str, delay_s: float, stall_s: float) -> int:
    loaded = load_config(config)
    configure_logging(loaded.cfg.daemon.log_level)
    daemon = Daemon(loaded)
    staller = asyncio.create_task(_stall(daemon, delay_s, stall_s))
    try:
        return await daemon.run()
    finally:
        staller.cancel()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))))
