"""Accepted entries, their rows and sample blocks written in bulk, in the caller's transaction.

The ingest shell decides a whole batch of messages first (``cryod.hub.ingest``,
one in-memory view per room) and writes what it accepted at the end, in the
same transaction as the batch's held and quarantined messages:

- **PostgreSQL**: ``COPY ... FROM STDIN`` through psycopg on the session's own
  connection (entries, then rows, then blocks: the foreign keys hold at every
  step);
- **SQLite**: one ``executemany`` INSERT per table.

Both write exactly what ``received.save`` writes for one ``Accept``
(tests/hub/test_intake.py compares the two). ``copy_rows`` is also what the
benchmark's bare-COPY comparison uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from ..ingest import AcceptedEntry
from .db import is_postgres
from .models import ReceivedBlock, ReceivedEntry, ReceivedRow

__all__ = ["ENTRY_COLUMNS", "copy_rows", "write_accepted"]

ENTRY_COLUMNS = (
    "node", "seq", "at", "kind", "payload", "prev_hash", "hash", "v", "profile_id",
    "profile_version", "profile_hash", "received_at", "skew_s", "skew_flagged",
    "withheld_reason", "withheld_by_seq",
)  # fmt: skip
ROW_COLUMNS = ("node", "seq", "position", "table_name", "key", "canonical", "salt", "digest")
BLOCK_COLUMNS = ("node", "seq", "encoding", "data", "digest")


def _entry(e: AcceptedEntry) -> dict[str, Any]:
    p = e.profile
    return {
        "node": e.node,
        "seq": e.seq,
        "at": e.at,
        "kind": e.kind,
        "payload": e.payload,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
        "v": e.v,
        "profile_id": None if p is None else p.id,
        "profile_version": None if p is None else p.version,
        "profile_hash": None if p is None else p.hash,
        "received_at": e.received_at,
        "skew_s": e.skew.skew_s,
        "skew_flagged": e.skew.flagged,
        "withheld_reason": None if e.withheld is None else e.withheld.reason,
        "withheld_by_seq": None if e.withheld is None else e.withheld.by_seq,
    }


def _rows(entries: Sequence[AcceptedEntry]) -> list[dict[str, Any]]:
    return [
        {
            "node": e.node,
            "seq": e.seq,
            "position": i,
            "table_name": r.table,
            "key": r.key,
            "canonical": r.canonical,
            "salt": r.salt,
            "digest": r.digest,
        }
        for e in entries
        for i, r in enumerate(e.rows)
    ]


def _blocks(entries: Sequence[AcceptedEntry]) -> list[dict[str, Any]]:
    return [
        {
            "node": e.node,
            "seq": e.seq,
            "encoding": e.block.encoding,
            "data": e.block.data,
            "digest": e.block_digest,
        }
        for e in entries
        if e.block is not None and e.block_digest is not None
    ]


def write_accepted(session: Session, entries: Sequence[AcceptedEntry]) -> None:
    """Insert the entries, then their rows, then their blocks (flushes the session first)."""
    if not entries:
        return
    session.flush()
    tables = (
        (ReceivedEntry, ENTRY_COLUMNS, [_entry(e) for e in entries]),
        (ReceivedRow, ROW_COLUMNS, _rows(entries)),
        (ReceivedBlock, BLOCK_COLUMNS, _blocks(entries)),
    )
    if is_postgres(session.connection()):
        for model, columns, values in tables:
            if values:
                copy_rows(session, model.__tablename__, columns, values)
        return
    for model, _columns, values in tables:
        if values:
            session.execute(insert(model), values)


def copy_rows(
    session: Session, table: str, columns: Sequence[str], values: Iterable[dict[str, Any]]
) -> None:
    """``COPY table (columns) FROM STDIN`` on the session's PostgreSQL connection.

    JSON columns (``payload``, ``key``) go as JSONB text; times as aware datetimes;
    bytes as BYTEA."""
    import psycopg
    from psycopg.types.json import Jsonb
    from sqlalchemy import exc as sa_exc

    raw = session.connection().connection.driver_connection
    json_columns = {"payload", "key"}
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    try:
        with raw.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[union-attr]
            for v in values:
                copy.write_row([Jsonb(v[c]) if c in json_columns else v[c] for c in columns])
    except psycopg.DataError as exc:  # the same exceptions the ORM path raises
        raise sa_exc.DataError(sql, None, exc) from exc
    except psycopg.IntegrityError as exc:
        raise sa_exc.IntegrityError(sql, None, exc) from exc
    except psycopg.OperationalError as exc:
        raise sa_exc.OperationalError(sql, None, exc) from exc
