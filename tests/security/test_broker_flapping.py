"""Issue 9, fault 7: the MQTT broker down for a long run, restarted, and flapping.

A real cryod runs a two-freeze protocol against cryosim while a real
mosquitto is stopped for a long stretch, restarted, then stopped and started
six times. Control and logging must not notice: the protocol completes,
samples keep being written with no gap, the daemon's memory stays bounded.
Alarm and cycle events reach a research subscriber (persistent session,
QoS 1) in order, with no gap once duplicates (at-least-once) are removed.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from pathlib import Path

import pytest

from tests.e2e.harness import DEMO_PROCEDURE, Daemon, Sim, daemon_config
from tests.mqtt.broker import Collector, Mosquitto

from .rig import rss_kib

pytestmark = [pytest.mark.timeout(180), pytest.mark.needs_mosquitto]

SPEED = 20.0
OUTAGE_S = 8.0  # wall seconds = 160 simulated seconds: spans a whole freeze end and thaw
FLAPS = 6
RSS_GROWTH_MAX_KIB = 20 * 1024


def mqtt_section(port: int) -> str:
    return f"""
[mqtt]
host = "127.0.0.1"
port = {port}
site = "test"
keepalive_s = 2
connect_timeout_s = 1.0
reconnect_min_s = 0.05
reconnect_max_s = 0.5
"""


def _db(wd: Path, q: str) -> list[tuple]:
    con = sqlite3.connect(wd / "cryod.db")
    try:
        return list(con.execute(q))
    finally:
        con.close()


def _event_ids(col: Collector) -> list[int]:
    return [
        int(m.payload["event_id"])
        for m in col.messages
        if m.topic.endswith("/alarms") or m.topic.endswith("/cycles")
    ]


async def _call(d: Daemon, cmd: str, args: dict | None = None) -> object:
    return await asyncio.to_thread(d.call, cmd, args or {})


async def test_broker_outage_and_flapping(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    sim = d = None
    try:
        async with Collector(
            broker.port,
            "cryod/v1/test/#",
            client_id="research-collector",
            clean_session=False,
            reconnect=True,
        ) as col:
            sim = Sim(tmp_path, speed=SPEED)
            cfg = daemon_config(tmp_path, sim, speed=SPEED, extra=mqtt_section(broker.port))
            d = await asyncio.to_thread(Daemon, cfg, tmp_path)
            await col.wait_for(lambda m: m.topic.endswith("/status"), timeout_s=10)
            await asyncio.sleep(1.0)
            rss0 = rss_kib(d.proc.pid)

            await _call(d, "procedure_open", DEMO_PROCEDURE)
            await _call(d, "run", {"protocol": "classic-double-90", "probes": [1]})
            t_run = time.time()
            # a long outage, then a restart, then flapping
            broker.stop()
            await asyncio.sleep(OUTAGE_S)  # the length of the outage, not a condition
            deadline = time.monotonic() + 30
            while (await _call(d, "status"))["mqtt"][0]["connected"]:
                assert time.monotonic() < deadline, "the daemon never saw the broker go"
                await asyncio.sleep(0.1)
            broker.start()
            for _ in range(FLAPS):
                await asyncio.sleep(0.6)
                broker.stop()
                await asyncio.sleep(0.4)
                broker.start()
            # the protocol finishes as if nothing happened
            final = await asyncio.to_thread(d.wait_state, {"complete", "fault", "aborted"}, 90)
            assert final["engine"]["state"] == "complete", final["engine"]
            t_end = time.time()
            # alarm events raised, acknowledged and cleared while the broker is down
            broker.stop()
            sim.ctl("fault", "overpressure")
            await asyncio.to_thread(d.wait_state, {"fault"}, 20)
            sim.ctl("clear")
            await _call(d, "ack")
            deadline = time.monotonic() + 20
            while (await _call(d, "status"))["consoles"][0]["engine"]["state"] == "fault":
                try:
                    await _call(d, "reset")
                except Exception:
                    assert time.monotonic() < deadline, "reset never accepted"
                    await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            broker.start()
            # everything in the outbox is delivered, and reaches the subscriber
            deadline = time.monotonic() + 30
            while True:
                (pending,) = _db(
                    tmp_path, "SELECT count(*) FROM outbox WHERE delivered_at IS NULL"
                )[0]
                ids = sorted(r[0] for r in _db(tmp_path, "SELECT id FROM outbox"))
                if not pending and set(_event_ids(col)) >= set(ids):
                    break
                assert time.monotonic() < deadline, (pending, ids, _event_ids(col))
                await asyncio.sleep(0.2)
            status = await _call(d, "status")
            rss1 = rss_kib(d.proc.pid)
            detail = await _call(d, "show", {"id": 1})
    finally:
        if d is not None:
            await asyncio.to_thread(d.stop)
        if sim is not None:
            sim.stop()
        broker.stop()

    # events: in increasing order of first arrival, no gap after de-duplication
    got = _event_ids(col)
    firsts: list[int] = []
    for i in got:
        if i not in firsts:
            firsts.append(i)
    assert firsts == sorted(firsts), f"events out of order: {firsts}"
    assert firsts == ids, f"missing events: {sorted(set(ids) - set(firsts))}"
    kinds = {m.topic.rsplit("/", 1)[1] for m in col.messages}
    assert {"alarms", "cycles"} <= kinds, kinds
    assert len([m for m in col.messages if m.topic.endswith("/cycles")]) >= 4
    # control unaffected: every cycle completed as planned
    cycles = detail["cycles"]
    assert [c["phase"] for c in cycles] == ["freeze", "thaw", "freeze", "thaw"], cycles
    assert all(c["outcome"] == "completed" for c in cycles), cycles
    # logging unaffected: samples all through the outage, no gap over 0.5 s wall
    ts = [r[0] for r in _db(tmp_path, "SELECT p.t_utc FROM sample_polls p JOIN sample_probes r"
          " ON r.poll_id = p.id WHERE r.probe = 1 AND r.tip_v IS NOT NULL"
          f" AND p.t_utc BETWEEN {t_run} AND {t_end} ORDER BY p.t_utc")]  # fmt: skip
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    assert len(ts) > 0.8 * 20.0 * (t_end - t_run), (len(ts), t_end - t_run)
    assert max(gaps) < 0.5, f"sample gap {max(gaps):.2f} s"
    assert status["writer"]["dropped"] == 0
    mq = status["mqtt"][0]
    assert mq["connected"] is True
    assert mq["connections"] >= FLAPS + 2, mq
    # memory bounded
    growth = rss1 - rss0
    assert growth < RSS_GROWTH_MAX_KIB, f"RSS grew {growth} KiB ({rss0} -> {rss1})"
    dupes = len(got) - len(firsts)
    print(
        f"broker down {OUTAGE_S:.0f} s + {FLAPS} flaps: protocol complete, {len(ts)} samples, "
        f"max gap {max(gaps) * 1000:.0f} ms; {len(firsts)} events in order "
        f"({dupes} duplicates); connections {mq['connections']}; "
        f"RSS {rss0 // 1024} -> {rss1 // 1024} MiB"
    )
