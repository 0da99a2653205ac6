"""A record channel on a real store, publishing to a real mosquitto."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from cryod.daemon.record_channel.channel import RecordChannel
from cryod.daemon.record_channel.cursor import Limits
from cryod.daemon.store.records import REDACTED, check_patient_ref
from cryod.daemon.telemetry.config import MqttConfig

from .room import NODE, SITE

TOPIC = f"cryod-record/v1/{SITE}/{NODE}/chain"


def mqtt_config(port: int, **kw: Any) -> MqttConfig:
    return MqttConfig(
        host="127.0.0.1", port=port, site=SITE, reconnect_min_s=0.05, reconnect_max_s=0.5,
        connect_timeout_s=2.0, **kw,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def running_channel(
    engine: Engine,
    port: int,
    cursor_path: Path,
    *,
    rate_per_s: float = 2000.0,
    burst: int = 200,
    window: int = 8,
    **mqtt: Any,
) -> AsyncIterator[RecordChannel]:
    channel = RecordChannel(
        mqtt_config(port, **mqtt),
        client_id=f"cryod-record-{NODE}",
        site=SITE,
        node=NODE,
        engine=engine,
        cursor_path=cursor_path,
        limits=Limits(rate_per_s=rate_per_s, burst=burst, window=window),
        check_pseudonym=check_patient_ref,
        placeholder=REDACTED,
        publish_timeout_s=5.0,
        persist_interval_s=0.1,
    )
    channel.start()
    try:
        yield channel
    finally:
        await channel.close()
