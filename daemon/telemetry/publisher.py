"""The MQTT telemetry publisher: out only, never in the way of the console.

The poll loop hands telemetry over with ``offer_telemetry``, a plain
function that never awaits: a bounded deque between the two drops the oldest
sample when full and counts it. State and the active-alarm list are latest
values, re-published (retained) after every reconnect. Alarm and cycle events
come from the storage outbox and are delivered at least once, in outbox
order, each with its outbox id as ``event_id``; an item is marked delivered
only after the broker acknowledged it.

``run()`` loops ``async with aiomqtt.Client(...)`` with exponential back-off
and jitter (``drivers/backoff.py``, the one rule); a broker that is down only
shows in ``status()``. The broker's last will publishes ``offline`` if the
daemon dies; ``close()`` publishes it itself, since a clean DISCONNECT
suppresses the will. The will's ``ts_ms`` is when that connection was made, so
a retained ``last_seen`` (refreshed every ``last_seen_s``) says when the daemon
was last alive.

This module subscribes to nothing, on purpose: no MQTT topic can reach the
engine, so none can move a valve. It is the only module importing aiomqtt:
the record channel (``daemon/record_channel``) gets its client from
``publish_only_client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import aiomqtt

from cryod.drivers.backoff import Backoff, BackoffPolicy

from .config import MqttConfig
from .payloads import PersonalDataError, Topics, encode, last_seen_body, stamp, status_body

__all__ = [
    "MemoryOutbox",
    "Outbox",
    "OutboxItem",
    "OutboxItemLike",
    "PublishOnlyClient",
    "Publisher",
    "PublisherStatus",
    "publish_only_client",
]

log = logging.getLogger("cryod.telemetry")

EventKind = Literal["state", "alarms_active", "alarm", "cycle"]
_OUTBOX_TOPIC_KIND = {"alarm": "alarms", "cycle": "cycles"}


class OutboxItemLike(Protocol):
    """One undelivered event as the storage layer returns it."""

    @property
    def id(self) -> int: ...

    @property
    def kind(self) -> str: ...  # "alarm" or "cycle"

    @property
    def payload(self) -> Any: ...  # a mapping (or its JSON text) holding at least ts_ms


class Outbox(Protocol):
    """The storage helper's outbox: events written in the same transaction as the log."""

    async def pending(self, limit: int) -> Sequence[OutboxItemLike]:
        """Undelivered items, oldest first (ascending id), at most ``limit``."""

    async def mark_delivered(self, ids: Sequence[int]) -> None: ...


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    kind: str
    payload: Mapping[str, Any]


class MemoryOutbox:
    """An in-memory Outbox (tests, and a daemon run without a database)."""

    def __init__(self) -> None:
        self._items: dict[int, OutboxItem] = {}
        self._next_id = 1

    def add(self, kind: str, payload: Mapping[str, Any]) -> int:
        item = OutboxItem(self._next_id, kind, dict(payload))
        self._items[item.id] = item
        self._next_id += 1
        return item.id

    async def pending(self, limit: int) -> list[OutboxItem]:
        return [self._items[i] for i in sorted(self._items)[:limit]]

    async def mark_delivered(self, ids: Sequence[int]) -> None:
        for i in ids:
            self._items.pop(i, None)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(slots=True)
class PublisherStatus:
    """What ``cryoctl status`` shows about MQTT."""

    broker: str
    client_id: str
    state: str = "idle"  # idle | connecting | connected | backoff | closed
    connected: bool = False
    connected_since_utc: float | None = None
    last_error: str | None = None
    last_error_utc: float | None = None
    connections: int = 0
    connect_failures: int = 0
    reconnects: int = 0  # connection attempts after the first
    next_retry_s: float | None = None
    telemetry_queued: int = 0
    telemetry_dropped: int = 0  # oldest sample dropped because the queue was full
    telemetry_decimated: int = 0  # offered faster than telemetry_hz (not a loss)
    published: dict[str, int] = field(default_factory=dict)
    rejected: int = 0  # payloads refused (personal-data guard, bad outbox item)
    outbox_pending: int = 0  # as of the last outbox check (at most one batch)
    outbox_errors: int = 0  # storage errors reading or marking the outbox (retried)
    last_outbox_error: str | None = None
    audit_head_seq: int | None = None  # the newest chain head the broker acknowledged

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tls_context(tls: Any) -> ssl.SSLContext | None:
    if tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None and tls.key_file is not None:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if not tls.verify_hostname:
        ctx.check_hostname = False
    return ctx


