"""Several sites: a room broker bridged to a central broker with the shipped drop-in.
Both are real mosquitto processes with the shipped files; each is restarted in turn
while the room streams, and the collector on the central broker gets every entry, once
at least and first-time in chain order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cryod.daemon.store.writer import Writer
from tests.mqtt.broker import Collector, make_pki

from .rig import running_channel
from .room import more_entries, record_procedure
from .shipped_broker import shipped_bridge, shipped_broker
from .test_channel_mqtt import chain_head, first_arrivals, seqs, until
from .test_shipped_broker import login, node_login


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_both_brokers_restarted_in_turn_mid_stream_nothing_lost_or_reordered(
    tmp_path: Path, writer: Writer, engine: Engine, pki: dict[str, Path]
) -> None:
    await record_procedure(writer, cycles=2)
    await more_entries(writer, 80)
    head = chain_head(engine)
    central = shipped_broker(tmp_path / "central", pki)
    central.start()
    room = shipped_broker(tmp_path / "room", pki, extra=shipped_bridge(central, pki))
    room.start()
    try:
        async with (
            Collector(
                central.port, "cryod-record/v1/#", client_id="cryohub-1", clean_session=False,
                reconnect=True, **login("cryohub"),
            ) as hub,
            running_channel(
                engine, room.port, tmp_path / "cursor", rate_per_s=40.0, burst=5, window=4,
                **node_login(tmp_path),
            ) as ch,
        ):  # fmt: skip
            await until(lambda: len(set(seqs(hub))) >= 20, 60)
            await asyncio.to_thread(central.restart)
            await until(lambda: (ch.status()["delivered_seq"] or 0) >= 60, 60)
            await asyncio.to_thread(room.restart)
            await until(lambda: set(range(1, head + 1)) <= set(seqs(hub)), 90)
            # the room broker's restart is seen (a reconnect), even where a slow machine let
            # the last entries through before the broker went down
            await until(lambda: ch.status()["connections"] >= 2, 60)
        assert first_arrivals(seqs(hub)) == list(range(1, head + 1))
        assert "Connecting bridge" in room.log()
    finally:
        room.stop()
        central.stop()
