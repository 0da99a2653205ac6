"""The record and its anchors, end to end: a real cryod with a real mosquitto and an
anchor file runs a procedure, exports it (sealed) and stops. Then, on copies:

- a chain fully recomputed after an edit (row digest and every entry after it)
  passes the chain and table checks and is caught by **each** anchor on its own:
  the journal (``--log``), the anchor file and the heads collected from MQTT;
- a truncated tail and a forked history (an old copy written on) are caught by
  each anchor;
- an exported file with one number changed fails ``verify --export`` naming the
  row, and an export re-forged to re-hash is caught by the anchors;
- an old copy put back and started on is recorded as a restore, and reported
  as one, not as tampering.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cryod.daemon.store.chain import ChainedSession, append
from cryod.daemon.store.chained import RESEARCH
from cryod.daemon.store.db import make_engine
from cryod.integrity import column_hints, entry_hash, row_digest
from cryod.integrity.tables import TableSpec
from tests.e2e.harness import DEMO_PROCEDURE, Daemon, Sim, daemon_config
from tests.mqtt.broker import Collector, Mosquitto

from .rig import cryoctl

pytestmark = pytest.mark.timeout(180)

NODE = "ws-e2e"


@dataclass
class Trail:
    db: Path
    log: Path
    anchors: Path
    mqtt_heads: Path
    export: Path
    old_copy: Path  # the database as it was early in the run
    workdir: Path


def _config(workdir: Path, sim: Sim, port: int, anchors: Path) -> Path:
    return daemon_config(
        workdir,
        sim,
        speed=20.0,
        extra=(
            f'[node]\nid = "{NODE}"\n'
            f'[anchors]\nfile = "{anchors}"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nsite = "test"\n'
        ),
    )


def _backup(src: Path, dst: Path) -> None:
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


async def _run(wd: Path) -> Trail:
    broker = Mosquitto(wd / "mq")
    broker.start()
    sim = await asyncio.to_thread(Sim, wd, speed=20.0)
    anchors = wd / "anchors" / "ws-e2e.jsonl"
    anchors.parent.mkdir()
    heads = wd / "mqtt-heads.txt"
    d: Daemon | None = None
    try:
        async with Collector(
            broker.port, "cryod/v1/+/+/audit/head", client_id="anchor-collector"
        ) as col:
            d = await asyncio.to_thread(Daemon, _config(wd, sim, broker.port, anchors), wd)
            await asyncio.to_thread(d.call, "procedure_open", DEMO_PROCEDURE)
            await asyncio.to_thread(_backup, wd / "cryod.db", wd / "old.db")
            await asyncio.to_thread(d.call, "freeze", {"probe": 1, "seconds": 20})
            await asyncio.to_thread(d.wait_state, {"complete", "idle", "stopped"}, 40)
            await asyncio.to_thread(d.call, "procedure_close", {"notes": "tamper e2e"})
            sealed = await asyncio.to_thread(d.call, "export", {"format": "json"})
            (wd / "export.json").write_text(json.dumps(sealed, indent=1))
            await asyncio.to_thread(d.stop)
            d = None
            # the last head (daemon_stopped) reaches the subscriber too
            deadline = time.monotonic() + 10
            last = _last_seq(wd / "cryod.db")
            while time.monotonic() < deadline:
                seqs = [m.payload.get("chain_seq") for m in col.messages]
                if last in seqs:
                    break
                await asyncio.sleep(0.1)
            heads.write_text("".join(f"{m.topic} {json.dumps(m.payload)}\n" for m in col.messages))
    finally:
        if d is not None:
            await asyncio.to_thread(d.stop)
        await asyncio.to_thread(sim.stop)
        broker.stop()
    return Trail(wd / "cryod.db", wd / "cryod.log", anchors, heads, wd / "export.json",
                 wd / "old.db", wd)  # fmt: skip


def _last_seq(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT max(seq) FROM audit").fetchone()[0])
    finally:
        con.close()


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return asyncio.run(_run(tmp_path_factory.mktemp("record")))


def verify(*args: str) -> tuple[int, dict[str, Any]]:
    r = cryoctl(Path("/nonexistent.sock"), "verify", "--json", *args)
    assert r.returncode in (0, 1, 4, 5, 6), (r.returncode, r.stdout, r.stderr)
    return r.returncode, json.loads(r.stdout)


def sources(t: Trail) -> dict[str, tuple[str, ...]]:
    return {
        "journal": ("--log", str(t.log)),
        "anchor file": ("--anchors", str(t.anchors)),
        "mqtt": ("--anchors", str(t.mqtt_heads)),
    }


def copy(t: Trail, tmp_path: Path, name: str, src: Path | None = None) -> Path:
    dst = tmp_path / f"{name}.db"
    _backup(src or t.db, dst)
    con = sqlite3.connect(dst)
    try:  # a forger with the file drops the guards first
        for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            con.execute(f'DROP TRIGGER "{n}"')
        con.commit()
    finally:
        con.close()
    return dst


def test_every_anchor_holds_heads_of_the_record_and_all_agree(trail: Trail) -> None:
    rc, out = verify("--db", str(trail.db), *sum(sources(trail).values(), ()))
    assert rc == 0, out
    rec = out["record"]
    assert rec["node"] == NODE
    assert [a["ok"] for a in rec["anchors"]] == [True, True, True]
    assert all(a["agreeing"] >= 3 for a in rec["anchors"]), rec["anchors"]
    # every route anchored the last head: nothing is left unanchored after a clean stop
    assert [a["unanchored_tail"] for a in rec["anchors"]] == [None, None, None]
    assert rec["tables"]["rows_verified"]["cycles"] >= 1
    assert rec["tables"]["samples"]["rows_verified"] > 0
    # a head carries no personal data
    assert "PSN-0042" not in trail.mqtt_heads.read_text() + trail.anchors.read_text()


def _recompute(db: Path, edit_seq: int) -> None:
    """The careful forger: change a cycle's min_tip_c, re-digest the row with its salt,
    rewrite the row entry and every entry hash after it."""
    con = sqlite3.connect(db)
    try:
        cid, before = con.execute("SELECT id, min_tip_c FROM cycles ORDER BY id LIMIT 1").fetchone()
        con.execute("UPDATE cycles SET min_tip_c = ? WHERE id = ?", (before - 5.0, cid))
        cols = [r[1] for r in con.execute("PRAGMA table_info(cycles)")]
        values = con.execute("SELECT * FROM cycles WHERE id = ?", (cid,)).fetchone()
        row = dict(zip(cols, values, strict=True))
        spec: TableSpec = RESEARCH.by_name["cycles"]
        salt = bytes.fromhex(
            con.execute(
                "SELECT salt FROM row_salts WHERE tbl = 'cycles' AND row_key = ?",
                (json.dumps({"id": cid}, separators=(",", ":")),),
            ).fetchone()[0]
        )
        rows = con.execute(
            "SELECT seq, at, kind, payload, prev_hash, node FROM audit ORDER BY seq"
        ).fetchall()
        prev = None
        for seq, at, kind, payload, old_prev, node in rows:
            obj = json.loads(payload)
            if kind == "row" and obj["table"] == "cycles" and obj["key"] == {"id": cid}:
                obj["digest"] = row_digest(salt, spec.encode(row))
                obj["columns"] = column_hints(salt, spec.typed(row))
            if seq < edit_seq:
                prev = con.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()[0]
                continue
            text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
            prev = old_prev if prev is None else prev
            digest = entry_hash(seq, at, node, kind, obj, prev)
            con.execute(
                "UPDATE audit SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (text, prev, digest, seq),
            )
            prev = digest
        con.commit()
    finally:
        con.close()


def _first_cycle_entry(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(
            con.execute(
                "SELECT min(seq) FROM audit WHERE kind = 'row' "
                "AND json_extract(payload, '$.table') = 'cycles'"
            ).fetchone()[0]
        )
    finally:
        con.close()


def test_a_fully_recomputed_chain_is_caught_by_each_anchor_on_its_own(
    trail: Trail, tmp_path: Path
) -> None:
    db = copy(trail, tmp_path, "recomputed")
    k = _first_cycle_entry(db)
    _recompute(db, k)
    rc, out = verify("--db", str(db))
    assert rc == 0, out  # chain and tables agree with each other: only an anchor can tell
    for name, args in sources(trail).items():
        rc, out = verify("--db", str(db), *args)
        assert rc == 5, (name, out)
        (anchor,) = out["record"]["anchors"]
        assert anchor["problems"][0]["problem"] == "rewritten", (name, anchor)
        assert anchor["problems"][0]["seq"] <= k, (name, anchor)


def test_a_truncated_tail_is_caught_by_each_anchor(trail: Trail, tmp_path: Path) -> None:
    db = copy(trail, tmp_path, "truncated")
    last = _last_seq(db)
    con = sqlite3.connect(db)
    con.execute("DELETE FROM audit WHERE seq > ?", (last - 3,))
    con.commit()
    con.close()
    for name, args in sources(trail).items():
        _rc, out = verify("--db", str(db), *args)
        (anchor,) = out["record"]["anchors"]
        assert [p["problem"] for p in anchor["problems"]] == ["truncated"], (name, anchor)
        assert anchor["problems"][0]["seq"] == last - 2


def test_a_forked_history_is_caught_by_each_anchor(trail: Trail, tmp_path: Path) -> None:
    """An old copy written on: its new entries take seqs the anchors hold otherwise."""
    db = copy(trail, tmp_path, "forked", src=trail.old_copy)
    fork_at = _last_seq(db)
    engine = make_engine(db)
    try:
        for i in range(5):
            with ChainedSession(engine) as s, s.begin():
                append(s.connection(), "state", {"state": "idle", "forged": i})
    finally:
        engine.dispose()
    for name, args in sources(trail).items():
        rc, out = verify("--db", str(db), *args)
        assert rc == 5, (name, out)
        (anchor,) = out["record"]["anchors"]
        assert anchor["problems"][0]["problem"] in ("rewritten", "forked"), (name, anchor)
        assert anchor["problems"][0]["seq"] <= fork_at + 1, (name, anchor)


def test_the_sealed_export_verifies_with_its_anchors(trail: Trail) -> None:
    data = json.loads(trail.export.read_text())
    assert data["schema"] == "cryod.export/2"
    assert data["chain"]["seal"] is not None
    for args in sources(trail).values():
        rc, out = verify("--export", str(trail.export), *args)
        assert rc == 0, out
        assert out["export"]["sealed"] is True
    rc, out = verify("--export", str(trail.export), "--db", str(trail.db))
    assert rc == 0, out


def test_an_export_with_one_number_changed_fails_naming_the_row(
    trail: Trail, tmp_path: Path
) -> None:
    data = json.loads(trail.export.read_text())
    cycle = data["procedures"][0]["cycles"][0]
    cycle["min_tip_c"] = cycle["min_tip_c"] - 1.0
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    rc, out = verify("--export", str(edited))
    assert rc == 6, out
    (finding,) = out["export"]["findings"]
    assert finding["table"] == "cycles"
    assert finding["key"] == f"id={cycle['cycle_id']}"
    assert finding["columns"] == ["min_tip_c"]
    text = cryoctl(Path("/nonexistent.sock"), "verify", "--export", str(edited))
    assert text.returncode == 6
    assert f"cycles id={cycle['cycle_id']} column min_tip_c" in text.stdout


def test_an_export_reforged_to_rehash_is_caught_by_the_anchors(
    trail: Trail, tmp_path: Path
) -> None:
    from cryod.daemon.store import export as ex
    from cryod.integrity import rows_digest, salt_from_hex

    data = json.loads(trail.export.read_text())
    cycle = data["procedures"][0]["cycles"][0]
    cycle["min_tip_c"] = cycle["min_tip_c"] - 1.0
    spec = ex.RESEARCH.by_name["cycles"]
    values = ex._values(spec, cycle, data["procedures"][0])
    salt = salt_from_hex(cycle["proof"]["salt"])
    cycle["proof"]["digest"] = row_digest(salt, spec.encode(values))
    cycle["proof"]["columns"] = column_hints(salt, spec.typed(values))
    data["chain"]["rows_digest"] = rows_digest(ex._row_refs(data["procedures"]))
    seal = data["chain"]["seal"]
    seal["payload"]["rows_digest"] = data["chain"]["rows_digest"]
    seal["hash"] = entry_hash(
        seal["seq"], seal["at"], seal["node"], seal["kind"], seal["payload"], seal["prev_hash"]
    )
    data["chain"]["head"]["hash"] = seal["hash"]
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    rc, out = verify("--export", str(forged))
    assert rc == 0, out  # consistent on its own: the forger had everything in the file
    for name, args in sources(trail).items():
        rc, out = verify("--export", str(forged), *args)
        assert rc == 6, (name, out)
        assert any("another hash" in p for p in out["export"]["problems"]), (name, out)


def test_a_version_1_reader_is_told_the_version_changed(tmp_path: Path) -> None:
    old = tmp_path / "v1.json"
    old.write_text(json.dumps({"schema": "cryod.export/1", "procedures": []}))
    r = cryoctl(Path("/nonexistent.sock"), "verify", "--export", str(old))
    assert r.returncode == 7  # a file that cannot be used (docs/cli.md)
    assert "cryod.export/1 carries no proofs" in r.stderr
    assert "cryod.export/2" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_restored_backup_is_recorded_and_reported_as_a_restore(
    trail: Trail, tmp_path: Path
) -> None:
    wd = tmp_path / "restore"
    wd.mkdir()
    shutil.copytree(trail.anchors.parent, wd / "anchors")
    anchors = wd / "anchors" / trail.anchors.name
    log = wd / "cryod.log"
    shutil.copy(trail.log, log)
    _backup(trail.old_copy, wd / "cryod.db")  # the backup put back, cryod stopped
    broker = Mosquitto(wd / "mq")
    broker.start()
    sim = Sim(wd, speed=20.0)
    try:
        d = Daemon(_config(wd, sim, broker.port, anchors), wd)
        d.call("procedure_close", {"notes": "closed after the restore"})
        d.stop()
    finally:
        sim.stop()
        broker.stop()
    rc, out = verify("--db", str(wd / "cryod.db"), "--anchors", str(anchors), "--log", str(log))
    assert rc == 0, out
    rec = out["record"]
    (restore,) = rec["restores"]
    assert restore["abandoned"]["seq"] > restore["restored"]["seq"]
    assert all(a["ok"] for a in rec["anchors"]), rec["anchors"]
    assert rec["anchors"][0]["explained_by_restore"] > 0
    text = cryoctl(Path("/nonexistent.sock"), "verify", "--db", str(wd / "cryod.db"),
                   "--anchors", str(anchors))  # fmt: skip
    assert "restore: at entry" in text.stdout, text.stdout
