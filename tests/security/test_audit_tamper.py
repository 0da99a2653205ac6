"""Audit tamper test through the CLI, on copies of a real daemon's database.

A real cryod produces an audit trail (procedure, refusals, a freeze, alarms);
it is stopped; then each copy of its database is tampered with one way.
``cryoctl verify --db COPY`` must detect each case and name the first bad entry
(exit 1); a chain recomputed from an entry on is consistent on its own and is
caught only with the chain heads from the daemon's log (``--log cryod.log``,
exit 5). tests/security/test_record_tamper.py covers the tables, the other
anchors and exports.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryod.daemon.control import ControlError
from cryod.daemon.store.audit import heads_from_log
from cryod.integrity import entry_hash
from tests.e2e.harness import DEMO_PROCEDURE, sim_and_daemon

from .rig import cryoctl

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(database, daemon log) of a stopped daemon that did some work."""
    wd = tmp_path_factory.mktemp("audit")
    with sim_and_daemon(wd, speed=20.0, extra='[node]\nid = "test-node"\n') as (_sim, d):
        d.call("procedure_open", DEMO_PROCEDURE)
        for args in ({"probe": 1, "seconds": 1e9}, {"probe": 42, "seconds": 10}):
            with pytest.raises(ControlError):
                d.call("freeze", args)
        d.call("freeze", {"probe": 1, "seconds": 20})
        d.wait_state({"complete", "idle", "stopped"}, timeout=30)
        d.call("procedure_close", {"notes": "tamper test"})
    return wd / "cryod.db", wd / "cryod.log"


def _rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return list(con.execute("SELECT seq, at, kind, payload, prev_hash, hash, node FROM audit "
                                "ORDER BY seq"))  # fmt: skip
    finally:
        con.close()


def _copy(trail: tuple[Path, Path], tmp: Path, name: str) -> Path:
    dst = tmp / f"{name}.db"
    src = sqlite3.connect(trail[0])
    out = sqlite3.connect(dst)
    try:
        src.backup(out)  # a consistent copy, WAL included
    finally:
        src.close()
        out.close()
    return dst


def _verify(db: Path, *extra: str) -> tuple[int, str]:
    r = cryoctl(Path("/nonexistent.sock"), "verify", "--db", str(db), *extra)
    assert r.returncode in (0, 1, 4, 5), (r.returncode, r.stdout, r.stderr)
    return r.returncode, r.stdout + r.stderr


def _json_of(line: str) -> dict:
    try:
        obj = json.loads(line[line.index("{") :])
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _drop_guards(con: sqlite3.Connection) -> None:
    """A forger with the file drops the append-only triggers first."""
    q = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'"
    names = [r[0] for r in con.execute(q)]
    for name in names:
        con.execute(f'DROP TRIGGER "{name}"')


def _exec(db: Path, *sql: tuple[str, tuple]) -> None:
    con = sqlite3.connect(db)
    try:
        _drop_guards(con)
        for q, args in sql:
            con.execute(q, args)
        con.commit()
    finally:
        con.close()


def _middle(trail: tuple[Path, Path]) -> int:
    n = len(_rows(trail[0]))
    assert n >= 10, f"audit trail too short to tamper with: {n}"
    return n // 2


def test_the_untampered_trail_verifies_and_the_log_heads_match(
    trail: tuple[Path, Path],
) -> None:
    db, log = trail
    for extra in ((), ("--log", str(log))):
        rc, out = _verify(db, *extra)
        assert rc == 0, out
        assert "chain: ok" in out, out
    # the daemon's log format and heads_from_log agree: every logged head is a real row
    heads = heads_from_log(log.read_text().splitlines())
    rows = {r[0]: r[5] for r in _rows(db)}
    assert heads, "the daemon logged no audit_head lines that heads_from_log can read"
    assert all(rows.get(h.seq) == h.hash for h in heads), "a logged head differs from the DB"
    assert heads[-1].seq == max(rows), "the last row's head was not logged"
    # the raw log line is {"event": "audit_head", "seq": N, "hash": H} behind a <6> prefix
    line = next(ln for ln in log.read_text().splitlines() if '"audit_head"' in ln)
    obj = json.loads(line[line.index("{") :])
    assert obj["event"] == "audit_head"
    assert isinstance(obj["seq"], int)
    print(f"audit rows {len(rows)}, heads logged {len(heads)} (first seq {heads[0].seq})")


