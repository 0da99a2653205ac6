"""``cryod migrate``: samples of the old form (one row per value, before revision 0006)
moved into the compact tables, a chunk at a time.

Revision 0006 only creates the compact tables (fast, inside the daemon's start-up);
the rows already in ``samples`` are converted here, explicitly, because a study
database holds hundreds of millions of them. The daemon refuses to start while any is
left (``pending_rows``; ``cryod migrate`` is named in the message).

- **Free space first**: the compact copy of what is left (about a tenth of it), one
  chunk's WAL and a margin must fit on the database's file system, or nothing starts.
- **Chunked and resumable**: each chunk (consecutive ``cryod.samples/1`` batches, about
  ``chunk_rows`` rows) is one transaction: its rows are checked against their chain
  entries, stored as polls with a ``cryod.samples/2`` entry (``op = "convert"``), a
  ``samples_converted`` entry names the old batches and id range, and the old rows are
  deleted (the 0006 guard allows exactly that range after that entry). A conversion
  killed at any point leaves whole chunks converted and the rest as it was: run it
  again and it goes on from the first row left.
- **Nothing laundered**: a batch whose rows no longer match their chain entry, or rows
  no entry covers, stop the conversion with a message naming them (``cryoctl verify``
  says more); converting them would erase the evidence. A batch that overlaps a
  redaction cannot match its digest any more: it is converted and listed in the
  entry's ``unverified``.

``verify`` counts a converted batch apart (``batches_converted``); the polls made from
it verify under their own entries.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryod.integrity import SAMPLES_V1, SAMPLES_V2, batch_digest, encode_sample_batch

from . import chain
from .db import immediate_transaction, make_engine
from .errors import StoreError
from .samples import MAX_POLL_ID, insert_polls, pack_polls

__all__ = [
    "ConvertError",
    "ConvertProgress",
    "convert",
    "free_space_needed",
    "pending_rows",
    "refuse_unconverted",
    "rows_left",
]

CHUNK_ROWS = 20_000  # old rows per transaction: ~300 polls of 8 probes
#: bytes the compact copy needs per old row (measured ~7; a margin over it)
COMPACT_BYTES_PER_ROW = 16
MARGIN_BYTES = 32 * 1024 * 1024
OLD_COLUMNS = "id, procedure_id, console, t_utc, t_mono, probe, channel, value, validity"


class ConvertError(StoreError):
    """The conversion cannot go on (nothing of the current chunk was written)."""

    def __init__(self, message: str) -> None:
        super().__init__("other", message)


@dataclass(frozen=True, slots=True)
class ConvertProgress:
    rows_done: int  # old rows converted by this run so far
    rows_total: int  # old rows left when this run started
    polls: int  # polls written by this run so far
    chunks: int


@dataclass(frozen=True, slots=True)
class _Claim:
    seq: int
    first: int
    last: int
    rows: int
    digest: str
    encoding: str


def pending_rows(path: str | os.PathLike[str]) -> int:
    """Rows of the old form still in the database (0: nothing to convert)."""
    engine = make_engine(path)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one())
    finally:
        engine.dispose()


def rows_left(path: str | os.PathLike[str]) -> bool:
    """True while rows of the old form are left (the daemon refuses to start)."""
    con = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT 1 FROM samples LIMIT 1").fetchone() is not None
    except sqlite3.OperationalError:  # no samples table: not a cryod database at all
        return False
    finally:
        con.close()


def refuse_unconverted(path: str | os.PathLike[str]) -> None:
    """``StoreError`` naming ``cryod migrate`` when rows of the old form are left."""
    if rows_left(path):
        raise StoreError(
            "other",
            f"{path}: holds samples not yet converted to the compact form of revision 0006 "
            "(an upgrade, or a cryod migrate that stopped): run `cryod migrate --config "
            "<this config>` first",
        )


def free_space_needed(rows: int) -> int:
    return rows * COMPACT_BYTES_PER_ROW + MARGIN_BYTES


def _check_free_space(path: Path, rows: int) -> None:
    need = free_space_needed(rows)
    free = shutil.disk_usage(path.resolve().parent).free
    if free < need:
        raise ConvertError(
            f"{path}: {free / 2**20:.0f} MiB free, the conversion of {rows} samples needs "
            f"about {need / 2**20:.0f} MiB: free some space and run cryod migrate again"
        )


def _claims(dbapi: Any) -> list[_Claim]:
    """The chain's entries over the old table, by id."""
    out = []
    for seq, first, last, rows, digest, encoding, table in dbapi.execute(
        "SELECT seq, json_extract(payload, '$.first'), json_extract(payload, '$.last'),"
        " json_extract(payload, '$.rows'), json_extract(payload, '$.digest'),"
        " json_extract(payload, '$.encoding'), json_extract(payload, '$.table')"
        " FROM audit WHERE kind = 'samples' ORDER BY seq"
    ):
        if (table or "samples") != "samples" or not isinstance(first, int):
            continue
        out.append(_Claim(seq, first, last, rows, str(digest), str(encoding or SAMPLES_V1)))
    out.sort(key=lambda c: (c.first, c.seq))
    return out


