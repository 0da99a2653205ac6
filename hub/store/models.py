"""The collector's tables, as SQLAlchemy 2 typed ORM classes.

The schema itself is created and changed only by the Alembic migrations
(``migrations/``); ``tests/hub/test_schema.py`` checks that both agree on
PostgreSQL and on SQLite. The MetaData has a naming convention so Alembic's
batch mode on SQLite finds constraints by name.

- ``rooms``: registered nodes, and the first entry of theirs the collector holds;
- ``received_entries``: each room's chain entries as received and verified,
  with the receive time and the room's clock skew; ``received_rows`` and
  ``received_blocks``: the canonical bytes (and salts) those entries cover,
  stored as received so ``verify`` re-hashes them (query columns come with
  the exports and the web app);
- ``held``: messages waiting for a gap to fill or a study profile to be
  registered; ``gaps``: missing ranges, when seen and when closed;
- ``quarantine``: what was never merged (unregistered node, fork, corrupt,
  malformed), with the raw message and the reason;
- ``users`` and ``user_grants``: people, argon2 hashes and scoped roles;
- ``audit``: the collector's own chain (every change it makes), the same
  entry format as a room's chain (``cryod.entry/1``).

Follow-up (revision 0002, docs/followup.md): ``followup_assessments``
(one per procedure and time point), ``followup_events`` (adverse events and
further interventions found after close), ``signatures`` (investigators'
electronic signatures of those events), ``withdrawals`` (consent withdrawn).
Each follow-up row keeps a salt and the salted digest of its content; the
audit chain holds the digest, never the content, so a withdrawn subject's
rows are erased (content and salt) while the chain still shows they existed.

Received entries, rows, blocks and the audit chain are append-only (triggers
on both databases, created by the migration).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .types import Bytes, Json, UtcDateTime

__all__ = [
    "APPEND_ONLY",
    "AuditEntry",
    "Base",
    "FollowUpAssessmentRow",
    "FollowUpEventRow",
    "Gap",
    "Held",
    "Quarantined",
    "ReceivedBlock",
    "ReceivedEntry",
    "ReceivedRow",
    "Room",
    "SignatureRow",
    "User",
    "UserGrant",
    "WithdrawalRow",
    "metadata",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: tables whose rows are never updated or deleted (triggers refuse it)
APPEND_ONLY = ("audit", "received_entries", "received_rows", "received_blocks")

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Base(DeclarativeBase):
    metadata = metadata


class Room(Base):
    __tablename__ = "rooms"

    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    #: the broker user the room publishes as (ACL per user) ...
    credential: Mapped[str | None] = mapped_column(String(128))
    #: ... or the SHA-256 fingerprint of its client certificate (64 hex)
    cert_sha256: Mapped[str | None] = mapped_column(String(64))
    #: the first entry of the room's chain the collector holds (1: all of it)
    first_seq: Mapped[int] = mapped_column(Integer)
    #: its hash when first_seq > 1 (the head the room showed at registration)
    first_hash: Mapped[str | None] = mapped_column(String(64))
    registered_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    registered_by: Mapped[str] = mapped_column(String(64))
    #: the collector's audit entry that recorded the registration
    audit_seq: Mapped[int] = mapped_column(Integer)


class ReceivedEntry(Base):
    __tablename__ = "received_entries"

    node: Mapped[str] = mapped_column(String(64), ForeignKey("rooms.node"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[Any] = mapped_column(Json)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    v: Mapped[int] = mapped_column(SmallInteger)
    profile_id: Mapped[str | None] = mapped_column(String(64))
    profile_version: Mapped[str | None] = mapped_column(String(32))
    profile_hash: Mapped[str | None] = mapped_column(String(71))
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    #: receive time minus the room's sent_at, seconds
    skew_s: Mapped[float] = mapped_column(Float)
    skew_flagged: Mapped[bool] = mapped_column(Boolean)
    #: the room sent the entry without its content, and why (superseded, redacted,
    #: not_procedure) and by which later entry (revision h0003)
    withheld_reason: Mapped[str | None] = mapped_column(String(16))
    withheld_by_seq: Mapped[int | None] = mapped_column(Integer)


class ReceivedRow(Base):
    __tablename__ = "received_rows"
    __table_args__ = (
        ForeignKeyConstraint(
            ["node", "seq"],
            ["received_entries.node", "received_entries.seq"],
            name="fk_received_rows_entry",
        ),
        Index("ix_received_rows_node_table_name", "node", "table_name"),
    )

    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    position: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    table_name: Mapped[str] = mapped_column(String(64))
    key: Mapped[Any] = mapped_column(Json)
    canonical: Mapped[bytes] = mapped_column(Bytes)
    salt: Mapped[bytes] = mapped_column(Bytes)
    digest: Mapped[str] = mapped_column(String(64))


class ReceivedBlock(Base):
    __tablename__ = "received_blocks"
    __table_args__ = (
        ForeignKeyConstraint(
            ["node", "seq"],
            ["received_entries.node", "received_entries.seq"],
            name="fk_received_blocks_entry",
        ),
    )

    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    encoding: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(Bytes)
    digest: Mapped[str] = mapped_column(String(64))


class Held(Base):
    __tablename__ = "held"

    node: Mapped[str] = mapped_column(String(64), ForeignKey("rooms.node"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(16))  # gap | profile
    detail: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(Bytes)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class Gap(Base):
    __tablename__ = "gaps"
    __table_args__ = (Index("ix_gaps_node_closed_at", "node", "closed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(64), ForeignKey("rooms.node"))
    first_seq: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int] = mapped_column(Integer)
    detected_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class Quarantined(Base):
    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_node_seq", "node", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    #: malformed | unregistered | site | corrupt | fork | profile
    reason: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(String(64))  # as the message named it
    seq: Mapped[int | None] = mapped_column(Integer)
    hash: Mapped[str | None] = mapped_column(String(64))
    topic: Mapped[str | None] = mapped_column(String(255))
    raw: Mapped[bytes] = mapped_column(Bytes)
    skew_s: Mapped[float | None] = mapped_column(Float)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    password_changed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    disabled_by: Mapped[str | None] = mapped_column(String(64))


class UserGrant(Base):
    __tablename__ = "user_grants"
    __table_args__ = (UniqueConstraint("user_id", "role", "study", "site"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id"))
    role: Mapped[str] = mapped_column(String(16))
    study: Mapped[str | None] = mapped_column(String(64))
    site: Mapped[str | None] = mapped_column(String(64))


class AuditEntry(Base):
    __tablename__ = "audit"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    node: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[Any] = mapped_column(Json)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


# ---- follow-up (revision 0002, docs/followup.md) ----------------------------------------------
class FollowUpAssessmentRow(Base):
    """One time point of one procedure: status, mode, scores (content erased on withdrawal)."""

    __tablename__ = "followup_assessments"
    __table_args__ = (
        UniqueConstraint("procedure_uuid", "time_point"),
        Index("ix_followup_assessments_study_subject", "study", "subject"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(32))  # NULL once redacted
    procedure_uuid: Mapped[str] = mapped_column(String(36))
    time_point: Mapped[str] = mapped_column(String(32))
    content: Mapped[Any | None] = mapped_column(Json)  # FollowUpAssessment + instruments
    salt: Mapped[str | None] = mapped_column(String(32))
    digest: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    recorded_by: Mapped[str] = mapped_column(String(64))
    audit_seq: Mapped[int] = mapped_column(Integer)
    redacted_seq: Mapped[int | None] = mapped_column(Integer)


class FollowUpEventRow(Base):
    """An adverse event (or further intervention) found after the procedure closed."""

    __tablename__ = "followup_events"
    __table_args__ = (Index("ix_followup_events_study_subject", "study", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(32))
    procedure_uuid: Mapped[str] = mapped_column(String(36))
    content: Mapped[Any | None] = mapped_column(Json)  # AdverseEventRecord (JSON mode)
    salt: Mapped[str | None] = mapped_column(String(32))
    digest: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)  # 1, then +1 per change
    recorded_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    recorded_by: Mapped[str] = mapped_column(String(64))
    audit_seq: Mapped[int] = mapped_column(Integer)
    redacted_seq: Mapped[int | None] = mapped_column(Integer)


class SignatureRow(Base):
    """An investigator's electronic signature of one version of a follow-up event."""

    __tablename__ = "signatures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, ForeignKey("followup_events.id"))
    event_version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))  # the event digest signed
    signer: Mapped[str] = mapped_column(String(64))
    meaning: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    audit_seq: Mapped[int] = mapped_column(Integer)


class WithdrawalRow(Base):
    """Consent withdrawn: no further follow-up, the subject's data out of every export."""

    __tablename__ = "withdrawals"
    __table_args__ = (UniqueConstraint("study", "subject_digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study: Mapped[str] = mapped_column(String(64))
    #: SHA-256 of "<study>/<pseudonym>": matches the subject's rows without keeping the name
    subject_digest: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    withdrawn_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    withdrawn_by: Mapped[str] = mapped_column(String(64))
    audit_seq: Mapped[int] = mapped_column(Integer)