def test_the_database_refuses_edits_of_the_audit_table(
    trail: tuple[Path, Path], tmp_path: Path
) -> None:
    """First layer: the schema makes the audit table append-only (the chain is the second)."""
    db = _copy(trail, tmp_path, "guarded")
    con = sqlite3.connect(db)
    try:
        for q in ("UPDATE audit SET kind = 'x' WHERE seq = 1", "DELETE FROM audit WHERE seq = 1"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                con.execute(q)
    finally:
        con.close()


def test_edited_row_is_named(trail: tuple[Path, Path], tmp_path: Path) -> None:
    k = _middle(trail)
    db = _copy(trail, tmp_path, "edit")
    _exec(
        db,
        (
            "UPDATE audit SET payload = replace(payload, '\"accepted\":false', "
            "'\"accepted\":true') WHERE seq = ?",
            (k,),
        ),
        ("UPDATE audit SET at = '2000-01-01T00:00:00.000000Z' WHERE seq = ?", (k,)),
    )
    rc, out = _verify(db)
    assert rc == 1, out
    assert f"BROKEN at entry {k}:" in out, out


def test_deleted_row_is_named(trail: tuple[Path, Path], tmp_path: Path) -> None:
    k = _middle(trail)
    db = _copy(trail, tmp_path, "delete")
    _exec(db, ("DELETE FROM audit WHERE seq = ?", (k,)))
    rc, out = _verify(db)
    assert rc == 1, out
    assert f"BROKEN at entry {k}:" in out, out


def test_deleted_row_renumbered_is_named(trail: tuple[Path, Path], tmp_path: Path) -> None:
    k = _middle(trail)
    db = _copy(trail, tmp_path, "renumber")
    last = len(_rows(db))
    sql = [("DELETE FROM audit WHERE seq = ?", (k,))]
    sql += [("UPDATE audit SET seq = ? WHERE seq = ?", (s - 1, s)) for s in range(k + 1, last + 1)]
    _exec(db, *sql)
    rc, out = _verify(db)
    assert rc == 1, out
    assert f"BROKEN at entry {k}:" in out, out


def test_reordered_rows_are_named(trail: tuple[Path, Path], tmp_path: Path) -> None:
    k = _middle(trail)
    db = _copy(trail, tmp_path, "reorder")
    # swap the contents of rows k and k+1 (seq stays in order)
    _exec(
        db,
        ("UPDATE audit SET seq = -1 WHERE seq = ?", (k,)),
        ("UPDATE audit SET seq = ? WHERE seq = ?", (k, k + 1)),
        ("UPDATE audit SET seq = ? WHERE seq = -1", (k + 1,)),
    )
    rc, out = _verify(db)
    assert rc == 1, out
    assert f"BROKEN at entry {k}:" in out, out


def test_truncated_tail_is_caught_with_the_logged_head(
    trail: tuple[Path, Path], tmp_path: Path
) -> None:
    db = _copy(trail, tmp_path, "truncate")
    last = len(_rows(db))
    _exec(db, ("DELETE FROM audit WHERE seq >= ?", (last - 2,)))
    rc, out = _verify(db)
    assert "chain: ok" in out, out  # a shorter chain is consistent on its own
    # (the tables may show it: samples whose batch entry was cut off; exit 4 then)
    rc, out = _verify(db, "--log", str(trail[1]))
    assert rc in (4, 5), out
    assert f"truncated from entry {last - 2}:" in out, out


def _recompute_from(db: Path, k: int) -> None:
    """Edit row k, then recompute every hash from k on, as a careful forger would."""
    rows = _rows(db)
    con = sqlite3.connect(db)
    try:
        _drop_guards(con)
        prev = rows[k - 2][5] if k > 1 else "0" * 64
        for seq, at, kind, payload, _prev, _h, node in rows[k - 1 :]:
            obj = json.loads(payload)
            if seq == k:
                obj["forged"] = True
                payload = json.dumps(obj, sort_keys=True, separators=(",", ":"))
            digest = entry_hash(seq, at, node, kind, obj, prev)
            con.execute(
                "UPDATE audit SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (payload, prev, digest, seq),
            )
            prev = digest
        con.commit()
    finally:
        con.close()


def test_recomputed_chain_is_caught_only_with_the_logged_head(
    trail: tuple[Path, Path], tmp_path: Path
) -> None:
    k = _middle(trail)
    db = _copy(trail, tmp_path, "recompute")
    _recompute_from(db, k)
    rc, out = _verify(db)
    assert rc == 0, f"the recomputed chain should be self-consistent: {out}"
    rc, out = _verify(db, "--log", str(trail[1]))
    assert rc == 5, out
    assert "rewritten from entry" in out, out
    assert "recomputed" in out, out


def test_recomputed_chain_names_the_first_rewritten_row(
    trail: tuple[Path, Path], tmp_path: Path
) -> None:
    heads = heads_from_log(trail[1].read_text().splitlines())
    k = next(h.seq for h in heads if h.seq >= _middle(trail)) + 1  # just after a logged head
    db = _copy(trail, tmp_path, "recompute2")
    _recompute_from(db, k)
    rc, out = _verify(db, "--log", str(trail[1]))
    assert rc == 5, out
    assert f"rewritten from entry {k}:" in out, out


def test_source_database_untouched(trail: tuple[Path, Path]) -> None:
    """The tampering happened on copies only."""
    rc, out = _verify(trail[0], "--log", str(trail[1]))
    assert rc == 0, out
    shutil.disk_usage(trail[0].parent)  # the directory still exists
