"""The machine's own scheduling jitter: a bare asyncio loop on the daemon's schedule.

Run beside a measurement window (``python -m tests.bench.floor SECONDS HZ``), it
prints the lateness of each wake-up in ms as JSON: what any asyncio process on
this machine, at this moment, would see. The daemon's jitter is read against it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def _run(seconds: float, hz: float) -> list[float]:
    period = 1.0 / hz
    start = time.monotonic()
    out: list[float] = []
    k = 0
    while time.monotonic() - start < seconds:
        k += 1
        deadline = start + k * period
        delay = deadline - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        out.append((time.monotonic() - deadline) * 1000)
    return out


def main(argv: list[str]) -> int:
    seconds, hz = float(argv[0]), float(argv[1])
    print(json.dumps([round(x, 4) for x in asyncio.run(_run(seconds, hz))]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
