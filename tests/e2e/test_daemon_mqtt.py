"""End to end with MQTT: a real cryod publishes to a real mosquitto while it runs a
protocol; every message a subscriber sees validates against docs/asyncapi.yaml,
carries no personal data, and the cycles arrive once each, in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from tests.mqtt.asyncapi import validate
from tests.mqtt.broker import Collector, Mosquitto

from .harness import DEMO_PROCEDURE, Daemon, Sim, daemon_config

SPEED = 40.0


@contextlib.asynccontextmanager
async def mqtt_rig(
    tmp_path: Path, client_id: str, mqtt_extra: str = ""
) -> AsyncIterator[tuple[Daemon, Sim, Collector]]:
    """A real mosquitto, cryosim and cryod publishing to it, and a subscriber that was
    listening before cryod started; all stopped after."""
    broker = Mosquitto(tmp_path / "mq")
    broker.start()
    sim = await asyncio.to_thread(Sim, tmp_path, speed=SPEED)
    daemon: Daemon | None = None
    try:
        async with Collector(broker.port, client_id=client_id) as col:
            cfg = daemon_config(
                tmp_path,
                sim,
                speed=SPEED,
                extra=f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nsite = "test"\n'
                + mqtt_extra,
            )
            daemon = await asyncio.to_thread(Daemon, cfg, tmp_path)
            yield daemon, sim, col
    finally:
        if daemon is not None:
            await asyncio.to_thread(daemon.stop)
        await asyncio.to_thread(sim.stop)
        broker.stop()


async def test_daemon_publishes_valid_telemetry_and_cycles(tmp_path: Path) -> None:
    async with mqtt_rig(tmp_path, "e2e-collector", "keepalive_s = 5\n") as (d, _sim, col):
        pid = (await asyncio.to_thread(d.call, "procedure_open", DEMO_PROCEDURE))["procedure_id"]
        await asyncio.to_thread(
            d.call, "run", {"protocol": "morton-neuroma-cazzato2016", "probes": [1]}
        )
        final = await asyncio.to_thread(
            d.wait_state, {"complete", "fault", "aborted", "stopped"}, 60
        )
        assert final["engine"]["state"] == "complete", final
        await asyncio.to_thread(d.call, "procedure_close", {"notes": "mqtt e2e"})
        await col.wait_for(
            lambda m: m.topic.endswith("/cycles") and m.payload.get("phase") == "thaw",
            timeout_s=10,
        )
        status = await asyncio.to_thread(d.call, "status")
        assert status["mqtt"][0]["connected"] is True
        rc = await asyncio.to_thread(d.stop)
        assert rc == 0
        await col.wait_for(
            lambda m: m.topic.endswith("/status") and m.payload.get("status") == "offline",
            timeout_s=10,
        )
    msgs = col.messages
    assert msgs
    for m in msgs:
        validate(m.topic, m.payload)  # raises on any schema violation
        text = json.dumps(m.payload)
        assert "patient" not in text
        assert DEMO_PROCEDURE["patient_ref"] not in text
    assert {m.topic.rsplit("/", 1)[-1] for m in msgs} >= {"status", "telemetry", "state", "cycles"}
    # the console's tree, and its node's record anchor (docs/integrity.md)
    node = status["anchors"]["node"]
    assert all(
        m.topic.startswith("cryod/v1/test/c1/") or m.topic == f"cryod/v1/test/{node}/audit/head"
        for m in msgs
    )
    assert any(m.topic.endswith("/audit/head") for m in msgs)
    cycles = [m.payload for m in col.on("cycles")]
    ids = [c["event_id"] for c in cycles]
    assert ids == sorted(ids)
    assert [c["phase"] for c in cycles] == ["freeze", "thaw"]
    assert all(c["procedure_id"] == pid for c in cycles)
    # telemetry sequence numbers only increase; at most 2 Hz by default, over the
    # daemon's own stamps (when received says how late the machine ran, not the rate)
    tel = col.on("telemetry")
    seqs = [m.payload["seq"] for m in tel]
    assert seqs == sorted(seqs)
    span_s = (tel[-1].payload["ts_ms"] - tel[0].payload["ts_ms"]) / 1000.0
    assert len(tel) <= 2.0 * span_s + 3, (len(tel), span_s)


async def test_alarm_events_reach_subscribers_without_waiting_for_the_outbox_poll(
    tmp_path: Path,
) -> None:
    """Raised and acknowledged alarm events are published within a second or two,
    not at the publisher's 10 s safety-net read of the outbox."""
    async with mqtt_rig(tmp_path, "e2e-alarms") as (d, sim, col):
        await asyncio.to_thread(d.call, "procedure_open", DEMO_PROCEDURE)
        await col.wait_for(lambda m: m.topic.endswith("/state"), timeout_s=10)
        await asyncio.sleep(11)  # past the start-up read and one safety-net read
        await asyncio.to_thread(sim.ctl, "fault", "overpressure")
        raised = await col.wait_for(
            lambda m: m.topic.endswith("/alarms") and m.payload.get("event") == "raised",
            timeout_s=5,  # the safety-net read is >= 7 s away: 5 s still tells them apart
        )
        await asyncio.to_thread(sim.ctl, "clear")
        await asyncio.sleep(2)  # then nothing may be read from the outbox by a timer
        t_ack = asyncio.get_running_loop().time()
        await asyncio.to_thread(d.call, "ack")
        acked = await col.wait_for(
            lambda m: m.topic.endswith("/alarms") and m.payload.get("event") == "acknowledged",
            timeout_s=5,  # the safety-net read is >= 7 s away: 5 s still tells them apart
        )
        assert acked.t_mono - t_ack < 5.0
        assert acked.payload["event_id"] > raised.payload["event_id"]
    for m in col.on("alarms"):
        validate(m.topic, m.payload)
