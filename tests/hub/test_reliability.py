"""Reliability trials: nothing lost, nothing doubled, on PostgreSQL and SQLite.

A real mosquitto (persistence on, as a broker for a study is configured) and
``cryohub run`` as a process; rooms publish QoS 1 and send again what the
broker did not acknowledge. After each trial the collector's copy of every
room is compared with the room: the same (seq, hash) for every entry, the
same number of rows and sample blocks, nothing quarantined, nothing held,
and ``cryohub verify`` re-hashes it.

- the collector killed (SIGKILL) mid-stream and started again: what it had
  received but not committed is redelivered (acknowledged only after the
  COMMIT), what the broker queued meanwhile for its persistent session arrives;
- the broker restarted mid-stream: the collector reconnects and subscribes again;
- a room offline (its entries' times an hour behind) then back: its new
  entries are held behind the gap, the resend fills it;
- duplicated and reordered deliveries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import threading

import pytest

from cryod.hub.cli import main
from cryod.hub.store.models import Held, ReceivedEntry

from .rig import HubRig, chain, live_room, messages_of, publish, run_publish, wait_until

pytestmark = [pytest.mark.needs_mosquitto, pytest.mark.slow, pytest.mark.timeout(300)]


def verified(rig: HubRig) -> None:
    assert main(["verify", "--all", "--config", str(rig.config)]) == 0
    assert rig.count(Held) == 0


def test_collector_killed_mid_stream(rig: HubRig) -> None:
    rooms = [live_room(f"room-{i}") for i in range(3)]
    rig.register(*rooms)
    made = [chain(r, 150) for r in rooms]
    msgs = [m for i in range(150) for r, (docs, _, _) in zip(rooms, made, strict=True)
            for m in messages_of(r, [docs[i]])]  # fmt: skip
    rig.start()
    sent = [0]
    publisher = threading.Thread(
        target=run_publish,
        args=(rig.broker.port, msgs),
        kwargs={"on_sent": lambda n: sent.__setitem__(0, n), "pace_s": 0.002},
    )
    publisher.start()
    try:
        wait_until(lambda: rig.count(ReceivedEntry) >= 60, 60, "some stored")
        rig.kill()  # mid-stream: batches received, some not committed, none acknowledged
        killed_at = rig.count(ReceivedEntry)
        assert killed_at < len(msgs)
        wait_until(lambda: sent[0] >= len(msgs) * 2 // 3, 60, "more published meanwhile")
        rig.start()
    finally:
        publisher.join(timeout=120)
    for r in rooms:
        rig.wait_stored(r)
    for r, (_docs, rows, blocks) in zip(rooms, made, strict=True):
        rig.assert_same_as(r, rows, blocks)
    verified(rig)


def test_broker_restarted_mid_stream(rig: HubRig) -> None:
    room = live_room("room-b")
    rig.register(room)
    docs, rows, blocks = chain(room, 240)
    msgs = messages_of(room, docs)
    rig.start()
    sent = [0]
    publisher = threading.Thread(
        target=run_publish,
        args=(rig.broker.port, msgs),
        kwargs={"on_sent": lambda n: sent.__setitem__(0, n), "pace_s": 0.003},
    )
    publisher.start()
    try:
        wait_until(lambda: sent[0] >= 60, 60, "publishing")
        rig.broker.restart()
        wait_until(lambda: rig.stats().get("connections", 0) >= 2, 60, "reconnected")
    finally:
        publisher.join(timeout=120)
    rig.wait_stored(room)
    rig.assert_same_as(room, rows, blocks)
    assert "broker: disconnected" in rig.log()
    verified(rig)


def test_room_offline_then_back(rig: HubRig) -> None:
    room = live_room("room-o")
    room.now -= dt.timedelta(hours=1)  # the room's record, an hour behind
    rig.register(room)
    rig.start()
    docs, rows, blocks = chain(room, 90)
    run_publish(rig.broker.port, messages_of(room, docs[:30]))
    # offline: entries 31..60 never reach the broker; back: 61..90 arrive first
    run_publish(rig.broker.port, messages_of(room, docs[60:]))
    wait_until(lambda: rig.count(Held, room.node) == 30, 60, "held behind the gap")
    assert "cryoctl record resend --from 31 --to 60" in rig.log()
    run_publish(rig.broker.port, messages_of(room, docs[30:60]))  # the resend
    rig.wait_stored(room)
    rig.assert_same_as(room, rows, blocks)
    verified(rig)


def test_duplicated_and_reordered_deliveries(rig: HubRig) -> None:
    rooms = [live_room(f"room-d{i}") for i in range(2)]
    rig.register(*rooms)
    made = [chain(r, 60) for r in rooms]
    msgs = [m for r, (docs, _, _) in zip(rooms, made, strict=True) for m in messages_of(r, docs)]
    deliveries = msgs * 2
    random.Random(2126).shuffle(deliveries)
    rig.start()
    asyncio.run(publish(rig.broker.port, deliveries))
    for r in rooms:
        rig.wait_stored(r)
    wait_until(lambda: rig.stats().get("counts", {}).get("duplicate", 0) >= 120, 60)
    for r, (_docs, rows, blocks) in zip(rooms, made, strict=True):
        rig.assert_same_as(r, rows, blocks)
    verified(rig)
