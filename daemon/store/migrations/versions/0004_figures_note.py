"""Cycles say why a figure is missing: ``cycles.figures_note``.

Revision ID: 0004_figures_note
Revises: 0003
Create Date: 2026-12-06

A time below -20/-40 °C that could not be computed (no usable tip reading,
one only, or every interval between readings longer than the gap rule) is
recorded as NULL, never 0; this nullable column says why, and says when the
figures are a lower bound (some intervals not integrated). NULL: the figures
are whole. Rows closed before this revision have NULL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_figures_note"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cycles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("figures_note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cycles", schema=None) as batch_op:
        batch_op.drop_column("figures_note")
