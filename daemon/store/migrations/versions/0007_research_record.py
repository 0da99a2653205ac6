"""The procedure-day record of a study: study profile, selection, details, baseline pain, AEs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

- ``procedure_study``: one row per procedure opened under a study profile: the
  profile's id, version, content hash and canonical JSON, consent, patient
  selection and procedure details (JSON of ``cryod.research.record``).
- ``pain_assessments``: the baseline pain score, taken before the first freeze.
- ``adverse_events``: one row per adverse event, every field of issue 19.
- Each new table is a research table under the chain (``chained.RESEARCH``):
  its delete guard is created here.
- Old records: each code of a procedure's JSON list ``procedures.adverse_events``
  becomes an ``adverse_events`` row with subcategory ``unspecified_migrated``
  ("unspecified (migrated)"), no grade, relatedness, dates or outcome, and the
  reason recorded (``cryod.research.legacy``); each row gets its chain entry
  (``op = "insert"``, ``migrated_from``) and one ``legacy_adverse_events`` entry
  gives the counts. The JSON list itself is left as it was (it is under the chain).

The tables are spelled out here, as they are at this revision, so the
revision stays frozen when the models change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from cryod.integrity import Kind, TableSpec

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

N, R, S, T, B, J = Kind.INT, Kind.REAL, Kind.TEXT, Kind.TIME, Kind.BOOL, Kind.JSON

ADVERSE_EVENTS_0007 = TableSpec(
    "adverse_events",
    ("id",),
    (
        ("id", N), ("procedure_id", N), ("category", S), ("subcategory", S),
        ("verbatim_term", S), ("onset", S), ("resolution", S), ("ctcae_grade", N),
        ("serious", B), ("seriousness_criteria", J), ("relatedness_device", S),
        ("relatedness_procedure", S), ("outcome", S), ("action_taken", S),
        ("further_intervention", S), ("further_intervention_date", S),
        ("yellow_card_ref", S), ("migration_reason", S), ("recorded_at", T),
        ("recorded_by", S), ("updated_at", T), ("updated_by", S),
    ),
)  # fmt: skip
PROCEDURE_STUDY_0007 = TableSpec(
    "procedure_study",
    ("procedure_id",),
    (
        ("procedure_id", N), ("profile_id", S), ("profile_version", S), ("profile_hash", S),
        ("profile", S), ("consent_confirmed", B), ("consent_form_version", S),
        ("selection", J), ("details", J), ("recorded_at", T),
    ),
)  # fmt: skip
PAIN_ASSESSMENTS_0007 = TableSpec(
    "pain_assessments",
    ("id",),
    (
        ("id", N), ("procedure_id", N), ("time_point", S), ("scale", S), ("score", R),
        ("recall_period", S), ("assessed_at", T), ("recorded_at", T), ("recorded_by", S),
    ),
)  # fmt: skip
#: the research tables this revision adds (each under the chain)
RESEARCH_0007 = (PROCEDURE_STUDY_0007, PAIN_ASSESSMENTS_0007, ADVERSE_EVENTS_0007)
NEW_TABLES = tuple((spec.name, spec.key) for spec in RESEARCH_0007)

CATEGORIES = (
    "pain",
    "worsening_of_symptoms",
    "infection",
    "damage_to_adjacent_structures",
    "further_intervention",
    "other",
)
SUBCATEGORIES = (
    "procedural_pain", "post_procedural_pain", "increased_neuroma_pain",
    "new_neuropathic_pain", "sensory_disturbance", "reduced_mobility",
    "superficial_infection", "deep_infection", "nerve_damage", "skin_injury", "cold_injury",
    "vessel_damage", "other_structure_damage", "repeat_cryoablation",
    "surgical_intervention", "injection", "other_intervention", "other",
    "unspecified_migrated",
)  # fmt: skip
MIGRATED_BY = "migration 0007"
UNKNOWN_CODE_REASON = (
    "migrated from an unknown old adverse-event code {code!r} (not one of the six "
    "codes of cryod.export/1): kept as 'other' so that nothing recorded is lost"
)


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _guard(table: str, key: tuple[str, ...]) -> str:
    same = " AND ".join(f"json_extract(a.payload, '$.key.{k}') = OLD.{k}" for k in key)
    return (
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "  # noqa: S608
        "WHEN NOT EXISTS (SELECT 1 FROM audit a WHERE a.seq = (SELECT max(seq) FROM audit) "
        "AND a.kind = 'row' AND json_extract(a.payload, '$.op') = 'redact' "
        f"AND json_extract(a.payload, '$.table') = '{table}' AND {same}) "
        "BEGIN SELECT RAISE(ABORT, 'research rows are never deleted (redact them)'); END"
    )


def _create_tables() -> None:
    op.create_table(
        "procedure_study",
        sa.Column("procedure_id", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.String(length=64), nullable=False),
        sa.Column("profile_version", sa.String(length=32), nullable=False),
        sa.Column("profile_hash", sa.String(length=71), nullable=False),
        sa.Column("profile", sa.Text(), nullable=False),
        sa.Column("consent_confirmed", sa.Boolean(), nullable=True),
        sa.Column("consent_form_version", sa.String(length=32), nullable=True),
        sa.Column("selection", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("recorded_at", sa.String(length=27), nullable=False),
        sa.ForeignKeyConstraint(
            ["procedure_id"],
            ["procedures.id"],
            name=op.f("fk_procedure_study_procedure_id_procedures"),
        ),
        sa.PrimaryKeyConstraint("procedure_id", name=op.f("pk_procedure_study")),
    )
    op.create_table(
        "pain_assessments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("procedure_id", sa.Integer(), nullable=False),
        sa.Column("time_point", sa.String(length=32), nullable=False),
        sa.Column("scale", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("recall_period", sa.String(length=16), nullable=False),
        sa.Column("assessed_at", sa.String(length=27), nullable=False),
        sa.Column("recorded_at", sa.String(length=27), nullable=False),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            _in("scale", ("nrs_0_10", "vas_0_100_mm")), name=op.f("ck_pain_assessments_scale")
        ),
        sa.CheckConstraint(
            "score >= 0 AND score <= 100", name=op.f("ck_pain_assessments_score_range")
        ),
        sa.ForeignKeyConstraint(
            ["procedure_id"],
            ["procedures.id"],
            name=op.f("fk_pain_assessments_procedure_id_procedures"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pain_assessments")),
    )
    op.create_index(op.f("ix_pain_assessments_procedure_id"), "pain_assessments", ["procedure_id"])
    op.create_table(
        "adverse_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("procedure_id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("subcategory", sa.String(length=32), nullable=False),
        sa.Column("verbatim_term", sa.Text(), nullable=False),
        sa.Column("onset", sa.String(length=40), nullable=True),
        sa.Column("resolution", sa.String(length=40), nullable=True),
        sa.Column("ctcae_grade", sa.Integer(), nullable=True),
        sa.Column("serious", sa.Boolean(), nullable=True),
        sa.Column("seriousness_criteria", sa.JSON(), nullable=False),
        sa.Column("relatedness_device", sa.String(length=16), nullable=True),
        sa.Column("relatedness_procedure", sa.String(length=16), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("action_taken", sa.String(length=32), nullable=True),
        sa.Column("further_intervention", sa.String(length=32), nullable=True),
        sa.Column("further_intervention_date", sa.String(length=40), nullable=True),
        sa.Column("yellow_card_ref", sa.String(length=40), nullable=True),
        sa.Column("migration_reason", sa.Text(), nullable=True),
        sa.Column("recorded_at", sa.String(length=27), nullable=False),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.String(length=27), nullable=True),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint(_in("category", CATEGORIES), name=op.f("ck_adverse_events_category")),
        sa.CheckConstraint(
            _in("subcategory", SUBCATEGORIES), name=op.f("ck_adverse_events_subcategory")
        ),
        sa.CheckConstraint(
            "ctcae_grade IS NULL OR (ctcae_grade >= 1 AND ctcae_grade <= 5)",
            name=op.f("ck_adverse_events_grade"),
        ),
        sa.ForeignKeyConstraint(
            ["procedure_id"],
            ["procedures.id"],
            name=op.f("fk_adverse_events_procedure_id_procedures"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adverse_events")),
    )
    op.create_index(op.f("ix_adverse_events_procedure_id"), "adverse_events", ["procedure_id"])


def _legacy_rows(entries: Any) -> list[dict[str, Any]]:
    """The rows for one procedure's old JSON list (``cryod.research.legacy``); a code
    the old schema did not allow becomes 'other' with its own reason."""
    from cryod.research.legacy import migrate_legacy_adverse_events

    rows = []
    for entry in entries if isinstance(entries, list) else []:
        entry = entry if isinstance(entry, dict) else {"code": entry}
        try:
            (ae,) = migrate_legacy_adverse_events([entry])
            row = ae.model_dump(mode="json", exclude={"ae_id"})
        except ValueError:
            text = entry.get("text")
            row = {
                "category": "other",
                "subcategory": "unspecified_migrated",
                "verbatim_term": str(text)[:500] if text else "Other",
                "seriousness_criteria": [],
                "migration_reason": UNKNOWN_CODE_REASON.format(code=entry.get("code")),
            }
        rows.append(row)
    return rows


def _migrate_legacy(conn: sa.Connection, node: str | None) -> None:
    from cryod.daemon.store import chain

    found = conn.exec_driver_sql(
        "SELECT id, adverse_events, coalesce(closed_at, opened_at) FROM procedures "
        "WHERE adverse_events IS NOT NULL ORDER BY id"
    ).fetchall()
    columns = ADVERSE_EVENTS_0007.column_names[1:]
    placeholders = ", ".join("?" for _ in columns)
    insert = f"INSERT INTO adverse_events ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608
    counts: dict[str, int] = {}
    for pid, text, at in found:
        try:
            entries = json.loads(text) if isinstance(text, str) else text
        except ValueError:
            entries = None  # not JSON: verify reports the procedure row; nothing to migrate
        for row in _legacy_rows(entries):
            values = dict.fromkeys(columns)
            values.update(row, procedure_id=pid, recorded_at=at, recorded_by=MIGRATED_BY)
            values["seriousness_criteria"] = json.dumps(values["seriousness_criteria"] or [])
            result = conn.exec_driver_sql(insert, tuple(values[c] for c in columns))
            chain.cover_row(
                conn,
                ADVERSE_EVENTS_0007,
                {"id": result.lastrowid},
                "insert",
                node=node,
                extra={"revision": revision, "migrated_from": f"procedures {pid} adverse_events"},
            )
            counts[str(pid)] = counts.get(str(pid), 0) + 1
    if counts:
        chain.append(
            conn,
            "legacy_adverse_events",
            {
                "revision": revision,
                "procedures": counts,
                "rows": sum(counts.values()),
                "note": "each old yes/no code became an adverse-event row with subcategory "
                "'unspecified_migrated'; grade, relatedness, dates and outcome were not "
                "recorded by the old schema",
            },
            node=node,
        )


def upgrade() -> None:
    _create_tables()
    for table, key in NEW_TABLES:
        op.execute(_guard(table, key))
    node = context.config.attributes.get("node")
    _migrate_legacy(op.get_bind(), node if isinstance(node, str) else None)


def downgrade() -> None:
    """Back to 0006 for a cryod that predates this revision: the tables go (with their
    chain entries left behind, which 0006's verify cannot check): restore the backup
    taken before the upgrade instead if the record must verify (docs/install.md)."""
    for table, _key in reversed(NEW_TABLES):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        op.drop_table(table)
