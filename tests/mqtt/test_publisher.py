"""The publisher against a real mosquitto that each test starts itself (never the system one)."""

from __future__ import annotations

import ast
import asyncio
import inspect
import itertools
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cryod.daemon.telemetry import publisher as publisher_module
from cryod.daemon.telemetry.config import MqttConfig
from cryod.daemon.telemetry.payloads import (
    ActiveAlarm,
    alarm_event_body,
    alarms_active_body,
    audit_head_body,
    audit_head_topic,
    cycle_body,
    state_body,
    telemetry_body,
)
from cryod.daemon.telemetry.publisher import MemoryOutbox, Publisher
from tests.mqtt import asyncapi
from tests.mqtt.broker import Collector, Mosquitto, Received, free_port
from tests.mqtt.samples import link, snapshot
from tests.timing import until

REPO = Path(__file__).resolve().parents[2]


def _cfg(port: int, **kw: Any) -> MqttConfig:
    base: dict[str, Any] = {
        "port": port,
        "site": "demo",
        "console": "c1",
        "keepalive_s": 5,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.3,
    }
    base.update(kw)
    return MqttConfig(**base)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker", persistence=True)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
async def make_pub() -> AsyncIterator[Callable[..., Publisher]]:
    made: list[Publisher] = []

    def make(cfg: MqttConfig, outbox: Any = None, **kw: Any) -> Publisher:
        pub = Publisher(
            cfg,
            session=kw.pop("session", 7),
            software_version="0.1.0-test",
            outbox=outbox if outbox is not None else MemoryOutbox(),
            **kw,
        )
        made.append(pub)
        return pub

    yield make
    for pub in made:
        await pub.close()


def _status(m: Received, value: str) -> bool:
    return m.topic.endswith("/status") and m.payload["status"] == value


def _alarm(i: int) -> dict[str, Any]:
    return alarm_event_body(
        t_utc_s=time.time(), event="raised", alarm_id=i, code=f"A{i}", priority="medium"
    )


def _cycle(i: int) -> dict[str, Any]:
    return cycle_body(
        t_utc_s=time.time(), cycle_id=i, procedure_id=3, probe=1, cycle=i, phase="thaw",
        started_ts_ms=1, freeze_s=90.0, thaw_s=25.0, min_tip_c=-80.0,
        time_below_m20c_s=85.0, time_below_m40c_s=80.0, outcome="completed",
    )  # fmt: skip


async def test_retained_online_status_state_and_active_alarms_for_a_late_subscriber(
    broker: Mosquitto, make_pub: Callable[..., Publisher]
) -> None:
    pub = make_pub(_cfg(broker.port))
    pub.publish_event("state", state_body(t_utc_s=time.time(), engine_state="idle"))
    pub.publish_event("alarms_active", alarms_active_body(t_utc_s=time.time(), alarms=[]))
    pub.start()
    async with Collector(broker.port, client_id="early") as early:
        await early.wait_for(lambda m: m.topic.endswith("/alarms/active"))
    async with Collector(broker.port, client_id="late") as late:
        st = await late.wait_for(lambda m: _status(m, "online"))
        state = await late.wait_for(lambda m: m.topic.endswith("/state"))
        await late.wait_for(lambda m: m.topic.endswith("/alarms/active"))
    assert st.retain
    assert state.retain
    assert st.payload["software_version"] == "0.1.0-test"
    assert st.payload["session"] == 7
    assert state.payload["engine_state"] == "idle"
    s = pub.status()
    assert s.connected
    assert s.state == "connected"
    assert s.connections == 1


