"""Old records: the six yes/no adverse-event codes of ``cryod.export/1`` as AE rows.

Before issue 19 a procedure's adverse events were a JSON list of
``{"code": ..., "text": ...}`` entered at close, with the codes ``pain``,
``worsening_of_symptoms``, ``infection``, ``damage_to_adjacent_structures``,
``further_intervention_needed`` and ``other`` (``daemon/store/models.py``,
``docs/export-schema.md``). Each becomes one adverse-event row in the
category of the same name, subcategory ``unspecified_migrated`` (shown as
"unspecified (migrated)"), with no grade, relatedness, onset or outcome
(the old record did not say) and the reason for the migration recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .record import AdverseEventRecord
from .vocab import AeCategory, AeSubcategory

__all__ = ["LEGACY_AE_CATEGORY", "MIGRATION_REASON", "migrate_legacy_adverse_events"]

#: old code -> category
LEGACY_AE_CATEGORY: dict[str, AeCategory] = {
    "pain": AeCategory.PAIN,
    "worsening_of_symptoms": AeCategory.WORSENING_OF_SYMPTOMS,
    "infection": AeCategory.INFECTION,
    "damage_to_adjacent_structures": AeCategory.DAMAGE_TO_ADJACENT_STRUCTURES,
    "further_intervention_needed": AeCategory.FURTHER_INTERVENTION,
    "other": AeCategory.OTHER,
}

MIGRATION_REASON = (
    "migrated from the yes/no adverse-event code {code!r} recorded at close before "
    "issue 19: grade, relatedness, dates and outcome were not recorded"
)


def migrate_legacy_adverse_events(
    old: Iterable[Mapping[str, Any]] | None,
) -> list[AdverseEventRecord]:
    """AE rows for an old JSON list (``None``, not yet recorded, gives none).

    Raises ``ValueError`` naming an unknown old code (the old schema allowed
    only the six codes, so one is a corrupt record, not data to guess at).
    """
    rows: list[AdverseEventRecord] = []
    for i, entry in enumerate(old or []):
        code = entry.get("code")
        category = LEGACY_AE_CATEGORY.get(code) if isinstance(code, str) else None
        if category is None:
            raise ValueError(f"adverse_events.{i}.code: unknown old code {code!r}")
        text = entry.get("text")
        rows.append(
            AdverseEventRecord(
                category=category,
                subcategory=AeSubcategory.UNSPECIFIED_MIGRATED,
                verbatim_term=str(text)[:500] if text else category.label,
                migration_reason=MIGRATION_REASON.format(code=code),
            )
        )
    return rows
