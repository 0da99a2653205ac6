"""The record channel against a real mosquitto: every entry, in order, QoS 1, never
retained; the cursor saved after the PUBACKs; restarts resume from it; resend; the
reference receiver rebuilds the room's procedures from the channel alone."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from cryod.daemon.record_channel.cursor import LIGHT_COST
from cryod.daemon.record_channel.cursor_file import load_cursor
from cryod.daemon.record_channel.source import head_seq
from cryod.daemon.store import export
from cryod.daemon.store.records import ProcedureLog
from cryod.daemon.store.writer import Writer
from tests.mqtt.broker import Collector, running_broker

from .receiver import Receiver, compare_with_export
from .rig import TOPIC, running_channel
from .room import NODE, more_entries, record_procedure


def chain_head(engine: Engine) -> int:
    with engine.connect() as conn:
        return head_seq(conn)


async def until(pred: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait for a condition with a generous deadline (never a bare sleep)."""
    async with asyncio.timeout(timeout_s):
        while not pred():
            await asyncio.sleep(0.02)


def seqs(col: Collector) -> list[int]:
    return [m.payload["entry"]["seq"] for m in col.messages]


def first_arrivals(arrivals: list[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for s in arrivals:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


async def test_every_entry_arrives_in_order_and_the_receiver_rebuilds_the_export(
    tmp_path: Path, writer: Writer, engine: Engine
) -> None:
    await record_procedure(writer)
    head = chain_head(engine)
    with running_broker(tmp_path / "mq") as broker:
        rx = Receiver()
        async with Collector(broker.port, "cryod-record/v1/#", client_id="watch") as col:
            listen = asyncio.create_task(rx.listen(broker.port, TOPIC, head, identifier="rx"))
            await until(lambda: "rx 1 cryod-record/v1/" in broker.log())  # subscribed
            cursor_path = tmp_path / "cursor"
            async with running_channel(engine, broker.port, cursor_path) as ch:
                await asyncio.wait_for(listen, 30)
                await until(lambda: _saved(cursor_path) == head)
                assert ch.status()["delivered_seq"] == head
                assert ch.status()["backlog"] == 0
            assert first_arrivals(seqs(col)) == list(range(1, head + 1))
            assert all(m.qos == 1 and not m.retain for m in col.messages)
        rebuilt = rx.rebuild()
        assert rebuilt.head[0] == head
        room_export = export.export_json(engine)
        n = compare_with_export(rebuilt, room_export)
        assert n >= 1 + 2 + 1  # the procedure, its cycles and its alarm
        assert rebuilt.blocks  # procedure sample batches travelled


def _saved(path: Path) -> int | None:
    saved = load_cursor(path, NODE)
    return None if saved is None else saved.delivered_seq


async def test_new_entries_go_live_and_a_restart_resumes_after_the_cursor(
    tmp_path: Path, writer: Writer, engine: Engine
) -> None:
    await record_procedure(writer, cycles=1)
    first_head = chain_head(engine)
    cursor_path = tmp_path / "cursor"
    with running_broker(tmp_path / "mq") as broker:
        async with Collector(broker.port, "cryod-record/v1/#", client_id="w1") as col:
            async with running_channel(engine, broker.port, cursor_path) as ch:
                writer._on_head = lambda h, _label: ch.offer_head(h)  # as the service wires it
                await until(lambda: first_head in seqs(col))
                await ProcedureLog(writer).record_event("daemon_stopped", {"session": 1})
                await until(lambda: first_head + 1 in seqs(col))
            saved = load_cursor(cursor_path, NODE)
            assert saved is not None
            assert saved.delivered_seq == first_head + 1
        await ProcedureLog(writer).record_event("daemon_started", {"session": 2})
        async with Collector(broker.port, "cryod-record/v1/#", client_id="w2") as col2:
            async with running_channel(engine, broker.port, cursor_path):
                await until(lambda: first_head + 2 in seqs(col2))
            assert seqs(col2) == [first_head + 2]  # nothing before the cursor again


async def test_resend_publishes_the_range_again_without_moving_the_cursor(
    tmp_path: Path, writer: Writer, engine: Engine
) -> None:
    await record_procedure(writer, cycles=1)
    head = chain_head(engine)
    with running_broker(tmp_path / "mq") as broker:
        async with (
            Collector(broker.port, "cryod-record/v1/#", client_id="w") as col,
            running_channel(engine, broker.port, tmp_path / "cursor") as ch,
        ):
            await until(lambda: head in seqs(col))
            assert ch.check_resend(head + 1, None) is not None
            assert ch.check_resend(3, 5) is None
            result = await ch.resend(3, 5)
            assert result == {"first": 3, "last": 5, "queued": 3}
            await until(lambda: seqs(col).count(5) == 2)
            assert sorted(seqs(col)[head:]) == [3, 4, 5]
            await until(lambda: ch.status()["resent"] == 3)  # the PUBACKs came back
            assert ch.status()["delivered_seq"] == head


async def test_a_backlog_drains_no_faster_than_the_configured_rate(
    tmp_path: Path, writer: Writer, engine: Engine
) -> None:
    await record_procedure(writer, cycles=4)
    await more_entries(writer, 60)
    rate, burst = 50.0, 5
    with running_broker(tmp_path / "mq") as broker:
        async with Collector(broker.port, "cryod-record/v1/#", client_id="w") as col:
            t0 = time.monotonic()
            async with running_channel(
                engine, broker.port, tmp_path / "cursor", rate_per_s=rate, burst=burst, window=4
            ):
                await until(lambda: len(col.messages) >= 40)
                elapsed = time.monotonic() - t0
                got = len(col.messages)
            # an upper bound only: a slow machine sends fewer, never more. A message
            # with a sample batch costs a token, one without LIGHT_COST of one
            heavy = sum(1 for m in col.messages if m.payload["block"] is not None)
            cost = heavy + (got - heavy) * LIGHT_COST
            assert cost <= burst + rate * elapsed + 1, (got, heavy, elapsed)
            assert heavy >= 1  # the bound was tested on batches too


async def test_the_broker_restarting_mid_stream_loses_and_reorders_nothing(
    tmp_path: Path, writer: Writer, engine: Engine
) -> None:
    await record_procedure(writer, cycles=3)
    await more_entries(writer, 40)
    head = chain_head(engine)
    with running_broker(tmp_path / "mq", persistence=True) as broker:
        async with (
            Collector(
                broker.port, "cryod-record/v1/#", client_id="coll", clean_session=False,
                reconnect=True,
            ) as col,
            running_channel(
                engine, broker.port, tmp_path / "cursor", rate_per_s=40.0, burst=5, window=4
            ) as ch,
        ):  # fmt: skip
            await until(lambda: len(col.messages) >= 10)
            await asyncio.to_thread(broker.restart)
            await until(lambda: set(range(1, head + 1)) <= set(seqs(col)), 60)
            assert ch.status()["connections"] >= 2
        assert first_arrivals(seqs(col)) == list(range(1, head + 1))
        for m in col.messages:
            json.dumps(m.payload)


async def test_a_message_the_privacy_check_refuses_stops_the_channel_there(
    tmp_path: Path, writer: Writer, engine: Engine
) -> None:
    await record_procedure(writer, cycles=1)
    head = chain_head(engine)
    with engine.connect() as conn:
        # the procedure row travels once, with its newest entry (the close)
        (proc_row,) = conn.exec_driver_sql(
            "SELECT max(seq) FROM audit WHERE kind = 'row'"
            " AND json_extract(payload, '$.table') = 'procedures'"
        ).fetchone()

    def refuse(_value: str) -> str:
        raise ValueError("refused by the test")

    with running_broker(tmp_path / "mq") as broker:
        async with (
            Collector(broker.port, "cryod-record/v1/#", client_id="w") as col,
            running_channel(engine, broker.port, tmp_path / "cursor") as ch,
        ):
            ch._encoder._check_pseudonym = refuse  # the pseudonym rule says no
            await until(lambda: ch.status()["blocked"] is not None)
            await until(lambda: ch.status()["delivered_seq"] == proc_row - 1)
            blocked = ch.status()["blocked"]
            assert blocked["seq"] == proc_row
            assert "not a pseudonym" in blocked["reason"]
            assert "refused by the test" in blocked["reason"]
        assert max(seqs(col)) == proc_row - 1 < head  # nothing after it was sent
