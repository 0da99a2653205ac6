"""The schema the migrations create, and the PRAGMAs every connection gets."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from cryod.daemon.store import migrate
from cryod.daemon.store.db import make_engine, open_readonly
from cryod.daemon.store.errors import StoreError
from cryod.daemon.store.models import metadata
from cryod.daemon.store.schema_version import HEAD_REVISION

TABLES = {
    "procedures",
    "procedure_study",
    "pain_assessments",
    "adverse_events",
    "cycles",
    "samples",
    "sample_polls",
    "sample_probes",
    "sample_states",
    "alarms",
    "operator_actions",
    "audit",
    "outbox",
    "row_salts",
    "alembic_version",
}


def test_fresh_database_is_created_at_head(db_path: Path, engine: Engine) -> None:
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) == TABLES
        assert migrate.current_revision(conn) == migrate.head_revision() == HEAD_REVISION
        triggers = {
            r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='trigger'"))
        }
        assert triggers == {
            "audit_no_update",
            "audit_no_delete",
            "procedures_no_delete",
            "cycles_no_delete",
            "alarms_no_delete",
            "operator_actions_no_delete",
            "procedure_study_no_delete",
            "pain_assessments_no_delete",
            "adverse_events_no_delete",
            "samples_no_update",
            "samples_no_delete",
            "sample_polls_no_update",
            "sample_probes_no_update",
            "sample_states_no_update",
            "sample_polls_no_delete",
            "sample_probes_no_delete",
            "sample_states_no_delete",
            "row_salts_no_update",
            "row_salts_no_delete",
        }
        kinds = [r[0] for r in conn.execute(text("SELECT kind FROM audit ORDER BY seq"))]
        assert kinds == ["baseline", "database_created"]


def test_models_match_migrations(engine: Engine) -> None:
    """The ORM classes and the migrated schema agree (no autogenerate diff)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, metadata) == []


def test_pragmas_set_on_every_connection(engine: Engine) -> None:
    conns = [engine.connect() for _ in range(3)]  # three distinct pooled connections
    try:
        for conn in conns:
            got = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
            assert got == {
                "journal_mode": "wal",
                "synchronous": 2,
                "foreign_keys": 1,
                "busy_timeout": 5000,
            }
    finally:
        for conn in conns:
            conn.close()
    # a connection opened after the pool was emptied gets them too
    engine.dispose()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with pytest.raises(Exception, match="FOREIGN KEY"), engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO samples (procedure_id, console, t_utc, t_mono, probe, channel, value,"
            " validity) VALUES (999, 'c1', 0, 0, 1, 'tip_c', 1.0, 'valid')"
        )


def test_check_constraints_refuse_unknown_codes(engine: Engine) -> None:
    with pytest.raises(Exception, match="CHECK constraint failed"), engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO alarms (console, code, priority, message, raised_at)"
            " VALUES ('c1', 'x', 'urgent', 'm', '2026-01-01T00:00:00.000000Z')"
        )


def test_readonly_engine_is_query_only(db_path: Path) -> None:
    eng = open_readonly(db_path)
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA query_only").scalar() == 1
            with pytest.raises(Exception, match="readonly"):
                conn.exec_driver_sql("DELETE FROM samples")
    finally:
        eng.dispose()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist") as info:
        make_engine(tmp_path / "nowhere" / "cryod.db")
    assert info.value.kind == "io"


def test_database_file_opens_in_plain_sqlite(db_path: Path) -> None:
    """Auditors use stock tools on copies: times are readable ISO text."""
    con = sqlite3.connect(db_path)
    try:
        (at,) = con.execute("SELECT at FROM audit WHERE seq = 1").fetchone()
    finally:
        con.close()
    assert at.endswith("Z")
    assert len(at) == 27
