"""received_entries remember why a room sent an entry without its content.

Revision ID: h0003
Revises: h0002

The record channel sends some entries without the row or sample block they
cover (``withheld``: superseded by a later entry, redacted, or samples outside
a procedure, which stay in the room). The collector stored the entry but not
the reason, so verification could not tell a withheld block from a missing
one. Two nullable columns; existing rows stay NULL (nothing withheld known).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "h0003"
down_revision: str | None = "h0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("received_entries") as batch:
        batch.add_column(sa.Column("withheld_reason", sa.String(16), nullable=True))
        batch.add_column(sa.Column("withheld_by_seq", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("received_entries") as batch:
        batch.drop_column("withheld_by_seq")
        batch.drop_column("withheld_reason")
