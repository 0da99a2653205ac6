"""End to end: a real cryod (and cryosim) with the record channel on, a real mosquitto.
A procedure is run and closed; the reference receiver rebuilds it from the channel alone
and matches the daemon's own export row for row and digest for digest; every real
message validates against docs/asyncapi.yaml and is accepted by the collector's parser
and ingest core in order; ``cryoctl record resend`` re-publishes a range, and the
request itself is in the chain (and so on the channel)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

from cryod.hub.ingest import Accept, Duplicate, Registration, RoomView, decide
from cryod.hub.messages import parse_message
from cryod.integrity import Head
from tests.e2e.harness import DEMO_PROCEDURE, Daemon, Sim, daemon_config
from tests.mqtt import asyncapi
from tests.mqtt.broker import Collector, Mosquitto, Received
from tests.security.rig import cryoctl

from .receiver import Receiver, compare_with_export
from .test_channel_mqtt import first_arrivals, seqs, until

SPEED = 40.0
NODE, SITE = "ws-e2e", "test"


def config_extra(port: int) -> str:
    return (
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nsite = "{SITE}"\n'
        f'[node]\nid = "{NODE}"\n'
        "[record]\nenabled = true\nrate_per_s = 500.0\n"
    )


async def test_a_real_daemons_procedure_rebuilt_from_the_channel_matches_its_export(
    tmp_path: Path,
) -> None:
    broker = Mosquitto(tmp_path / "mq")
    broker.start()
    sim = await asyncio.to_thread(Sim, tmp_path, speed=SPEED)
    daemon: Daemon | None = None
    try:
        async with Collector(broker.port, "cryod-record/v1/#", client_id="hub") as col:
            cfg = daemon_config(tmp_path, sim, speed=SPEED, extra=config_extra(broker.port))
            daemon = d = await asyncio.to_thread(Daemon, cfg, tmp_path)
            pid = (await asyncio.to_thread(d.call, "procedure_open", DEMO_PROCEDURE))[
                "procedure_id"
            ]
            await asyncio.to_thread(
                d.call, "run", {"protocol": "morton-neuroma-cazzato2016", "probes": [1]}
            )
            final = await asyncio.to_thread(
                d.wait_state, {"complete", "fault", "aborted", "stopped"}, 90
            )
            assert final["engine"]["state"] == "complete", final
            await asyncio.to_thread(d.call, "procedure_close", {"notes": "record e2e"})
            room_export = await asyncio.to_thread(d.call, "export", {"id": pid})
            head = room_export["chain"]["head"]["seq"]
            await until(lambda: head in seqs(col), 60)

            done = await asyncio.to_thread(
                cryoctl, d.socket, "record", "resend", "--from", "1", "--to", "3"
            )
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == {"first": 1, "last": 3, "queued": 3}
            await until(lambda: seqs(col).count(3) >= 2, 30)
            refused = await asyncio.to_thread(
                cryoctl, d.socket, "record", "resend", "--from", "999999999"
            )
            assert refused.returncode == 1
            assert "the chain ends at entry" in refused.stderr
            bad = await asyncio.to_thread(
                cryoctl, d.socket, "record", "resend", "--from", "5", "--to", "2"
            )
            assert bad.returncode == 2
            # the resend requests are in the chain, and so on the channel
            await until(
                lambda: len([m for m in col.messages if m.payload["entry"]["kind"]
                             == "record_resend"]) >= 2, 30
            )  # fmt: skip
            status = await asyncio.to_thread(d.call, "status")
            assert status["record"]["connected"] is True
            assert status["record"]["blocked"] is None
            assert await asyncio.to_thread(d.stop) == 0
    finally:
        if daemon is not None:
            await asyncio.to_thread(daemon.stop)
        await asyncio.to_thread(sim.stop)
        broker.stop()

    msgs = col.messages
    assert all(m.qos == 1 and not m.retain for m in msgs)
    _print_sizes(msgs)
    topic = f"cryod-record/v1/{SITE}/{NODE}/chain"
    assert {m.topic for m in msgs} == {topic}
    for m in msgs:
        asyncapi.validate(m.topic, m.payload)
    order = first_arrivals(seqs(col))
    assert order == list(range(1, len(order) + 1))

    rx = Receiver()
    for m in msgs:
        rx.take(json.dumps(m.payload).encode())
    rebuilt = rx.rebuild()
    n = compare_with_export(rebuilt, room_export)
    assert n >= 1 + 2  # the procedure and its freeze and thaw cycles at least
    assert rebuilt.blocks  # procedure samples travelled, in their canonical batches

    resend = [m.payload["entry"]["payload"] for m in msgs
              if m.payload["entry"]["kind"] == "record_resend"]  # fmt: skip
    assert resend[0]["first"] == 1
    assert resend[0]["last"] == 3
    assert resend[0]["accepted"] is True
    assert resend[0]["by"]
    assert resend[1]["accepted"] is False

    # the collector's own parser and ingest core take every real message, in order
    head_seen: Head | None = None
    for m in msgs:
        raw = json.dumps(m.payload, ensure_ascii=False).encode()
        msg = parse_message(raw)
        d2 = decide(
            msg,
            RoomView(Registration(NODE, SITE), head_seen, stored=_Stored(rx)),
            received_at=msg.sent_at + dt.timedelta(seconds=0.1),
            profiles={},
        )
        if isinstance(d2, Accept):
            head_seen = Head(d2.entry.seq, d2.entry.hash)
        else:
            assert isinstance(d2, Duplicate), (msg.seq, d2)
    assert head_seen is not None
    assert head_seen.seq == max(rx.docs)
    assert DEMO_PROCEDURE["patient_ref"] not in json.dumps([m.payload for m in msgs])


class _Stored:
    def __init__(self, rx: Receiver) -> None:
        self.rx = rx

    def get(self, seq: int, /) -> str | None:
        doc = self.rx.docs.get(seq)
        return None if doc is None else str(doc["entry"]["hash"])


def _print_sizes(msgs: list[Received]) -> None:
    """Message sizes by what they carry (docs/record-channel.md sizes the broker's
    queues from these): ``pytest -s`` shows them."""
    sizes: dict[str, list[int]] = {}
    for m in msgs:
        p = m.payload
        what = ("block" if p["block"] else "withheld" if p["withheld"] else "rows" if p["rows"]
                else "entry")  # fmt: skip
        sizes.setdefault(what, []).append(len(json.dumps(p, separators=(",", ":")).encode()))
    for what, xs in sorted(sizes.items()):
        xs.sort()
        print(
            f"record message sizes [{what}]: n={len(xs)} median={xs[len(xs) // 2]} B max={xs[-1]} B"
        )
