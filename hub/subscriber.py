"""The collector's MQTT client: the one module of the collector that imports aiomqtt.

Two users: the record channel's subscriber (``Subscriber``, below) and the
web app's read-only telemetry watch (``watch``: QoS 0, clean session, a
client id of its own per connection; it never publishes). Both take the
broker's address, credentials and TLS from ``[broker]`` through the same
``BrokerSettings``, ``broker_password`` and ``broker_tls``.

- MQTT v5 with a **fixed client id** and **clean start off**, the session
  expiry from ``[broker] session_expiry_s``: the broker keeps the collector's
  subscription and queues QoS 1 messages while it is away (a restart, an
  upgrade, a crash) for up to that long;
- **QoS 1** on ``cryod-record/v1/+/+/chain``, subscribed again after every
  (re)connection (a broker that lost its state still gets the subscription);
- **acknowledged after the COMMIT**: automatic PUBACKs are off; ``run`` hands
  each batch to the handler and acknowledges it (in arrival order, as MQTT
  requires) only once the handler returned, i.e. once the batch is committed.
  A connection lost before that means the broker delivers the batch again
  (a duplicate for the collector, a no-op). aiomqtt 2.5 has no API for this
  yet (empicano/aiomqtt#345, PR #346): we switch paho-mqtt's own
  ``manual_ack`` on the client aiomqtt wraps and call its ``ack`` — the two
  private touches live here and nowhere else;
- username and password (from ``password_file``) and TLS (CA, client
  certificate and key) from the config;
- ``receive_maximum`` bounds the messages in flight to us (MQTT v5 flow
  control): what the broker sends without our acknowledgement, so a batch
  is at most that many messages (and at most ``max_batch_bytes``, 8 MiB, so
  one commit stays well inside the watchdog's allowance).

A broker that goes away is retried with a growing delay (0.2 s up to 5 s);
``on_state`` is told ("connected", "disconnected: why") for the status line
and the log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .intake import Incoming
from .messages import TOPIC_PREFIX

__all__ = [
    "RECORD_TOPICS",
    "BrokerSettings",
    "BrokerUnavailable",
    "Subscriber",
    "broker_password",
    "broker_tls",
    "watch",
]

RECORD_TOPICS = f"{TOPIC_PREFIX}/+/+/chain"
_log = logging.getLogger("cryohub.subscriber")


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    host: str
    port: int
    client_id: str
    session_expiry_s: int
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    receive_maximum: int = 1000
    keepalive_s: int = 30
    topic: str = RECORD_TOPICS


Handler = Callable[[Sequence[Incoming]], Awaitable[None]]


class BrokerUnavailable(Exception):
    """The broker could not be reached or dropped the connection (the reason is the text)."""


def broker_password(settings: BrokerSettings) -> str | None:
    """The password file's content without surrounding white space; None without a file."""
    if settings.password_file is None:
        return None
    return settings.password_file.read_text(encoding="utf-8").strip()


def broker_tls(settings: BrokerSettings) -> ssl.SSLContext | None:
    """TLS 1.2 or newer against the configured CA, with the client certificate if set.

    None without a CA (plain MQTT).
    """
    if settings.ca_file is None:
        return None
    tls = ssl.create_default_context(cafile=str(settings.ca_file))
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.cert_file is not None:
        tls.load_cert_chain(
            str(settings.cert_file), None if settings.key_file is None else str(settings.key_file)
        )
    return tls


class Subscriber:
    def __init__(
        self,
        settings: BrokerSettings,
        *,
        max_batch: int = 500,
        max_batch_bytes: int = 8 * 1024 * 1024,
        on_state: Callable[[str], None] = lambda _s: None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.on_state = on_state
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.connected = False
        self.connections = 0

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = s.session_expiry_s
        props.ReceiveMaximum = s.receive_maximum
        client = aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            username=s.username,
            password=broker_password(s),
            tls_context=broker_tls(s),
            keepalive=s.keepalive_s,
        )
        # acknowledge after the COMMIT (aiomqtt#345): before connecting, so messages
        # the broker queued for the session are not acknowledged on arrival either
        client._client.manual_ack_set(True)
        return client

    async def run(self, handle: Handler) -> None:
        """Receive, hand over in batches, acknowledge after each returns; until cancelled."""
        delay_s = 0.2
        while True:
            try:
                client = self._client()
                async with client:
                    granted = await client.subscribe(self.settings.topic, qos=1)
                    codes = [g.value if isinstance(g, ReasonCode) else int(g) for g in granted]
                    if any(code >= 0x80 for code in codes):
                        raise aiomqtt.MqttError(f"subscription refused: {granted}")
                    self.connected = True
                    self.connections += 1
                    delay_s = 0.2
                    self.on_state("connected")
                    await self._pump(client, handle)
            except aiomqtt.MqttError as exc:
                was = self.connected
                self.connected = False
                self.on_state(f"disconnected: {exc}" if was else f"cannot connect: {exc}")
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)

    async def _pump(self, client: aiomqtt.Client, handle: Handler) -> None:
        messages = client.messages
        while True:
            first = await anext(messages)
            batch = [first]
            size = len(first.payload)
            # what has arrived, up to a count and a size (a commit stays short)
            while len(messages) > 0 and len(batch) < self.max_batch and size < self.max_batch_bytes:
                batch.append(await anext(messages))
                size += len(batch[-1].payload)
            now = self._clock()
            incoming = [
                Incoming(
                    topic=str(m.topic),
                    payload=m.payload if isinstance(m.payload, bytes) else str(m.payload).encode(),
                    received_at=now,
                )
                for m in batch
            ]
            await handle(incoming)
            for m in batch:
                if m.qos > 0:
                    client._client.ack(m.mid, m.qos)


MessageHandler = Callable[[str, bytes, bool], None]


async def watch(
    settings: BrokerSettings,
    topic: str,
    handle: MessageHandler,
    *,
    on_connected: Callable[[], None] = lambda: None,
) -> None:
    """Subscribe to ``topic`` at QoS 0 on a clean session and hand each message to
    ``handle(topic, payload, retained)`` until cancelled or the connection ends.

    The client id is ``settings.client_id`` with a random suffix (two web app
    processes never take each other's session). A broker that cannot be reached
    or drops the connection raises ``BrokerUnavailable``: the caller retries.
    """
    try:
        client = aiomqtt.Client(
            settings.host,
            settings.port,
            identifier=f"{settings.client_id}-{secrets.token_hex(4)}",
            username=settings.username,
            password=broker_password(settings),
            tls_context=broker_tls(settings),
            clean_session=True,
            keepalive=settings.keepalive_s,
            timeout=5.0,
            logger=logging.getLogger("cryohub.watch.paho"),
        )
        async with client:
            await client.subscribe(topic, qos=0)
            on_connected()
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, (bytes, bytearray)):
                    handle(message.topic.value, bytes(payload), message.retain)
    except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
        raise BrokerUnavailable(str(exc)) from exc
    raise BrokerUnavailable("the broker ended the subscription")
