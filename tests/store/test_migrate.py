"""Schema migration on start: an older database is backed up, then upgraded."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from cryod.daemon.store import audit, migrate, recovery
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.errors import StoreError
from cryod.daemon.store.schema_version import HEAD_REVISION

from .legacy import downgrade, make_old_db


def tables(path: Path) -> set[str]:
    con = sqlite3.connect(path)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()


def revision(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return str(con.execute("SELECT version_num FROM alembic_version").fetchone()[0])
    finally:
        con.close()


def test_older_database_is_backed_up_then_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "cryod.db"
    make_old_db(db)
    assert "outbox" not in tables(db)
    assert revision(db) == "0001"
    when = dt.datetime(2026, 3, 1, 9, 30, 0, tzinfo=dt.UTC)
    report = migrate.upgrade_on_start(db, now=when)
    assert (report.from_revision, report.to_revision) == ("0001", HEAD_REVISION)
    assert report.backup_path == tmp_path / "cryod.db.bak-20260301T093000Z"
    # the backup is the old database, whole and consistent
    assert revision(report.backup_path) == "0001"
    con = sqlite3.connect(report.backup_path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert con.execute("SELECT count(*) FROM samples").fetchone() == (1,)
    finally:
        con.close()
    assert "outbox" not in tables(report.backup_path)
    assert recovery.integrity_check(report.backup_path) == []
    # the live database is at head with its data
    assert revision(db) == HEAD_REVISION
    assert "outbox" in tables(db)
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT count(*) FROM procedures").fetchone() == (1,)
        assert con.execute("SELECT count(*) FROM samples").fetchone() == (1,)
        kinds = [r[0] for r in con.execute("SELECT kind FROM audit ORDER BY seq")]
        indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    finally:
        con.close()
    # the old entries stay as they were (v1); 0004 baselined every row and the sample;
    # 0005 added cycles.figures_note and covered the cycle again
    assert kinds == [
        "procedure_opened",
        "cycle_opened",
        *("row", "row", "samples", "baseline"),
        *("row", "schema_change"),
        "schema_upgraded",
    ]
    assert "ix_samples_procedure_id_t_utc" in indexes  # 0003: time order
    assert "ix_samples_procedure_id_probe_channel_t_utc" not in indexes
    assert audit.verify(db).ok
    assert recovery.integrity_check(db) == []
    # the recovery that follows on start works on the upgraded database
    eng = make_engine(db)
    try:
        assert len(recovery.recover(eng).interrupted) == 1
    finally:
        eng.dispose()
    # a second start has nothing to do and makes no backup
    again = migrate.upgrade_on_start(db, now=when)
    assert again.backup_path is None
    assert again.from_revision == HEAD_REVISION
    assert sorted(p.name for p in tmp_path.glob("cryod.db.bak-*")) == [
        "cryod.db.bak-20260301T093000Z"
    ]


def test_database_from_a_newer_version_is_refused(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    con.execute("UPDATE alembic_version SET version_num = '0099'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer version"):
        migrate.upgrade_on_start(db_path)
    assert revision(db_path) == "0099"  # untouched


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE patients (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a cryod database"):
        migrate.upgrade_on_start(db)


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "garbage.db"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as info:
        migrate.upgrade_on_start(db)
    assert info.value.kind == "corrupt"


def test_0003_downgrade_restores_the_per_probe_index(tmp_path: Path) -> None:
    """The 0003 migration is reversible (an older cryod can be reinstated)."""
    db = tmp_path / "cryod.db"
    migrate.upgrade(db, "head")
    downgrade(db, "0002")
    con = sqlite3.connect(db)
    try:
        indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    finally:
        con.close()
    assert revision(db) == "0002"
    assert "ix_samples_procedure_id_probe_channel_t_utc" in indexes
    assert "ix_samples_procedure_id_t_utc" not in indexes
