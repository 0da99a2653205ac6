"""Compact samples: one row per poll, one per probe in it, state channels as changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

Before this revision every polled value was a ``samples`` row: 66 rows per
20 Hz poll of an 8-probe console, about 6 kB per poll with the indexes. From
here the writer stores a poll as one ``sample_polls`` row (clocks, procedure,
the console's analog channels), one ``sample_probes`` row per probe (tip and
return pressure) and ``sample_states`` rows for the state channels that
changed (docs/data-model.md "Samples"); batches are chained as
``cryod.samples/2``.

This revision only creates the tables and their guards; it moves no data, so
it stays inside the daemon's start-up timeout. Rows already in ``samples``
are converted by ``cryod migrate`` (daemon/store/convert.py: chunked,
resumable, one chain entry per chunk); the daemon refuses to start while any
is left. The guards:

- the new tables are never updated;
- a poll is deleted only right after a ``samples_redacted`` entry for its
  procedure, or a ``samples_retention`` entry when it belongs to no
  procedure and is older than the entry's ``before_utc``;
- the old ``samples`` rows may also go right after a ``samples_converted``
  entry whose id range holds them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RAISE = "BEGIN SELECT RAISE(ABORT, '{}'); END"
LATEST = "a.seq = (SELECT max(seq) FROM audit)"
CODE = "{0} IS NULL OR {0} IN (0, 1, 2, 3)"

GUARDS = (
    "CREATE TRIGGER sample_polls_no_update BEFORE UPDATE ON sample_polls "
    + RAISE.format("samples are never edited"),
    "CREATE TRIGGER sample_probes_no_update BEFORE UPDATE ON sample_probes "
    + RAISE.format("samples are never edited"),
    "CREATE TRIGGER sample_states_no_update BEFORE UPDATE ON sample_states "
    + RAISE.format("samples are never edited"),
    "CREATE TRIGGER sample_polls_no_delete BEFORE DELETE ON sample_polls "  # noqa: S608 - our SQL
    f"WHEN NOT EXISTS (SELECT 1 FROM audit a WHERE {LATEST} AND ("
    "(a.kind = 'samples_redacted' "
    "AND json_extract(a.payload, '$.procedure_id') = OLD.procedure_id) "
    "OR (a.kind = 'samples_retention' AND OLD.procedure_id IS NULL "
    "AND OLD.t_utc < json_extract(a.payload, '$.before_utc')))) "
    + RAISE.format("samples are never deleted (redact their procedure)"),
    "CREATE TRIGGER sample_probes_no_delete BEFORE DELETE ON sample_probes "  # noqa: S608 - our SQL
    f"WHEN NOT EXISTS (SELECT 1 FROM audit a WHERE {LATEST} "
    "AND a.kind IN ('samples_redacted', 'samples_retention')) "
    + RAISE.format("samples are never deleted (redact their procedure)"),
    "CREATE TRIGGER sample_states_no_delete BEFORE DELETE ON sample_states "  # noqa: S608 - our SQL
    f"WHEN NOT EXISTS (SELECT 1 FROM audit a WHERE {LATEST} "
    "AND a.kind IN ('samples_redacted', 'samples_retention')) "
    + RAISE.format("samples are never deleted (redact their procedure)"),
)
GUARD_NAMES = tuple(g.split()[2] for g in GUARDS)

# the old table's delete guard, as 0004 made it and as this revision widens it
SAMPLES_NO_DELETE_0004 = (
    "CREATE TRIGGER samples_no_delete BEFORE DELETE ON samples "  # noqa: S608 - our SQL
    f"WHEN NOT EXISTS (SELECT 1 FROM audit a WHERE {LATEST} "
    "AND a.kind = 'samples_redacted' "
    "AND json_extract(a.payload, '$.procedure_id') = OLD.procedure_id) "
    + RAISE.format("samples are never deleted (redact their procedure)")
)
SAMPLES_NO_DELETE_0006 = (
    "CREATE TRIGGER samples_no_delete BEFORE DELETE ON samples "  # noqa: S608 - our SQL
    f"WHEN NOT EXISTS (SELECT 1 FROM audit a WHERE {LATEST} AND ("
    "(a.kind = 'samples_redacted' "
    "AND json_extract(a.payload, '$.procedure_id') = OLD.procedure_id) "
    "OR (a.kind = 'samples_converted' "
    "AND OLD.id BETWEEN json_extract(a.payload, '$.from_first') "
    "AND json_extract(a.payload, '$.from_last')))) "
    + RAISE.format("samples are never deleted (redact their procedure)")
)


def upgrade() -> None:
    op.create_table(
        "sample_polls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("procedure_id", sa.Integer(), nullable=True),
        sa.Column("console", sa.String(length=64), nullable=False),
        sa.Column("t_utc", sa.Float(), nullable=False),
        sa.Column("t_mono", sa.Float(), nullable=False),
        sa.Column("full_state", sa.Integer(), nullable=False),
        sa.Column("supply_kpa", sa.Float(), nullable=True),
        sa.Column("supply_v", sa.Integer(), nullable=True),
        sa.Column("cylinder_kpa", sa.Float(), nullable=True),
        sa.Column("cylinder_v", sa.Integer(), nullable=True),
        sa.Column("skin_c", sa.Float(), nullable=True),
        sa.Column("skin_v", sa.Integer(), nullable=True),
        sa.Column("console_time_s", sa.Float(), nullable=True),
        sa.Column("console_time_v", sa.Integer(), nullable=True),
        sa.CheckConstraint(CODE.format("supply_v"), name=op.f("ck_sample_polls_supply_v")),
        sa.CheckConstraint(CODE.format("cylinder_v"), name=op.f("ck_sample_polls_cylinder_v")),
        sa.CheckConstraint(CODE.format("skin_v"), name=op.f("ck_sample_polls_skin_v")),
        sa.CheckConstraint(
            CODE.format("console_time_v"), name=op.f("ck_sample_polls_console_time_v")
        ),
        sa.CheckConstraint("full_state IN (0, 1)", name=op.f("ck_sample_polls_full_state")),
        sa.ForeignKeyConstraint(
            ["procedure_id"],
            ["procedures.id"],
            name=op.f("fk_sample_polls_procedure_id_procedures"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sample_polls")),
    )
    op.create_index(
        op.f("ix_sample_polls_console_t_utc"), "sample_polls", ["console", "t_utc"], unique=False
    )
    op.create_index(
        op.f("ix_sample_polls_procedure_id_t_utc"),
        "sample_polls",
        ["procedure_id", "t_utc"],
        unique=False,
    )
    op.create_table(
        "sample_probes",
        sa.Column("poll_id", sa.Integer(), nullable=False),
        sa.Column("probe", sa.Integer(), nullable=False),
        sa.Column("tip_c", sa.Float(), nullable=True),
        sa.Column("tip_v", sa.Integer(), nullable=True),
        sa.Column("return_kpa", sa.Float(), nullable=True),
        sa.Column("return_v", sa.Integer(), nullable=True),
        sa.CheckConstraint("probe >= 1", name=op.f("ck_sample_probes_probe_positive")),
        sa.CheckConstraint(CODE.format("tip_v"), name=op.f("ck_sample_probes_tip_v")),
        sa.CheckConstraint(CODE.format("return_v"), name=op.f("ck_sample_probes_return_v")),
        sa.ForeignKeyConstraint(
            ["poll_id"], ["sample_polls.id"], name=op.f("fk_sample_probes_poll_id_sample_polls")
        ),
        sa.PrimaryKeyConstraint("poll_id", "probe", name=op.f("pk_sample_probes")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "sample_states",
        sa.Column("poll_id", sa.Integer(), nullable=False),
        sa.Column("probe", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("validity", sa.Integer(), nullable=True),
        sa.CheckConstraint(CODE.format("validity"), name=op.f("ck_sample_states_validity")),
        sa.ForeignKeyConstraint(
            ["poll_id"], ["sample_polls.id"], name=op.f("fk_sample_states_poll_id_sample_polls")
        ),
        sa.PrimaryKeyConstraint("poll_id", "probe", "channel", name=op.f("pk_sample_states")),
        sqlite_with_rowid=False,
    )
    for statement in GUARDS:
        op.execute(statement)
    op.execute("DROP TRIGGER IF EXISTS samples_no_delete")
    op.execute(SAMPLES_NO_DELETE_0006)


def downgrade() -> None:
    """Back to 0005 (only for a database with no compact samples yet: the old cryod
    would not see them)."""
    op.execute("DROP TRIGGER IF EXISTS samples_no_delete")
    op.execute(SAMPLES_NO_DELETE_0004)
    for name in GUARD_NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("sample_states")
    op.drop_table("sample_probes")
    op.drop_index(op.f("ix_sample_polls_procedure_id_t_utc"), table_name="sample_polls")
    op.drop_index(op.f("ix_sample_polls_console_t_utc"), table_name="sample_polls")
    op.drop_table("sample_polls")
