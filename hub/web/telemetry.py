"""The board's telemetry subscription: the web app's only aiomqtt import.

Subscribes (QoS 0, clean session, its own client id) to the rooms'
telemetry tree ``cryod/v1/#`` on the collector's broker (``[broker]`` in the
config: host, port, user, password file, TLS) and folds each message into a
``Board``. It never publishes: the web app cannot reach a console.
Reconnects with a doubling back-off (0.5 s to 30 s) while the app runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import secrets
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from .board import Board

__all__ = ["TOPIC", "BrokerSettings", "TelemetryFeed"]

TOPIC = "cryod/v1/#"
MAX_PAYLOAD = 256 * 1024
_log = logging.getLogger("cryod.hub.web.telemetry")


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    host: str
    port: int
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_id: str = "cryohub-web"


class TelemetryFeed:
    def __init__(self, settings: BrokerSettings, board: Board) -> None:
        self.settings = settings
        self.board = board
        self.connected = False
        self.last_error: str | None = None
        self.messages = 0

    def _tls(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.ca_file is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(s.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if s.cert_file is not None and s.key_file is not None:
            ctx.load_cert_chain(str(s.cert_file), str(s.key_file))
        return ctx

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        password = None
        if s.password_file is not None:
            password = s.password_file.read_text(encoding="utf-8").splitlines()[0].strip()
        return aiomqtt.Client(
            s.host,
            s.port,
            identifier=f"{s.client_id}-{secrets.token_hex(4)}",
            username=s.username,
            password=password,
            tls_context=self._tls(),
            clean_session=True,
            keepalive=10,
            timeout=5.0,
            logger=logging.getLogger("cryod.hub.web.paho"),
        )

    def handle(self, topic: str, payload: bytes, *, retained: bool) -> None:
        if len(payload) > MAX_PAYLOAD:
            return
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return
        self.messages += 1
        self.board.apply(
            topic,
            doc,
            now_mono=time.monotonic(),
            now_wall=dt.datetime.now(dt.UTC),
            retained=retained,
        )

    async def run(self) -> None:
        """Until cancelled."""
        backoff = 0.5
        while True:
            try:
                async with self._client() as client:
                    await client.subscribe(TOPIC, qos=0)
                    self.connected = True
                    self.last_error = None
                    backoff = 0.5
                    async for message in client.messages:
                        payload = message.payload
                        if isinstance(payload, (bytes, bytearray)):
                            self.handle(
                                message.topic.value, bytes(payload), retained=message.retain
                            )
            except asyncio.CancelledError:
                self.connected = False
                raise
            except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
                if str(exc) != self.last_error:
                    _log.warning("telemetry subscription: %s", exc)
                self.last_error = str(exc)
            self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
