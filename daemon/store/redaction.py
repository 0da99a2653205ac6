"""Redaction: a row withdrawn for consent reasons leaves the record, visibly.

The row's content and its salt are erased; the chain keeps its last digest
(which, without the salt, confirms no guess of what it held) and a ``row``
entry with ``op = "redact"`` saying who and why. ``verify`` lists redactions
apart from tampering. The entry is appended *before* the DELETE: the guard
triggers (migration 0004) allow a research row's deletion only right after
the redaction entry of that very row.

``redact_procedure`` takes a whole procedure out: its operator actions,
alarms and cycles, its samples (one ``samples_redacted`` entry with the id
ranges; the batches that held them no longer verify and are counted apart),
then the procedure row. The audit events of the trail never carried the
patient reference, so what remains cannot be linked to the person.

Run with cryod stopped (``cryoctl redact --db``): the daemon finds the
entries at its next start and anchors them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from cryod.integrity import Head

from . import chain
from .chained import RESEARCH, key_text

__all__ = ["RedactionError", "RedactionReport", "redact_procedure", "redact_row"]


class RedactionError(ValueError):
    """A redaction refused (unknown row, a table not under the chain, missing reason)."""


@dataclass(frozen=True, slots=True)
class RedactionReport:
    rows: dict[str, int]  # table -> rows redacted
    samples: int
    head: Head | None


def _latest_digest(conn: chain.DbConn, table: str, key_json: str) -> str:
    row = chain.execute(
        conn,
        "SELECT payload FROM audit WHERE kind = 'row' AND json_extract(payload, '$.table') = ?"
        " AND json_extract(payload, '$.key') = ? ORDER BY seq DESC LIMIT 1",
        (table, key_json),
    ).fetchone()
    if row is None:
        raise RedactionError(f"{table} {key_json}: the chain has no entry for it")
    payload = json.loads(row[0])
    if payload.get("op") == "redact":
        raise RedactionError(f"{table} {key_json} is already redacted")
    return str(payload["digest"])


def _check(by: str, reason: str) -> None:
    if not by.strip() or not reason.strip():
        raise RedactionError("a redaction names who asked for it (by) and why (reason)")


def redact_row(
    session: Session, table: str, key: Mapping[str, Any], *, by: str, reason: str
) -> Head:
    """Erase one research row and its salt; the chain keeps its digest and who/why."""
    _check(by, reason)
    spec = RESEARCH.by_name.get(table)
    if spec is None:
        raise RedactionError(f"{table} is not a research table under the chain")
    key_map = {k: key[k] for k in spec.key}
    key_json = key_text(key_map)
    conn = session.connection()
    if chain.read_row(conn, spec, key_map) is None:
        raise RedactionError(f"{table} {key_json} does not exist")
    head = chain.append(
        conn,
        "row",
        {
            "table": table,
            "key": key_map,
            "op": "redact",
            "digest": _latest_digest(conn, table, key_json),
            "by": by,
            "reason": reason,
        },
        info=session.info,
    )
    where = " AND ".join(f'"{k}" = ?' for k in spec.key)
    chain.execute(
        conn,
        f'DELETE FROM "{spec.name}" WHERE {where}',  # noqa: S608 - registry names
        [key_map[k] for k in spec.key],
    )
    chain.execute(conn, "DELETE FROM row_salts WHERE tbl = ? AND row_key = ?", (table, key_json))
    return head


def _ranges(ids: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in ids:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def redact_procedure(
    session: Session, procedure_id: int, *, by: str, reason: str
) -> RedactionReport:
    """A whole procedure out of the record: children first, then the procedure."""
    _check(by, reason)
    conn = session.connection()
    if (
        chain.execute(conn, "SELECT 1 FROM procedures WHERE id = ?", (procedure_id,)).fetchone()
        is None
    ):
        raise RedactionError(f"procedure {procedure_id} does not exist")
    counts: dict[str, int] = {}
    head: Head | None = None
    for table, key in (
        ("operator_actions", "id"),
        ("alarms", "id"),
        ("cycles", "id"),
        ("adverse_events", "id"),
        ("pain_assessments", "id"),
        ("procedure_study", "procedure_id"),
    ):
        ids = [
            r[0]
            for r in chain.execute(
                conn,
                f"SELECT {key} FROM {table} WHERE procedure_id = ? ORDER BY {key}",  # noqa: S608
                (procedure_id,),
            )
        ]
        for rid in ids:
            head = redact_row(session, table, {key: rid}, by=by, reason=reason)
        counts[table] = len(ids)
    removed = 0
    # the old table (rows cryod migrate has not converted yet), then the compact one
    for table, children in (("samples", ()), ("sample_polls", ("sample_probes", "sample_states"))):
        ids = [
            r[0]
            for r in chain.execute(
                conn,
                f"SELECT id FROM {table} WHERE procedure_id = ? ORDER BY id",  # noqa: S608
                (procedure_id,),
            )
        ]
        if not ids:
            continue
        head = chain.append(
            conn,
            "samples_redacted",
            {
                "table": table,
                "procedure_id": procedure_id,
                "ranges": _ranges(ids),
                "rows": len(ids),
                "by": by,
                "reason": reason,
            },
            info=session.info,
        )
        for child in children:
            chain.execute(
                conn,
                f"DELETE FROM {child} WHERE poll_id IN "  # noqa: S608 - our table names
                "(SELECT id FROM sample_polls WHERE procedure_id = ?)",
                (procedure_id,),
            )
        chain.execute(conn, f"DELETE FROM {table} WHERE procedure_id = ?", (procedure_id,))  # noqa: S608
        removed += len(ids)
    head = redact_row(session, "procedures", {"id": procedure_id}, by=by, reason=reason)
    counts["procedures"] = 1
    return RedactionReport(rows=counts, samples=removed, head=head)
