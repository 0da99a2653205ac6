"""Outbox for MQTT alarm and cycle events; index for per-probe sample queries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Undelivered alarm and cycle events are kept here so the MQTT publisher can
deliver them in order after a broker outage (issue 6).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.String(length=27), nullable=False),
        sa.Column("delivered_at", sa.String(length=27), nullable=True),
        sa.CheckConstraint("kind IN ('alarm', 'cycle')", name=op.f("ck_outbox_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_delivered_at_id"), ["delivered_at", "id"], unique=False
        )

    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_samples_procedure_id_probe_channel_t_utc"),
            ["procedure_id", "probe", "channel", "t_utc"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_samples_procedure_id_probe_channel_t_utc"))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_delivered_at_id"))
    op.drop_table("outbox")
