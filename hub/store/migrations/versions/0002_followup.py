"""Follow-up: assessments, later adverse events and interventions, signatures, withdrawals.

Revision ID: h0002
Revises: h0001
Create Date: 2026-12-06

Follow-up rows keep their content beside a salt and the salted digest the
audit chain holds; a withdrawal erases content and salt (docs/followup.md),
so these tables are not append-only. Types spelled out (frozen revision).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "h0002"
down_revision: str | None = "h0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> sa.types.TypeEngine[Any]:
    return sa.String(length=27).with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _content_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=32), nullable=True),
        sa.Column("procedure_uuid", sa.String(length=36), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "followup_assessments",
        *_content_columns(),
        sa.Column("time_point", sa.String(length=32), nullable=False),
        sa.Column("content", _json(), nullable=True),
        sa.Column("salt", sa.String(length=32), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", _time(), nullable=False),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.Column("audit_seq", sa.Integer(), nullable=False),
        sa.Column("redacted_seq", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_assessments")),
        sa.UniqueConstraint(
            "procedure_uuid",
            "time_point",
            name=op.f("uq_followup_assessments_procedure_uuid_time_point"),
        ),
    )
    op.create_index(
        "ix_followup_assessments_study_subject",
        "followup_assessments",
        ["study", "subject"],
    )
    op.create_table(
        "followup_events",
        *_content_columns(),
        sa.Column("content", _json(), nullable=True),
        sa.Column("salt", sa.String(length=32), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("recorded_at", _time(), nullable=False),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.Column("audit_seq", sa.Integer(), nullable=False),
        sa.Column("redacted_seq", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followup_events")),
    )
    op.create_index("ix_followup_events_study_subject", "followup_events", ["study", "subject"])
    op.create_table(
        "signatures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("event_version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("signer", sa.String(length=64), nullable=False),
        sa.Column("meaning", sa.Text(), nullable=False),
        sa.Column("signed_at", _time(), nullable=False),
        sa.Column("audit_seq", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["followup_events.id"],
            name=op.f("fk_signatures_event_id_followup_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signatures")),
    )
    op.create_table(
        "withdrawals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study", sa.String(length=64), nullable=False),
        sa.Column("subject_digest", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("withdrawn_at", _time(), nullable=False),
        sa.Column("withdrawn_by", sa.String(length=64), nullable=False),
        sa.Column("audit_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_withdrawals")),
        sa.UniqueConstraint(
            "study", "subject_digest", name=op.f("uq_withdrawals_study_subject_digest")
        ),
    )


def downgrade() -> None:
    raise NotImplementedError("the collector's record is never migrated down")
