"""Every table of study data is under the chain, and "under the chain" means the
same thing in the models and in the migration that baselined them."""

from __future__ import annotations

from cryod.daemon.store.chained import NOT_ROW_COVERED, RESEARCH
from cryod.daemon.store.models import metadata
from tests.store.legacy import migration_module


def test_every_table_holding_study_data_is_covered() -> None:
    for name, table in metadata.tables.items():
        if "procedure_id" in table.columns or name == "procedures":
            assert name in RESEARCH.by_name or name in NOT_ROW_COVERED, (
                f"{name} holds study data: register its model in chained.RESEARCH "
                "(or say in NOT_ROW_COVERED why its rows are covered otherwise)"
            )


def test_the_migrations_cover_the_tables_as_the_models_describe_them() -> None:
    """0004 baselined the tables as they were; each later revision that changes a
    research table spells out the table before and after it (a revision that adds
    one updates this)."""
    m0004, m0005 = migration_module("0004_integrity"), migration_module("0005_figures_note")
    frozen = {s.name: s for s in m0004.RESEARCH_0004}
    assert frozen["cycles"] == m0005.CYCLES_0004
    frozen["cycles"] = m0005.CYCLES_0005
    frozen.update({s.name: s for s in migration_module("0007_research_record").RESEARCH_0007})
    assert frozen == RESEARCH.by_name