async def test_clean_shutdown_publishes_retained_offline(
    broker: Mosquitto, make_pub: Callable[..., Publisher]
) -> None:
    pub = make_pub(_cfg(broker.port))
    pub.start()
    async with Collector(broker.port) as col:
        await col.wait_for(lambda m: _status(m, "online"))
        await pub.close()
        off = await col.wait_for(lambda m: _status(m, "offline"))
    assert off.payload["reason"] == "clean_shutdown"
    assert pub.status().state == "closed"
    async with Collector(broker.port, client_id="after") as after:
        last = await after.wait_for(lambda m: m.topic.endswith("/status"))
    assert last.retain
    assert last.payload["status"] == "offline"
    assert last.payload["reason"] == "clean_shutdown"


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
async def test_will_says_offline_within_1_5_keepalive_when_the_process_dies_or_hangs(
    broker: Mosquitto, tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The will comes; its ts_ms is the connect time, so the retained last_seen says
    when the daemon was last alive: the last one it published before it died."""
    keepalive_s = 2
    client_id = f"cryod-killme-{how.lower()}"
    err = (tmp_path / "proc.err").open("wb")
    args = [str(broker.port), str(keepalive_s), client_id, "0.2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mqtt.publisher_proc", *args],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
    )  # fmt: skip
    try:
        async with Collector(broker.port) as col:
            mine = lambda m: m.topic.endswith("/status") and m.payload["client_id"] == client_id  # noqa: E731
            await col.wait_for(lambda m: mine(m) and m.payload["status"] == "online", 15)
            await col.wait_for(lambda m: m.topic.endswith("/killme/state"), 5)
            seen = lambda m: m.topic.endswith("/killme/last_seen")  # noqa: E731
            await col.wait_count(seen, 2, 5)  # published, then refreshed
            n = len(col.messages)
            t0 = time.monotonic()
            proc.send_signal(getattr(signal, how))
            t_kill_ms = time.time() * 1000
            will = await col.wait_for(
                lambda m: mine(m) and m.payload["status"] == "offline",
                1.5 * keepalive_s + 8.0,
                start=n,
            )
            delay_s = will.t_mono - t0
    finally:
        proc.kill()  # also ends a stopped process
        proc.wait(timeout=5)
        err.close()
    assert will.payload["reason"] == "will"
    assert will.payload["session"] == 42
    before = [m for m in col.messages[:n] if seen(m)]
    async with Collector(broker.port, client_id="after-death") as after:
        last_seen = await after.wait_for(seen, 5)
    assert last_seen.retain
    # what a subscriber finds: the last refresh before the death, later than the will's ts
    assert last_seen.payload["ts_ms"] >= before[-1].payload["ts_ms"]
    assert will.payload["ts_ms"] < last_seen.payload["ts_ms"] <= t_kill_ms + 1
    assert last_seen.payload["interval_s"] == 0.2
    assert before[0].payload["ts_ms"] < before[-1].payload["ts_ms"]
    # kill -9: the kernel closes the socket, so the broker sends the will at once. A hung
    # process is caught by the keepalive: 1.5 x keepalive after the last packet, plus the
    # broker's check interval (mosquitto 2.0.11 as packaged checks every ~6 s, in whole seconds)
    bound_s = 1.5 * keepalive_s + (0.0 if how == "SIGKILL" else 6.5)
    assert delay_s <= bound_s, (delay_s, (tmp_path / "proc.err").read_text())
    with capsys.disabled():
        print(f"\n[mqtt] will after {how}: {delay_s * 1000:.0f} ms (keepalive {keepalive_s} s)")


async def test_every_topic_matches_the_asyncapi_schemas(
    broker: Mosquitto, make_pub: Callable[..., Publisher]
) -> None:
    outbox = MemoryOutbox()
    pub = make_pub(_cfg(broker.port, telemetry_hz=50), outbox)
    async with Collector(broker.port) as col:
        pub.start()
        await col.wait_for(lambda m: _status(m, "online"))
        pub.offer_telemetry(telemetry_body(snapshot(1), link=link()))
        pub.publish_event(
            "state",
            state_body(
                t_utc_s=time.time(), engine_state="running", phase="freeze", probe=1, cycle=1,
                remaining_s=88.0, procedure_id=12, protocol="classic-90",
            ),
        )  # fmt: skip
        pub.publish_event(
            "alarms_active",
            alarms_active_body(
                t_utc_s=time.time(),
                alarms=[ActiveAlarm(1, "TIP_STALE", "high", 2, 5, False, True, "probe 2 stale")],
            ),
        )
        outbox.add("alarm", _alarm(1))
        outbox.add("cycle", _cycle(1))
        pub.publish_event("alarm")
        pub.offer_audit_head(
            audit_head_topic("demo", "ws-1"),
            audit_head_body(t_utc_s=time.time(), node="ws-1", seq=7, digest="cd" * 32),
        )
        for suffix in ("telemetry", "state", "active", "alarms", "cycles", "head", "last_seen"):
            await col.wait_for(lambda m, s=suffix: m.topic.endswith("/" + s))
        await pub.close()
        await col.wait_for(lambda m: _status(m, "offline"))
    channels = [asyncapi.validate(m.topic, m.payload) for m in col.messages]
    # the telemetry publisher's channels (the record channel is tests/record_channel's)
    assert set(channels) == {name for name, _, _ in asyncapi.channels()} - {"recordChain"}
    assert len(channels) >= 8


async def test_alarm_and_cycle_events_redelivered_in_order_after_broker_restart(
    broker: Mosquitto, make_pub: Callable[..., Publisher]
) -> None:
    outbox = MemoryOutbox()
    pub = make_pub(_cfg(broker.port), outbox)
    pub.start()
    # a collector with a persistent session: the broker keeps its QoS 1 queue across the restart
    async with Collector(
        broker.port, client_id="collector", clean_session=False, reconnect=True
    ) as col:
        await col.wait_for(lambda m: _status(m, "online"))
        outbox.add("alarm", _alarm(1))
        pub.publish_event("alarm")
        await col.wait_for(lambda m: m.topic.endswith("/alarms"))
        broker.stop()
        await until(lambda: not pub.status().connected, "the publisher to see the broker gone")
        ids = []
        for i in range(2, 12):  # events raised while the broker is down
            ids.append(outbox.add("alarm" if i % 3 else "cycle", _alarm(i) if i % 3 else _cycle(i)))
            pub.publish_event("alarm")
            await asyncio.sleep(0.01)
        assert not pub.status().connected
        assert len(outbox) == 10
        broker.start()
        # duplicates are allowed (at least once), so wait for the last id, not for a count
        await col.wait_for(lambda m: m.payload.get("event_id") == ids[-1], 30)
        # marked delivered once the broker acknowledged
        await until(lambda: not len(outbox), "the outbox to empty")
    events = [m for m in col.messages if m.topic.endswith(("/alarms", "/cycles"))]
    got = [m.payload["event_id"] for m in events]
    # at least once: a duplicate is allowed, a loss or a reordering is not
    deduped = list(dict.fromkeys(got))
    assert deduped == [1, *ids]
    for m in events:
        asyncapi.validate(m.topic, m.payload)
    assert pub.status().reconnects >= 1


async def test_broker_down_at_start_then_up(
    tmp_path: Path, make_pub: Callable[..., Publisher], capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    b = Mosquitto(tmp_path / "b", port=port)
    pub = make_pub(_cfg(port, telemetry_hz=50))
    pub.publish_event("state", state_body(t_utc_s=time.time(), engine_state="idle"))
    pub.start()
    try:
        await until(lambda: pub.status().connect_failures >= 2, "two failed connects")
        s = pub.status()
        assert not s.connected
        assert s.last_error is not None
        assert s.state in ("backoff", "connecting")
        b.start()
        async with Collector(port) as col:
            await col.wait_for(lambda m: _status(m, "online"))
            state = await col.wait_for(lambda m: m.topic.endswith("/state"))
        assert state.payload["engine_state"] == "idle"
        assert pub.status().connected
    finally:
        await pub.close()
        b.stop()


async def test_offer_telemetry_never_waits_while_the_broker_is_stopped(
    tmp_path: Path, make_pub: Callable[..., Publisher], capsys: pytest.CaptureFixture[str]
) -> None:
    """A poll loop at 20 Hz keeps its timing while the publisher retries a dead broker."""
    assert not inspect.iscoroutinefunction(Publisher.offer_telemetry)
    assert not inspect.iscoroutinefunction(Publisher.publish_event)
    port = free_port()  # nothing listens here
    pub = make_pub(_cfg(port, telemetry_hz=50, queue_size=32, reconnect_max_s=0.1))
    pub.start()
    body = telemetry_body(snapshot(1), link=link())
    accepted_s: list[float] = []  # queued (and, once full, the oldest dropped)
    skipped_s: list[float] = []  # offered faster than telemetry_hz
    lateness: list[float] = []
    period_s = 0.05
    next_t = time.monotonic()
    for _ in range(60):  # 3 s of polling
        for _ in range(50):  # many offers per tick: the first is due, the rest are decimated
            t0 = time.perf_counter()
            ok = pub.offer_telemetry(body)
            (accepted_s if ok else skipped_s).append(time.perf_counter() - t0)
        next_t += period_s
        await asyncio.sleep(max(0.0, next_t - time.monotonic()))
        lateness.append(time.monotonic() - next_t)
    s = pub.status()
    assert not s.connected
    assert s.telemetry_queued == 32
    # a late tick followed by a punctual one can fall inside 1/telemetry_hz (decimated),
    # so how many were accepted depends on the machine; enough to overflow the queue
    assert len(accepted_s) > 32
    assert s.telemetry_dropped == len(accepted_s) - 32
    # and it went on retrying the dead broker meanwhile
    await until(lambda: pub.status().connect_failures >= 5, "five failed connects")
    s = pub.status()
    accepted_s.sort()
    skipped_s.sort()
    with capsys.disabled():
        print(
            f"\n[mqtt] broker down 3 s: offer_telemetry accepted x{len(accepted_s)} median "
            f"{accepted_s[len(accepted_s) // 2] * 1e6:.0f} us max {accepted_s[-1] * 1e6:.0f} us; "
            f"decimated x{len(skipped_s)} median {skipped_s[len(skipped_s) // 2] * 1e6:.1f} us "
            f"max {skipped_s[-1] * 1e6:.0f} us; 20 Hz tick lateness median "
            f"{sorted(lateness)[30] * 1000:.1f} ms max {max(lateness) * 1000:.1f} ms; "
            f"{s.connect_failures} failed connects; "
            f"{s.telemetry_dropped} dropped"
        )


async def test_full_queue_drops_the_oldest_and_counts_it(
    tmp_path: Path, make_pub: Callable[..., Publisher]
) -> None:
    port = free_port()
    b = Mosquitto(tmp_path / "b", port=port)
    clock = itertools.count(start=1000.0, step=1.0)  # every offer is due: no decimation
    pub = make_pub(_cfg(port, queue_size=5), monotonic=lambda: next(clock))
    for i in range(1, 13):
        assert pub.offer_telemetry(telemetry_body(snapshot(i)))
    s = pub.status()
    assert s.telemetry_dropped == 7
    assert s.telemetry_queued == 5
    b.start()
    try:
        async with Collector(port) as col:
            pub.start()
            got = await col.wait_count(lambda m: m.topic.endswith("/telemetry"), 5)
            # nothing more comes: everything queued is sent, then a marker sent after it
            # arrives (one connection, in order) with no sixth telemetry before it
            await until(lambda: pub.status().telemetry_queued == 0, "the queue to drain")
            pub.publish_event("state", state_body(t_utc_s=time.time(), engine_state="idle"))
            await col.wait_for(lambda m: m.topic.endswith("/state"))
        # the newest five survive; the gap in seq shows the seven dropped
        assert [m.payload["seq"] for m in col.on("telemetry")] == [8, 9, 10, 11, 12]
        assert [m.payload["poll_seq"] for m in got] == [8, 9, 10, 11, 12]
    finally:
        await pub.close()
        b.stop()


def test_telemetry_is_rate_limited_to_telemetry_hz() -> None:
    async def go() -> tuple[int, int]:
        t = [0.0]
        pub = Publisher(
            _cfg(1, telemetry_hz=2, queue_size=1000),
            session=1, software_version="x", outbox=MemoryOutbox(), monotonic=lambda: t[0],
        )  # fmt: skip
        accepted = 0
        for i in range(100):  # 10 s at 10 Hz
            t[0] = i * 0.1
            accepted += pub.offer_telemetry(telemetry_body(snapshot(i)))
        return accepted, pub.status().telemetry_decimated

    accepted, decimated = asyncio.run(go())
    assert accepted == 20
    assert decimated == 80


async def test_the_daemon_never_subscribes(
    broker: Mosquitto, make_pub: Callable[..., Publisher]
) -> None:
    """MQTT is out only: no topic can reach the engine, so none can move a valve."""
    pub = make_pub(_cfg(broker.port, client_id="cryod-nosub"))
    pub.start()
    async with Collector(broker.port, client_id="probe-subscriber") as col:
        await col.wait_for(lambda m: _status(m, "online"))
        await pub.close()
    log = broker.log()
    # positive control: the broker logs subscriptions, so the check below can fail
    assert "Received SUBSCRIBE from probe-subscriber" in log
    assert "New client connected" in log
    assert "cryod-nosub" in log
    assert "SUBSCRIBE from cryod-nosub" not in log
    # and no code path in the telemetry package calls subscribe()
    pkg = Path(publisher_module.__file__).parent
    calls = [
        (f.name, node.lineno)
        for f in pkg.glob("*.py")
        for node in ast.walk(ast.parse(f.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in ("subscribe", "on_message")
    ]
    assert calls == []


async def test_unix_socket_listener(tmp_path: Path, make_pub: Callable[..., Publisher]) -> None:
    sock = tmp_path / "mqtt.sock"
    b = Mosquitto(tmp_path / "b", unix_socket=sock)
    b.start()
    try:
        pub = make_pub(_cfg(1, unix_socket=sock))
        pub.start()
        async with Collector(1, host=str(sock), transport="unix") as col:
            st = await col.wait_for(lambda m: _status(m, "online"))
        assert pub.status().broker == f"unix:{sock}"
        assert st.payload["client_id"] == "cryod-demo-c1"
        await pub.close()
    finally:
        b.stop()


class _FlakyOutbox(MemoryOutbox):
    """Storage that fails once, as a locked or full database might."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def pending(self, limit: int) -> list[Any]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("database is locked")
        return await super().pending(limit)


async def test_outbox_failure_and_personal_data_never_stop_the_publisher(
    broker: Mosquitto, make_pub: Callable[..., Publisher]
) -> None:
    outbox = _FlakyOutbox()
    outbox.add("alarm", {**_alarm(1), "patient_ref": "X123"})  # must never reach the bus
    good = outbox.add("cycle", _cycle(2))
    pub = make_pub(_cfg(broker.port), outbox)
    with pytest.raises(ValueError, match="outbox"):
        pub.publish_event("alarm", _alarm(3))
    async with Collector(broker.port) as col:
        pub.start()
        # the alarm before it in the outbox was refused by then (the outbox is in order)
        cyc = await col.wait_for(lambda m: m.topic.endswith("/cycles"))
        await until(lambda: not len(outbox), "the outbox to empty")
    s = pub.status()
    assert cyc.payload["event_id"] == good
    assert col.on("alarms") == []
    assert not any("X123" in str(m.payload) for m in col.messages)
    assert s.rejected == 1
    assert s.outbox_errors == 1  # retried after outbox_retry_s (1 s), without dropping the broker
    assert s.last_outbox_error == "RuntimeError: database is locked"
    assert s.connections == 1
    assert len(outbox) == 0


async def test_a_publisher_needs_a_console() -> None:
    with pytest.raises(ValueError, match="for_console"):
        Publisher(MqttConfig(site="demo"), session=1, software_version="x", outbox=MemoryOutbox())


class _CountingOutbox(MemoryOutbox):
    """Counts the reads: each one is a database transaction in the daemon."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def pending(self, limit: int) -> list[Any]:
        self.reads += 1
        return await super().pending(limit)


async def test_an_idle_outbox_is_read_only_when_woken(
    broker: Mosquitto, make_pub: Callable[..., Publisher]
) -> None:
    """The periodic read is a safety net (10 s): new rows wake the sender themselves."""
    outbox = _CountingOutbox()
    pub = make_pub(_cfg(broker.port), outbox)
    async with Collector(broker.port) as col:
        pub.start()
        await col.wait_for(lambda m: m.topic.endswith("/status"), 5)
        await asyncio.sleep(2.5)
        assert outbox.reads == 1, "read again with nothing new"  # the start-up read only
        good = outbox.add("cycle", _cycle(2))
        pub.notify_outbox()
        cyc = await col.wait_for(lambda m: m.topic.endswith("/cycles"))
    assert cyc.payload["event_id"] == good
    assert outbox.reads == 2
