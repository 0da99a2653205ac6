"""A publisher in its own process, so a test can kill -9 or SIGSTOP it.

Usage: python -m tests.mqtt.publisher_proc PORT KEEPALIVE_S CLIENT_ID [LAST_SEEN_S]
It connects, publishes a retained state, then idles until killed (refreshing its
retained last_seen every LAST_SEEN_S, default 10).
"""

from __future__ import annotations

import asyncio
import sys
import time

from cryod.daemon.telemetry.config import MqttConfig
from cryod.daemon.telemetry.payloads import state_body
from cryod.daemon.telemetry.publisher import MemoryOutbox, Publisher


async def main(port: int, keepalive_s: int, client_id: str, last_seen_s: float) -> None:
    cfg = MqttConfig(
        port=port, site="demo", console="killme", client_id=client_id, keepalive_s=keepalive_s
    )
    pub = Publisher(
        cfg,
        session=42,
        software_version="test",
        outbox=MemoryOutbox(),
        last_seen_s=last_seen_s,
    )
    pub.start()
    pub.publish_event("state", state_body(t_utc_s=time.time(), engine_state="idle"))
    await asyncio.Event().wait()


if __name__ == "__main__":
    last_seen_s = float(sys.argv[4]) if len(sys.argv) > 4 else 10.0
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], last_seen_s))
