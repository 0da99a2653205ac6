"""A collector under test: a real mosquitto, a database, ``cryohub run`` as a process.

``HubRig`` writes a config (database URL from the ``db_url`` fixture, the
broker's port, an anchor file, a study profiles folder), migrates the
database, registers rooms and starts ``python -m cryod.hub.cli run`` with a
``NOTIFY_SOCKET`` of its own (``Notify`` reads what it sends) and a stats
file. ``publish`` plays the rooms' side: every message QoS 1, each one sent
again until the broker acknowledged it (as the room's publisher does), over
a connection that is re-made when the broker goes away.

Nothing here sleeps in place of a condition: ``wait_until`` polls a predicate
against a generous deadline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cryod.hub.store.db import make_engine
from cryod.hub.store.migrate import upgrade
from cryod.hub.store.models import Quarantined, ReceivedBlock, ReceivedEntry, ReceivedRow
from tests.mqtt.broker import Mosquitto

from .conftest import NODE, T0
from .fake_room import FakeRoom, raw
from .followup_study import register

REPO = Path(__file__).resolve().parents[2]


def wait_until(pred: Callable[[], Any], timeout_s: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s} s: {what or pred}")
        time.sleep(0.05)


def topic(room: FakeRoom) -> str:
    return f"cryod-record/v1/{room.site}/{room.node}/chain"


def live_room(node: str, site: str = "site-a") -> FakeRoom:
    """A room whose clock is now (so no skew is flagged by a fixture's old dates)."""
    return FakeRoom(node=node, site=site, start=dt.datetime.now(dt.UTC))


class Notify:
    """A stand-in for systemd's notification socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def read(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return self.messages

    def has(self, field: str) -> bool:
        return any(field in m.split("\n") for m in self.read())

    def close(self) -> None:
        self.sock.close()


class HubRig:
    def __init__(
        self,
        workdir: Path,
        db_url: str,
        *,
        watchdog_s: float = 4.0,
        broker: Mosquitto | None = None,
        broker_extra: str = "",
    ) -> None:
        self.dir = workdir
        self.db_url = db_url
        self.broker_extra = broker_extra
        self.broker = broker or Mosquitto(
            workdir / "mq",
            persistence=True,
            extra="max_queued_messages 0\nmax_inflight_messages 0\n",
        )
        self.studies = workdir / "studies"
        self.studies.mkdir(parents=True)
        (workdir / "anchors").mkdir()
        self.config = workdir / "cryohub.toml"
        self.stats_file = workdir / "stats.json"
        self.log_path = workdir / "cryohub.log"
        self.notify = Notify(workdir / "notify.sock")
        self.watchdog_s = watchdog_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._connected_before = 0
        self.engine: Engine = make_engine(db_url)
        self.broker.start()
        self._write_config()
        upgrade(self.engine, node=NODE, now=T0)

    def _write_config(self) -> None:
        self.config.write_text(
            f'[collector]\nid = "{NODE}"\nlog_level = "info"\n\n'
            f'[database]\nurl = "{self.db_url}"\n\n'
            f'[broker]\nhost = "127.0.0.1"\nport = {self.broker.port}\n'
            f'client_id = "cryohub-test"\nsession_expiry_s = 3600\nreceive_maximum = 200\n'
            f"{self.broker_extra}\n"
            f'[studies]\nprofiles_dir = "studies"\n\n'
            f'[anchors]\nfile = "anchors/cryohub.jsonl"\njournal_socket = "{self.dir}/no.sock"\n'
        )

    def register(self, *rooms: FakeRoom) -> None:
        for r in rooms:
            register(self.engine, r)

    # ---- the collector process ------------------------------------------------------------
    def start(self, *, wait_ready: bool = True, systemd: bool = True) -> None:
        """Start ``cryohub run``; ``systemd=False``: without NOTIFY_SOCKET and watchdog."""
        assert self.proc is None
        self._connected_before = self.log().count("broker: connected")
        env = dict(os.environ)
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        env["PYTHONPATH"] = str(REPO)
        if systemd:
            env["NOTIFY_SOCKET"] = str(self.notify.path)
            env["WATCHDOG_USEC"] = str(int(self.watchdog_s * 1_000_000))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cryod.hub.cli", "run", "--config", str(self.config),
             "--stats-file", str(self.stats_file)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
        )  # fmt: skip
        log.close()
        if wait_ready and systemd:
            self.wait_ready()
        elif wait_ready:
            wait_until(self._subscribed, 60, "subscribed")

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"cryohub run exited {self.proc.returncode}: {self.log()}")
            return self.notify.has("READY=1")

        wait_until(ready, 60, "READY=1")
        self.notify.messages.clear()
        wait_until(self._subscribed, 60, "subscribed")

    def _subscribed(self) -> bool:
        return self.log().count("broker: connected") > self._connected_before

    def stop(self) -> int:
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                raise
        return proc.returncode

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.broker.stop()
            self.notify.close()
            self.engine.dispose()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stats(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.stats_file.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    # ---- what the database holds ---------------------------------------------------------
    def count(self, model: Any, node: str | None = None) -> int:
        with Session(self.engine) as s:
            q = select(func.count()).select_from(model)
            if node is not None:
                q = q.where(model.node == node)
            return int(s.execute(q).scalar_one())

    def stored(self, node: str) -> dict[int, str]:
        with Session(self.engine) as s:
            return {
                int(seq): str(h)
                for seq, h in s.execute(
                    select(ReceivedEntry.seq, ReceivedEntry.hash).where(ReceivedEntry.node == node)
                )
            }

    def wait_stored(self, room: FakeRoom, seq: int | None = None, timeout_s: float = 90) -> None:
        want = room.seq if seq is None else seq

        def done() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"cryohub run exited {self.proc.returncode}: {self.log()}")
            return self.count(ReceivedEntry, room.node) >= want

        wait_until(done, timeout_s, f"{room.node} stored to {want}")

    def assert_same_as(self, room: FakeRoom, rows: int, blocks: int) -> None:
        """Nothing lost, nothing doubled: the room's hashes, row and block counts."""
        assert self.stored(room.node) == room.hashes
        assert self.count(ReceivedRow, room.node) == rows
        assert self.count(ReceivedBlock, room.node) == blocks
        assert self.count(Quarantined) == 0


async def publish(
    port: int,
    messages: Sequence[tuple[str, bytes]],
    *,
    client_id: str = "room-publisher",
    on_sent: Callable[[int], None] | None = None,
    pace_s: float = 0.0,
    **client_kw: Any,
) -> None:
    """Each message QoS 1, sent again until the broker acknowledged it."""
    i = 0
    while i < len(messages):
        try:
            async with aiomqtt.Client(
                "127.0.0.1", port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5,
                timeout=5, **client_kw,
            ) as client:  # fmt: skip
                while i < len(messages):
                    t, payload = messages[i]
                    await client.publish(t, payload, qos=1)
                    i += 1
                    if on_sent is not None:
                        on_sent(i)
                    if pace_s:
                        await asyncio.sleep(pace_s)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.1)


def messages_of(room: FakeRoom, docs: Iterable[dict[str, Any]]) -> list[tuple[str, bytes]]:
    return [(topic(room), raw(d)) for d in docs]


def chain(room: FakeRoom, n: int) -> tuple[list[dict[str, Any]], int, int]:
    """n entries (events, rows, sample batches); with their row and block counts."""
    docs, rows, blocks = [], 0, 0
    for i in range(n):
        k = i % 3
        if k == 0:
            docs.append(room.event())
        elif k == 1:
            docs.append(room.row(row_id=i))
            rows += 1
        else:
            docs.append(room.samples(n=40))
            blocks += 1
    return docs, rows, blocks


def run_publish(port: int, msgs: Sequence[tuple[str, bytes]], **kw: Any) -> None:
    asyncio.run(publish(port, msgs, **kw))
