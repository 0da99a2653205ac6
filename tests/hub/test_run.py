"""``cryohub run`` as systemd runs it, against a real mosquitto, on PostgreSQL and SQLite.

READY=1 once subscribed, WATCHDOG=1 while healthy, every message of several
rooms stored and verifiable, gaps reported with the repair command, a held
study profile decided again when its file appears, quarantined messages
logged without their content, SIGTERM a clean exit 0.
"""

from __future__ import annotations

import json
import shutil
import ssl
from pathlib import Path

import pytest

from cryod.hub.cli import main
from cryod.hub.store.db import make_engine
from cryod.hub.store.migrate import upgrade
from cryod.hub.store.models import Held, Quarantined, ReceivedEntry
from cryod.research.profile import builtin_study_path, load_study_profile
from tests.mqtt.broker import locked_broker

from .conftest import T0
from .fake_room import raw
from .rig import HubRig, chain, live_room, messages_of, run_publish, topic, wait_until

pytestmark = [pytest.mark.needs_mosquitto, pytest.mark.timeout(240)]


def test_run_ingests_notifies_and_stops_cleanly(
    rig: HubRig, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = live_room("room-a"), live_room("room-b")
    rig.register(a, b)
    rig.start()
    docs_a, rows_a, blocks_a = chain(a, 30)
    docs_b, rows_b, blocks_b = chain(b, 30)
    msgs = [m for pair in zip(messages_of(a, docs_a), messages_of(b, docs_b), strict=True)
            for m in pair]  # fmt: skip
    run_publish(rig.broker.port, msgs)
    rig.wait_stored(a)
    rig.wait_stored(b)
    rig.assert_same_as(a, rows_a, blocks_a)
    rig.assert_same_as(b, rows_b, blocks_b)
    # the watchdog is fed while healthy (WATCHDOG_USEC 4 s: a ping every 2 s), and STATUS=
    # comes from its own 2 s timer: either may come first (READY's STATUS= was cleared)
    wait_until(lambda: rig.notify.has("WATCHDOG=1"), 30, "WATCHDOG=1")
    wait_until(lambda: any(m.startswith("STATUS=accepted") or "\nSTATUS=accepted" in m
                           for m in rig.notify.read()), 30, "STATUS=accepted …")  # fmt: skip
    assert rig.stop() == 0
    stats = rig.stats()
    assert stats["counts"]["accept"] == 60
    assert stats["record_to_committed"]["n"] == 60
    assert stats["record_to_committed"]["p99_s"] is not None
    assert main(["verify", "--all", "--config", str(rig.config)]) == 0
    out = capsys.readouterr().out
    assert "collector copy consistent with room-a to seq 30" in out
    assert "collector copy consistent with room-b to seq 30" in out


def test_gaps_are_logged_and_reported_with_the_repair(
    rig: HubRig, capsys: pytest.CaptureFixture[str]
) -> None:
    room = live_room("room-g")
    rig.register(room)
    rig.start()
    docs, _rows, _blocks = chain(room, 12)
    run_publish(rig.broker.port, messages_of(room, docs[:3] + docs[6:]))
    wait_until(lambda: rig.count(Held, room.node) == 6, 60, "6 held")
    wait_until(lambda: "repair at the room: cryoctl record resend --from 4 --to 6" in rig.log())
    assert main(["gaps", "room-g", "--json", "--config", str(rig.config)]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert [(g["from"], g["to"], g["repair"]) for g in report["gaps"]] == [
        (4, 6, "cryoctl record resend --from 4 --to 6")
    ]
    run_publish(rig.broker.port, messages_of(room, docs[3:6]))  # the room resends
    rig.wait_stored(room)
    assert rig.count(Held) == 0
    assert main(["gaps", "--config", str(rig.config)]) == 0
    assert "room-g: no gaps, nothing held" in capsys.readouterr().out


def test_a_held_profile_is_decided_again_when_its_file_appears(rig: HubRig) -> None:
    src = builtin_study_path("mortons-neuroma-example")
    stamp = load_study_profile(src).stamp()
    profile = {"id": stamp.profile_id, "version": stamp.version, "hash": stamp.content_hash}
    room = live_room("room-p")
    rig.register(room)
    rig.start()
    docs = [room.event(), room.row(profile=profile), room.samples(), room.event()]
    run_publish(rig.broker.port, messages_of(room, docs))
    wait_until(lambda: rig.count(Held, room.node) == 3, 60, "held for the profile")
    assert rig.count(ReceivedEntry, room.node) == 1
    shutil.copy(src, rig.studies / "mn.toml")
    rig.wait_stored(room)
    assert rig.count(Held) == 0
    assert "study profiles reloaded: 1" in rig.log()


def test_quarantined_messages_are_logged_without_their_content(rig: HubRig) -> None:
    """Also: run outside systemd (no NOTIFY_SOCKET, no watchdog) keeps running."""
    stranger = live_room("room-x")  # never registered
    rig.start(systemd=False)
    doc = stranger.event(patient_ref="PSN-0042-SECRET", procedure_id=7)
    bad = b'{"schema": "cryod.record/1", "patient_ref": "PSN-0042-SECRET"'
    run_publish(rig.broker.port, [(topic(stranger), raw(doc)), (topic(stranger), bad)])
    wait_until(lambda: rig.count(Quarantined) == 2, 60, "2 quarantined")
    wait_until(lambda: rig.log().count("quarantined:") == 2, 30, "logged")
    assert rig.proc is not None
    assert rig.proc.poll() is None
    assert rig.stop() == 0
    log = rig.log()
    assert "quarantined: node room-x seq 1 (unregistered)" in log
    assert "PSN-0042" not in log


def test_a_config_without_broker_is_exit_2_and_no_database_is_exit_3(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    (tmp_path / "a").mkdir()
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/x.db"\n[anchors]\nfile = "a/x"\n')
    assert main(["run", "--config", str(cfg)]) == 3  # not migrated
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    upgrade(engine, node="cryohub", now=T0)
    engine.dispose()
    assert main(["run", "--config", str(cfg)]) == 2


def test_run_over_tls_with_a_client_certificate_and_a_password(tmp_path: Path) -> None:
    """[broker] username, password_file and tls (CA, client certificate and key) are used:
    against a broker that refuses anonymous and certificate-less clients."""
    users = {"cryohub": "hub-secret-pw", "room-t": "room-secret-pw"}
    broker, pki = locked_broker(tmp_path, users, persistence=True)
    port = broker.port
    secret = tmp_path / "broker.password"
    secret.write_text(users["cryohub"] + "\n")
    secret.chmod(0o600)
    rig = HubRig(
        tmp_path / "hub",
        f"sqlite:///{tmp_path}/hub.db",
        broker=broker,
        broker_extra=(
            f'username = "cryohub"\npassword_file = "{secret}"\n'
            f'tls = {{ ca_file = "{pki["ca_crt"]}", cert_file = "{pki["client_crt"]}", '
            f'key_file = "{pki["client_key"]}" }}\n'
        ),
    )
    try:
        room = live_room("room-t")
        rig.register(room)
        rig.start()
        docs, rows, blocks = chain(room, 9)
        ctx = ssl.create_default_context(cafile=str(pki["ca_crt"]))
        ctx.load_cert_chain(str(pki["client_crt"]), str(pki["client_key"]))
        run_publish(port, messages_of(room, docs), tls_context=ctx, username="room-t",
                    password=users["room-t"])  # fmt: skip
        rig.wait_stored(room)
        rig.assert_same_as(room, rows, blocks)
        assert "broker: connected" in rig.log()
    finally:
        rig.close()


def test_ready_with_the_broker_down_then_ingests_when_it_comes_up(rig: HubRig) -> None:
    """A broker down at boot does not fail the unit's start: READY=1, STATUS says so."""
    room = live_room("room-late")
    rig.register(room)
    rig.broker.stop()
    rig.start(wait_ready=False)
    wait_until(lambda: rig.notify.has("READY=1"), 60, "READY=1 without a broker")
    assert any("broker cannot connect" in m for m in rig.notify.read())
    rig.broker.start()
    wait_until(lambda: "broker: connected" in rig.log(), 60, "connected once the broker is up")
    docs, rows, blocks = chain(room, 6)
    run_publish(rig.broker.port, messages_of(room, docs))
    rig.wait_stored(room)
    rig.assert_same_as(room, rows, blocks)
