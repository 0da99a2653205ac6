"""The procedure log's tables, as SQLAlchemy 2 typed ORM classes.

These classes describe the schema at the newest migration; the schema itself
is created and changed only by the Alembic migrations (``migrations/``), and a
test checks that the two agree. The MetaData has a naming convention so that
Alembic's batch mode on SQLite can find constraints by name.

Record times (``*_at``) are UTC and stored as fixed-width ISO 8601 text
(``2026-01-02T03:04:05.678901Z``) so a copy opened in any SQLite tool is
readable and sorts correctly; sample polls carry ``t_utc`` as REAL epoch
seconds (volume matters there) plus ``t_mono``, the host's monotonic clock.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from cryod.research.vocab import AeCategory, AeSubcategory, PainScale

from ..procedure_fields import AdverseEvent, Anaesthesia, Imaging, Indication, Side

__all__ = [
    "AdverseEvent",
    "AdverseEventRow",
    "Alarm",
    "AlarmPriority",
    "Anaesthesia",
    "AuditEntry",
    "Base",
    "Cycle",
    "Imaging",
    "Indication",
    "OperatorAction",
    "OutboxItemRow",
    "OutboxKind",
    "Outcome",
    "PainAssessmentRow",
    "Phase",
    "Procedure",
    "ProcedureStudy",
    "RowSalt",
    "SamplePoll",
    "SampleProbe",
    "SampleState",
    "Side",
    "UtcDateTime",
    "format_utc",
    "metadata",
    "parse_utc",
    "utc_from_epoch",
    "utcnow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Phase(enum.StrEnum):
    FREEZE = "freeze"
    THAW = "thaw"


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    STOPPED = "stopped"
    ABORTED = "aborted"
    FAULTED = "faulted"
    INTERRUPTED = "interrupted"


class AlarmPriority(enum.StrEnum):
    """IEC 60601-1-8 priorities plus information signals."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


class OutboxKind(enum.StrEnum):
    ALARM = "alarm"
    CYCLE = "cycle"


def _in(column: str, values: Iterable[enum.StrEnum], *, nullable: bool = False) -> str:
    listed = ", ".join(f"'{v.value}'" for v in values)
    expr = f"{column} IN ({listed})"
    return f"{column} IS NULL OR {expr}" if nullable else expr


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetime stored as fixed-width ISO 8601 text with a Z."""

    impl = String(27)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise ValueError("record times must be timezone-aware datetimes (UTC)")
        return format_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return parse_utc(str(value))


def format_utc(value: dt.datetime) -> str:
    """Fixed-width ISO 8601 UTC text, the one form used in the DB, audit and exports."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def utc_from_epoch(t_utc: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t_utc, tz=dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UtcDateTime(), dict[str, Any]: JSON()}


