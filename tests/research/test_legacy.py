"""The old six yes/no adverse-event codes become rows with subcategory "unspecified (migrated)"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cryod.daemon.store.models import AdverseEvent as OldCode
from cryod.research.legacy import (
    LEGACY_AE_CATEGORY,
    MIGRATION_REASON,
    migrate_legacy_adverse_events,
)
from cryod.research.validation import check_record
from cryod.research.vocab import AeSubcategory

from .examples import OPENED, mortons, record

DOC = Path(__file__).resolve().parents[2] / "docs" / "export-schema.md"


def test_every_old_code_has_a_category() -> None:
    """The codes of the daemon's old enum and of the export/1 documentation are all mapped."""
    assert set(LEGACY_AE_CATEGORY) == {c.value for c in OldCode}
    documented = re.search(r"adverse event `code`.*\| (.*) \|", DOC.read_text())
    assert documented is not None
    codes = set(re.findall(r"`([a-z_]+)`", documented.group(1))) - {"text"}  # "needs `text`"
    assert codes == set(LEGACY_AE_CATEGORY)


def test_each_old_code_becomes_one_row() -> None:
    old = [
        {"code": "pain", "text": None},
        {"code": "further_intervention_needed", "text": None},
        {"code": "other", "text": "rash on the dorsum of the foot"},
    ]
    rows = migrate_legacy_adverse_events(old)
    assert [r.category.value for r in rows] == ["pain", "further_intervention", "other"]
    assert {r.subcategory for r in rows} == {AeSubcategory.UNSPECIFIED_MIGRATED}
    assert rows[0].subcategory.label == "unspecified (migrated)"
    assert rows[2].verbatim_term == "rash on the dorsum of the foot"
    assert rows[0].verbatim_term == "Pain (as an adverse event)"
    for r in rows:
        assert (r.ctcae_grade, r.relatedness_device, r.relatedness_procedure) == (None,) * 3
        assert (r.onset, r.outcome, r.serious) == (None, None, None)
    assert rows[1].migration_reason == MIGRATION_REASON.format(code="further_intervention_needed")


def test_none_recorded_and_none_at_all() -> None:
    assert migrate_legacy_adverse_events(None) == []
    assert migrate_legacy_adverse_events([]) == []


def test_an_unknown_old_code_is_a_corrupt_record() -> None:
    with pytest.raises(ValueError, match=r"adverse_events.1.code: unknown old code 'rash'"):
        migrate_legacy_adverse_events([{"code": "pain"}, {"code": "rash", "text": None}])


def test_a_record_with_migrated_rows_still_checks() -> None:
    p = mortons()
    rows = migrate_legacy_adverse_events([{"code": "infection", "text": None}])
    rec = record(p, adverse_events=[r.model_dump() for r in rows])
    assert check_record(p, rec, opened_at=OPENED) == []
