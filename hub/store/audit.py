"""The collector's own audit chain: every change it makes, one entry each.

The same format as a room's chain (``cryod.entry/1``, hashed by
``cryod.integrity.entry_hash``): ``(seq, at, node, kind, payload, prev_hash)``
and its hash, ``node`` being ``[collector] id``. An entry is appended in the
same transaction as the change it records; its head then leaves the database
(``cryod.hub.anchors``: the journal and the anchor file) after the COMMIT.

Concurrent writers are serialised: on PostgreSQL by a transaction-scoped
advisory lock, on SQLite by ``BEGIN IMMEDIATE`` (``db.writer``); the primary
key on ``seq`` refuses a second entry at the same place whatever happens.

Kinds written so far: ``database_created``, ``migrated``, ``user_added``,
``user_disabled``, ``password_changed``, ``room_registered``. Every entry
made for a person names them in ``by``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from cryod.integrity import GENESIS_HASH, Entry, Head, entry_hash, format_time

from .db import StoreError
from .models import AuditEntry

__all__ = ["CHAIN_LOCK", "append", "entries", "head"]

#: pg_advisory_xact_lock key of the audit chain ("cryohub" in ASCII)
CHAIN_LOCK: Final = 0x6372796F687562


def head(session: Session) -> Head | None:
    row = session.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    return None if row is None else Head(row.seq, row.hash)


def append(
    session: Session, *, node: str, kind: str, payload: dict[str, Any], at: dt.datetime
) -> Head:
    """Append one entry (flushed, not committed) and return the new head."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CHAIN_LOCK})
    last = session.execute(
        select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)
    ).scalar_one_or_none()
    if last is not None and last.node != node:
        raise StoreError(
            f"the database's audit chain belongs to collector {last.node!r}, this one is "
            f"{node!r} ([collector] id): another collector's database?"
        )
    seq = 1 if last is None else last.seq + 1
    prev = GENESIS_HASH if last is None else last.hash
    at_text = format_time(at)
    stored_at = dt.datetime.strptime(at_text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    digest = entry_hash(seq, at_text, node, kind, payload, prev)
    session.add(
        AuditEntry(
            seq=seq,
            at=stored_at,
            node=node,
            kind=kind,
            payload=payload,
            prev_hash=prev,
            hash=digest,
        )
    )
    session.flush()
    return Head(seq, digest)


def entries(session: Session) -> list[Entry]:
    """The whole chain in seq order, as ``cryod.integrity`` checks it."""
    rows = session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars()
    return [
        Entry(
            seq=r.seq,
            at=format_time(r.at),
            kind=r.kind,
            payload=r.payload,
            prev_hash=r.prev_hash,
            hash=r.hash,
            node=r.node,
            v=2,
        )
        for r in rows
    ]
