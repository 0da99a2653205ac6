"""The board's telemetry subscription, folded into a ``Board``.

Watches (QoS 0, clean session, its own client id) the rooms' telemetry tree
``cryod/v1/#`` on the collector's broker (``[broker]`` in the config: host,
port, user, password file, TLS) through ``hub.subscriber.watch``, the
collector's one MQTT module, and folds each message into a ``Board``. It
never publishes: the web app cannot reach a console. Reconnects with a
doubling back-off (0.5 s to 30 s) while the app runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time

from ..subscriber import BrokerSettings, BrokerUnavailable, watch
from .board import Board

__all__ = ["TOPIC", "BrokerSettings", "TelemetryFeed"]

TOPIC = "cryod/v1/#"
MAX_PAYLOAD = 256 * 1024
_log = logging.getLogger("cryod.hub.web.telemetry")


class TelemetryFeed:
    def __init__(self, settings: BrokerSettings, board: Board) -> None:
        self.settings = settings
        self.board = board
        self.connected = False
        self.last_error: str | None = None
        self.messages = 0

    def handle(self, topic: str, payload: bytes, retained: bool) -> None:
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

    def _connected(self) -> None:
        self.connected = True
        self.last_error = None

    async def run(self) -> None:
        """Until cancelled."""
        backoff = 0.5
        while True:
            try:
                await watch(self.settings, TOPIC, self.handle, on_connected=self._connected)
            except asyncio.CancelledError:
                self.connected = False
                raise
            except BrokerUnavailable as exc:
                if str(exc) != self.last_error:
                    _log.warning("telemetry subscription: %s", exc)
                self.last_error = str(exc)
            if self.connected:
                backoff = 0.5
            self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
