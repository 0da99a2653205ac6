"""The board's telemetry watch uses [broker]'s credentials and TLS as the collector does
(hub.subscriber: one MQTT module, one way to read the password file and build TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from pathlib import Path

from cryod.hub.subscriber import BrokerSettings, broker_password, broker_tls
from cryod.hub.web.board import Board
from cryod.hub.web.telemetry import TelemetryFeed
from tests.hub.rig import publish
from tests.mqtt.broker import locked_broker, make_pki
from tests.timing import until


def test_password_file_is_read_without_surrounding_space(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("  s3cret pw \n\n")
    settings = BrokerSettings(host="h", port=1, client_id="c", session_expiry_s=0,
                              password_file=secret)  # fmt: skip
    assert broker_password(settings) == "s3cret pw"
    assert (
        broker_password(BrokerSettings(host="h", port=1, client_id="c", session_expiry_s=0)) is None
    )


def test_tls_needs_at_least_version_1_2(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    settings = BrokerSettings(host="h", port=1, client_id="c", session_expiry_s=0,
                              ca_file=pki["ca_crt"])  # fmt: skip
    ctx = broker_tls(settings)
    assert ctx is not None
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert broker_tls(BrokerSettings(host="h", port=1, client_id="c", session_expiry_s=0)) is None


def test_the_board_watches_a_broker_that_needs_a_password_and_a_client_certificate(
    tmp_path: Path,
) -> None:
    users = {"cryohub": "hub-secret-pw", "room-t": "room-secret-pw"}
    broker, pki = locked_broker(tmp_path, users)
    port = broker.port
    secret = tmp_path / "broker.password"
    secret.write_text(users["cryohub"] + "\n")
    secret.chmod(0o600)
    settings = BrokerSettings(
        host="127.0.0.1", port=port, client_id="cryohub-web", session_expiry_s=0,
        username="cryohub", password_file=secret, ca_file=pki["ca_crt"],
        cert_file=pki["client_crt"], key_file=pki["client_key"],
    )  # fmt: skip
    room_tls = ssl.create_default_context(cafile=str(pki["ca_crt"]))
    room_tls.load_cert_chain(str(pki["client_crt"]), str(pki["client_key"]))
    feed = TelemetryFeed(settings, Board())

    async def scenario() -> None:
        task = asyncio.create_task(feed.run())
        try:
            await until(lambda: feed.connected, "the board connected to the TLS broker", 30)
            doc = json.dumps({"status": "online", "reason": None}).encode()
            await publish(port, [("cryod/v1/site-a/room-t/status", doc)], tls_context=room_tls,
                          username="room-t", password=users["room-t"])  # fmt: skip
            await until(lambda: feed.messages == 1, "the status message on the board", 30)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    broker.start()
    try:
        asyncio.run(scenario())
    finally:
        broker.stop()
    assert feed.last_error is None
    assert "site-a/room-t" in feed.board.rooms
