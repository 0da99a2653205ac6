"""``cryohub`` end to end on PostgreSQL and SQLite: config, migrate, users, rooms,
verify, and the head anchored in the anchor file and the journal after each change."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from cryod.hub import anchors
from cryod.hub.cli import main
from cryod.integrity import parse_heads

NODE = "hub-cli"
ROOT_PW = "root-correct-horse"
ANA_PW = "ana-battery-staple"


class Journal:
    """A stand-in for journald's syslog socket: collects the datagrams sent to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.lines: list[str] = []

    def read(self) -> list[str]:
        while True:
            try:
                self.lines.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return self.lines

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.sock")
    yield j
    j.close()


@pytest.fixture
def config(tmp_path: Path, db_url: str, journal: Journal) -> Path:
    cfg = tmp_path / "cryohub.toml"
    cfg.write_text(
        f'[collector]\nid = "{NODE}"\n\n[database]\nurl = "{db_url}"\n\n'
        f'[anchors]\nfile = "anchors/cryohub.jsonl"\njournal_socket = "{journal.path}"\n'
    )
    (tmp_path / "anchors").mkdir()
    return cfg


def run(config: Path, *argv: str, passwords: list[str] | None = None) -> int:
    """``cryohub ARGV --config CONFIG``, passwords on a pipe (``--password-fd``)."""
    args = [*argv, "--config", str(config)]
    if passwords is None:
        return main(args)
    r, w = os.pipe()
    try:
        os.write(w, ("\n".join(passwords) + "\n").encode())
        os.close(w)
        return main([*args, "--password-fd", str(r)])
    finally:
        os.close(r)


