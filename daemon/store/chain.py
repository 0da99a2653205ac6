"""Writing the chain: entries, research rows covered on every flush, sample batches.

Every entry written here is a v2 entry (``cryod.entry/1``, docs/integrity.md)
naming the chain's node, appended in the caller's transaction, so an entry
and what it covers commit or vanish together:

- ``append``: one entry (the audit events of ``records`` go through it);
- ``ChainedSession``: a Session whose every flush appends a ``row`` entry
  for each research row it inserted or updated (``chained.RESEARCH``), with
  the row's salted digest computed from the row *as stored* (read back), and
  which refuses to delete one (only ``records.redact_row`` removes a row);
- ``cover_batch``: one ``samples`` entry for a committed sample batch.

The node of a chain is fixed by its first v2 entry (written by migration
0004 with the configured ``[node] id``); later entries take it from the
chain, so only a migration needs to be told.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.orm import Session, UOWTransaction

from cryod.integrity import (
    GENESIS_HASH,
    ROW_ENCODING,
    SAMPLES_V1,
    Head,
    TableSpec,
    batch_digest,
    column_hints,
    encode_sample_batch,
    entry_hash,
    format_time,
    new_salt,
    row_digest,
    salt_from_hex,
)

from .chained import RESEARCH, key_text, stored_value

__all__ = [
    "UNNAMED_NODE",
    "ChainedSession",
    "DbConn",
    "append",
    "canonical_json",
    "chain_node",
    "cover_batch",
    "cover_row",
    "read_head",
    "read_row",
]

DbConn = sqlite3.Connection | Connection


#: the node a chain is named when nobody names one (library use, tests); the daemon
#: always passes its configured ``[node] id``
UNNAMED_NODE = "unnamed"


def execute(conn: DbConn, query: str, params: Sequence[Any] = ()) -> Any:
    if isinstance(conn, sqlite3.Connection):
        return conn.execute(query, tuple(params))
    return conn.exec_driver_sql(query, tuple(params))


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return format_time(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"chain payload value of type {type(value).__name__} is not JSON")


def canonical_json(value: Any) -> str:
    """The payload text stored in ``audit.payload`` (sorted keys, no spaces, UTF-8)."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_default,
    )


