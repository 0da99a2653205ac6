"""Every row under the chain: entry format v2 with the node, row salts, guards, baseline.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

- ``audit`` gains ``v`` (entry format: 1 before this revision, 2 after) and
  ``node`` (the chain's name, from ``[node] id``; NULL on v1 entries). v1
  entries keep verifying with the hash they were written with.
- ``row_salts``: one random salt per research row, beside the data.
- ``ix_audit_rows``: the ``row`` entries, for exports (partial: the sample
  batches' entries, four a second, do not touch it).
- Guards (triggers): research rows and samples are never deleted except by a
  redaction (whose chain entry must come first), samples and salts are never
  updated. A forger with the file can drop them; the chain shows it.
- Baseline: every research row and every sample already in the database is
  recorded as it stands now, labelled ``baseline`` (``verify`` reports them
  as "baselined on <date>", not as original), then a ``baseline`` entry with
  the counts.

The table layouts are spelled out here, as they are at this revision, so the
revision stays frozen when the models change.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from cryod.integrity import Kind, TableSpec

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

N, R, S, T, B, J = Kind.INT, Kind.REAL, Kind.TEXT, Kind.TIME, Kind.BOOL, Kind.JSON

RESEARCH_0004 = (
    TableSpec(
        "procedures",
        ("id",),
        (
            ("id", N), ("uuid", S), ("console", S), ("opened_at", T), ("closed_at", T),
            ("patient_ref", S), ("indication", S), ("indication_other", S), ("site", S),
            ("side", S), ("imaging", S), ("anaesthesia", S), ("operator", S),
            ("study_id", S), ("probe_model", S), ("probe_lot", S), ("console_model", S),
            ("console_serial", S), ("console_firmware", S), ("software_version", S),
            ("host_only_limits", B), ("notes", S), ("adverse_events", J), ("closed_by", S),
        ),
    ),
    TableSpec(
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
    ),
    TableSpec(
        "alarms",
        ("id",),
        (
            ("id", N), ("procedure_id", N), ("console", S), ("code", S), ("priority", S),
            ("probe", N), ("message", S), ("raised_at", T), ("acked_at", T),
            ("acked_by", S), ("cleared_at", T),
        ),
    ),
    TableSpec(
        "operator_actions",
        ("id",),
        (
            ("id", N), ("procedure_id", N), ("console", S), ("at", T), ("who", S),
            ("action", S), ("args", J), ("accepted", B), ("reason", S),
        ),
    ),
)  # fmt: skip
BASELINE_BATCH_ROWS = 5000
RAISE = "BEGIN SELECT RAISE(ABORT, '{}'); END"
LATEST = "a.seq = (SELECT max(seq) FROM audit)"


def _guards() -> list[str]:
    out = []
    for spec in RESEARCH_0004:
        same = " AND ".join(f"json_extract(a.payload, '$.key.{k}') = OLD.{k}" for k in spec.key)
        out.append(
            f"CREATE TRIGGER {spec.name}_no_delete BEFORE DELETE ON {spec.name} "  # noqa: S608
            f"WHEN NOT EXISTS (SELECT 1 FROM audit a WHERE {LATEST} AND a.kind = 'row' "
            f"AND json_extract(a.payload, '$.op') = 'redact' "
            f"AND json_extract(a.payload, '$.table') = '{spec.name}' AND {same}) "
            + RAISE.format("research rows are never deleted (redact them)")
        )
    out += [
        "CREATE TRIGGER samples_no_update BEFORE UPDATE ON samples "
        + RAISE.format("samples are never edited"),
        "CREATE TRIGGER samples_no_delete BEFORE DELETE ON samples "  # noqa: S608
        f"WHEN NOT EXISTS (SELECT 1 FROM audit a WHERE {LATEST} "
        "AND a.kind = 'samples_redacted' "
        "AND json_extract(a.payload, '$.procedure_id') = OLD.procedure_id) "
        + RAISE.format("samples are never deleted (redact their procedure)"),
        "CREATE TRIGGER row_salts_no_update BEFORE UPDATE ON row_salts "
        + RAISE.format("row salts are never changed"),
        "CREATE TRIGGER row_salts_no_delete BEFORE DELETE ON row_salts "  # noqa: S608
        f"WHEN NOT EXISTS (SELECT 1 FROM audit a WHERE {LATEST} AND a.kind = 'row' "
        "AND json_extract(a.payload, '$.op') = 'redact' "
        "AND json_extract(a.payload, '$.table') = OLD.tbl "
        "AND json_extract(a.payload, '$.key') = OLD.row_key) "
        + RAISE.format("row salts are erased only by a redaction"),
    ]
    return out


GUARD_NAMES = (
    *(f"{s.name}_no_delete" for s in RESEARCH_0004),
    "samples_no_update",
    "samples_no_delete",
    "row_salts_no_update",
    "row_salts_no_delete",
)


def _baseline(conn: sa.Connection, node: str | None) -> None:
    from cryod.daemon.store import chain

    counts: dict[str, int] = {}
    for spec in RESEARCH_0004:
        query = f"SELECT id FROM {spec.name} ORDER BY id"  # noqa: S608 - a frozen name
        keys = [r[0] for r in conn.exec_driver_sql(query)]
        for key in keys:
            chain.cover_row(conn, spec, {"id": key}, "baseline", node=node)
        counts[spec.name] = len(keys)
    cols = "id, procedure_id, console, t_utc, t_mono, probe, channel, value, validity"
    samples, last_id = 0, 0
    while True:
        rows = conn.exec_driver_sql(
            f"SELECT {cols} FROM samples WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608
            (last_id, BASELINE_BATCH_ROWS),
        ).fetchall()
        if not rows:
            break
        chain.cover_batch(
            conn, rows[0][0], rows[-1][0], [tuple(r) for r in rows], len(rows), op="baseline",
            node=node,
        )  # fmt: skip
        samples += len(rows)
        last_id = rows[-1][0]
    chain.append(
        conn,
        "baseline",
        {
            "revision": revision,
            "tables": counts,
            "samples": samples,
            "note": "rows as they stood at this migration: their content, not their origin",
        },
        node=node,
    )


def upgrade() -> None:
    op.add_column("audit", sa.Column("v", sa.Integer(), server_default="1", nullable=False))
    op.add_column("audit", sa.Column("node", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_audit_rows", "audit", ["seq"], unique=False, sqlite_where=sa.text("kind = 'row'")
    )
    op.create_table(
        "row_salts",
        sa.Column("tbl", sa.String(length=64), nullable=False),
        sa.Column("row_key", sa.Text(), nullable=False),
        sa.Column("salt", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("tbl", "row_key", name=op.f("pk_row_salts")),
    )
    for statement in _guards():
        op.execute(statement)
    node = context.config.attributes.get("node")
    _baseline(op.get_bind(), node if isinstance(node, str) else None)


def downgrade() -> None:
    """Back to 0003 for a cryod that predates this revision. Entries written since are
    v2 and do not verify under it: restore the backup taken before the upgrade
    instead if the record must verify (docs/install.md)."""
    for name in GUARD_NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("row_salts")
    op.drop_index("ix_audit_rows", table_name="audit")
    op.drop_column("audit", "node")
    op.drop_column("audit", "v")
