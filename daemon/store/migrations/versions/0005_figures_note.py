"""Cycles say why a figure is missing: ``cycles.figures_note``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

A time below -20/-40 °C that could not be computed (no usable tip reading,
one only, or every interval between readings longer than the gap rule) is
recorded as NULL, never 0; this nullable column says why, and says when the
figures are a lower bound (some intervals not integrated). NULL: the figures
are whole. Rows closed before this revision have NULL.

The new column changes the canonical encoding of every existing cycle (the
row map lists every column), so the rows are covered again
(``schema_change.cover_added_columns``, docs/integrity.md "Adding a column to
a research table"): each cycle that matches its latest chain entry with the
columns of 0004 gets a ``row`` entry with ``op = "schema"``; one that does not
is left as it was, for ``verify`` to report, and listed in the
``schema_change`` entry. The cycles table is spelled out as it is at this
revision, so the revision stays frozen when the models change.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from cryod.integrity import Kind, TableSpec

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

N, R, S, T, B = Kind.INT, Kind.REAL, Kind.TEXT, Kind.TIME, Kind.BOOL

#: cycles as revision 0004 put them under the chain
CYCLES_0004 = TableSpec(
    "cycles",
    ("id",),
    (
        ("id", N), ("procedure_id", N), ("probe", N), ("phase", S), ("step_index", N),
        ("protocol", S), ("planned_s", R), ("target_tip_c", R), ("started_at", T),
        ("ended_at", T), ("started_mono", R), ("ended_mono", R), ("duration_s", R),
        ("outcome", S), ("outcome_reason", S), ("min_tip_c", R),
        ("time_to_target_s", R), ("time_below_m20_s", R), ("time_below_m40_s", R),
        ("thaw_to_0_s", R), ("supply_start_kpa", R), ("supply_end_kpa", R),
        ("gas_used_est_l", R), ("host_only_limits", B),
    ),
)  # fmt: skip
#: cycles at this revision
CYCLES_0005 = TableSpec("cycles", ("id",), (*CYCLES_0004.columns, ("figures_note", S)))


def upgrade() -> None:
    from cryod.daemon.store.schema_change import cover_added_columns

    # a plain ALTER TABLE ADD COLUMN: a batch (table rebuild) would drop the
    # cycles_no_delete guard of 0004
    op.add_column("cycles", sa.Column("figures_note", sa.Text(), nullable=True))
    node = context.config.attributes.get("node")
    cover_added_columns(
        op.get_bind(),
        CYCLES_0004,
        CYCLES_0005,
        revision=revision,
        node=node if isinstance(node, str) else None,
    )


def downgrade() -> None:
    """Back to 0004 for a cryod that predates this revision (SQLite's ALTER TABLE DROP
    COLUMN, so the guard stays). Cycles written or re-covered since are covered with
    this revision's columns and do not verify under 0004: restore the backup taken
    before the upgrade instead if the record must verify (docs/install.md)."""
    op.drop_column("cycles", "figures_note")