def _redacted_ranges(dbapi: Any) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for (payload,) in dbapi.execute("SELECT payload FROM audit WHERE kind = 'samples_redacted'"):
        p = json.loads(payload)
        if p.get("table", "samples") == "samples":
            out += [(int(a), int(b)) for a, b in p.get("ranges") or ()]
    return out


def _chunks(claims: Sequence[_Claim], start_id: int, chunk_rows: int) -> Iterator[list[_Claim]]:
    """Consecutive claims from the one holding ``start_id``, about ``chunk_rows`` rows each."""
    chunk: list[_Claim] = []
    n = 0
    for c in claims:
        if c.last < start_id:
            continue
        chunk.append(c)
        n += c.rows
        if n >= chunk_rows:
            yield chunk
            chunk, n = [], 0
    if chunk:
        yield chunk


def _convert_chunk(
    dbapi: Any, chunk: list[_Claim], redacted: list[tuple[int, int]], node: str | None
) -> tuple[int, int]:
    """One transaction's work (see the module doc); returns (old rows, polls)."""
    lo, hi = chunk[0].first, chunk[-1].last
    rows = dbapi.execute(
        f"SELECT {OLD_COLUMNS} FROM samples WHERE id BETWEEN ? AND ? ORDER BY id",  # noqa: S608
        (lo, hi),
    ).fetchall()
    unverified: list[int] = []
    i = 0
    for c in chunk:
        batch = []
        while i < len(rows) and rows[i][0] <= c.last:
            if rows[i][0] < c.first:
                raise ConvertError(
                    f"sample id {rows[i][0]} is covered by no chain entry: not converted "
                    "(cryoctl verify names it)"
                )
            batch.append(tuple(rows[i]))
            i += 1
        ok = len(batch) == c.rows and (
            batch_digest(encode_sample_batch(batch, c.encoding)) == c.digest
        )
        if not ok:
            if any(a <= c.last and c.first <= b for a, b in redacted):
                unverified.append(c.seq)
            else:
                raise ConvertError(
                    f"samples id {c.first}..{c.last} do not match chain entry {c.seq}: "
                    "not converted (cryoctl verify says what changed)"
                )
    if not rows:
        return 0, 0
    (before,) = dbapi.execute(MAX_POLL_ID).fetchone()
    # SampleRow field order: console, t_utc, t_mono, probe, channel, value, validity, pid
    polls = pack_polls(
        [(r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[1]) for r in rows], (before or 0) + 1
    )
    insert_polls(dbapi, polls)
    chain.cover_batch(
        dbapi,
        polls[0].id,
        polls[-1].id,
        polls,
        len(polls),
        op="convert",
        node=node,
        table="sample_polls",
        encoding=SAMPLES_V2,
    )
    chain.append(
        dbapi,
        "samples_converted",
        {
            "table": "samples",
            "from_first": lo,
            "from_last": hi,
            "ranges": [[c.first, c.last] for c in chunk],
            "entries": [c.seq for c in chunk],
            "rows": len(rows),
            "unverified": unverified,
            "to_table": "sample_polls",
            "polls": [polls[0].id, polls[-1].id],
        },
        node=node,
    )
    dbapi.execute("DELETE FROM samples WHERE id BETWEEN ? AND ?", (lo, hi))
    return len(rows), len(polls)


def convert(
    path: str | os.PathLike[str],
    *,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[ConvertProgress], None] | None = None,
    max_chunks: int | None = None,
) -> ConvertProgress:
    """Convert every row of the old form left in the database at ``path`` (already at
    revision 0006: ``migrate.upgrade_on_start`` first). ``max_chunks`` stops early
    (tests; a later run goes on). Raises ``ConvertError`` (nothing of the failing
    chunk written)."""
    db = Path(path)
    total = pending_rows(db)
    done = ConvertProgress(0, total, 0, 0)
    if total == 0:
        return done
    _check_free_space(db, total)
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            dbapi = conn.connection.driver_connection
            if not isinstance(dbapi, sqlite3.Connection):
                raise TypeError(f"not a sqlite3 connection: {type(dbapi).__name__}")
            claims = _claims(dbapi)
            redacted = _redacted_ranges(dbapi)
            node = chain.chain_node(dbapi)
            (start,) = dbapi.execute("SELECT min(id) FROM samples").fetchone()
        for chunk in _chunks(claims, start, chunk_rows):
            if max_chunks is not None and done.chunks >= max_chunks:
                break
            with immediate_transaction(engine) as dbapi:
                rows, polls = _convert_chunk(dbapi, chunk, redacted, node)
            done = ConvertProgress(
                done.rows_done + rows, total, done.polls + polls, done.chunks + 1
            )
            if progress is not None:
                progress(done)
        if max_chunks is None:
            with engine.connect() as conn:
                left = conn.exec_driver_sql("SELECT min(id) FROM samples").scalar()
            if left is not None:
                raise ConvertError(
                    f"sample id {left} is covered by no chain entry: not converted "
                    "(cryoctl verify names it)"
                )
    finally:
        engine.dispose()
    return done
