"""What the record channel sends, read from the store by chain sequence.

Nothing is copied into an outbox: an entry's message is built when it is
sent, from the chain entry and the rows and samples as they stand. That has
two consequences the message says out loud (``Withheld``):

- a research row changes after the entry that covered it (a cycle inserted,
  then closed): the old entry's digest no longer matches the row, and the row's
  earlier content exists nowhere in the room. The entry travels without it,
  ``superseded`` by the later entry (which carries the row as it stands);
  likewise a row or a batch erased by a redaction travels ``redacted``;
- samples outside procedures stay in the room: their batch's entry travels
  without its block (``not_procedure``), so the chain has no gap.

A row or batch that matches neither its entry nor a later one (edited or
deleted behind the chain's back) is sent as it stands: the collector finds
the digest wrong and quarantines it, which is what tampering should cause.

``read_block`` is the one function that knows how a sample entry's batch is
stored (the compact-samples change adapts it there and nowhere else).
Functions here run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from cryod.integrity import (
    EncodingError,
    Entry,
    encode_sample_batch,
    row_digest,
    salt_from_hex,
)

from ..store.audit import ENTRY_COLUMNS, entry_of_row
from ..store.chain import DbConn, execute, read_row
from ..store.chained import RESEARCH, key_text
from ..store.samples import read_batch
from .message import BlockOut, RowOut, Withheld

__all__ = ["Content", "content_of", "profile_of", "read_block", "read_entries", "read_rows"]

#: what an entry carries: its rows, its block, or why it carries neither
Content = tuple[tuple[RowOut, ...], BlockOut | None, Withheld | None]

#: the samples columns of ``cryod.samples/1``, in its order
_SAMPLE_COLUMNS = "id, procedure_id, console, t_utc, t_mono, probe, channel, value, validity"


def read_entries(conn: DbConn, first: int, last: int) -> list[Entry]:
    """Chain entries ``first..last`` in seq order (fewer at the chain's end)."""
    rows = execute(
        conn,
        f"SELECT {ENTRY_COLUMNS} FROM audit WHERE seq BETWEEN ? AND ? ORDER BY seq",  # noqa: S608
        (first, last),
    ).fetchall()
    return [entry_of_row(row) for row in rows]


def head_seq(conn: DbConn) -> int:
    """The newest seq of the chain (0 when empty)."""
    row = execute(conn, "SELECT max(seq) FROM audit").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def content_of(conn: DbConn, entry: Entry) -> Content:
    """The rows or sample block an entry carries, or why it carries none."""
    p = entry.payload if isinstance(entry.payload, dict) else {}
    if entry.kind == "row" and p.get("op") != "redact":
        return read_rows(conn, entry)
    if entry.kind == "samples":
        found = read_block(conn, entry)
        if isinstance(found, Withheld):
            return (), None, found
        return (), found, None
    return (), None, None


def _later_row_entry(
    conn: DbConn, seq: int, table: str, key: Mapping[str, Any], *, op: str | None = None
) -> tuple[int, str] | None:
    """The first row entry after ``seq`` for the same row (with ``op``, only that op)."""
    query = (
        "SELECT seq, json_extract(payload, '$.op') FROM audit WHERE seq > ? AND kind = 'row'"
        " AND json_extract(payload, '$.table') = ? AND json_extract(payload, '$.key') = ?"
    )
    params: list[Any] = [seq, table, key_text(key)]
    if op is not None:
        query += " AND json_extract(payload, '$.op') = ?"
        params.append(op)
    row = execute(conn, query + " ORDER BY seq LIMIT 1", params).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def read_rows(conn: DbConn, entry: Entry) -> Content:
    """A row entry's row as it stands, if it is still the row the entry covered."""
    p = entry.payload
    table, key = str(p.get("table")), p.get("key")
    spec = RESEARCH.by_name.get(table)
    if spec is None or not isinstance(key, dict):
        return (), None, None  # not a research row the room knows: the collector says corrupt
    values = read_row(conn, spec, key)
    if values is None:
        erased = _later_row_entry(conn, entry.seq, table, key, op="redact")
        if erased is not None:
            return (), None, Withheld("redacted", erased[0])
        return (), None, None  # deleted behind the chain's back
    salt_row = execute(
        conn, "SELECT salt FROM row_salts WHERE tbl = ? AND row_key = ?", (table, key_text(key))
    ).fetchone()
    try:
        salt = salt_from_hex(str(salt_row[0])) if salt_row is not None else None
        canonical = spec.encode(values)
    except EncodingError:
        salt = canonical = None
    if salt is None or canonical is None:
        return (), None, None  # salt erased or row unencodable: nothing that could verify
    row = RowOut(table=table, key=dict(key), canonical=canonical, salt=salt)
    if row_digest(salt, canonical) == p.get("digest"):
        return (row,), None, None
    later = _later_row_entry(conn, entry.seq, table, key)
    if later is not None:
        reason = "redacted" if later[1] == "redact" else "superseded"
        return (), None, Withheld(reason, later[0])
    return (row,), None, None  # edited behind the chain's back: sent as it stands


def read_block(conn: DbConn, entry: Entry) -> BlockOut | Withheld:
    """A ``samples`` entry's batch in its canonical form, or why it is not sent.

    THE one function that reads a sample batch for the record channel: the
    batch is the samples with ids ``first..last`` of the entry, encoded with
    the entry's encoding. A batch holding no procedure sample is not sent
    (``not_procedure``); one that lost rows to a redaction is ``redacted``."""
    p = entry.payload
    first, last, encoding = int(p["first"]), int(p["last"]), str(p["encoding"])
    if p.get("table") == "sample_polls":
        return _read_compact_block(conn, entry)
    procedure = execute(
        conn,
        "SELECT 1 FROM samples WHERE id BETWEEN ? AND ? AND procedure_id IS NOT NULL LIMIT 1",
        (first, last),
    ).fetchone()
    if procedure is None:  # the cheap answer for most idle batches: no rows read
        (n,) = execute(
            conn, "SELECT count(*) FROM samples WHERE id BETWEEN ? AND ?", (first, last)
        ).fetchone()
        if n != int(p.get("rows", n)):  # all of them erased with their procedure?
            erased = _redaction_of(conn, entry.seq, first, last)
            if erased is not None:
                return Withheld("redacted", erased)
        return Withheld("not_procedure")
    rows: Sequence[Sequence[Any]] = execute(
        conn,
        f"SELECT {_SAMPLE_COLUMNS} FROM samples WHERE id BETWEEN ? AND ? ORDER BY id",  # noqa: S608
        (first, last),
    ).fetchall()
    if len(rows) != int(p.get("rows", len(rows))):
        erased = _redaction_of(conn, entry.seq, first, last)
        if erased is not None:
            return Withheld("redacted", erased)
    return BlockOut(encoding=encoding, data=encode_sample_batch(rows, encoding))


def _read_compact_block(conn: DbConn, entry: Entry) -> BlockOut | Withheld:
    """A batch of the compact tables (``sample_polls`` with its probe and state rows,
    ``cryod.samples/2``): the polls ``first..last``, read as the store reads them."""
    p = entry.payload
    first, last, encoding = int(p["first"]), int(p["last"]), str(p["encoding"])
    procedure = execute(
        conn,
        "SELECT 1 FROM sample_polls WHERE id BETWEEN ? AND ? AND procedure_id IS NOT NULL LIMIT 1",
        (first, last),
    ).fetchone()
    if procedure is None:  # idle polls (or removed by retention, which keeps no procedure's)
        (n,) = execute(
            conn, "SELECT count(*) FROM sample_polls WHERE id BETWEEN ? AND ?", (first, last)
        ).fetchone()
        if n != int(p.get("rows", n)):
            erased = _redaction_of(conn, entry.seq, first, last, table="sample_polls")
            if erased is not None:
                return Withheld("redacted", erased)
        return Withheld("not_procedure")
    if isinstance(conn, sqlite3.Connection):  # the channel reads through SQLAlchemy
        raise TypeError("compact sample batches are read through a SQLAlchemy connection")
    polls = read_batch(conn, first, last)
    if len(polls) != int(p.get("rows", len(polls))):
        erased = _redaction_of(conn, entry.seq, first, last, table="sample_polls")
        if erased is not None:
            return Withheld("redacted", erased)
    return BlockOut(encoding=encoding, data=encode_sample_batch(polls, encoding))


def _redaction_of(
    conn: DbConn, seq: int, first: int, last: int, *, table: str = "samples"
) -> int | None:
    """The first ``samples_redacted`` entry after ``seq`` erasing ids of ``table`` in
    ``first..last``."""
    for later_seq, payload_text in execute(
        conn, "SELECT seq, payload FROM audit WHERE seq > ? AND kind = 'samples_redacted'", (seq,)
    ):
        try:
            body = json.loads(payload_text)
            ranges = body.get("ranges") or []
            if body.get("table", "samples") != table:
                continue
        except (TypeError, ValueError, AttributeError):
            continue
        for r in ranges:
            if isinstance(r, list) and len(r) == 2 and r[0] <= last and r[1] >= first:
                return int(later_seq)
    return None


def profile_of(conn: DbConn, entry: Entry) -> dict[str, str] | None:
    """The study profile (``id``, ``version``, ``hash``) an entry was recorded under:
    the ``procedure_study`` stamp of the procedure its row or samples belong to;
    ``None`` for an entry of no procedure, or of one opened under no study."""
    procedure_id = _procedure_of(conn, entry)
    if procedure_id is None:
        return None
    found = execute(
        conn,
        "SELECT profile_id, profile_version, profile_hash FROM procedure_study"
        " WHERE procedure_id = ?",
        (procedure_id,),
    ).fetchone()
    if found is None:
        return None
    return {"id": str(found[0]), "version": str(found[1]), "hash": str(found[2])}


def _procedure_of(conn: DbConn, entry: Entry) -> int | None:
    """The procedure an entry's row or sample batch belongs to, if any."""
    p = entry.payload
    if entry.kind == "samples" and p.get("table") == "sample_polls":
        found = execute(
            conn,
            "SELECT procedure_id FROM sample_polls WHERE id BETWEEN ? AND ?"
            " AND procedure_id IS NOT NULL LIMIT 1",
            (int(p["first"]), int(p["last"])),
        ).fetchone()
        return None if found is None else int(found[0])
    if entry.kind != "row":
        return None
    table, key = p.get("table"), p.get("key")
    spec = RESEARCH.by_name.get(str(table))
    if spec is None or not isinstance(key, dict):
        return None
    if spec.name == "procedures":
        value = key.get("id")
        return value if isinstance(value, int) else None
    if "procedure_id" not in spec.column_names:
        return None
    values = read_row(conn, spec, key)
    if values is None:
        return None
    value = values.get("procedure_id")
    return value if isinstance(value, int) else None