def out(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    captured = capsys.readouterr()
    return captured.out, captured.err


@pytest.fixture
def ready(config: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert run(config, "migrate") == 0
    assert run(config, "user", "add", "root", "--role", "admin", passwords=[ROOT_PW]) == 0
    out(capsys)
    return config


def test_a_database_is_refused_until_migrated(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, "room", "list") == 3
    assert "run cryohub migrate" in out(capsys)[1]
    assert run(config, "migrate") == 0
    assert "database created at" in out(capsys)[0]
    assert run(config, "migrate") == 0
    assert "already at" in out(capsys)[0]


def test_users_rooms_and_every_head_anchored(
    ready: Path, tmp_path: Path, journal: Journal, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(
            ready,
            "user",
            "add",
            "ana",
            "--role",
            "coordinator",
            "--study",
            "MN-1",
            "--site",
            "s1",
            "--as",
            "root",
            passwords=[ROOT_PW, ANA_PW],
        )
        == 0
    )
    assert "user ana added (coordinator (study MN-1, site s1); entry 3)" in out(capsys)[0]
    assert (
        run(
            ready,
            "room",
            "add",
            "room-1",
            "--site",
            "s1",
            "--credential",
            "room-1",
            "--as",
            "root",
            passwords=[ROOT_PW],
        )
        == 0
    )
    assert "room room-1 registered at site s1 (entry 4)" in out(capsys)[0]
    assert run(ready, "user", "passwd", "ana", passwords=[ANA_PW, "ana-new-password-1"]) == 0
    assert run(ready, "user", "disable", "ana", "--as", "root", passwords=[ROOT_PW]) == 0
    out(capsys)

    assert run(ready, "room", "list", "--json") == 0
    (room,) = json.loads(out(capsys)[0])
    assert (room["node"], room["site"], room["last_seq"], room["registered_by"]) == (
        "room-1",
        "s1",
        None,
        "root",
    )
    assert run(ready, "user", "list", "--json") == 0
    users = {u["name"]: u for u in json.loads(out(capsys)[0])}
    assert users["ana"]["disabled"] is True
    assert users["root"]["roles"] == ["admin"]

    # every change's head is in the anchor file and the journal, in order
    anchor_file = anchors.AnchorFile(tmp_path / "anchors" / "cryohub.jsonl")
    assert [h.seq for h in anchor_file.heads(NODE)] == [1, 2, 3, 4, 5, 6]
    lines = journal.read()
    assert all(line.startswith("<14>cryohub[") for line in lines)
    assert [h.seq for h in parse_heads(lines, NODE)] == [1, 2, 3, 4, 5, 6]
    capture = tmp_path / "journal.txt"
    capture.write_text("\n".join(lines) + "\n")

    assert run(ready, "verify", "--self", "--log", str(capture)) == 0
    text_out = out(capsys)[0]
    assert "chain: ok (6 entries; node hub-cli" in text_out
    assert "tables: ok" in text_out
    assert text_out.count("6 heads agree") == 2


def test_who_is_acting_is_always_asked(ready: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(ready, "user", "add", "ana", "--role", "monitor", passwords=[ANA_PW]) == 7
    assert "who is acting" in out(capsys)[1]
    assert (
        run(
            ready,
            "room",
            "add",
            "room-1",
            "--site",
            "s1",
            "--as",
            "root",
            passwords=["wrong-password-123"],
        )
        == 7
    )
    assert "not permitted" in out(capsys)[1]
    assert (
        run(ready, "room", "add", "room-1", "--site", "s1", "--as", "ghost", passwords=[ROOT_PW])
        == 7
    )
    assert run(ready, "room", "list") == 0
    assert "no rooms registered" in out(capsys)[0]


def test_bad_input_is_one_line_and_exit_2(ready: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(
            ready,
            "user",
            "add",
            "ana",
            "--role",
            "monitor",
            "--as",
            "root",
            passwords=[ROOT_PW, "short"],
        )
        == 2
    )
    assert "at least 12 characters" in out(capsys)[1]
    assert (
        run(
            ready,
            "user",
            "add",
            "root",
            "--role",
            "monitor",
            "--as",
            "root",
            passwords=[ROOT_PW, ANA_PW],
        )
        == 2
    )
    assert "exists" in out(capsys)[1]
    assert (
        run(
            ready,
            "room",
            "add",
            "room-1",
            "--site",
            "s1",
            "--first-seq",
            "9",
            "--as",
            "root",
            passwords=[ROOT_PW],
        )
        == 2
    )
    err = out(capsys)[1]
    assert "needs its hash" in err
    assert "Traceback" not in err
    assert (
        run(ready, "user", "add", "ana", "--role", "monitor", "--as", "root", passwords=[ROOT_PW])
        == 2
    )
    assert "no line for new password" in out(capsys)[1]


def test_a_head_that_cannot_be_anchored_is_reported_after_the_commit(
    ready: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(self: Any, line: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(anchors.AnchorFile, "append", full)
    assert (
        run(ready, "room", "add", "room-1", "--site", "s1", "--as", "root", passwords=[ROOT_PW])
        == 6
    )
    o, e = out(capsys)
    assert "registered" in o
    assert "recorded as entry 3, but not anchored" in e
    monkeypatch.undo()
    assert run(ready, "verify", "--self") == 0
    assert "entries 3..3 not anchored by it" in out(capsys)[0]


def test_verify_self_exit_codes(
    ready: Path, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eng = create_engine(db_url)
    try:
        with eng.begin() as conn:
            conn.execute(text("UPDATE users SET password_hash = 'x'"))
    finally:
        eng.dispose()
    assert run(ready, "verify", "--self", "--json") == 4
    (report,) = json.loads(out(capsys)[0])
    assert report["exit_code"] == 4
    assert report["tables"] == ["users root column password_hash: edited: differs from entry 2"]
    # an anchor file that names a head this chain never had: rewritten
    with (tmp_path / "anchors" / "cryohub.jsonl").open("a") as fh:
        fh.write(
            json.dumps({"anchor": "cryod.anchor/1", "node": NODE, "seq": 2, "hash": "f" * 64})
            + "\n"
        )
    assert run(ready, "verify", "--self") == 4  # tables first, then anchors
    assert "forked" in out(capsys)[0]


def test_verify_rooms(ready: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(ready, "room", "add", "room-1", "--site", "s1", "--as", "root", passwords=[ROOT_PW])
        == 0
    )
    out(capsys)
    assert run(ready, "verify", "--all") == 0
    assert "room-1: nothing received yet" in out(capsys)[0]
    assert run(ready, "verify", "room-9") == 2
    assert "no room 'room-9'" in out(capsys)[1]


def test_an_unreachable_database_is_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a").mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[database]\nurl = "postgresql+psycopg://x@/db?host={tmp_path}/nowhere&port=1"\n'
        '[anchors]\nfile = "a/h.jsonl"\n'
    )
    assert run(cfg, "room", "list") == 3
    err = out(capsys)[1]
    assert err.startswith("cryohub: cannot reach the database:")
    assert len(err.strip().splitlines()) == 1
