"""The research tables under the chain: one line per table.

``RESEARCH`` lists the models whose every row is covered by a chain entry
(each insert and each permitted update appends one, salted per row; see
``chain.py`` and docs/integrity.md). Putting a new table under the chain:

1. add its model here (the columns and their kinds come from the model);
2. in the migration that creates the table, call ``guard_statements`` for its
   delete guard (and baseline any rows it starts with).

``tests/integrity/test_registry.py`` fails when a table holding study data
(one with a ``procedure_id``) is neither registered nor listed in
``NOT_ROW_COVERED`` with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase

from cryod.integrity import Kind, TableSpec

from .models import (
    AdverseEventRow,
    Alarm,
    Cycle,
    OperatorAction,
    PainAssessmentRow,
    Procedure,
    ProcedureStudy,
    UtcDateTime,
)

__all__ = ["NOT_ROW_COVERED", "RESEARCH", "Registry", "guard_statements", "spec_from_model"]


def _kind(column: Any) -> Kind:
    t = column.type
    if isinstance(t, UtcDateTime):
        return Kind.TIME
    if isinstance(t, Boolean):
        return Kind.BOOL
    if isinstance(t, Integer):
        return Kind.INT
    if isinstance(t, Float):
        return Kind.REAL
    if isinstance(t, JSON):
        return Kind.JSON
    if isinstance(t, (String, Text)):
        return Kind.TEXT
    raise TypeError(f"column {column.name}: no canonical kind for {t!r}")


def spec_from_model(model: type[DeclarativeBase]) -> TableSpec:
    table: Any = model.__table__
    return TableSpec(
        name=table.name,
        key=tuple(c.name for c in table.primary_key.columns),
        columns=tuple((c.name, _kind(c)) for c in table.columns),
    )


class Registry:
    """The models under the chain, with their ``TableSpec``."""

    def __init__(self, *models: type[DeclarativeBase]) -> None:
        self.by_class: dict[type[Any], TableSpec] = {m: spec_from_model(m) for m in models}
        self.by_name: dict[str, TableSpec] = {s.name: s for s in self.by_class.values()}

    @property
    def specs(self) -> list[TableSpec]:
        return list(self.by_name.values())

    def spec_for(self, obj: object) -> TableSpec | None:
        return self.by_class.get(type(obj))


#: every table of study data whose rows the chain covers one by one
RESEARCH = Registry(
    Procedure,
    Cycle,
    Alarm,
    OperatorAction,
    ProcedureStudy,  # revision 0007 (issue 19)
    PainAssessmentRow,
    AdverseEventRow,
)

#: tables with a procedure_id that are not covered row by row, and why
NOT_ROW_COVERED: Mapping[str, str] = {
    "samples": "covered batch by batch (cryod.samples/1); the form before revision 0006",
    "sample_polls": "covered batch by batch with their probe and state rows "
    "(cryod.samples/2, one chain entry per committed batch)",
    "outbox": "a delivery queue for MQTT, rebuilt from the record; not the record",
}


def stored_value(kind: Kind, raw: Any) -> Any:
    """A value as SQLite returned it -> the value the canonical encoding takes.

    JSON columns hold JSON text (a scalar may come back as a number under
    SQLite's NUMERIC affinity); text that is not JSON is left as text, which
    has no canonical form as ``json`` and so is reported by ``verify``.
    """
    if kind is Kind.JSON and isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return _NotJson(raw)
    return raw


class _NotJson:
    """Text in a JSON column that does not parse (never encodable)."""

    def __init__(self, text: str) -> None:
        self.text = text


def key_text(key: Mapping[str, Any]) -> str:
    """The key as stored in ``row_salts.row_key`` and chain payloads: canonical JSON."""
    return json.dumps(dict(key), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def guard_statements(table: str, key: tuple[str, ...] = ("id",)) -> list[str]:
    """SQL for a research table's delete guard: a DELETE is refused unless the newest
    chain entry is the redaction of that very row (``records.redact_row`` appends it
    first). A forger with the file can drop it; the chain is what shows that."""
    same_key = " AND ".join(f"json_extract(a.payload, '$.key.{k}') = OLD.{k}" for k in key)
    return [
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "  # noqa: S608
        f"WHEN NOT EXISTS (SELECT 1 FROM audit a WHERE a.seq = (SELECT max(seq) FROM audit) "
        f"AND a.kind = 'row' AND json_extract(a.payload, '$.op') = 'redact' "
        f"AND json_extract(a.payload, '$.table') = '{table}' AND {same_key}) "
        f"BEGIN SELECT RAISE(ABORT, 'research rows are never deleted (redact them)'); END"
    ]
