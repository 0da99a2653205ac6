"""Append-only audit trail, hash-chained so that rewriting history shows.

Each row's ``hash`` is the SHA-256 of the canonical JSON (sorted keys, no
spaces, UTF-8) of ``{"seq", "at", "kind", "payload", "prev_hash"}``; the first
row's ``prev_hash`` is 64 zeros. ``append`` runs inside the transaction of the
thing it records, so the two commit or vanish together. A chain on its own
only proves that nobody edited a row *without recomputing the rest*; the
head (seq + hash) returned by ``append`` must also be kept outside the
database (the service writes it to its log), and ``verify(...,
expected_head=...)`` then catches a recomputed chain too.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, text
from sqlalchemy.orm import Session

from .db import DbSpec, engine_for
from .models import AuditEntry, format_utc, utcnow

GENESIS_HASH = "0" * 64
HEAD_LOG_EVENT = "audit_head"


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The newest row of the chain; keep a copy outside the database."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    first_bad_seq: int | None
    reason: str
    rows: int
    head: AuditHead | None


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return format_utc(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"audit payload value of type {type(value).__name__} is not JSON")


def canonical_json(value: Any) -> str:
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_default,
    )


def entry_hash(seq: int, at: str, kind: str, payload: Any, prev_hash: str) -> str:
    body = {"seq": seq, "at": at, "kind": kind, "payload": payload, "prev_hash": prev_hash}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def current_head(session: Session | Connection) -> AuditHead | None:
    row = session.execute(text("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")).first()
    return None if row is None else AuditHead(int(row[0]), str(row[1]))


def append(
    session: Session,
    kind: str,
    payload: Mapping[str, Any],
    *,
    at: dt.datetime | None = None,
) -> AuditHead:
    """Add one entry in the caller's transaction; returns the new head.

    The head is also left in ``session.info["audit_head"]`` so the writer can
    hand it to the service after the COMMIT.
    """
    if "patient_ref" in payload:
        raise ValueError("audit payloads never carry a patient reference")
    prev = current_head(session)
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS_HASH if prev is None else prev.hash
    when = at or utcnow()
    at_text = format_utc(when)
    payload_text = canonical_json(payload)
    digest = entry_hash(seq, at_text, kind, json.loads(payload_text), prev_hash)
    session.execute(
        insert(AuditEntry).values(
            seq=seq, at=when, kind=kind, payload=payload_text, prev_hash=prev_hash, hash=digest
        )
    )
    head = AuditHead(seq, digest)
    session.info["audit_head"] = head
    return head


def _normalise_heads(
    expected: AuditHead | tuple[int, str] | Sequence[AuditHead | tuple[int, str]] | None,
) -> list[AuditHead]:
    if expected is None:
        return []
    if isinstance(expected, AuditHead):
        return [expected]
    if (
        isinstance(expected, tuple)
        and len(expected) == 2
        and isinstance(expected[0], int)
        and isinstance(expected[1], str)
    ):
        return [AuditHead(expected[0], expected[1])]
    out: list[AuditHead] = []
    for item in expected:
        if isinstance(item, AuditHead):
            out.append(item)
        else:
            seq, digest = item
            out.append(AuditHead(int(seq), str(digest)))
    # the newest record of each seq wins; sorted for one pass
    by_seq = {h.seq: h for h in out}
    return [by_seq[s] for s in sorted(by_seq)]


def _read_rows(db: Session | Connection | DbSpec) -> list[tuple[Any, ...]]:
    query = text("SELECT seq, at, kind, payload, prev_hash, hash FROM audit ORDER BY seq")
    if isinstance(db, (Session, Connection)):
        return [tuple(r) for r in db.execute(query)]
    engine, owned = engine_for(db)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query)]
    finally:
        if owned:
            engine.dispose()


def verify(
    db: Session | Connection | Engine | str | os.PathLike[str],
    expected_head: AuditHead
    | tuple[int, str]
    | Sequence[AuditHead | tuple[int, str]]
    | None = None,
) -> VerifyResult:
    """Walk the chain and name the first row that was edited, deleted or reordered.

    ``expected_head`` is the head (or several heads, e.g. every one the
    service logged) recorded outside the database: with it, a chain
    recomputed after tampering, or rows cut off the end, are caught too.
    """
    rows = _read_rows(db)
    heads = _normalise_heads(expected_head)
    head_i = 0
    last_good_checkpoint = 0
    prev_hash = GENESIS_HASH
    expect_seq = 1
    head: AuditHead | None = None

    def bad(seq: int, reason: str) -> VerifyResult:
        return VerifyResult(False, seq, reason, len(rows), head)

    for seq_raw, at, kind, payload_text, prev, digest in rows:
        seq = int(seq_raw)
        if seq != expect_seq:
            return bad(
                expect_seq,
                f"row {expect_seq} is missing (deleted or renumbered); the next row is {seq}",
            )
        if prev != prev_hash:
            return bad(
                seq,
                f"row {seq}: prev_hash does not match row {seq - 1}'s hash "
                "(a row was deleted, inserted or reordered)",
            )
        try:
            payload = json.loads(payload_text)
        except (TypeError, ValueError):
            return bad(seq, f"row {seq}: payload is not valid JSON (row edited)")
        if entry_hash(seq, str(at), str(kind), payload, str(prev)) != digest:
            return bad(seq, f"row {seq}: hash does not match the row's content (row edited)")
        while head_i < len(heads) and heads[head_i].seq < seq:
            head_i += 1
        if head_i < len(heads) and heads[head_i].seq == seq:
            if heads[head_i].hash != digest:
                first = last_good_checkpoint + 1
                return bad(
                    first,
                    f"row {seq}: hash differs from the head recorded outside the database; "
                    f"rows {first}..{seq} were rewritten and the chain recomputed",
                )
            last_good_checkpoint = seq
        prev_hash = str(digest)
        head = AuditHead(seq, str(digest))
        expect_seq += 1

    if heads and heads[-1].seq > (head.seq if head else 0):
        last = head.seq if head else 0
        return bad(
            last + 1,
            f"rows after {last} are missing: a head at seq {heads[-1].seq} was recorded "
            "outside the database",
        )
    return VerifyResult(True, None, "ok", len(rows), head)


def heads_from_log(lines: Iterable[str]) -> list[AuditHead]:
    """Chain heads the service logged (JSON lines with ``event == "audit_head"``).

    A journald priority prefix such as ``<6>`` is skipped.
    """
    out: list[AuditHead] = []
    for line in lines:
        line = line.strip()
        if line.startswith("<") and ">" in line[:4]:
            line = line[line.index(">") + 1 :]
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("event") == HEAD_LOG_EVENT:
            seq, digest = obj.get("seq"), obj.get("hash")
            if isinstance(seq, int) and isinstance(digest, str):
                out.append(AuditHead(seq, digest))
    return out