def read_head(conn: DbConn) -> tuple[Head, str | None] | None:
    """(head, node of the newest entry; None for a v1 entry), or None for an empty chain."""
    row = execute(conn, "SELECT seq, hash, node FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else (Head(int(row[0]), str(row[1])), row[2])


def chain_node(conn: DbConn) -> str | None:
    """The node this database's chain names (its newest v2 entry's), None if none yet."""
    row = execute(conn, "SELECT node FROM audit WHERE v = 2 ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else row[0]


def append(
    conn: DbConn,
    kind: str,
    payload: Mapping[str, Any],
    *,
    at: dt.datetime | None = None,
    node: str | None = None,
    info: dict[str, Any] | None = None,
) -> Head:
    """Append one v2 entry in the caller's transaction; returns the new head.

    ``info`` (a Session's ``info``, or the writer's dict for a batch) carries
    ``expect_head``: the head the writer last committed. The first append of
    the transaction compares it with the chain's and leaves
    ``info["foreign"] = (expected, found)`` when someone else wrote entries.
    """
    tail = read_head(conn)
    if info is not None and "expect_head" in info and not info.get("checked"):
        info["checked"] = True
        found = None if tail is None else tail[0]
        if info["expect_head"] is not None and found != info["expect_head"]:
            info["foreign"] = (info["expect_head"], found)
    seq = 1 if tail is None else tail[0].seq + 1
    prev = GENESIS_HASH if tail is None else tail[0].hash
    chain = tail[1] if tail is not None and tail[1] else None
    who = chain or node or UNNAMED_NODE
    at_text = format_time(at or dt.datetime.now(dt.UTC))
    text = canonical_json(payload)
    digest = entry_hash(seq, at_text, who, kind, json.loads(text), prev)
    execute(
        conn,
        "INSERT INTO audit (seq, at, kind, payload, prev_hash, hash, v, node)"
        " VALUES (?, ?, ?, ?, ?, ?, 2, ?)",
        (seq, at_text, kind, text, prev, digest, who),
    )
    head = Head(seq, digest)
    if info is not None:
        info["audit_head"] = head
    return head


# ---- research rows ------------------------------------------------------------------------
def read_row(conn: DbConn, spec: TableSpec, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """One row as stored, each value as the canonical encoding takes it."""
    cols = ", ".join(f'"{c}"' for c in spec.column_names)
    where = " AND ".join(f'"{k}" = ?' for k in spec.key)
    # names come from the registry (models), never from input
    query = f'SELECT {cols} FROM "{spec.name}" WHERE {where}'  # noqa: S608
    row = execute(conn, query, [key[k] for k in spec.key]).fetchone()
    if row is None:
        return None
    return {c: stored_value(kind, v) for (c, kind), v in zip(spec.columns, row, strict=True)}


def _salt(conn: DbConn, table: str, key_json: str, *, new: bool) -> bytes:
    if not new:
        row = execute(
            conn, "SELECT salt FROM row_salts WHERE tbl = ? AND row_key = ?", (table, key_json)
        ).fetchone()
        if row is not None:
            return salt_from_hex(str(row[0]))
    salt = new_salt()
    execute(
        conn,
        "INSERT INTO row_salts (tbl, row_key, salt) VALUES (?, ?, ?)",
        (table, key_json, salt.hex()),
    )
    return salt


def cover_row(
    conn: DbConn,
    spec: TableSpec,
    key: Mapping[str, Any],
    op: str,
    *,
    at: dt.datetime | None = None,
    node: str | None = None,
    info: dict[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Head:
    """Append the ``row`` entry for one row as it now stands (``op``: insert, update,
    baseline or schema). A row with no salt yet gets one (an insert always does).
    ``extra``: more payload fields saying why (a ``schema`` entry's revision and
    columns); they cannot replace the ones above."""
    values = read_row(conn, spec, key)
    if values is None:
        raise LookupError(f"{spec.name} {dict(key)} does not exist")
    key_map = {k: values[k] for k in spec.key}
    salt = _salt(conn, spec.name, key_text(key_map), new=op == "insert")
    typed = spec.typed(values)
    payload = {
        "table": spec.name,
        "key": key_map,
        "op": op,
        "digest": row_digest(salt, spec.encode(values)),
        "encoding": ROW_ENCODING,
        "columns": column_hints(salt, typed),
    }
    if extra:
        clash = payload.keys() & extra.keys()
        if clash:
            raise ValueError(f"extra row entry fields {sorted(clash)} would replace the entry's")
        payload.update(extra)
    return append(conn, "row", payload, at=at, node=node, info=info)


class ChainedSession(Session):
    """A Session that puts every research row it inserts or updates under the chain."""


@event.listens_for(ChainedSession, "before_flush")
def _refuse_deletes(session: Session, _ctx: UOWTransaction, _instances: object) -> None:
    for obj in session.deleted:
        spec = RESEARCH.spec_for(obj)
        if spec is not None:
            raise ValueError(f"{spec.name} rows are never deleted (records.redact_row)")


@event.listens_for(ChainedSession, "after_flush")
def _cover_flushed(session: Session, _ctx: UOWTransaction) -> None:
    items: list[tuple[TableSpec, dict[str, Any], str]] = []
    for obj in session.new:
        spec = RESEARCH.spec_for(obj)
        if spec is not None:
            items.append((spec, {k: getattr(obj, k) for k in spec.key}, "insert"))
    for obj in session.dirty:
        spec = RESEARCH.spec_for(obj)
        if spec is not None and session.is_modified(obj, include_collections=False):
            items.append((spec, {k: getattr(obj, k) for k in spec.key}, "update"))
    if not items:
        return
    conn = session.connection()
    for spec, key, op in sorted(items, key=lambda i: (i[0].name, key_text(i[1]))):
        cover_row(conn, spec, key, op, node=session.info.get("node"), info=session.info)


# ---- sample batches ------------------------------------------------------------------------
def cover_batch(
    conn: DbConn,
    first: int,
    last: int,
    rows: Iterable[Sequence[Any]],
    n: int,
    *,
    op: str = "insert",
    info: dict[str, Any] | None = None,
    node: str | None = None,
    encoding: str = SAMPLES_V1,
    table: str = "samples",
) -> Head:
    """One ``samples`` entry for the rows with ids ``first..last`` (``n`` of them),
    given in ascending id in the encoding's column order: rows of ``samples``
    (``cryod.samples/1``) or polls of ``sample_polls`` (``cryod.samples/2``)."""
    payload = {
        "table": table,
        "op": op,
        "first": first,
        "last": last,
        "rows": n,
        "digest": batch_digest(encode_sample_batch(rows, encoding)),
        "encoding": encoding,
    }
    return append(conn, "samples", payload, info=info, node=node)