class PublishOnlyClient(Protocol):
    """What the record channel uses of a client: connect, publish, notice a drop."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: object) -> Any: ...

    async def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, *, timeout_s: float
    ) -> None: ...

    async def wait_disconnected(self) -> None: ...


class _PublishOnly:
    """An aiomqtt client that publishes and subscribes to nothing."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client

    async def __aenter__(self) -> _PublishOnly:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._client.__aexit__(*exc)

    async def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, *, timeout_s: float
    ) -> None:
        await self._client.publish(topic, payload, qos=qos, retain=retain, timeout=timeout_s)

    async def wait_disconnected(self) -> None:
        """Return (or raise) when the connection drops. Iterating subscribes to nothing."""
        async for _ in self._client.messages:  # pragma: no cover - we never subscribe
            pass


def publish_only_client(cfg: MqttConfig, *, client_id: str, logger: str) -> PublishOnlyClient:
    """A clean-session client for ``cfg``'s broker (TLS, credentials) under ``client_id``,
    with no will: what is not acknowledged is sent again by its caller."""
    common: dict[str, Any] = {
        "identifier": client_id,
        "keepalive": cfg.keepalive_s,
        "clean_session": True,
        "timeout": cfg.connect_timeout_s,
        "username": cfg.username,
        "password": cfg.read_password(),
        "tls_context": _tls_context(cfg.tls),
        "logger": logging.getLogger(logger),
    }
    if cfg.unix_socket is not None:
        client = aiomqtt.Client(str(cfg.unix_socket), 1, transport="unix", **common)
    else:
        client = aiomqtt.Client(cfg.host, cfg.port, **common)
    return _PublishOnly(client)


class _Disconnected(Exception):
    """Internal: the session ended because the broker connection went away."""


