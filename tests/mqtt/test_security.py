"""A real mosquitto configured as docs/mqtt.md says (config/mosquitto/) lets nobody else in.

TLS with a test CA made here with the openssl CLI, client certificates,
passwords made with mosquitto_passwd and the shipped ACL file: a rogue
certificate, a wrong password, an anonymous client and a client outside its
ACL are all refused, and the daemon can publish on its own tree only.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from cryod.daemon.telemetry.config import MqttConfig
from cryod.daemon.telemetry.payloads import state_body
from cryod.daemon.telemetry.publisher import MemoryOutbox, Publisher
from tests.mqtt.broker import (
    SHIPPED_CONFIG,
    Collector,
    Mosquitto,
    free_port,
    install_shipped_files,
    make_pki,
)

USERS = {"cryod-demo-c1": "daemon-pw", "dashboard": "dash-pw", "intruder": "intruder-pw"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def secure_broker(tmp_path: Path, pki: dict[str, Path]) -> Iterator[Mosquitto]:
    """mosquitto with the shipped config/mosquitto files; only paths and port changed."""
    etc = install_shipped_files(tmp_path / "etc", pki, USERS)
    port = free_port()
    conf = (SHIPPED_CONFIG / "cryod.conf").read_text().replace("/etc/mosquitto/", f"{etc}/")
    conf, n = re.subn(r"^listener 8883$", f"listener {port} 127.0.0.1", conf, flags=re.M)
    assert n == 1, "the sample config's listener line changed; update this test"
    broker = Mosquitto(tmp_path / "broker", port=port, config_text=conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _ctx(pki: dict[str, Path], *, ca: str = "ca", client: str | None = "client") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki[f"{ca}_crt"]))
    if client is not None:
        ctx.load_cert_chain(str(pki[f"{client}_crt"]), str(pki[f"{client}_key"]))
    return ctx


def _tls_kwargs(pki: dict[str, Path], user: str | None, **ctx_kw: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {"tls_context": _ctx(pki, **ctx_kw)}
    if user is not None:
        kw.update(username=user, password=USERS[user])
    return kw


def _pub_cfg(
    tmp_path: Path,
    pki: dict[str, Path],
    port: int,
    *,
    password: str = USERS["cryod-demo-c1"],
    ca: str = "ca",
    client: str = "client",
) -> MqttConfig:
    pw = tmp_path / "mqtt.pw"
    pw.write_text(password + "\n")
    os.chmod(pw, 0o600)
    return MqttConfig(
        port=port,
        site="demo",
        console="c1",
        username="cryod-demo-c1",
        password_file=pw,
        tls={
            "ca_file": pki[f"{ca}_crt"],
            "cert_file": pki[f"{client}_crt"],
            "key_file": pki[f"{client}_key"],
        },
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        connect_timeout_s=0.5,
    )


@pytest.fixture
async def pubs() -> AsyncIterator[list[Publisher]]:
    made: list[Publisher] = []
    yield made
    for p in made:
        await p.close()


def _publisher(cfg: MqttConfig, made: list[Publisher]) -> Publisher:
    pub = Publisher(cfg, session=1, software_version="test", outbox=MemoryOutbox())
    made.append(pub)
    pub.start()
    return pub


async def _refused(pub: Publisher, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while pub.status().connect_failures < 2:  # two attempts, both refused
        assert time.monotonic() < deadline, pub.status()
        await asyncio.sleep(0.01)
    s = pub.status()
    assert s.connections == 0
    assert s.connect_failures >= 2
    assert s.last_error is not None
    return s.last_error


async def test_the_daemon_publishes_over_tls_with_password_and_a_dashboard_reads(
    secure_broker: Mosquitto, pki: dict[str, Path], tmp_path: Path, pubs: list[Publisher]
) -> None:
    pub = _publisher(_pub_cfg(tmp_path, pki, secure_broker.port), pubs)
    async with Collector(secure_broker.port, **_tls_kwargs(pki, "dashboard")) as dash:
        st = await dash.wait_for(lambda m: m.topic.endswith("/status"))
    assert st.payload["status"] == "online"
    assert pub.status().broker.startswith("mqtts://")


async def test_untrusted_certificates_are_rejected_both_ways(
    secure_broker: Mosquitto, pki: dict[str, Path], tmp_path: Path, pubs: list[Publisher]
) -> None:
    port = secure_broker.port
    # a client certificate from a CA the broker does not trust
    rogue_client = _publisher(_pub_cfg(tmp_path, pki, port, client="rogue_client"), pubs)
    # a daemon that does not trust the broker's CA refuses the broker
    rogue_ca = _publisher(_pub_cfg(tmp_path, pki, port, ca="rogue_ca"), pubs)
    err_client = await _refused(rogue_client)
    err_ca = await _refused(rogue_ca)
    assert "certificate verify failed" in err_ca
    # and without any client certificate (require_certificate true)
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            "127.0.0.1", port, username="dashboard", password=USERS["dashboard"],
            tls_context=_ctx(pki, client=None), timeout=3,
        ) as c:  # fmt: skip
            await c.publish("cryod/v1/demo/c1/state", b"{}", qos=1)
    print(f"rogue client cert -> {err_client}; rogue CA -> {err_ca}")


async def test_wrong_password_and_anonymous_clients_are_rejected(
    secure_broker: Mosquitto, pki: dict[str, Path], tmp_path: Path, pubs: list[Publisher]
) -> None:
    wrong = _publisher(_pub_cfg(tmp_path, pki, secure_broker.port, password="guess"), pubs)
    err = await _refused(wrong)
    assert re.search(r"not authori[sz]ed|bad user name or password", err, re.I), err
    with pytest.raises(aiomqtt.MqttError, match=r"(?i)not authori[sz]ed"):
        async with aiomqtt.Client(
            "127.0.0.1", secure_broker.port, tls_context=_ctx(pki), timeout=3
        ):
            pass


async def test_the_acl_keeps_everyone_on_their_side(
    secure_broker: Mosquitto, pki: dict[str, Path], tmp_path: Path, pubs: list[Publisher]
) -> None:
    port = secure_broker.port
    pub = _publisher(_pub_cfg(tmp_path, pki, port), pubs)
    async with (
        Collector(port, client_id="monitor", **_tls_kwargs(pki, "dashboard")) as monitor,
        Collector(port, client_id="intruder", **_tls_kwargs(pki, "intruder")) as intruder,
        Collector(port, client_id="daemon-reads", **_tls_kwargs(pki, "cryod-demo-c1")) as reader,
    ):
        await monitor.wait_for(lambda m: m.topic.endswith("/status"))
        # a dashboard tries to forge the daemon's state; the daemon tries another console's tree
        for user, topic in (
            ("dashboard", "cryod/v1/demo/c1/state"),
            ("cryod-demo-c1", "cryod/v1/demo/c2/state"),
            ("intruder", "cryod/v1/demo/c1/alarms"),
        ):
            async with aiomqtt.Client(
                "127.0.0.1", port, identifier=f"forger-{user}", **_tls_kwargs(pki, user)
            ) as forger:
                await forger.publish(topic, b'{"forged": true}', qos=1)
        # then a real state change as a marker: everything before it has been routed
        pub.publish_event("state", state_body(t_utc_s=time.time(), engine_state="marker"))
        await monitor.wait_for(lambda m: m.payload.get("engine_state") == "marker")
        await asyncio.sleep(0.3)
    forged = [m for m in monitor.messages if m.payload.get("forged")]
    assert forged == []
    # positive control: the monitor does read the daemon's tree
    assert {m.topic.rsplit("/", 1)[1] for m in monitor.messages} >= {"status", "state"}
    # outside the ACL, or write-only: nothing is delivered
    assert intruder.messages == []
    assert reader.messages == []
    log = secure_broker.log()
    assert "Denied PUBLISH from forger-dashboard" in log
    assert "Denied PUBLISH from forger-cryod-demo-c1" in log
