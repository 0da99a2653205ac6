"""A column added to a research table, without blessing an edit (docs/integrity.md,
"Adding a column to a research table").

A row's digest covers its ``cryod.row/1`` encoding, which lists every column of
the row (null included): a new column changes the bytes of every existing row
of its table, so after the ALTER TABLE ``verify`` would report each of them as
edited. The migration that adds the column therefore calls
``cover_added_columns`` in its own transaction:

1. every row of the table is checked against the latest chain entry for it
   with the column set *before* the change, exactly as ``verify`` checked it
   (``cryod.integrity.check_rows``);
2. each row that matches is covered again, with the column set after the
   change, by a ``row`` entry with ``op = "schema"`` that names the revision
   and the columns added and the entry it follows (``verify`` keeps that
   entry's origin: a baselined row is still "baselined on DATE");
3. a row that does not match (edited, inserted behind the chain's back, salt
   missing or erased) is **not** covered again: its previous entry stands, so
   ``verify`` goes on reporting it, and the ``schema_change`` entry that closes
   the step lists it as found by the migration.

The encoding itself (``cryod.row/1``) does not change: only which columns the
table has.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from cryod.integrity import Entry, Finding, TableSpec, check_rows, row_claims
from cryod.integrity.check import key_text, row_id

from . import chain
from .record_check import rows_as_stored

__all__ = ["ColumnsAdded", "cover_added_columns"]

#: the entry that closes a schema change (the chain's own record of it)
SCHEMA_CHANGE_KIND = "schema_change"


@dataclass(frozen=True, slots=True)
class ColumnsAdded:
    """What a migration did to the record of one table."""

    table: str
    added: tuple[str, ...]
    covered: int  # rows that matched the chain, covered again with the new columns
    not_covered: tuple[Finding, ...]  # rows that did not match: left to verify, never blessed


def _row_entries(conn: Connection, table: str) -> list[Entry]:
    """The ``row`` entries of one table, in chain order (through ``ix_audit_rows``)."""
    out = []
    for seq, at, kind, payload in conn.exec_driver_sql(
        "SELECT seq, at, kind, payload FROM audit WHERE kind = 'row' ORDER BY seq"
    ):
        p = json.loads(payload)
        if isinstance(p, dict) and p.get("table") == table:
            out.append(Entry(int(seq), str(at), str(kind), p, "", ""))
    return out


def _check(before: TableSpec, after: TableSpec) -> tuple[str, ...]:
    if (before.name, before.key) != (after.name, after.key):
        raise ValueError(f"{before.name} -> {after.name}: one table, same key")
    old = dict(before.columns)
    missing = [c for c in before.column_names if c not in dict(after.columns)]
    changed = [c for c, k in after.columns if c in old and old[c] is not k]
    added = tuple(c for c in after.column_names if c not in old)
    if missing or changed or not added:
        raise ValueError(
            f"{before.name}: only columns added (removed {missing}, kind changed {changed})"
        )
    return added


def cover_added_columns(
    conn: Connection,
    before: TableSpec,
    after: TableSpec,
    *,
    revision: str,
    node: str | None = None,
) -> ColumnsAdded:
    """Check every row of ``before.name`` against the chain with the columns of
    ``before``, cover the ones that match again with those of ``after``
    (``op = "schema"``), and close with a ``schema_change`` entry listing the rows
    that did not match. Call it after the column is added, in the migration's
    transaction. A table with no rows and no entries gets no entries."""
    added = _check(before, after)
    claims = row_claims(_row_entries(conn, before.name))
    rows = list(rows_as_stored(conn, [before]))
    if not rows and not claims:
        return ColumnsAdded(before.name, added, 0, ())
    report = check_rows([before], claims, rows)
    found = tuple(f for f in report.findings if f.problem != "deleted")
    unmatched = {f.key for f in found}
    covered = 0
    for _table, values, _salt in sorted(rows, key=lambda r: _order(before, r[1])):
        key = before.key_map(before.key_of(values))
        rid = row_id(before.name, key)
        if key_text(rid) in unmatched:
            continue
        follows = claims[rid]
        extra: Mapping[str, Any] = {
            "revision": revision,
            "added": list(added),
            "follows": follows.seq,
        }
        chain.cover_row(conn, after, key, "schema", node=node, extra=extra)
        covered += 1
    chain.append(
        conn,
        SCHEMA_CHANGE_KIND,
        {
            "revision": revision,
            "table": before.name,
            "added": list(added),
            "rows_covered": covered,
            "not_covered": [
                {
                    "key": f.key,
                    "problem": f.problem,
                    "columns": list(f.columns),
                    "seq": f.seq,
                    "detail": f.detail,
                }
                for f in found
            ],
            "note": "rows that did not match the chain before the change were not covered "
            "again: verify reports them as before",
        },
        node=node,
    )
    return ColumnsAdded(before.name, added, covered, found)


def _order(spec: TableSpec, values: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(values[k] for k in spec.key)
