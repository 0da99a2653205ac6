"""The hash chain names the first row edited, deleted or reordered; a chain
recomputed after tampering is caught only with the head kept outside the DB."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cryod.daemon.store import audit
from cryod.daemon.store.audit import AuditHead, heads_from_log, verify
from cryod.integrity import entry_hash

N = 8  # rows in the chain (seq 1-2: the migration's baseline and database_created)


@pytest.fixture
def chain(db_path: Path, engine: Engine) -> list[AuditHead]:
    """N rows, and every head as the service would have logged it."""
    heads: list[AuditHead] = []
    with Session(engine) as s, s.begin():
        head = audit.current_head(s)
        assert head is not None
        heads.append(head)
    for i in range(3, N + 1):
        with Session(engine) as s, s.begin():
            heads.append(audit.append(s, "state", {"i": i, "state": "freezing", "tip_c": -40.5}))
    return heads


def tamper(db: Path, *sql: str) -> None:
    """What someone with file access can do: drop the append-only triggers, edit."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("DROP TRIGGER IF EXISTS audit_no_update")
        con.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        for statement in sql:
            con.execute(statement)
    finally:
        con.close()


def recompute_from(db: Path, seq: int) -> None:
    """Rewrite the chain from ``seq`` on so it is internally consistent again."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        rows = con.execute(
            "SELECT seq, at, kind, payload, prev_hash, node FROM audit ORDER BY seq"
        ).fetchall()
        prev = None
        for s, at, kind, payload, prev_hash, node in rows:
            if s >= seq:
                prev_hash = prev
                digest = entry_hash(s, at, node, kind, json.loads(payload), prev_hash)
                con.execute(
                    "UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev_hash, digest, s)
                )
            prev = con.execute("SELECT hash FROM audit WHERE seq = ?", (s,)).fetchone()[0]
    finally:
        con.close()


def test_intact_chain_verifies(db_path: Path, chain: list[AuditHead]) -> None:
    result = verify(db_path, expected_head=chain)
    assert result.ok
    assert result.first_bad_seq is None
    assert result.rows == N
    assert result.head == chain[-1]
    assert verify(db_path, expected_head=(chain[-1].seq, chain[-1].hash)).ok


def test_triggers_refuse_update_and_delete(db_path: Path, chain: list[AuditHead]) -> None:
    con = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute("UPDATE audit SET kind = 'x' WHERE seq = 3")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute("DELETE FROM audit WHERE seq = 3")
    finally:
        con.close()


def test_edited_row_is_named(db_path: Path, chain: list[AuditHead]) -> None:
    tamper(
        db_path,
        """UPDATE audit SET payload = '{"i":4,"state":"idle","tip_c":-40.5}' WHERE seq = 4""",
    )
    result = verify(db_path)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "edited" in result.reason


def test_edited_time_is_named(db_path: Path, chain: list[AuditHead]) -> None:
    tamper(db_path, "UPDATE audit SET at = '2020-01-01T00:00:00.000000Z' WHERE seq = 6")
    assert verify(db_path).first_bad_seq == 6


def test_deleted_row_is_named(db_path: Path, chain: list[AuditHead]) -> None:
    tamper(db_path, "DELETE FROM audit WHERE seq = 5")
    result = verify(db_path)
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert "missing" in result.reason


def test_deleted_then_renumbered_is_named(db_path: Path, chain: list[AuditHead]) -> None:
    tamper(
        db_path,
        "DELETE FROM audit WHERE seq = 5",
        "UPDATE audit SET seq = seq - 1 WHERE seq > 5",
    )
    result = verify(db_path)
    assert (result.ok, result.first_bad_seq) == (False, 5)


def test_reordered_rows_are_named(db_path: Path, chain: list[AuditHead]) -> None:
    tamper(
        db_path,
        "UPDATE audit SET seq = -1 WHERE seq = 3",
        "UPDATE audit SET seq = 3 WHERE seq = 4",
        "UPDATE audit SET seq = 4 WHERE seq = -1",
    )
    result = verify(db_path)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "reordered" in result.reason


def test_truncated_tail_caught_only_with_expected_head(
    db_path: Path, chain: list[AuditHead]
) -> None:
    tamper(db_path, f"DELETE FROM audit WHERE seq >= {N - 1}")
    assert verify(db_path).ok  # the chain alone cannot see a cut-off tail
    result = verify(db_path, expected_head=chain[-1])
    assert (result.ok, result.first_bad_seq) == (False, N - 1)


@pytest.mark.parametrize("from_seq", [3, 5, N])
def test_recomputed_chain_caught_only_with_expected_head(
    db_path: Path, chain: list[AuditHead], from_seq: int
) -> None:
    tamper(
        db_path,
        f"""UPDATE audit SET payload = '{{"i":{from_seq},"state":"forged"}}'"""
        f" WHERE seq = {from_seq}",
    )
    assert verify(db_path).first_bad_seq == from_seq
    recompute_from(db_path, from_seq)
    assert verify(db_path).ok  # internally consistent again: the limit of a bare chain
    # with every head the service logged, the first rewritten row is named exactly
    exact = verify(db_path, expected_head=chain)
    assert (exact.ok, exact.first_bad_seq) == (False, from_seq)
    assert "recomputed" in exact.reason
    # with only the newest head, the rewrite is caught (first possible row named)
    final = verify(db_path, expected_head=chain[-1])
    assert not final.ok
    assert final.first_bad_seq is not None
    assert final.first_bad_seq <= from_seq


def test_heads_from_log_lines(chain: list[AuditHead], db_path: Path) -> None:
    lines = ['<6>{"event": "started", "level": "info"}', "not json"]
    lines += [f'<6>{{"event": "audit_head", "seq": {h.seq}, "hash": "{h.hash}"}}' for h in chain]
    assert heads_from_log(lines) == chain
    assert verify(db_path, expected_head=heads_from_log(lines)).ok


def test_audit_never_takes_a_patient_ref(engine: Engine) -> None:
    with Session(engine) as s, s.begin(), pytest.raises(ValueError, match="patient"):
        audit.append(s, "x", {"patient_ref": "MN-0001"})