class Procedure(Base):
    """One patient procedure on one console; metadata at open, outcome data at close."""

    __tablename__ = "procedures"
    __table_args__ = (
        CheckConstraint(_in("indication", Indication), name="indication"),
        CheckConstraint(_in("side", Side), name="side"),
        CheckConstraint(_in("imaging", Imaging), name="imaging"),
        CheckConstraint(_in("anaesthesia", Anaesthesia), name="anaesthesia"),
        CheckConstraint("closed_at IS NULL OR closed_at >= opened_at", name="closed_after_open"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    console: Mapped[str] = mapped_column(String(64))  # console name in the daemon config
    opened_at: Mapped[dt.datetime]
    closed_at: Mapped[dt.datetime | None]
    patient_ref: Mapped[str] = mapped_column(String(32))  # pseudonym, validated at open
    indication: Mapped[str] = mapped_column(String(32))
    indication_other: Mapped[str | None] = mapped_column(Text)
    site: Mapped[str] = mapped_column(String(128))
    side: Mapped[str] = mapped_column(String(16))
    imaging: Mapped[str] = mapped_column(String(16))
    anaesthesia: Mapped[str] = mapped_column(String(16))
    operator: Mapped[str] = mapped_column(String(64))
    study_id: Mapped[str | None] = mapped_column(String(64))
    probe_model: Mapped[str | None] = mapped_column(String(64))
    probe_lot: Mapped[str | None] = mapped_column(String(64))
    console_model: Mapped[str | None] = mapped_column(String(64))
    console_serial: Mapped[str | None] = mapped_column(String(64))
    console_firmware: Mapped[str | None] = mapped_column(String(64))
    software_version: Mapped[str] = mapped_column(String(32))
    host_only_limits: Mapped[bool] = mapped_column(default=False)
    notes: Mapped[str | None] = mapped_column(Text)
    # list of {"code": AdverseEvent, "text": str|None}; NULL = not yet recorded, [] = none
    adverse_events: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    closed_by: Mapped[str | None] = mapped_column(String(64))


class Cycle(Base):
    """One freeze or thaw of one probe; committed before its valve opens."""

    __tablename__ = "cycles"
    __table_args__ = (
        CheckConstraint(_in("phase", Phase), name="phase"),
        CheckConstraint(_in("outcome", Outcome, nullable=True), name="outcome"),
        CheckConstraint("probe >= 1", name="probe_positive"),
        Index(None, "procedure_id", "probe"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    procedure_id: Mapped[int] = mapped_column(ForeignKey("procedures.id"))
    probe: Mapped[int]
    phase: Mapped[str] = mapped_column(String(8))
    step_index: Mapped[int]
    protocol: Mapped[str | None] = mapped_column(String(64))
    planned_s: Mapped[float | None] = mapped_column(Float)
    target_tip_c: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]
    started_mono: Mapped[float] = mapped_column(Float)
    ended_mono: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str | None] = mapped_column(String(16))
    outcome_reason: Mapped[str | None] = mapped_column(Text)
    min_tip_c: Mapped[float | None] = mapped_column(Float)
    time_to_target_s: Mapped[float | None] = mapped_column(Float)
    time_below_m20_s: Mapped[float | None] = mapped_column(Float)
    time_below_m40_s: Mapped[float | None] = mapped_column(Float)
    thaw_to_0_s: Mapped[float | None] = mapped_column(Float)
    supply_start_kpa: Mapped[float | None] = mapped_column(Float)
    supply_end_kpa: Mapped[float | None] = mapped_column(Float)
    gas_used_est_l: Mapped[float | None] = mapped_column(Float)
    host_only_limits: Mapped[bool] = mapped_column(default=False)
    # why a time below -20/-40 °C is NULL or a lower bound (daemon/figures.py); NULL: whole
    figures_note: Mapped[str | None] = mapped_column(Text)


class LegacySample(Base):
    """Samples as cryod wrote them before revision 0006: one row per polled value.

    Kept for databases written by an older cryod until ``cryod migrate`` has
    converted them into the compact tables below (the daemon refuses to start
    while any row is left); nothing writes here any more.
    """

    __tablename__ = "samples"
    __table_args__ = (
        Index(None, "console", "t_utc"),
        Index(None, "procedure_id", "t_utc"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    procedure_id: Mapped[int | None] = mapped_column(ForeignKey("procedures.id"))
    console: Mapped[str] = mapped_column(String(64))
    t_utc: Mapped[float] = mapped_column(Float)
    t_mono: Mapped[float] = mapped_column(Float)
    probe: Mapped[int]
    channel: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float)
    validity: Mapped[str] = mapped_column(String(16))


_VALIDITY_CODE = "{0} IS NULL OR {0} IN (0, 1, 2, 3)"


class SamplePoll(Base):
    """One poll of one console (revision 0006): its clocks, procedure and the console's
    analog channels; ``*_v`` is the value's validity code (0 valid, 1 questionable,
    2 invalid, 3 stale; NULL: not polled). See store/samples.py and docs/data-model.md."""

    __tablename__ = "sample_polls"
    __table_args__ = (
        # the report, recovery and retention: a console's or a procedure's polls in time
        Index(None, "console", "t_utc"),
        Index(None, "procedure_id", "t_utc"),
        CheckConstraint(_VALIDITY_CODE.format("supply_v"), name="supply_v"),
        CheckConstraint(_VALIDITY_CODE.format("cylinder_v"), name="cylinder_v"),
        CheckConstraint(_VALIDITY_CODE.format("skin_v"), name="skin_v"),
        CheckConstraint(_VALIDITY_CODE.format("console_time_v"), name="console_time_v"),
        CheckConstraint("full_state IN (0, 1)", name="full_state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    procedure_id: Mapped[int | None] = mapped_column(ForeignKey("procedures.id"))
    console: Mapped[str] = mapped_column(String(64))
    t_utc: Mapped[float] = mapped_column(Float)
    t_mono: Mapped[float] = mapped_column(Float)
    full_state: Mapped[int] = mapped_column(Integer)
    supply_kpa: Mapped[float | None] = mapped_column(Float)
    supply_v: Mapped[int | None] = mapped_column(Integer)
    cylinder_kpa: Mapped[float | None] = mapped_column(Float)
    cylinder_v: Mapped[int | None] = mapped_column(Integer)
    skin_c: Mapped[float | None] = mapped_column(Float)
    skin_v: Mapped[int | None] = mapped_column(Integer)
    console_time_s: Mapped[float | None] = mapped_column(Float)
    console_time_v: Mapped[int | None] = mapped_column(Integer)


class SampleProbe(Base):
    """One probe's analog channels in one poll (revision 0006); WITHOUT ROWID, keyed by
    (poll, probe), so the key is the only index."""

    __tablename__ = "sample_probes"
    __table_args__ = (
        CheckConstraint("probe >= 1", name="probe_positive"),
        CheckConstraint(_VALIDITY_CODE.format("tip_v"), name="tip_v"),
        CheckConstraint(_VALIDITY_CODE.format("return_v"), name="return_v"),
        {"sqlite_with_rowid": False},
    )

    poll_id: Mapped[int] = mapped_column(ForeignKey("sample_polls.id"), primary_key=True)
    probe: Mapped[int] = mapped_column(Integer, primary_key=True)
    tip_c: Mapped[float | None] = mapped_column(Float)
    tip_v: Mapped[int | None] = mapped_column(Integer)
    return_kpa: Mapped[float | None] = mapped_column(Float)
    return_v: Mapped[int | None] = mapped_column(Integer)


class SampleState(Base):
    """A state channel's value in a poll where it changed, or every state channel in a
    poll with ``full_state`` (revision 0006); validity NULL: no longer polled."""

    __tablename__ = "sample_states"
    __table_args__ = (
        CheckConstraint(_VALIDITY_CODE.format("validity"), name="validity"),
        {"sqlite_with_rowid": False},
    )

    poll_id: Mapped[int] = mapped_column(ForeignKey("sample_polls.id"), primary_key=True)
    probe: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)
    validity: Mapped[int | None] = mapped_column(Integer)


class Alarm(Base):
    __tablename__ = "alarms"
    __table_args__ = (
        CheckConstraint(_in("priority", AlarmPriority), name="priority"),
        Index(None, "procedure_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    procedure_id: Mapped[int | None] = mapped_column(ForeignKey("procedures.id"))
    console: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(8))
    probe: Mapped[int | None]
    message: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[dt.datetime]
    acked_at: Mapped[dt.datetime | None]
    acked_by: Mapped[str | None] = mapped_column(String(64))
    cleared_at: Mapped[dt.datetime | None]


class OperatorAction(Base):
    """Every operator request, accepted or refused, with the reason."""

    __tablename__ = "operator_actions"
    __table_args__ = (Index(None, "procedure_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    procedure_id: Mapped[int | None] = mapped_column(ForeignKey("procedures.id"))
    console: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[dt.datetime]
    who: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    accepted: Mapped[bool]
    reason: Mapped[str | None] = mapped_column(Text)


class AuditEntry(Base):
    """The chain: append-only, hash-chained; SQLite triggers refuse UPDATE and DELETE.

    ``v`` is the entry's format (1: before revision 0004, hashed as canonical
    JSON without a node; 2: ``cryod.entry/1`` with the node, see
    docs/integrity.md). ``node`` names the chain (NULL on v1 entries).
    """

    __tablename__ = "audit"
    # the row entries, for exports and verify; partial, so a sample batch's entry
    # (four a second) does not touch it
    __table_args__ = (Index("ix_audit_rows", "seq", sqlite_where=text("kind = 'row'")),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime]
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON text of the hashed payload
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    v: Mapped[int] = mapped_column(Integer, server_default="1")
    node: Mapped[str | None] = mapped_column(String(64))


class RowSalt(Base):
    """Each research row's salt (revision 0004), kept beside the data and never in the
    chain: redaction erases it with the row, so the digest the chain keeps can no
    longer confirm a guess of the content."""

    __tablename__ = "row_salts"

    tbl: Mapped[str] = mapped_column(String(64), primary_key=True)
    row_key: Mapped[str] = mapped_column(Text, primary_key=True)  # canonical JSON of the key
    salt: Mapped[str] = mapped_column(String(32))  # 16 bytes, hex


class OutboxItemRow(Base):
    """Alarm and cycle events not yet delivered over MQTT (added in revision 0002)."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(_in("kind", OutboxKind), name="kind"),
        Index(None, "delivered_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]
    delivered_at: Mapped[dt.datetime | None]


class ProcedureStudy(Base):
    """The study side of a procedure opened under a study profile (revision 0007): the
    profile it was recorded under (id, version, content hash and the profile itself,
    so exports need no file), consent, patient selection and procedure details.

    Selection and details are the JSON of ``cryod.research.record.Selection`` and
    ``ProcedureDetails``, checked against the profile before the row is written."""

    __tablename__ = "procedure_study"

    procedure_id: Mapped[int] = mapped_column(ForeignKey("procedures.id"), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(64))
    profile_version: Mapped[str] = mapped_column(String(32))
    profile_hash: Mapped[str] = mapped_column(String(71))  # sha256:<64 hex>
    profile: Mapped[str] = mapped_column(Text)  # the profile's canonical JSON (hashed)
    consent_confirmed: Mapped[bool | None]
    consent_form_version: Mapped[str | None] = mapped_column(String(32))
    selection: Mapped[dict[str, Any]] = mapped_column(JSON)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    recorded_at: Mapped[dt.datetime]


class PainAssessmentRow(Base):
    """A pain score of the procedure's subject at a time point of the profile: the
    baseline, taken before the first freeze (an assessment, never an adverse event)."""

    __tablename__ = "pain_assessments"
    __table_args__ = (
        CheckConstraint(_in("scale", PainScale), name="scale"),
        CheckConstraint("score >= 0 AND score <= 100", name="score_range"),
        Index(None, "procedure_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    procedure_id: Mapped[int] = mapped_column(ForeignKey("procedures.id"))
    time_point: Mapped[str] = mapped_column(String(32))
    scale: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)
    recall_period: Mapped[str] = mapped_column(String(16))
    assessed_at: Mapped[dt.datetime]
    recorded_at: Mapped[dt.datetime]
    recorded_by: Mapped[str] = mapped_column(String(64))


class AdverseEventRow(Base):
    """One adverse event noticed from open to close (revision 0007); each column is a
    field of ``cryod.research.record.AdverseEventRecord``. Dates are ISO 8601 text,
    partial allowed (``2026``, ``2026-03``). A row migrated from the old yes/no codes
    has subcategory ``unspecified_migrated`` and says why in ``migration_reason``."""

    __tablename__ = "adverse_events"
    __table_args__ = (
        CheckConstraint(_in("category", AeCategory), name="category"),
        CheckConstraint(_in("subcategory", AeSubcategory), name="subcategory"),
        CheckConstraint(
            "ctcae_grade IS NULL OR (ctcae_grade >= 1 AND ctcae_grade <= 5)", name="grade"
        ),
        Index(None, "procedure_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    procedure_id: Mapped[int] = mapped_column(ForeignKey("procedures.id"))
    category: Mapped[str] = mapped_column(String(32))
    subcategory: Mapped[str] = mapped_column(String(32))
    verbatim_term: Mapped[str] = mapped_column(Text)
    onset: Mapped[str | None] = mapped_column(String(40))
    resolution: Mapped[str | None] = mapped_column(String(40))
    ctcae_grade: Mapped[int | None]
    serious: Mapped[bool | None]
    seriousness_criteria: Mapped[list[str]] = mapped_column(JSON)
    relatedness_device: Mapped[str | None] = mapped_column(String(16))
    relatedness_procedure: Mapped[str | None] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(32))
    action_taken: Mapped[str | None] = mapped_column(String(32))
    further_intervention: Mapped[str | None] = mapped_column(String(32))
    further_intervention_date: Mapped[str | None] = mapped_column(String(40))
    yellow_card_ref: Mapped[str | None] = mapped_column(String(40))
    migration_reason: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[dt.datetime]
    recorded_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime | None]
    updated_by: Mapped[str | None] = mapped_column(String(64))


metadata = Base.metadata
