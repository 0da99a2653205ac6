"""db.immediate_transaction, the writer's sample-batch transaction without
SQLAlchemy's execution layer: same lock, same durability settings, all or nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cryod.daemon.store.db import immediate_transaction, make_engine

INSERT = (
    "INSERT INTO samples (console, t_utc, t_mono, probe, channel, value, validity)"
    " VALUES ('c1', 1.0, 1.0, 1, 'tip_c', ?, 'valid')"
)


def other_count(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT count(*) FROM samples").fetchone()[0])
    finally:
        con.close()


def test_commits_with_the_daemons_settings(engine: Engine, db_path: Path) -> None:
    with immediate_transaction(engine) as dbapi:
        assert dbapi.in_transaction
        settings = [
            dbapi.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "foreign_keys")
        ]
        assert settings == ["wal", 2, 1]  # WAL, FULL, foreign keys enforced
        dbapi.executemany(INSERT, [(float(i),) for i in range(10)])
        assert other_count(db_path) == 0  # not visible before the COMMIT
    assert other_count(db_path) == 10
    assert engine.pool.checkedout() == 0  # back in the pool


def test_takes_the_write_lock_at_begin(engine: Engine, db_path: Path) -> None:
    with immediate_transaction(engine):
        other = sqlite3.connect(db_path, timeout=0.05, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()


def two_rows_then_a_refused_one(engine: Engine) -> None:
    with immediate_transaction(engine) as dbapi:
        dbapi.executemany(INSERT, [(1.0,), (2.0,)])
        dbapi.execute(  # no such procedure: the foreign key refuses it
            "INSERT INTO samples (console, t_utc, t_mono, probe, channel, value, validity,"
            " procedure_id) VALUES ('c1', 1.0, 1.0, 1, 'tip_c', 3.0, 'valid', 999)"
        )


def test_rolls_back_everything_when_the_body_raises(engine: Engine, db_path: Path) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        two_rows_then_a_refused_one(engine)
    assert other_count(db_path) == 0
    assert engine.pool.checkedout() == 0
    # the pooled connection is clean: the next transaction starts and commits
    with immediate_transaction(engine) as dbapi:
        dbapi.execute(INSERT, (4.0,))
    assert other_count(db_path) == 1


def test_a_read_only_database_refuses_at_begin(db_path: Path) -> None:
    eng = make_engine(db_path, readonly=True)
    ran: list[bool] = []
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"), immediate_transaction(eng):
            ran.append(True)
    finally:
        eng.dispose()
    assert ran == []  # refused before any row: the write lock cannot be taken
