"""The audit trail: the events of the record, entries of the database's one chain.

``append`` adds an event (kind + JSON payload) as a chain entry inside the
transaction of the thing it records, so the two commit or vanish together.
The chain itself (entry formats, hashes, what covers the research rows and
samples) is ``cryod.integrity`` and ``chain.py``; docs/integrity.md is the
specification.

A chain on its own only proves that nobody edited an entry *without
recomputing the rest*; its head (seq + hash) also leaves the database (the
anchors: the journal, an anchor file, MQTT; see ``daemon/anchoring.py``) and
``verify(..., expected_head=...)`` then catches a recomputed chain too.
``verify`` here walks the chain only; ``store.verify`` checks everything.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from cryod.integrity import (
    GENESIS_HASH,
    UNPARSABLE,
    AnchorHead,
    Entry,
    Head,
    check_anchors,
    check_chain,
    parse_heads,
    restores,
)

from . import chain
from .db import DbSpec, engine_for

__all__ = [
    "ENTRY_COLUMNS",
    "GENESIS_HASH",
    "HEAD_LOG_EVENT",
    "AuditHead",
    "VerifyResult",
    "append",
    "canonical_json",
    "current_head",
    "entry_of_row",
    "heads_from_log",
    "read_entries",
    "verify",
]

HEAD_LOG_EVENT = "audit_head"

#: the newest entry of the chain; keep a copy outside the database
AuditHead = Head
canonical_json = chain.canonical_json


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    first_bad_seq: int | None
    reason: str
    rows: int
    head: AuditHead | None


def current_head(session: Session | Connection) -> AuditHead | None:
    conn = session.connection() if isinstance(session, Session) else session
    found = chain.read_head(conn)
    return None if found is None else found[0]


def append(
    session: Session,
    kind: str,
    payload: Mapping[str, Any],
    *,
    at: dt.datetime | None = None,
) -> AuditHead:
    """Add one event in the caller's transaction; returns the new head.

    The head is also left in ``session.info["audit_head"]`` so the writer can
    hand it to the service after the COMMIT.
    """
    if "patient_ref" in payload:
        raise ValueError("audit payloads never carry a patient reference")
    return chain.append(
        session.connection(),
        kind,
        payload,
        at=at,
        node=session.info.get("node"),
        info=session.info,
    )


#: the audit columns an ``Entry`` is read from, in ``entry_of_row``'s order
ENTRY_COLUMNS = "seq, at, kind, payload, prev_hash, hash, v, node"
_ENTRY_QUERY = f"SELECT {ENTRY_COLUMNS} FROM audit ORDER BY seq"  # noqa: S608


def entry_of_row(row: Sequence[Any]) -> Entry:
    """An audit row (``ENTRY_COLUMNS``) as the entry ``cryod.integrity`` checks; a
    payload that is not JSON reads as ``UNPARSABLE`` and a version that is not an
    integer as -1, so a damaged row is a failed check, not an exception."""
    seq, at, kind, payload_text, prev, digest, v, node = row
    try:
        payload = json.loads(payload_text)
    except (TypeError, ValueError):
        payload = UNPARSABLE
    return Entry(
        seq=int(seq),
        at=str(at),
        kind=str(kind),
        payload=payload,
        prev_hash=str(prev),
        hash=str(digest),
        node=None if node is None else str(node),
        v=int(v) if isinstance(v, int) else -1,
    )


def read_entries(db: Session | Connection | DbSpec) -> list[Entry]:
    """Every chain entry, in seq order, as ``cryod.integrity`` reads them."""
    if isinstance(db, (Session, Connection)):
        return [entry_of_row(r) for r in db.execute(text(_ENTRY_QUERY))]
    engine, owned = engine_for(db)
    try:
        with engine.connect() as conn:
            return [entry_of_row(r) for r in conn.execute(text(_ENTRY_QUERY))]
    finally:
        if owned:
            engine.dispose()


def _anchor_heads(
    expected: AuditHead | tuple[int, str] | Sequence[AuditHead | tuple[int, str]] | None,
) -> list[AnchorHead]:
    if expected is None:
        return []
    if isinstance(expected, Head):
        expected = [expected]
    elif (
        isinstance(expected, tuple)
        and len(expected) == 2
        and isinstance(expected[0], int)
        and isinstance(expected[1], str)
    ):
        expected = [Head(expected[0], expected[1])]
    out = []
    for i, item in enumerate(expected, 1):
        seq, digest = (item.seq, item.hash) if isinstance(item, Head) else item
        out.append(AnchorHead(int(seq), str(digest), None, i))
    return out


def verify(
    db: Session | Connection | Engine | str | os.PathLike[str],
    expected_head: AuditHead
    | tuple[int, str]
    | Sequence[AuditHead | tuple[int, str]]
    | None = None,
) -> VerifyResult:
    """Walk the chain and name the first entry that was edited, deleted or reordered.

    ``expected_head`` is the head (or several heads, e.g. every one the
    service logged) recorded outside the database: with it, a chain
    recomputed after tampering, or entries cut off the end, are caught too.
    """
    entries = read_entries(db)
    walk = check_chain(entries)
    if not walk.ok:
        return VerifyResult(False, walk.first_bad_seq, walk.reason, len(entries), walk.head)
    heads = _anchor_heads(expected_head)
    if heads:
        hashes = {e.seq: e.hash for e in entries}
        report = check_anchors("the expected head", hashes, walk.head, heads, restores(entries))
        if not report.ok:
            first = report.problems[0]
            return VerifyResult(False, first.seq, first.detail, len(entries), walk.head)
    return VerifyResult(True, None, "ok", len(entries), walk.head)


def heads_from_log(lines: Iterable[str]) -> list[AuditHead]:
    """Chain heads the service logged (JSON lines with ``event == "audit_head"``).

    A journald priority prefix such as ``<6>`` is skipped.
    """
    return [Head(h.seq, h.hash) for h in parse_heads(lines) if h.line]
