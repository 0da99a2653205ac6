"""A column added to a research table (revision 0005: ``cycles.figures_note``) does not
make every existing row look edited, and does not bless a row edited before it
(docs/integrity.md, "Adding a column to a research table").

Each tamper is made the way someone with the file would: plain sqlite3."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cryod.daemon import ctl
from cryod.daemon.store import migrate, records
from cryod.daemon.store.chain import ChainedSession
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.models import Outcome
from cryod.daemon.store.record_check import VerifyExit, check_record

from .conftest import cycle_open, procedure_meta
from .legacy import make_0004_db, make_old_db

NODE = "ws-schema"


def _sql(db: Path, statement: str, params: tuple[object, ...] = ()) -> None:
    con = sqlite3.connect(db)
    try:
        con.execute(statement, params)
        con.commit()
    finally:
        con.close()


def _entries(db: Path, kind: str) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT payload FROM audit WHERE kind = ? ORDER BY seq", (kind,))
        return [json.loads(r[0]) for r in rows]
    finally:
        con.close()


@pytest.fixture
def at_0004(tmp_path: Path) -> Path:
    db = tmp_path / "cryod.db"
    make_0004_db(db, node=NODE, cycles=3)
    # positive control: at 0004, as that cryod left it, the record verifies
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            revision = migrate.current_revision(conn)
    finally:
        engine.dispose()
    assert revision == "0004"
    return db


def test_untouched_rows_verify_after_the_column_is_added(at_0004: Path) -> None:
    migrate.upgrade_on_start(at_0004, node=NODE)
    report = check_record(at_0004)
    assert report.exit_code is VerifyExit.OK, report.lines()
    assert report.rows.verified["cycles"] == 3
    schema_rows = [p for p in _entries(at_0004, "row") if p["op"] == "schema"]
    assert [(p["table"], p["key"], p["revision"], p["added"]) for p in schema_rows] == [
        ("cycles", {"id": i}, "0005", ["figures_note"]) for i in (1, 2, 3)
    ]
    (change,) = _entries(at_0004, "schema_change")
    assert (change["rows_covered"], change["not_covered"]) == (3, [])
    assert "schema: revision 0005 added cycles.figures_note" in "\n".join(report.lines())


def test_a_row_edited_before_the_change_is_still_reported_never_blessed(at_0004: Path) -> None:
    _sql(at_0004, "UPDATE cycles SET min_tip_c = -99.0 WHERE id = 2")
    # a row the chain never saw, inserted behind its back
    _sql(
        at_0004,
        "INSERT INTO cycles (id, procedure_id, probe, phase, step_index, protocol, planned_s,"
        " target_tip_c, started_at, started_mono, host_only_limits) VALUES (9, 1, 2, 'freeze',"
        " 0, 'classic-2x90', 90.0, -60.0, '2026-02-01T09:00:00.000000Z', 1.0, 0)",
    )
    migrate.upgrade_on_start(at_0004, node=NODE)

    report = check_record(at_0004)
    assert report.exit_code is VerifyExit.TABLES
    found = {(f.table, f.key, f.problem, f.columns) for f in report.rows.findings}
    assert found == {
        ("cycles", "id=2", "edited", ("min_tip_c",)),  # the edit, not the new column
        ("cycles", "id=9", "inserted", ()),
    }
    assert report.rows.verified["cycles"] == 2  # ids 1 and 3
    (change,) = _entries(at_0004, "schema_change")
    assert change["rows_covered"] == 2
    assert [(m["key"], m["problem"]) for m in change["not_covered"]] == [
        ("id=2", "edited"),
        ("id=9", "inserted"),
    ]
    covered = {p["key"]["id"] for p in _entries(at_0004, "row") if p["op"] == "schema"}
    assert covered == {1, 3}


def test_cryoctl_verify_names_the_edited_row_after_the_upgrade(
    at_0004: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sql(at_0004, "UPDATE cycles SET min_tip_c = -99.0 WHERE id = 2")
    migrate.upgrade_on_start(at_0004, node=NODE)
    rc = ctl.main(["verify", "--db", str(at_0004)])
    out = capsys.readouterr().out
    assert rc == ctl.EXIT_TABLES == VerifyExit.TABLES
    assert "tables: 1 problem(s) against the chain" in out
    assert "cycles id=2 column min_tip_c: edited: differs from entry" in out
    assert "not covered again, as they did not match the chain before it: cycles id=2" in out


def test_rows_written_after_the_change_are_covered_with_the_new_column(at_0004: Path) -> None:
    migrate.upgrade_on_start(at_0004, node=NODE)
    engine = make_engine(at_0004)
    try:
        with ChainedSession(engine) as s, s.begin():
            cid = records.open_cycle(s, cycle_open(1))
            records.close_cycle(
                s,
                records.CycleClose(
                    cycle_id=cid,
                    outcome=Outcome.COMPLETED,
                    ended_at=dt.datetime.now(dt.UTC),
                    ended_mono=None,
                    min_tip_c=-80.0,
                    figures_note="some intervals not integrated",
                ),
            )
    finally:
        engine.dispose()
    assert check_record(at_0004).exit_code is VerifyExit.OK
    # and the new column is under the chain like the others
    _sql(at_0004, "UPDATE cycles SET figures_note = 'whole' WHERE id = 1")
    report = check_record(at_0004)
    assert [(f.key, f.columns) for f in report.rows.findings] == [("id=1", ("figures_note",))]


def test_a_baselined_row_stays_baselined_after_the_change(tmp_path: Path) -> None:
    """0001 -> head: 0004 baselines the cycle, 0005 covers it again; verify still says
    its content is vouched for from the baseline on, not from its origin."""
    db = tmp_path / "cryod.db"
    make_old_db(db)
    migrate.upgrade_on_start(db, node=NODE)
    report = check_record(db)
    assert report.exit_code is VerifyExit.OK, report.lines()
    assert {t: n for t, (n, _) in report.rows.baselined.items()} == {
        "procedures": 1,
        "cycles": 1,
    }
    assert [p["op"] for p in _entries(db, "row") if p["table"] == "cycles"] == [
        "baseline",
        "schema",
    ]


def test_a_fresh_database_verifies_clean(tmp_path: Path) -> None:
    db = tmp_path / "cryod.db"
    migrate.upgrade_on_start(db, node=NODE)
    assert check_record(db).exit_code is VerifyExit.OK
    assert _entries(db, "schema_change") == []  # no rows to cover again: nothing to record
    engine = make_engine(db)
    try:
        with ChainedSession(engine) as s, s.begin():
            pid = records.open_procedure(s, procedure_meta())
            records.open_cycle(s, cycle_open(pid))
    finally:
        engine.dispose()
    report = check_record(db)
    assert report.exit_code is VerifyExit.OK
    assert report.rows.verified["cycles"] == 1


def test_the_downgrade_keeps_the_delete_guard(at_0004: Path) -> None:
    from .legacy import downgrade

    migrate.upgrade_on_start(at_0004, node=NODE)
    downgrade(at_0004, "0004")
    con = sqlite3.connect(at_0004)
    try:
        columns = [r[1] for r in con.execute("PRAGMA table_info(cycles)")]
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        triggers = {r[0] for r in con.execute(query)}
        with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
            con.execute("DELETE FROM cycles WHERE id = 1")
    finally:
        con.close()
    assert "figures_note" not in columns
    assert "cycles_no_delete" in triggers


def test_only_added_columns_are_accepted(db_path: Path) -> None:
    from cryod.daemon.store.schema_change import cover_added_columns
    from cryod.integrity import Kind, TableSpec

    before = TableSpec("cycles", ("id",), (("id", Kind.INT), ("min_tip_c", Kind.REAL)))
    engine = make_engine(db_path)
    try:
        with engine.begin() as conn:
            for after, says in (
                (TableSpec("cycles", ("id",), (("id", Kind.INT),)), "removed"),
                (TableSpec("cycles", ("id",), (("id", Kind.INT), ("min_tip_c", Kind.TEXT))),
                 "kind changed"),
                (before, "only columns added"),
                (TableSpec("alarms", ("id",), before.columns), "same key"),
            ):  # fmt: skip
                with pytest.raises(ValueError, match=says):
                    cover_added_columns(conn, before, after, revision="test")
    finally:
        engine.dispose()
