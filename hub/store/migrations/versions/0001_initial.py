"""The collector's first schema: rooms, received chains, held, gaps, quarantine,
users and grants, and the collector's own audit chain.

Revision ID: h0001
Revises:
Create Date: 2026-12-01

Types are spelled out here (no model imports) so the revision stays frozen;
the ones that differ between the databases are variants: times are
``TIMESTAMP WITH TIME ZONE`` on PostgreSQL and 27-character UTC text on
SQLite, JSON is ``JSONB`` on PostgreSQL. Append-only tables get triggers on
both (a PL/pgSQL function on PostgreSQL, ``RAISE(ABORT)`` on SQLite).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "h0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("audit", "received_entries", "received_rows", "received_blocks")


def _time() -> sa.types.TypeEngine[Any]:
    return sa.String(length=27).with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _guards() -> list[str]:
    if op.get_bind().dialect.name == "postgresql":
        out = [
            "CREATE FUNCTION cryohub_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP; END $$"
        ]
        for table in APPEND_ONLY:
            out.append(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION cryohub_append_only()"
            )
            out.append(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION cryohub_append_only()"
            )
        return out
    out = []
    for table in APPEND_ONLY:
        for verb in ("UPDATE", "DELETE"):
            out.append(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only ({verb} refused)'); END"
            )
    return out


def upgrade() -> None:
    op.create_table(
        "rooms",
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("credential", sa.String(length=128), nullable=True),
        sa.Column("cert_sha256", sa.String(length=64), nullable=True),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("first_hash", sa.String(length=64), nullable=True),
        sa.Column("registered_at", _time(), nullable=False),
        sa.Column("registered_by", sa.String(length=64), nullable=False),
        sa.Column("audit_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("node", name=op.f("pk_rooms")),
    )
    op.create_table(
        "received_entries",
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("v", sa.SmallInteger(), nullable=False),
        sa.Column("profile_id", sa.String(length=64), nullable=True),
        sa.Column("profile_version", sa.String(length=32), nullable=True),
        sa.Column("profile_hash", sa.String(length=71), nullable=True),
        sa.Column("received_at", _time(), nullable=False),
        sa.Column("skew_s", sa.Float(), nullable=False),
        sa.Column("skew_flagged", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node"], ["rooms.node"], name=op.f("fk_received_entries_node_rooms")
        ),
        sa.PrimaryKeyConstraint("node", "seq", name=op.f("pk_received_entries")),
    )
    op.create_table(
        "received_rows",
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("position", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("key", _json(), nullable=False),
        sa.Column("canonical", sa.LargeBinary(), nullable=False),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["node", "seq"],
            ["received_entries.node", "received_entries.seq"],
            name="fk_received_rows_entry",
        ),
        sa.PrimaryKeyConstraint("node", "seq", "position", name=op.f("pk_received_rows")),
    )
    op.create_index(
        "ix_received_rows_node_table_name", "received_rows", ["node", "table_name"], unique=False
    )
    op.create_table(
        "received_blocks",
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("encoding", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["node", "seq"],
            ["received_entries.node", "received_entries.seq"],
            name="fk_received_blocks_entry",
        ),
        sa.PrimaryKeyConstraint("node", "seq", name=op.f("pk_received_blocks")),
    )
    op.create_table(
        "held",
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", _time(), nullable=False),
        sa.ForeignKeyConstraint(["node"], ["rooms.node"], name=op.f("fk_held_node_rooms")),
        sa.PrimaryKeyConstraint("node", "seq", name=op.f("pk_held")),
    )
    op.create_table(
        "gaps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("detected_at", _time(), nullable=False),
        sa.Column("closed_at", _time(), nullable=True),
        sa.ForeignKeyConstraint(["node"], ["rooms.node"], name=op.f("fk_gaps_node_rooms")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gaps")),
    )
    op.create_index("ix_gaps_node_closed_at", "gaps", ["node", "closed_at"], unique=False)
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", _time(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("hash", sa.String(length=64), nullable=True),
        sa.Column("topic", sa.String(length=255), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("skew_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    op.create_index("ix_quarantine_node_seq", "quarantine", ["node", "seq"], unique=False)
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("password_changed_at", _time(), nullable=False),
        sa.Column("disabled_at", _time(), nullable=True),
        sa.Column("disabled_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "user_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("study", sa.String(length=64), nullable=True),
        sa.Column("site", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_grants_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_grants")),
        sa.UniqueConstraint(
            "user_id", "role", "study", "site", name=op.f("uq_user_grants_user_id_role_study_site")
        ),
    )
    op.create_table(
        "audit",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit")),
    )
    for statement in _guards():
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the collector's record is never migrated down")
