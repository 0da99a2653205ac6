"""``cryohub heads export NODE`` catches a room database edited after the fact.

A real room database (cryod's own migrations and chain), its entries carried
to the collector as record messages; the heads the collector saw, exported,
are anchor lines ``cryoctl verify --anchors`` reads at the room. A forger who
edits an entry and recomputes every hash after it passes the room's chain
check on its own and is caught by the collector's heads (exit 5, rewritten
from the edited entry); the intact database passes with them.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cryod.daemon.store import audit, migrate
from cryod.daemon.store.db import make_engine as room_engine
from cryod.hub.cli import main
from cryod.hub.intake import Incoming, Intake
from cryod.integrity import entry_hash, parse_heads

from .conftest import NODE, T0
from .fake_room import FakeRoom, raw
from .followup_study import register
from .test_received import PROFILES

ROOM = "unnamed"  # the node id of a room database made without a config


def room_database(path: Path, events: int) -> None:
    migrate.upgrade_on_start(path)
    engine = room_engine(path)
    try:
        for i in range(events):
            with Session(engine) as s, s.begin():
                audit.append(s, "state", {"i": i, "state": "freezing", "tip_c": -40.5 - i})
    finally:
        engine.dispose()


def messages(path: Path, site: str) -> list[bytes]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT seq, at, kind, payload, prev_hash, hash, v, node FROM audit ORDER BY seq"
        ).fetchall()
    finally:
        con.close()
    out = []
    for seq, at, kind, payload, prev, digest, v, node in rows:
        doc: dict[str, Any] = {
            "schema": "cryod.record/1", "site": site, "node": node,
            "entry": {"seq": seq, "at": at, "node": node, "kind": kind,
                      "payload": json.loads(payload), "prev_hash": prev, "hash": digest, "v": v},
            "rows": [], "block": None, "profile": None, "sent_at": at,
        }  # fmt: skip
        out.append(raw(doc))
    return out


def recompute_from(path: Path, seq: int) -> None:
    """The careful forger: edit entry ``seq``'s payload, recompute every hash from it."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            con.execute(f'DROP TRIGGER "{name}"')
        rows = con.execute("SELECT seq, at, kind, payload, node FROM audit ORDER BY seq").fetchall()
        prev = None
        for s, at, kind, payload, node in rows:
            obj = json.loads(payload)
            if s == seq:
                obj["tip_c"] = -80.0
            if s >= seq:
                digest = entry_hash(s, at, node, kind, obj, prev)
                con.execute(
                    "UPDATE audit SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                    (json.dumps(obj, sort_keys=True, separators=(",", ":")), prev, digest, s),
                )
                prev = digest
            else:
                prev = con.execute("SELECT hash FROM audit WHERE seq = ?", (s,)).fetchone()[0]
    finally:
        con.close()


def cryoctl_verify(*args: str) -> tuple[int, dict[str, Any]]:
    r = subprocess.run(
        [sys.executable, "-m", "cryod.daemon.ctl", "--socket", "/nonexistent.sock", "verify",
         "--json", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode in (0, 1, 4, 5), (r.returncode, r.stdout, r.stderr)
    return r.returncode, json.loads(r.stdout)


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> Path:
    cfg = tmp_path / "cryohub.toml"
    (tmp_path / "anchors").mkdir()
    cfg.write_text(
        f'[collector]\nid = "{NODE}"\n[database]\nurl = "{db_url}"\n'
        f'[anchors]\nfile = "anchors/cryohub.jsonl"\n'
    )
    return cfg


def test_heads_exported_catch_a_room_database_edited_after_the_fact(
    tmp_path: Path, migrated: Engine, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "room.db"
    room_database(db, events=8)
    register(migrated, FakeRoom(node=ROOM, site="site-a"))
    outcomes = Intake(migrated, lambda: PROFILES).process(
        [Incoming(f"cryod-record/v1/site-a/{ROOM}/chain", m, T0) for m in messages(db, "site-a")]
    )
    assert {o.decision.action for o in outcomes} == {"accept"}
    heads = tmp_path / "heads.jsonl"
    assert main(["heads", "export", ROOM, "--out", str(heads), "--config", str(config)]) == 0
    lines = heads.read_text().splitlines()
    assert len(lines) == len(outcomes) == 10  # the migration's two entries and eight events
    assert [h.seq for h in parse_heads(lines, ROOM)] == list(range(1, 11))
    assert json.loads(lines[0])["anchor"] == "cryod.anchor/1"

    rc, out = cryoctl_verify("--db", str(db), "--anchors", str(heads))
    assert rc == 0, out
    assert out["record"]["anchors"][0]["agreeing"] == 10

    recompute_from(db, 6)
    rc, out = cryoctl_verify("--db", str(db))
    assert rc == 0, out  # consistent on its own: only a head kept elsewhere can tell
    rc, out = cryoctl_verify("--db", str(db), "--anchors", str(heads))
    assert rc == 5, out
    (anchor,) = out["record"]["anchors"]
    assert anchor["problems"][0]["problem"] == "rewritten"
    assert anchor["problems"][0]["seq"] <= 6


def test_heads_export_of_an_unknown_room_is_exit_2(
    migrated: Engine, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["heads", "export", "nobody", "--config", str(config)]) == 2
    assert "no room 'nobody' is registered" in capsys.readouterr().err
