"""The record cannot be edited undetected: every research row and every sample batch
is checked against the chain. Each tamper is made the way someone with the file
would: plain sqlite3, guards (triggers) dropped first."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

import pytest

from cryod.daemon.store import migrate, records
from cryod.daemon.store.chain import ChainedSession
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.models import Outcome, Phase
from cryod.daemon.store.record_check import VerifyExit, check_record
from cryod.daemon.store.redaction import RedactionError, redact_procedure
from cryod.daemon.store.writer import SampleRow, Writer

from .conftest import cycle_open, procedure_meta
from .legacy import make_old_db

OLD = "2020-01-01T00:00:00.000000Z"  # a time moved back, as a forger would


async def _fill(db: Path) -> None:
    engine = make_engine(db)
    w = Writer(engine)
    await w.start()
    try:
        log = records.ProcedureLog(w)
        pid = await log.open_procedure(procedure_meta())
        for phase in (Phase.FREEZE, Phase.THAW):
            cid = await log.open_cycle(cycle_open(pid, phase=phase))
            for i in range(120):  # a tip reading and a valve state per poll
                t_utc, t_mono = 1.7e9 + i * 0.05, 100.0 + i * 0.05
                w.submit_samples(
                    [
                        SampleRow("c1", t_utc, t_mono, 1, "tip_c", -40.0 - i, "valid", pid),
                        SampleRow(
                            "c1", t_utc, t_mono, 1, "freeze_open", float(i < 60), "valid", pid
                        ),
                    ]
                )
            await log.close_cycle(
                records.CycleClose(
                    cycle_id=cid,
                    outcome=Outcome.COMPLETED,
                    ended_at=dt.datetime.now(dt.UTC),
                    ended_mono=time.monotonic(),
                    min_tip_c=-78.5,
                    time_below_m20_s=50.5,
                )
            )
        aid = await log.raise_alarm(
            console="c1", code="supply_low", priority="medium", message="Supply low",
            procedure_id=pid, probe=1,
        )  # fmt: skip
        await log.ack_alarm(aid, by="op-a")
        await log.record_action(
            who="op-a", action="freeze", args={"probe": 1, "seconds": 30.0}, accepted=True,
            procedure_id=pid, console="c1",
        )  # fmt: skip
        await log.close_procedure(
            records.ProcedureClose(
                procedure_id=pid, closed_by="op-a", notes="ok", adverse_events=[{"code": "pain"}]
            )
        )
    finally:
        await w.aclose()
        engine.dispose()


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("record") / "cryod.db"
    migrate.upgrade_on_start(db, node="ws-test")
    import asyncio

    asyncio.run(_fill(db))
    return db


def tampered(record: Path, tmp_path: Path, *sql: str) -> Path:
    copy = tmp_path / "copy.db"
    src, dst = sqlite3.connect(record), sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    try:
        for (name,) in dst.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            dst.execute(f'DROP TRIGGER "{name}"')
        for q in sql:
            dst.execute(q)
        dst.commit()
    finally:
        dst.close()
    return copy


def test_the_untouched_record_verifies(record: Path) -> None:
    report = check_record(record)
    assert report.ok, report.lines()
    assert report.node == "ws-test"
    assert report.rows.verified == {
        "procedures": 1,
        "cycles": 2,
        "alarms": 1,
        "operator_actions": 1,
        "procedure_study": 0,
        "pain_assessments": 0,
        "adverse_events": 1,  # the yes/no code given at close, as a row
    }
    assert report.samples.rows_ok == 240


@pytest.mark.parametrize(
    ("table", "column", "sql"),
    [
        ("procedures", "side", "UPDATE procedures SET side = 'right'"),  # text
        ("procedures", "opened_at", f"UPDATE procedures SET opened_at = '{OLD}'"),
        ("procedures", "host_only_limits", "UPDATE procedures SET host_only_limits = 1"),  # bool
        ("procedures", "adverse_events", "UPDATE procedures SET adverse_events = '[]'"),  # json
        ("cycles", "min_tip_c", "UPDATE cycles SET min_tip_c = -90.0 WHERE id = 1"),  # real
        ("cycles", "probe", "UPDATE cycles SET probe = 2 WHERE id = 1"),  # int
        ("cycles", "outcome", "UPDATE cycles SET outcome = 'stopped' WHERE id = 2"),
        ("cycles", "started_at", f"UPDATE cycles SET started_at = '{OLD}' WHERE id = 2"),
        ("alarms", "raised_at", f"UPDATE alarms SET raised_at = '{OLD}'"),
        ("alarms", "probe", "UPDATE alarms SET probe = NULL"),
        ("alarms", "message", "UPDATE alarms SET message = 'nothing'"),
        ("operator_actions", "args", "UPDATE operator_actions SET args = '{\"probe\": 2}'"),
        ("operator_actions", "accepted", "UPDATE operator_actions SET accepted = 0"),
        ("operator_actions", "who", "UPDATE operator_actions SET who = 'op-b'"),
    ],
)  # fmt: skip
def test_an_update_of_each_column_kind_is_named(
    record: Path, tmp_path: Path, table: str, column: str, sql: str
) -> None:
    report = check_record(tampered(record, tmp_path, sql))
    assert report.exit_code is VerifyExit.TABLES
    (finding,) = report.rows.findings
    assert (finding.table, finding.problem, finding.columns) == (table, "edited", (column,))
    assert finding.key.startswith("id=")


@pytest.mark.parametrize("table", ["procedures", "cycles", "alarms", "operator_actions"])
def test_a_delete_is_named(record: Path, tmp_path: Path, table: str) -> None:
    off = "PRAGMA foreign_keys = OFF"
    report = check_record(tampered(record, tmp_path, off, f"DELETE FROM {table} WHERE id = 1"))
    assert report.exit_code is VerifyExit.TABLES
    assert [(f.table, f.key, f.problem) for f in report.rows.findings] == [
        (table, "id=1", "deleted")
    ]


@pytest.mark.parametrize(
    ("table", "sql"),
    [
        ("procedures", "INSERT INTO procedures SELECT 7, 'x', console, opened_at, closed_at, "
         "'MN-0099', indication, indication_other, site, side, imaging, anaesthesia, operator, "
         "study_id, probe_model, probe_lot, console_model, console_serial, console_firmware, "
         "software_version, host_only_limits, notes, adverse_events, closed_by FROM procedures"),
        ("cycles", "INSERT INTO cycles (id, procedure_id, probe, phase, step_index, started_at, "
         "started_mono, host_only_limits) VALUES (9, 1, 3, 'freeze', 0, "
         "'2026-01-01T00:00:00.000000Z', 1.0, 0)"),
        ("alarms", "INSERT INTO alarms (id, console, code, priority, message, raised_at) "
         "VALUES (9, 'c1', 'x', 'high', 'm', '2026-01-01T00:00:00.000000Z')"),
        ("operator_actions", "INSERT INTO operator_actions (id, at, who, action, args, accepted)"
         " VALUES (9, '2026-01-01T00:00:00.000000Z', 'op', 'abort', '{}', 1)"),
    ],
)  # fmt: skip
def test_an_insert_is_named(record: Path, tmp_path: Path, table: str, sql: str) -> None:
    report = check_record(tampered(record, tmp_path, sql))
    assert report.exit_code is VerifyExit.TABLES
    (finding,) = report.rows.findings
    assert (finding.table, finding.problem) == (table, "inserted")


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("UPDATE sample_probes SET tip_c = tip_c + 0.5 WHERE poll_id = 50", "edited"),
        ("UPDATE sample_polls SET t_utc = t_utc - 3600 WHERE id = 50", "edited"),  # time-shifted
        ("UPDATE sample_probes SET probe = 2 WHERE poll_id = 50", "edited"),
        ("DELETE FROM sample_probes WHERE poll_id = 50", "edited"),
        ("UPDATE sample_states SET value = 0 WHERE poll_id = 1", "edited"),
        ("DELETE FROM sample_polls WHERE id = 50", "deleted"),
        ("INSERT INTO sample_polls (id, procedure_id, console, t_utc, t_mono, full_state) "
         "SELECT 50000, procedure_id, console, t_utc, t_mono, 1 FROM sample_polls "
         "WHERE id = 50", "inserted"),
        ("INSERT INTO sample_polls (id, procedure_id, console, t_utc, t_mono, full_state) "
         "SELECT 50000, procedure_id, console, t_utc, t_mono, 1 FROM sample_polls WHERE id = 50;"
         "INSERT INTO sample_probes SELECT 50000, probe, -99.0, 0, return_kpa, return_v "
         "FROM sample_probes WHERE poll_id = 50", "inserted"),
    ],
)  # fmt: skip
def test_samples_edited_deleted_inserted_or_time_shifted_are_named(
    record: Path, tmp_path: Path, sql: str, problem: str
) -> None:
    report = check_record(tampered(record, tmp_path, *sql.split(";")))
    assert report.exit_code is VerifyExit.TABLES
    (finding,) = report.samples.findings
    assert (finding.table, finding.problem) == ("samples", problem)
    assert "console c1" in finding.detail
    assert "t_utc" in finding.detail


def test_the_guards_refuse_what_the_chain_would_show(record: Path, tmp_path: Path) -> None:
    copy = tmp_path / "guarded.db"
    src, dst = sqlite3.connect(record), sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    try:
        for q in (
            "DELETE FROM cycles WHERE id = 1",
            "DELETE FROM sample_polls WHERE id = 1",
            "DELETE FROM sample_probes WHERE poll_id = 1",
            "DELETE FROM sample_states WHERE poll_id = 1",
            "UPDATE sample_polls SET t_utc = 0 WHERE id = 1",
            "UPDATE sample_probes SET tip_c = 0 WHERE poll_id = 1",
            "UPDATE sample_states SET value = 0 WHERE poll_id = 1",
            "UPDATE row_salts SET salt = '00'",
            "DELETE FROM row_salts",
        ):
            with pytest.raises(sqlite3.IntegrityError):
                dst.execute(q)
    finally:
        dst.close()


def test_redaction_is_listed_apart_and_verifies(record: Path, tmp_path: Path) -> None:
    src, dst = sqlite3.connect(record), sqlite3.connect(tmp_path / "r.db")
    src.backup(dst)
    src.close()
    dst.close()
    engine = make_engine(tmp_path / "r.db")
    try:
        with ChainedSession(engine) as s, s.begin(), pytest.raises(RedactionError):
            redact_procedure(s, 1, by="dpo", reason="")
        with ChainedSession(engine) as s, s.begin():
            done = redact_procedure(s, 1, by="study DPO", reason="consent withdrawn (ref 12)")
    finally:
        engine.dispose()
    assert done.rows == {
        "operator_actions": 1,
        "alarms": 1,
        "cycles": 2,
        "adverse_events": 1,
        "pain_assessments": 0,
        "procedure_study": 0,
        "procedures": 1,
    }
    assert done.samples == 240
    report = check_record(tmp_path / "r.db")
    assert report.ok, report.lines()
    assert {(r.table, r.by) for r in report.rows.redactions} >= {("procedures", "study DPO")}
    assert report.samples.batches_redacted >= 1
    con = sqlite3.connect(tmp_path / "r.db")
    try:
        everything = str(con.execute("SELECT payload FROM audit").fetchall())
        salts = con.execute("SELECT count(*) FROM row_salts").fetchone()
    finally:
        con.close()
    assert "MN-0042" not in everything  # the pseudonym is gone from the whole database
    assert salts == (0,)


def test_an_older_database_verifies_as_baselined(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    make_old_db(db)
    migrate.upgrade_on_start(db, node="ws-old")
    report = check_record(db)
    assert report.ok, report.lines()
    assert report.chain.legacy_entries == 2
    assert {t: n for t, (n, _) in report.rows.baselined.items()} == {"procedures": 1, "cycles": 1}
    assert report.samples.baselined_rows == 1
    assert any("baselined on" in line for line in report.lines())
