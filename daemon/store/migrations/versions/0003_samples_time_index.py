"""Samples indexed by (procedure, time) instead of (procedure, probe, channel, time).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Samples arrive in time order, 66 rows per poll across 66 (probe, channel)
pairs. Under the 0002 index every commit touched one index leaf page per
pair; under (procedure_id, t_utc) inserts append at the end of the index.
The queries that read samples (report, recovery) still find them by
procedure and time. ``python -m tests.bench.sample_index`` measures both
sides (docs/data-model.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_samples_procedure_id_probe_channel_t_utc"))
        batch_op.create_index(
            batch_op.f("ix_samples_procedure_id_t_utc"), ["procedure_id", "t_utc"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_samples_procedure_id_t_utc"))
        batch_op.create_index(
            batch_op.f("ix_samples_procedure_id_probe_channel_t_utc"),
            ["procedure_id", "probe", "channel", "t_utc"],
            unique=False,
        )