class Publisher:
    """One console's MQTT publisher. Create it inside the running loop."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        session: int,
        software_version: str,
        outbox: Outbox,
        outbox_batch: int = 100,
        outbox_poll_s: float = 10.0,  # a safety net: every outbox write wakes the sender
        outbox_retry_s: float = 1.0,  # after an outbox read or mark failed
        publish_timeout_s: float = 10.0,
        last_seen_s: float = 10.0,  # how often the retained last_seen is refreshed
        utc: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        asyncio.get_running_loop()  # fail early: aiomqtt binds to the running loop
        if config.console is None:
            raise ValueError("mqtt.console is not set: pass config.for_console(console_id)")
        self._cfg = config
        self._session_no = session
        self._version = software_version
        self._outbox = outbox
        self._outbox_batch = outbox_batch
        self._outbox_poll_s = outbox_poll_s
        self._outbox_retry_s = outbox_retry_s
        self._outbox_failed = False  # the last drain hit a storage error: retry soon
        self._publish_timeout_s = publish_timeout_s
        self._last_seen_s = last_seen_s
        self._utc = utc
        self._mono = monotonic
        self.topics = Topics(config.site, config.console)
        self._seq: dict[str, int] = {}
        self._period_s = 1.0 / config.telemetry_hz
        self._next_due = float("-inf")
        self._telemetry: deque[tuple[int, Mapping[str, Any]]] = deque()
        self._state_msg: bytes | None = None
        self._active_msg: bytes | None = None
        self._state_dirty = False
        self._active_dirty = False
        # the chain's heads (anchors, docs/integrity.md), each published in order and
        # retained (the newest stays); the newest is re-published after a reconnect
        self._heads: deque[tuple[str, bytes, int]] = deque(maxlen=64)  # topic, msg, seq
        self._head_msg: tuple[str, bytes, int] | None = None
        self._head_dirty = False
        self._outbox_hint = True
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._held_s = 0.0
        self._logged_error: str | None = None
        self._status = PublisherStatus(
            broker=config.broker,
            client_id=config.effective_client_id,
            published=dict.fromkeys(
                (
                    "status",
                    "last_seen",
                    "telemetry",
                    "state",
                    "alarms",
                    "alarms_active",
                    "cycles",
                    "audit_head",
                ),
                0,
            ),
        )

    # ----- the daemon side: none of these await -----

    def offer_telemetry(self, body: Mapping[str, Any]) -> bool:
        """Queue one telemetry sample (from ``payloads.telemetry_body``). Never blocks.

        Samples offered faster than ``telemetry_hz`` are skipped (decimated);
        when the queue is full the oldest sample is dropped and counted. The
        sequence number is taken on acceptance, so drops show as gaps. The
        body is kept as is (do not mutate it afterwards) and encoded later.
        """
        if self._closing.is_set():
            return False
        now = self._mono()
        if now < self._next_due:
            self._status.telemetry_decimated += 1
            return False
        late_s = now - self._next_due
        self._next_due = (
            self._next_due + self._period_s if late_s < self._period_s else now + self._period_s
        )
        if len(self._telemetry) >= self._cfg.queue_size:
            self._telemetry.popleft()
            self._status.telemetry_dropped += 1
        # encoding (and the personal-data guard) happen in the sender task, not here
        self._telemetry.append((self._next_seq(self.topics.telemetry), body))
        self._wake.set()
        return True

    def publish_event(self, kind: EventKind, body: Mapping[str, Any] | None = None) -> None:
        """Hand over a state or active-alarm change, or announce new outbox rows. Never blocks.

        ``state`` and ``alarms_active`` take a body (the latest value wins; it
        is retained and re-published after every reconnect). ``alarm`` and
        ``cycle`` events live in the outbox: call with no body once they are
        committed there, to deliver them without waiting for the next poll.
        """
        if kind in ("alarm", "cycle"):
            if body is not None:
                raise ValueError(
                    f"{kind} events go through the outbox; publish_event only wakes it"
                )
            self._outbox_hint = True
            self._wake.set()
            return
        if body is None:
            raise ValueError(f"{kind} needs a body")
        if kind == "state":
            topic = self.topics.state
        elif kind == "alarms_active":
            topic = self.topics.alarms_active
        else:
            raise ValueError(f"unknown event kind {kind!r}")
        try:
            msg = self._encode(topic, body)
        except (PersonalDataError, ValueError, TypeError) as exc:
            self._reject(kind, exc)
            return
        if kind == "state":
            self._state_msg, self._state_dirty = msg, True
        else:
            self._active_msg, self._active_dirty = msg, True
        self._wake.set()

    def offer_audit_head(self, topic: str, body: Mapping[str, Any]) -> None:
        """Publish the chain's head (``payloads.audit_head_body``) retained on ``topic``,
        the node's own. Heads are sent in the order offered (at most 64 wait; the
        anchoring offers about one a second), so a subscriber sees each. Never blocks.
        ``status().audit_head_seq`` is the newest head the broker acknowledged."""
        try:
            msg = self._encode(topic, body)
        except (PersonalDataError, ValueError, TypeError) as exc:
            self._reject("audit_head", exc)
            return
        item = (topic, msg, int(body["chain_seq"]))
        self._heads.append(item)
        self._head_msg, self._head_dirty = item, True
        self._wake.set()

    def notify_outbox(self) -> None:
        """New alarm/cycle rows were committed to the outbox."""
        self.publish_event("alarm")

    def status(self) -> PublisherStatus:
        s = self._status
        s.telemetry_queued = len(self._telemetry)
        return s

    # ----- lifecycle -----

    def start(self) -> asyncio.Task[None]:
        """Run the publisher as a task of the current loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="mqtt-publisher")
        return self._task

    async def close(self, timeout_s: float = 5.0) -> None:
        """Clean shutdown: publish retained ``offline``, disconnect, stop ``run()``."""
        self._closing.set()
        self._wake.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel of close()
            # that lands in the pass the task ends in
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Connect, publish, and reconnect with backoff until ``close()``."""
        cfg = self._cfg
        backoff = Backoff(
            policy=BackoffPolicy(first_s=cfg.reconnect_min_s, max_s=cfg.reconnect_max_s)
        )
        try:
            while not self._closing.is_set():
                self._status.state = "connecting"
                self._status.next_retry_s = None
                if self._status.connections or self._status.connect_failures:
                    self._status.reconnects += 1
                before = self._status.connections
                self._held_s = 0.0
                try:
                    await self._connect_once()
                except Exception as exc:  # noqa: BLE001 - telemetry must never die; retry
                    # (broker, TLS, password file, or the outbox's storage failing)
                    if self._status.connections == before:
                        self._status.connect_failures += 1
                    self._note_error(exc)
                if self._closing.is_set():
                    break
                # a connection that held resets the backoff; a flapping one does not
                if self._held_s >= 10.0:
                    backoff.succeeded()
                delay_s = backoff.failed()
                self._status.state = "backoff"
                self._status.next_retry_s = round(delay_s, 3)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay_s):  # keeps a cancel (3.11 wait_for may not)
                        await self._closing.wait()
        finally:
            self._status.state = "closed"
            self._status.connected = False
            self._status.next_retry_s = None

    # ----- internals -----

    def _next_seq(self, topic: str) -> int:
        n = self._seq.get(topic, 0) + 1
        self._seq[topic] = n
        return n

    def _encode(self, topic: str, body: Mapping[str, Any]) -> bytes:
        return encode(stamp(body, session=self._session_no, seq=self._next_seq(topic)))

    def _reject(self, what: str, exc: Exception) -> None:
        self._status.rejected += 1
        log.error("mqtt payload refused", extra={"what": what, "reason": str(exc)})

    def _note_error(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        repeated = text == self._logged_error
        self._logged_error = text
        self._status.last_error = text
        self._status.last_error_utc = self._utc()
        # logged once per distinct error, not on every retry; status() keeps the count
        log.log(logging.DEBUG if repeated else logging.WARNING, "mqtt connection: %s", text)

    def _note_outbox_error(self, exc: Exception) -> None:
        self._outbox_failed = True
        self._status.outbox_errors += 1
        self._status.last_outbox_error = f"{type(exc).__name__}: {exc}"
        log.error("mqtt outbox: %s", self._status.last_outbox_error)

    def _status_msg(
        self, *, online: bool, reason: Literal["connected", "clean_shutdown", "will"]
    ) -> bytes:
        body = status_body(
            online=online,
            software_version=self._version,
            client_id=self._cfg.effective_client_id,
            t_utc_s=self._utc(),
            reason=reason,
        )
        return self._encode(self.topics.status, body)

    def _tls_context(self) -> ssl.SSLContext | None:
        return _tls_context(self._cfg.tls)

    def _client(self) -> aiomqtt.Client:
        cfg = self._cfg
        will = aiomqtt.Will(
            topic=self.topics.status,
            payload=self._status_msg(online=False, reason="will"),
            qos=cfg.qos.status,
            retain=True,
        )
        common: dict[str, Any] = {
            "identifier": cfg.effective_client_id,
            "keepalive": cfg.keepalive_s,
            "will": will,
            "clean_session": True,
            # the client's default timeout bounds the CONNACK wait; publishes pass their own
            "timeout": cfg.connect_timeout_s,
            "username": cfg.username,
            "password": cfg.read_password(),
            "tls_context": self._tls_context(),
            "logger": logging.getLogger("cryod.telemetry.paho"),
        }
        if cfg.unix_socket is not None:
            # paho wants a positive port even for a unix socket; it is not used
            return aiomqtt.Client(str(cfg.unix_socket), 1, transport="unix", **common)
        return aiomqtt.Client(cfg.host, cfg.port, **common)

    async def _connect_once(self) -> None:
        """One connection, until it drops (raises) or the publisher closes."""
        client = self._client()
        async with client:
            t0 = self._mono()
            st = self._status
            st.connected, st.state = True, "connected"
            if self._logged_error is not None:
                log.warning("mqtt connected to %s after: %s", st.broker, self._logged_error)
            self._logged_error = None
            st.connections += 1
            st.connected_since_utc = self._utc()
            try:
                await self._session(client)
            finally:
                st.connected = False
                st.connected_since_utc = None
                self._held_s = self._mono() - t0

    async def _publish(
        self, client: aiomqtt.Client, topic: str, kind: str, msg: bytes, qos: int, *, retain: bool
    ) -> None:
        await client.publish(topic, msg, qos=qos, retain=retain, timeout=self._publish_timeout_s)
        self._status.published[kind] += 1

    async def _session(self, client: aiomqtt.Client) -> None:
        """Publish until closing or disconnected (raises then), then say offline if closing."""
        qos = self._cfg.qos
        if not self._closing.is_set():
            await self._publish(
                client,
                self.topics.status,
                "status",
                self._status_msg(online=True, reason="connected"),
                qos.status,
                retain=True,
            )
            # the broker may have restarted without persistence: re-state what is retained
            self._state_dirty = self._state_msg is not None
            self._active_dirty = self._active_msg is not None
            if self._head_msg is not None and not self._heads:
                self._heads.append(self._head_msg)  # the newest again, for the retained copy
            self._head_dirty = bool(self._heads)
            self._outbox_hint = True
            watch = asyncio.create_task(self._watch(client), name="mqtt-watch")
            send = asyncio.create_task(self._send_loop(client), name="mqtt-send")
            try:
                done, _ = await asyncio.wait({watch, send}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (watch, send):
                    t.cancel()
                results = await asyncio.gather(watch, send, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                    raise r
            if watch in done:
                raise _Disconnected("broker connection lost")
        # closing: a clean DISCONNECT suppresses the will, so say offline ourselves
        await client.publish(
            self.topics.status,
            self._status_msg(online=False, reason="clean_shutdown"),
            qos=qos.status,
            retain=True,
            timeout=2.0,
        )
        self._status.published["status"] += 1

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Return (or raise) when the connection drops. Iterating subscribes to nothing."""
        async for _ in client.messages:  # pragma: no cover - we never subscribe
            pass

    async def _send_loop(self, client: aiomqtt.Client) -> None:
        qos = self._cfg.qos
        next_outbox = next_seen = self._mono()
        while not self._closing.is_set():
            self._wake.clear()
            if self._state_dirty and self._state_msg is not None:
                msg = self._state_msg
                await self._publish(client, self.topics.state, "state", msg, qos.state, retain=True)
                if self._state_msg is msg:
                    self._state_dirty = False
                continue
            if self._active_dirty and self._active_msg is not None:
                msg = self._active_msg
                await self._publish(
                    client, self.topics.alarms_active, "alarms_active", msg, qos.alarms, retain=True
                )
                if self._active_msg is msg:
                    self._active_dirty = False
                continue
            if self._head_dirty and self._heads:
                topic, body, chain_seq = self._heads[0]
                await self._publish(client, topic, "audit_head", body, qos.audit_head, retain=True)
                self._status.audit_head_seq = chain_seq
                self._heads.popleft()
                self._head_dirty = bool(self._heads)
                continue
            if self._outbox_hint or self._mono() >= next_outbox:
                self._outbox_hint = False
                more = await self._drain_outbox(client)
                next_outbox = self._mono() + (
                    self._outbox_retry_s if self._outbox_failed else self._outbox_poll_s
                )
                if more:
                    self._outbox_hint = True
                    continue
            if self._mono() >= next_seen:
                seen = last_seen_body(t_utc_s=self._utc(), interval_s=self._last_seen_s)
                msg = self._encode(self.topics.last_seen, seen)
                await self._publish(
                    client, self.topics.last_seen, "last_seen", msg, qos.status, retain=True
                )
                next_seen = self._mono() + self._last_seen_s
            while self._telemetry and not (
                self._state_dirty or self._active_dirty or self._head_dirty or self._outbox_hint
            ):
                item = self._telemetry[0]
                try:
                    msg = encode(stamp(item[1], session=self._session_no, seq=item[0]))
                except (PersonalDataError, ValueError, TypeError) as exc:
                    self._reject("telemetry", exc)
                else:
                    await self._publish(
                        client, self.topics.telemetry, "telemetry", msg, qos.telemetry, retain=False
                    )
                if self._telemetry and self._telemetry[0] is item:
                    self._telemetry.popleft()
            if self._state_dirty or self._active_dirty or self._head_dirty or self._outbox_hint:
                continue
            wait_s = max(0.0, min(next_outbox, next_seen) - self._mono())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):  # no task per wait, as wait_for makes
                    await self._wake.wait()

    async def _drain_outbox(self, client: aiomqtt.Client) -> bool:
        """Publish one batch of outbox events in order; True if a full batch came back."""
        self._outbox_failed = False
        try:
            items = list(await self._outbox.pending(self._outbox_batch))
        except Exception as exc:  # noqa: BLE001 - storage trouble must not drop the broker
            self._note_outbox_error(exc)
            return False
        self._status.outbox_pending = len(items)
        done: list[int] = []
        try:
            for item in items:
                topic_kind = _OUTBOX_TOPIC_KIND.get(item.kind)
                try:
                    body = item.payload
                    if isinstance(body, (str, bytes)):
                        body = json.loads(body)
                    if topic_kind is None:
                        raise ValueError(f"unknown outbox kind {item.kind!r}")
                    topic = self.topics.alarms if topic_kind == "alarms" else self.topics.cycles
                    msg = self._encode(topic, {**body, "event_id": item.id})
                except (PersonalDataError, ValueError, TypeError) as exc:
                    # never published; marked so it cannot wedge the queue, and counted
                    self._reject(f"outbox {item.id}", exc)
                    done.append(item.id)
                    continue
                q = self._cfg.qos.alarms if topic_kind == "alarms" else self._cfg.qos.cycles
                await self._publish(client, topic, topic_kind, msg, q, retain=False)
                done.append(item.id)
        finally:
            if done:
                try:
                    await self._outbox.mark_delivered(done)
                except Exception as exc:  # noqa: BLE001 - they will be sent again: duplicates
                    self._note_outbox_error(exc)
                self._status.outbox_pending = max(0, len(items) - len(done))
        return len(items) >= self._outbox_batch
