"""The schema the collector's migrations create, on PostgreSQL and SQLite."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from cryod.hub.store import audit
from cryod.hub.store.db import StoreError
from cryod.hub.store.migrate import current_revision, head_revision, require_head, upgrade
from cryod.hub.store.models import APPEND_ONLY, metadata
from cryod.integrity import check_chain

from .conftest import NODE, T0

TABLES = {
    "rooms",
    "received_entries",
    "received_rows",
    "received_blocks",
    "held",
    "gaps",
    "quarantine",
    "users",
    "user_grants",
    "audit",
    "followup_assessments",
    "followup_events",
    "signatures",
    "withdrawals",
    "alembic_version",
}


def test_fresh_database_is_created_at_head_with_its_first_audit_entry(migrated: Engine) -> None:
    with migrated.connect() as conn:
        assert set(inspect(conn).get_table_names()) == TABLES
        assert current_revision(conn) == head_revision()
    with Session(migrated) as s:
        chain = audit.entries(s)
    assert [e.kind for e in chain] == ["database_created"]
    assert chain[0].payload == {"from": None, "to": head_revision()}
    assert chain[0].node == NODE
    assert check_chain(chain).ok


def test_models_match_migrations(migrated: Engine) -> None:
    """The ORM classes and the migrated schema agree (no autogenerate diff) on both."""
    with migrated.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, metadata) == []


def test_upgrade_twice_is_a_no_op(migrated: Engine) -> None:
    report = upgrade(migrated, node=NODE, now=T0)
    assert report.head is None
    with Session(migrated) as s:
        head = audit.head(s)
    assert head is not None
    assert head.seq == 1


def test_commands_refuse_a_database_without_the_schema(engine: Engine) -> None:
    with pytest.raises(StoreError, match="run cryohub migrate"):
        require_head(engine)


def test_a_foreign_database_is_not_migrated(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE procedures (id INTEGER PRIMARY KEY)"))
    with pytest.raises(StoreError, match="not a cryohub database"):
        upgrade(engine, node=NODE, now=T0)


def test_another_collectors_database_is_refused(migrated: Engine) -> None:
    with Session(migrated) as s, pytest.raises(StoreError, match="another collector"):
        audit.append(s, node="other-hub", kind="x", payload={}, at=T0)


@pytest.mark.parametrize("table", APPEND_ONLY)
def test_append_only_tables_refuse_update_and_delete(migrated: Engine, table: str) -> None:
    with migrated.begin() as conn:
        if table != "audit":
            conn.execute(
                text(
                    "INSERT INTO rooms (node, site, first_seq, registered_at, registered_by, "
                    "audit_seq) VALUES ('r1', 's1', 1, :t, 'x', 1)"
                ),
                {"t": "2026-03-01T09:15:02.123456Z" if migrated.dialect.name == "sqlite" else T0},
            )
            conn.execute(
                text(
                    "INSERT INTO received_entries (node, seq, at, kind, payload, prev_hash, hash,"
                    " v, received_at, skew_s, skew_flagged) VALUES ('r1', 1, :t, 'k', '{}', "
                    "'0', '1', 2, :t, 0, false)"
                ),
                {"t": "2026-03-01T09:15:02.123456Z" if migrated.dialect.name == "sqlite" else T0},
            )
            if table == "received_rows":
                conn.execute(
                    text(
                        "INSERT INTO received_rows (node, seq, position, table_name, key, "
                        "canonical, salt, digest) VALUES ('r1', 1, 0, 't', '{}', :b, :b, 'd')"
                    ),
                    {"b": b"x"},
                )
            if table == "received_blocks":
                conn.execute(
                    text(
                        "INSERT INTO received_blocks (node, seq, encoding, data, digest) "
                        "VALUES ('r1', 1, 'e', :b, 'd')"
                    ),
                    {"b": b"x"},
                )
    for sql in (f"UPDATE {table} SET seq = seq + 100", f"DELETE FROM {table}"):
        with pytest.raises(DBAPIError, match="append-only"), migrated.begin() as conn:
            conn.execute(text(sql))
    if migrated.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"), migrated.begin() as conn:
            conn.execute(text(f"TRUNCATE {table} CASCADE"))
    with migrated.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 1
