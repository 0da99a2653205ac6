"""Every table of study data is under the chain, and "under the chain" means the
same thing in the models and in the migration that baselined them."""

from __future__ import annotations

import importlib.util
from typing import Any

from cryod.daemon.store import migrate
from cryod.daemon.store.chained import NOT_ROW_COVERED, RESEARCH
from cryod.daemon.store.models import metadata


def test_every_table_holding_study_data_is_covered() -> None:
    for name, table in metadata.tables.items():
        if "procedure_id" in table.columns or name == "procedures":
            assert name in RESEARCH.by_name or name in NOT_ROW_COVERED, (
                f"{name} holds study data: register its model in chained.RESEARCH "
                "(or say in NOT_ROW_COVERED why its rows are covered otherwise)"
            )


def _migration(name: str) -> Any:
    path = migrate.MIGRATIONS_DIR / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"m_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migrations_cover_the_tables_as_the_models_describe_them() -> None:
    """0004 baselined the tables as they were; each later revision that changes a
    research table spells out the table before and after it (a revision that adds
    one updates this)."""
    m0004, m0005 = _migration("0004_integrity"), _migration("0005_figures_note")
    frozen = {s.name: s for s in m0004.RESEARCH_0004}
    assert frozen["cycles"] == m0005.CYCLES_0004
    frozen["cycles"] = m0005.CYCLES_0005
    frozen.update({s.name: s for s in _migration("0007_research_record").RESEARCH_0007})
    assert frozen == RESEARCH.by_name
