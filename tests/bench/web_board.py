"""The board's lag behind the rooms: N rooms streaming telemetry at 2 Hz.

    python -m tests.bench.web_board                    # 100 rooms, 30 s
    python -m tests.bench.web_board --rooms 20 --seconds 10

A real mosquitto on a free port; ``cryohub web`` as its own process (SQLite
database, one user) subscribed to it; this process publishes each room's
telemetry (paho, QoS 0, as cryod does) with a tip value that names the
message, and reads the board's server-sent events as a logged-in browser
would. The lag of a value is the time from its publish to the first event
showing it. Reports p50/p99/max in ms and the share of published values
never shown (a newer value overtook it within one 0.25 s push: the board
shows the latest, by design); the last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2
import paho.mqtt.client as mqtt

from cryod.hub.cli import main as cryohub
from tests.bench.stats import percentile
from tests.mqtt.broker import Mosquitto, free_port

PASSWORD = "correct horse battery"


def _config(d: Path, broker_port: int) -> Path:
    (d / "anchors").mkdir()
    cfg = d / "cryohub.toml"
    cfg.write_text(
        f'[collector]\nid = "bench"\n[database]\nurl = "sqlite:///{d / "hub.db"}"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {broker_port}\n'
        '[anchors]\nfile = "anchors/a.jsonl"\njournal_socket = "/nonexistent/log"\n'
    )
    assert cryohub(["migrate", "--config", str(cfg)]) == 0
    r, w = os.pipe()
    os.write(w, f"{PASSWORD}\n".encode())
    os.close(w)
    try:
        code = cryohub(
            [
                "user",
                "add",
                "boss",
                "--role",
                "admin",
                "--config",
                str(cfg),
                "--password-fd",
                str(r),
            ]
        )
    finally:
        os.close(r)
    assert code == 0
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--hz", type=float, default=2.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        broker = Mosquitto(d / "broker")
        broker.start()
        port = free_port()
        cfg = _config(d, broker.port)
        web = subprocess.Popen(
            [sys.executable, "-m", "cryod.hub.cli", "web", "--config", str(cfg),
             "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-rooms")
        published: dict[float, float] = {}
        lags: list[float] = []
        stop = threading.Event()
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx2.get(f"{base}/healthz", timeout=2)
                    break
                except httpx2.TransportError:
                    assert time.monotonic() < deadline, "cryohub web did not start"
                    time.sleep(0.1)
            client = httpx2.Client(base_url=base, timeout=30)
            token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
            assert token is not None
            client.post(
                "/login",
                data={"csrf": token.group(1), "username": "boss", "password": PASSWORD},
            )

            def read() -> None:
                seen: set[float] = set()
                with client.stream("GET", "/board/events") as stream:
                    for line in stream.iter_lines():
                        if stop.is_set():
                            return
                        if not line.startswith("data: "):
                            continue
                        now = time.monotonic()
                        for room in json.loads(line[6:])["rooms"]:
                            for p in room["probes"]:
                                v = p["tip_c"]
                                if v in published and v not in seen:
                                    seen.add(v)
                                    lags.append(now - published[v])

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            n = 0
            period = 1.0 / args.hz
            t_end = time.monotonic() + args.seconds
            next_round = time.monotonic()
            while time.monotonic() < t_end:
                for r in range(args.rooms):
                    n += 1
                    value = -float(n) / 1000.0  # names the message
                    body = {
                        "schema": "cryod.mqtt/1", "session": 1, "seq": n, "ts_ms": 0,
                        "supply_kpa": 5200.0, "supply_validity": "valid",
                        "probes": [{"probe": 1, "tip_c": value, "tip_validity": "valid"}],
                        "link": {"connected": True},
                    }  # fmt: skip
                    published[value] = time.monotonic()
                    pub.publish(f"cryod/v1/site{r % 4}/room{r}/telemetry", json.dumps(body))
                next_round += period
                time.sleep(max(0.0, next_round - time.monotonic()))
            time.sleep(2.0)  # the last values reach the board
            stop.set()
        finally:
            pub.disconnect()
            pub.loop_stop()
            web.send_signal(signal.SIGTERM)
            web.wait(timeout=60)
            broker.stop()
    ms = [x * 1000.0 for x in lags]
    print(
        json.dumps(
            {
                "rooms": args.rooms,
                "hz": args.hz,
                "seconds": args.seconds,
                "published": len(published),
                "shown": len(ms),
                "lag_ms": {q: round(percentile(ms, q), 1) for q in (50, 99, 100)},
            }
        )
    )


if __name__ == "__main__":
    main()
