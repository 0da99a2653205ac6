"""The pieces a live test runs: the web app under uvicorn in a thread, a room
publishing telemetry through a real mosquitto (paho, from the test's thread)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import uvicorn
from starlette.applications import Starlette

from tests.mqtt.broker import free_port


@contextlib.contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """The app on a free loopback port; its base URL. Stopped and joined on exit."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30.0
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the web app did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30.0)
        assert not thread.is_alive(), "uvicorn did not stop"


class RoomPublisher:
    """Publishes what a room's cryod publishes (docs/mqtt.md), one message at a time."""

    def __init__(self, port: int, site: str, console: str) -> None:
        self.base = f"cryod/v1/{site}/{console}"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-room-{site}-{console}"
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.seq = 0

    def publish(self, what: str, body: dict[str, Any], *, retain: bool = False) -> None:
        self.seq += 1
        doc = {"schema": "cryod.mqtt/1", "session": 1, "seq": self.seq, "ts_ms": 0, **body}
        info = self.client.publish(f"{self.base}/{what}", json.dumps(doc), qos=1, retain=retain)
        info.wait_for_publish(timeout=10.0)

    def telemetry(self, tips: dict[int, float | None], supply_kpa: float = 5200.0) -> None:
        self.publish(
            "telemetry",
            {
                "supply_kpa": supply_kpa,
                "supply_validity": "valid",
                "probes": [
                    {
                        "probe": n,
                        "tip_c": t,
                        "tip_validity": "valid" if t is not None else "stale",
                        "freeze_open": True,
                        "thaw_on": False,
                    }
                    for n, t in sorted(tips.items())
                ],
                "link": {"connected": True, "timeouts": 0, "retries": 0, "reconnects": 0},
            },
        )

    def state(self, phase: str, remaining_s: float, probe: int = 1, cycle: int = 1) -> None:
        self.publish(
            "state",
            {
                "engine_state": "running",
                "phase": phase,
                "probe": probe,
                "cycle": cycle,
                "remaining_s": remaining_s,
                "procedure_id": 3,
                "protocol": "classic-90",
                "safe": False,
            },
            retain=True,
        )

    def alarms(self, *alarms: tuple[str, str, str]) -> None:
        self.publish(
            "alarms/active",
            {
                "count": len(alarms),
                "alarms": [
                    {
                        "alarm_id": i,
                        "code": code,
                        "priority": prio,
                        "probe": 1,
                        "raised_ts_ms": 0,
                        "acknowledged": False,
                        "latched": prio == "high",
                        "message": message,
                    }
                    for i, (prio, code, message) in enumerate(alarms, 1)
                ],
            },
            retain=True,
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # paho keeps its wake-up socket pair until the client is collected
        self.client._reset_sockets(sockpair_only=True)
