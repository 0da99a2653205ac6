"""No MQTT topic can move a valve: a real cryod with MQTT configured, a broker that
lets anyone publish anything, and an attacker who does.

tests/mqtt/test_security.py proves the broker side (TLS, passwords, ACL) with
the publisher in-process. This adds the daemon side with the real process:
commands published on every topic of the daemon's tree, on command-like
topics beside it, with retain, and on wildcard topics, change nothing at the
console (simulator event log), in the daemon (status, operator actions), and
the daemon never subscribes (broker log).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest

from tests.e2e.harness import DEMO_PROCEDURE, Daemon, Sim, daemon_config
from tests.mqtt.broker import Collector, Mosquitto

from .rig import actions, fingerprint, valve_events
from .test_broker_flapping import mqtt_section

pytestmark = [pytest.mark.timeout(120), pytest.mark.needs_mosquitto]

BASE = "cryod/v1/test/c1"
TREE = ["status", "telemetry", "state", "alarms", "alarms/active", "cycles"]
GUESSES = [
    "cmd", "command", "commands", "control", "set", "rpc", "request", "write", "valve",
    "freeze", "thaw", "run", "abort", "reset", "ack", "lease", "config", "procedure",
    "cmd/freeze", "set/valve/1", "probes/1/freeze", "c1/cmd",
]  # fmt: skip
OTHER = [
    "cryod/v1/test/cmd", "cryod/v1/cmd", "cryod/cmd", "cryod", "cryod/v2/test/c1/cmd",
    "cryod/v1/test/c1/", "cryod/v1/test//c1/cmd", "$SYS/cryod/cmd", "cryod/v1/test/c1/status/set",
]  # fmt: skip
WILDCARD = ["cryod/v1/+/c1/cmd", "cryod/v1/test/c1/#", "cryod/#", "+/+/+/+/freeze"]
PAYLOADS = [
    json.dumps({"cmd": "freeze", "args": {"probe": 1, "seconds": 60}}).encode(),
    json.dumps({"id": 1, "cmd": "run", "args": {"protocol": "classic-double-90"}}).encode(),
    json.dumps({"freeze_open": True, "probe": 1, "master_open": True}).encode(),
    b"FREEZE 1 60",
    b"\x00\xff" * 64,
]


def _topics() -> list[str]:
    return [f"{BASE}/{t}" for t in TREE + GUESSES] + OTHER


async def test_no_mqtt_topic_moves_a_valve(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")  # anonymous: the attacker may publish anywhere
    broker.start()
    sim = d = None
    published = refused = 0
    try:
        sim = Sim(tmp_path, speed=20.0)
        cfg = daemon_config(tmp_path, sim, speed=20.0, extra=mqtt_section(broker.port))
        d = await asyncio.to_thread(Daemon, cfg, tmp_path)
        async with Collector(broker.port, f"{BASE}/#", client_id="observer") as obs:
            await obs.wait_for(lambda m: m.topic.endswith("/status"), timeout_s=10)
        # a procedure is open: a freeze command would be accepted from the socket
        await asyncio.to_thread(d.call, "procedure_open", DEMO_PROCEDURE)
        await asyncio.to_thread(d.after_polls)  # settled before the fingerprint
        before = await asyncio.to_thread(fingerprint, d)
        valves = len(valve_events(sim))
        n_actions = len(actions(tmp_path / "cryod.db"))
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="attacker") as atk:
            for topic in _topics():
                for payload in PAYLOADS:
                    for retain in (False, True):
                        await atk.publish(topic, payload, qos=1, retain=retain)
                        published += 1
            for topic in WILDCARD:
                with pytest.raises((ValueError, aiomqtt.MqttError)):
                    await atk.publish(topic, PAYLOADS[0], qos=1)
                refused += 1
        t_pub = (await asyncio.to_thread(d.call, "status"))["mqtt"][0]["published"]["telemetry"]
        # 40 polls (counted, not assumed): a valve moved by MQTT would show by now
        await asyncio.to_thread(d.after_polls, 40)
        after = await asyncio.to_thread(fingerprint, d)
        status = await asyncio.to_thread(d.call, "status")
    finally:
        if d is not None:
            await asyncio.to_thread(d.stop)
        if sim is not None:
            sim.stop()
        broker.stop()
    assert after == before
    assert len(valve_events(sim)) == valves, valve_events(sim)[valves:]
    assert len(actions(tmp_path / "cryod.db")) == n_actions
    # positive control: the daemon stayed connected to the same broker and kept publishing
    mq = status["mqtt"][0]
    assert mq["connected"] is True, mq
    assert mq["connections"] == 1, mq
    assert mq["published"]["telemetry"] > t_pub, mq
    log = broker.log()
    client_id = "cryod-test-c1"
    assert "New client connected from 127.0.0.1" in log
    assert client_id in log
    assert f"Received SUBSCRIBE from {client_id}" not in log
    assert "Received SUBSCRIBE from observer" in log  # the broker log does show subscriptions
    print(
        f"{published} attacker publishes on {len(_topics())} topics (+{refused} wildcard "
        "topics refused by the client library): no valve event, state unchanged, "
        "no operator action, the daemon never subscribed"
    )
