"""The shipped mosquitto files (config/mosquitto/) for the record channel: each node
writes its own record tree only, only the collector reads record trees, nobody gets in
anonymously, TLS with a client certificate off loopback; and the stated outage: the
collector away, the room records a procedure, the broker restarted in between, the
collector back: every message arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import Engine

from cryod.daemon.store.writer import Writer
from tests.mqtt.broker import Collector, Mosquitto, make_pki

from .receiver import Receiver
from .rig import TOPIC, running_channel
from .room import more_entries, record_procedure
from .shipped_broker import USERS, password_file, shipped_broker
from .test_channel_mqtt import chain_head, first_arrivals, seqs, until


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(tmp_path: Path, pki: dict[str, Path]) -> Iterator[Mosquitto]:
    b = shipped_broker(tmp_path / "mq", pki)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def login(user: str) -> dict[str, Any]:
    return {"username": user, "password": USERS[user]}


def node_login(tmp_path: Path, user: str = "unnamed") -> dict[str, Any]:
    return {"username": user, "password_file": password_file(tmp_path / f"{user}.pw", user)}


async def test_each_node_writes_its_own_tree_and_only_the_collector_reads_it(
    tmp_path: Path, writer: Writer, engine: Engine, broker: Mosquitto
) -> None:
    await record_procedure(writer, cycles=1)
    head = chain_head(engine)
    port = broker.port
    async with (
        Collector(port, "cryod-record/v1/#", client_id="hub", **login("cryohub")) as hub,
        Collector(port, "#", client_id="dash-all", **login("dashboard")) as dash,
        Collector(port, "cryod-record/#", client_id="dash-rec", **login("dashboard")) as dash2,
        Collector(port, "cryod-record/#", client_id="other", **login("ws-other")) as other,
    ):
        # forgeries on the node's tree: another node, a telemetry daemon, the collector
        for user in ("ws-other", "cryod-demo-c1", "cryohub", "dashboard"):
            async with aiomqtt.Client(
                "127.0.0.1", port, identifier=f"f-{user}", **login(user)
            ) as c:
                await c.publish(TOPIC, b'{"forged": true}', qos=1)
        # the node on another node's tree
        async with aiomqtt.Client("127.0.0.1", port, identifier="f-node", **login("unnamed")) as c:
            await c.publish("cryod-record/v1/site-a/ws-other/chain", b'{"forged": true}', qos=1)
        # the forgeries were acknowledged before the channel connected, and the broker
        # routes in order: once the channel's entries are in, any forgery would be too
        async with running_channel(engine, port, tmp_path / "cursor", **node_login(tmp_path)):
            await until(lambda: head in seqs(hub))
    assert first_arrivals(seqs(hub)) == list(range(1, head + 1))
    assert not [m for m in hub.messages if m.payload.get("forged")]
    assert [m.topic for m in dash.messages if m.topic.startswith("cryod-record")] == []
    assert dash2.messages == []
    assert other.messages == []
    log = broker.log()
    for user in ("ws-other", "cryod-demo-c1", "cryohub", "dashboard"):
        assert f"Denied PUBLISH from f-{user}" in log
    assert "Denied PUBLISH from f-node" in log


async def test_anonymous_and_wrong_passwords_are_refused(broker: Mosquitto) -> None:
    with pytest.raises(aiomqtt.MqttError, match=r"(?i)not authori[sz]ed"):
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="anon", timeout=3):
            pass
    with pytest.raises(aiomqtt.MqttError, match=r"(?i)not authori[sz]ed|bad user"):
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="x", username="unnamed", password="guess",
            timeout=3,
        ):  # fmt: skip
            pass


async def test_off_loopback_the_channel_uses_tls_with_its_client_certificate(
    tmp_path: Path, writer: Writer, engine: Engine, broker: Mosquitto, pki: dict[str, Path]
) -> None:
    await record_procedure(writer, cycles=1)
    head = chain_head(engine)
    tls = {"ca_file": pki["ca_crt"], "cert_file": pki["client_crt"], "key_file": pki["client_key"]}
    async with (
        Collector(broker.port, "cryod-record/v1/#", client_id="hub", **login("cryohub")) as hub,
        running_channel(
            engine, broker.tls_port, tmp_path / "cursor", tls=tls,  # type: ignore[attr-defined]
            **node_login(tmp_path),
        ) as ch,
    ):  # fmt: skip
        await until(lambda: head in seqs(hub))
        assert ch.status()["broker"].startswith("mqtts://")


async def test_the_stated_outage_collector_away_broker_restarted_everything_arrives(
    tmp_path: Path, writer: Writer, engine: Engine, broker: Mosquitto
) -> None:
    """The collector's persistent session holds what the room sends while it is away,
    across a broker restart (the shipped persistence settings)."""
    port = broker.port
    hub_session: dict[str, Any] = {"identifier": "cryohub-1", "clean_session": False,
                                    **login("cryohub")}  # fmt: skip
    async with aiomqtt.Client("127.0.0.1", port, **hub_session) as c:
        await c.subscribe("cryod-record/v1/#", qos=1)  # the collector was here once, then left
    async with running_channel(engine, port, tmp_path / "cursor", **node_login(tmp_path)) as ch:
        writer._on_head = lambda h, _label: ch.offer_head(h)
        await record_procedure(writer, cycles=2)  # the room records a procedure
        mid = chain_head(engine)
        await until(lambda: ch.status()["delivered_seq"] == mid)
        await asyncio.to_thread(broker.restart)  # the broker restarts while the collector is away
        await more_entries(writer, 5)
        head = chain_head(engine)
        await until(lambda: ch.status()["delivered_seq"] == head)
    rx = Receiver()
    await asyncio.wait_for(
        rx.listen(port, "cryod-record/v1/#", head, **hub_session), 30
    )  # the collector returns
    assert first_arrivals(rx.arrivals)[:head] == list(range(1, head + 1))
    rx.rebuild()  # every entry links and re-hashes
