"""Initial schema: procedures, cycles, samples, alarms, operator actions, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

The audit triggers make the trail append-only for anyone using SQL; the hash
chain (``audit.py``) is what shows tampering by someone who drops them.
Types are spelled out here (no model imports) so the revision stays frozen.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIT_TRIGGERS = (
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END",
)


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.String(length=27), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit")),
    )
    op.create_table(
        "procedures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("console", sa.String(length=64), nullable=False),
        sa.Column("opened_at", sa.String(length=27), nullable=False),
        sa.Column("closed_at", sa.String(length=27), nullable=True),
        sa.Column("patient_ref", sa.String(length=32), nullable=False),
        sa.Column("indication", sa.String(length=32), nullable=False),
        sa.Column("indication_other", sa.Text(), nullable=True),
        sa.Column("site", sa.String(length=128), nullable=False),
        sa.Column("side", sa.String(length=16), nullable=False),
        sa.Column("imaging", sa.String(length=16), nullable=False),
        sa.Column("anaesthesia", sa.String(length=16), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("study_id", sa.String(length=64), nullable=True),
        sa.Column("probe_model", sa.String(length=64), nullable=True),
        sa.Column("probe_lot", sa.String(length=64), nullable=True),
        sa.Column("console_model", sa.String(length=64), nullable=True),
        sa.Column("console_serial", sa.String(length=64), nullable=True),
        sa.Column("console_firmware", sa.String(length=64), nullable=True),
        sa.Column("software_version", sa.String(length=32), nullable=False),
        sa.Column("host_only_limits", sa.Boolean(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("adverse_events", sa.JSON(), nullable=True),
        sa.Column("closed_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "anaesthesia IN ('local', 'regional', 'general')",
            name=op.f("ck_procedures_anaesthesia"),
        ),
        sa.CheckConstraint(
            "imaging IN ('ultrasound', 'ct', 'mri')", name=op.f("ck_procedures_imaging")
        ),
        sa.CheckConstraint(
            "indication IN ('mortons_neuroma', 'stump_neuroma', "
            "'other_traumatic_neuroma', 'other')",
            name=op.f("ck_procedures_indication"),
        ),
        sa.CheckConstraint(
            "side IN ('left', 'right', 'bilateral', 'midline', 'na')",
            name=op.f("ck_procedures_side"),
        ),
        sa.CheckConstraint(
            "closed_at IS NULL OR closed_at >= opened_at",
            name=op.f("ck_procedures_closed_after_open"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_procedures")),
        sa.UniqueConstraint("uuid", name=op.f("uq_procedures_uuid")),
    )
    op.create_table(
        "alarms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("procedure_id", sa.Integer(), nullable=True),
        sa.Column("console", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.Column("probe", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("raised_at", sa.String(length=27), nullable=False),
        sa.Column("acked_at", sa.String(length=27), nullable=True),
        sa.Column("acked_by", sa.String(length=64), nullable=True),
        sa.Column("cleared_at", sa.String(length=27), nullable=True),
        sa.CheckConstraint(
            "priority IN ('high', 'medium', 'low', 'info')", name=op.f("ck_alarms_priority")
        ),
        sa.ForeignKeyConstraint(
            ["procedure_id"], ["procedures.id"], name=op.f("fk_alarms_procedure_id_procedures")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms")),
    )
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarms_procedure_id"), ["procedure_id"], unique=False)

    op.create_table(
        "cycles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("procedure_id", sa.Integer(), nullable=False),
        sa.Column("probe", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=8), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.String(length=64), nullable=True),
        sa.Column("planned_s", sa.Float(), nullable=True),
        sa.Column("target_tip_c", sa.Float(), nullable=True),
        sa.Column("started_at", sa.String(length=27), nullable=False),
        sa.Column("ended_at", sa.String(length=27), nullable=True),
        sa.Column("started_mono", sa.Float(), nullable=False),
        sa.Column("ended_mono", sa.Float(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("outcome_reason", sa.Text(), nullable=True),
        sa.Column("min_tip_c", sa.Float(), nullable=True),
        sa.Column("time_to_target_s", sa.Float(), nullable=True),
        sa.Column("time_below_m20_s", sa.Float(), nullable=True),
        sa.Column("time_below_m40_s", sa.Float(), nullable=True),
        sa.Column("thaw_to_0_s", sa.Float(), nullable=True),
        sa.Column("supply_start_kpa", sa.Float(), nullable=True),
        sa.Column("supply_end_kpa", sa.Float(), nullable=True),
        sa.Column("gas_used_est_l", sa.Float(), nullable=True),
        sa.Column("host_only_limits", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN "
            "('completed', 'stopped', 'aborted', 'faulted', 'interrupted')",
            name=op.f("ck_cycles_outcome"),
        ),
        sa.CheckConstraint("phase IN ('freeze', 'thaw')", name=op.f("ck_cycles_phase")),
        sa.CheckConstraint("probe >= 1", name=op.f("ck_cycles_probe_positive")),
        sa.ForeignKeyConstraint(
            ["procedure_id"], ["procedures.id"], name=op.f("fk_cycles_procedure_id_procedures")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cycles")),
    )
    with op.batch_alter_table("cycles", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cycles_procedure_id_probe"), ["procedure_id", "probe"], unique=False
        )

    op.create_table(
        "operator_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("procedure_id", sa.Integer(), nullable=True),
        sa.Column("console", sa.String(length=64), nullable=True),
        sa.Column("at", sa.String(length=27), nullable=False),
        sa.Column("who", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["procedure_id"],
            ["procedures.id"],
            name=op.f("fk_operator_actions_procedure_id_procedures"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_actions")),
    )
    with op.batch_alter_table("operator_actions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_operator_actions_procedure_id"), ["procedure_id"], unique=False
        )

    op.create_table(
        "samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("procedure_id", sa.Integer(), nullable=True),
        sa.Column("console", sa.String(length=64), nullable=False),
        sa.Column("t_utc", sa.Float(), nullable=False),
        sa.Column("t_mono", sa.Float(), nullable=False),
        sa.Column("probe", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("validity", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["procedure_id"], ["procedures.id"], name=op.f("fk_samples_procedure_id_procedures")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_samples")),
    )
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_samples_console_t_utc"), ["console", "t_utc"], unique=False
        )

    for statement in AUDIT_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_no_update")
    op.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for table in ("samples", "operator_actions", "cycles", "alarms", "procedures", "audit"):
        op.drop_table(table)
