"""Follow-up in the collector's database: every change by a named user, audited.

Procedures are read from what the rooms sent (``received_rows``: the newest
version of each ``procedures`` and ``cycles`` row, and of the procedure-day
record's ``procedure_study``, ``pain_assessments`` and ``adverse_events`` rows,
less what a room later redacted). Follow-up rows (assessments, later adverse events and further
interventions, signatures, withdrawals) are this module's; each change
appends one audit entry in the same transaction, naming who (``by``), the
row (``table``, ``id``), the procedure, the salted digest of the new
content, the fields changed and why (``reason``). The chain never holds the
content itself, so a withdrawal can erase it (content and salt) and leave a
``redacted`` entry; ``verify --self`` then lists it as a redaction.

Audit kinds: ``followup_recorded``, ``followup_corrected``, ``event_recorded``,
``event_changed``, ``event_signed``, ``subject_withdrawn``, ``redacted``,
``exported``. Nothing here asks for a password or prints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session

from cryod.integrity import Head, decode_row, new_salt
from cryod.research.followup import (
    FINAL_STATUSES,
    FollowedProcedure,
    FollowUpAssessment,
    check_assessment,
    local_date,
    window_for,
)
from cryod.research.partial_dates import parse_partial
from cryod.research.problems import Problem, ResearchDataError
from cryod.research.profile import StudyProfile
from cryod.research.record import AdverseEventRecord
from cryod.research.validation import check_adverse_event, parse_model

from .admin import Actor, NotPermitted, Refused
from .exports import FollowUpEvent, StudyData
from .followup import (
    ASSESSMENT_TABLE,
    EVENT_TABLE,
    ProcedureView,
    StoredFollowUp,
    content_digest,
    cycle_from_columns,
    may_read,
    may_record,
    may_sign,
    procedure_from_columns,
    room_record,
    signature_meaning,
    subject_digest,
)
from .store import audit
from .store.models import (
    AuditEntry,
    FollowUpAssessmentRow,
    FollowUpEventRow,
    ReceivedEntry,
    ReceivedRow,
    Room,
    SignatureRow,
    WithdrawalRow,
)

__all__ = [
    "EventView",
    "ProcedureFollowUp",
    "SignedEvent",
    "StudySnapshot",
    "WithdrawalReport",
    "change_event",
    "event_view",
    "find_procedure",
    "procedure_followup",
    "record_assessment",
    "record_event",
    "record_export",
    "sign_event",
    "snapshot",
    "stored_followup",
    "study_data",
    "study_procedures",
    "withdraw",
    "withdrawn_digests",
]


# ---- procedures, from what the rooms sent ----------------------------------------------
def _redacted_keys(session: Session) -> set[tuple[str, str, str]]:
    """(node, table, key JSON text) of every row a room redacted (entries with no row)."""
    has_row = exists().where(
        and_(ReceivedRow.node == ReceivedEntry.node, ReceivedRow.seq == ReceivedEntry.seq)
    )
    out: set[tuple[str, str, str]] = set()
    for node, payload in session.execute(
        select(ReceivedEntry.node, ReceivedEntry.payload).where(
            ReceivedEntry.kind == "row", ~has_row
        )
    ):
        if isinstance(payload, dict) and payload.get("op") == "redact":
            out.add((node, str(payload.get("table")), _key_text(payload.get("key"))))
    return out


def _key_text(key: Any) -> str:
    if isinstance(key, dict):
        return ",".join(f"{k}={key[k]}" for k in sorted(key))
    return str(key)


def _newest_rows(session: Session, table: str) -> dict[tuple[str, str], tuple[int, bytes]]:
    """(node, key) -> (seq, canonical) of the newest received version of each row."""
    out: dict[tuple[str, str], tuple[int, bytes]] = {}
    for node, seq, key, canonical in session.execute(
        select(ReceivedRow.node, ReceivedRow.seq, ReceivedRow.key, ReceivedRow.canonical)
        .where(ReceivedRow.table_name == table)
        .order_by(ReceivedRow.node, ReceivedRow.seq)
    ):
        out[(node, _key_text(key))] = (seq, canonical)
    return out


def _rows_by_procedure(
    session: Session, table: str, redacted: set[tuple[str, str, str]]
) -> dict[tuple[str, int], list[tuple[int, Any]]]:
    """(node, procedure id) -> [(seq, decoded columns)] of a table's newest rows, redacted
    ones left out, in the room's id order."""
    out: dict[tuple[str, int], list[tuple[int, Any]]] = {}
    for (node, key), (seq, canonical) in _newest_rows(session, table).items():
        if (node, table, key) in redacted:
            continue
        cols = decode_row(canonical).columns
        pid = cols.get("procedure_id", (None, None))[1]
        if isinstance(pid, int):
            row_id = cols.get("id", (None, pid))[1]
            out.setdefault((node, pid), []).append(
                (row_id if isinstance(row_id, int) else seq, cols)
            )
    for rows in out.values():
        rows.sort(key=lambda r: r[0])
    return out


def _with_record(
    view: ProcedureView,
    study_rows: dict[tuple[str, int], list[tuple[int, Any]]],
    pain_rows: dict[tuple[str, int], list[tuple[int, Any]]],
    ae_rows: dict[tuple[str, int], list[tuple[int, Any]]],
    profiles: dict[str, StudyProfile],
) -> ProcedureView:
    k = (view.node, view.procedure_id)
    found = study_rows.get(k)
    if not found:
        return view
    record, problems = room_record(
        found[-1][1],
        [cols for _id, cols in pain_rows.get(k, [])],
        [cols for _id, cols in ae_rows.get(k, [])],
        profiles,
    )
    return dataclasses.replace(view, record=record, record_problems=tuple(problems))


def study_procedures(session: Session, study: str, site: str | None = None) -> list[ProcedureView]:
    """The study's procedures as the rooms last sent them (redacted ones left out), each
    with the room's procedure-day record when it was opened under a study profile."""
    sites = {r.node: r.site for r in session.execute(select(Room)).scalars()}
    redacted = _redacted_keys(session)
    procedures: dict[tuple[str, int], ProcedureView] = {}
    for (node, key), (_seq, canonical) in _newest_rows(session, "procedures").items():
        if (node, "procedures", key) in redacted:
            continue
        room_site = sites.get(node, "")
        if site is not None and room_site != site:
            continue
        view = procedure_from_columns(node, room_site, decode_row(canonical).columns)
        if view is not None and view.study == study:
            procedures[(node, view.procedure_id)] = view
    cycles: dict[tuple[str, int], list[Any]] = {}
    for (node, key), (_seq, canonical) in _newest_rows(session, "cycles").items():
        if (node, "cycles", key) in redacted:
            continue
        found = cycle_from_columns(decode_row(canonical).columns)
        if found is not None and (node, found[0]) in procedures:
            cycles.setdefault((node, found[0]), []).append(found[1])
    study_rows = _rows_by_procedure(session, "procedure_study", redacted)
    pain_rows = _rows_by_procedure(session, "pain_assessments", redacted)
    ae_rows = _rows_by_procedure(session, "adverse_events", redacted)
    profiles: dict[str, StudyProfile] = {}
    out = []
    for k, view in procedures.items():
        cs = tuple(sorted(cycles.get(k, []), key=lambda c: c.cycle_id))
        full = _with_record(
            dataclasses.replace(view, cycles=cs), study_rows, pain_rows, ae_rows, profiles
        )
        out.append(full)
    return sorted(out, key=lambda v: (v.opened_at, str(v.procedure_uuid)))


def withdrawn_digests(session: Session, study: str) -> set[str]:
    return set(
        session.execute(
            select(WithdrawalRow.subject_digest).where(WithdrawalRow.study == study)
        ).scalars()
    )


def _is_withdrawn(session: Session, study: str, subject: str) -> bool:
    return subject_digest(study, subject) in withdrawn_digests(session, study)


def find_procedure(
    session: Session, study: str, subject: str, procedure: uuid.UUID | None
) -> ProcedureView:
    procs = [p for p in study_procedures(session, study) if p.subject == subject]
    if not procs:
        raise Refused(f"subject: no procedure of subject {subject!r} in study {study} was received")
    if procedure is None:
        if len(procs) > 1:
            listed = ", ".join(str(p.procedure_uuid) for p in procs)
            raise Refused(
                f"procedure: subject {subject!r} has {len(procs)} procedures; name one with "
                f"--procedure ({listed})"
            )
        return procs[0]
    for p in procs:
        if p.procedure_uuid == procedure:
            return p
    raise Refused(
        f"procedure: {procedure} is not a procedure of subject {subject!r} in study {study}"
    )


def _require(ok: bool, actor: Actor, what: str) -> None:
    if not ok:
        raise NotPermitted(f"{actor.name} may not {what}")


def _append(
    session: Session, *, node: str, kind: str, payload: dict[str, Any], now: dt.datetime
) -> Head:
    return audit.append(session, node=node, kind=kind, payload=payload, at=now)


# ---- assessments --------------------------------------------------------------------------
def _assessment_content(profile: StudyProfile, a: FollowUpAssessment) -> dict[str, Any]:
    pain = profile.instruments.pain
    content: dict[str, Any] = a.model_dump(mode="json")
    if a.pain_score is not None:
        content["pain_scale"] = pain.scale.value
        content["recall_period"] = pain.recall_period.value
    if a.qol_total is not None:
        content["qol_instrument"] = profile.instruments.qol.name
        content["qol_version"] = profile.instruments.qol.version
    fn = profile.instruments.function
    if a.function_score is not None and fn is not None:
        content["function_instrument"] = fn.name
        content["function_version"] = fn.version
    return content


def _ended_follow_up(session: Session, proc: ProcedureView) -> str | None:
    """The status that ended this subject's follow-up, if one did."""
    for content in session.execute(
        select(FollowUpAssessmentRow.content).where(
            FollowUpAssessmentRow.subject == proc.subject,
            FollowUpAssessmentRow.study == (proc.study or ""),
        )
    ).scalars():
        if isinstance(content, dict) and content.get("status") in {s.value for s in FINAL_STATUSES}:
            return str(content["status"])
    return None


def record_assessment(
    session: Session,
    actor: Actor,
    profile: StudyProfile,
    *,
    subject: str,
    procedure: uuid.UUID | None,
    data: Mapping[str, Any],
    reason: str | None,
    now: dt.datetime,
    node: str,
) -> tuple[Head, int, bool]:
    """Record (or, with a reason, correct) one time point; (head, row id, in window)."""
    study = profile.study.id
    if _is_withdrawn(session, study, subject):
        raise Refused(f"subject: {subject!r} withdrew from study {study}; no further follow-up")
    proc = find_procedure(session, study, subject, procedure)
    _require(
        may_record(actor.grants, study, proc.site),
        actor,
        f"record follow-up in {study} at {proc.site}",
    )
    today = local_date(now, profile.zone)
    a = parse_model(FollowUpAssessment, data, prefix="follow_up")
    problems = check_assessment(profile, a, opened_at=proc.opened_at, today=today)
    if problems:
        raise ResearchDataError(problems)
    if (
        a.time_point == profile.follow_up.baseline
        and a.pain_score is not None
        and proc.record is not None
        and proc.record.baseline_pain is not None
    ):
        raise Refused(
            f"follow_up.pain_score: the room recorded the baseline pain of this procedure "
            f"before the first freeze ({proc.record.baseline_pain.score:g}); the room's value "
            "is the baseline (correct it in the room), so the collector records none"
        )
    ended = _ended_follow_up(session, proc)
    existing = session.execute(
        select(FollowUpAssessmentRow).where(
            FollowUpAssessmentRow.procedure_uuid == str(proc.procedure_uuid),
            FollowUpAssessmentRow.time_point == a.time_point,
        )
    ).scalar_one_or_none()
    if ended is not None and existing is None:
        raise Refused(f"subject: follow-up of {subject!r} ended ({ended}); no further time points")
    content = _assessment_content(profile, a)
    salt = new_salt()
    if existing is None:
        row = FollowUpAssessmentRow(
            study=study,
            site=proc.site,
            subject=subject,
            procedure_uuid=str(proc.procedure_uuid),
            time_point=a.time_point,
            content=content,
            salt=salt.hex(),
            digest="0" * 64,
            recorded_at=now,
            recorded_by=actor.name,
            audit_seq=0,
        )
        session.add(row)
        session.flush()
        kind, changed = "followup_recorded", sorted(content)
    else:
        if reason is None:
            raise Refused(
                f"reason: {a.time_point} of this procedure is recorded already; a correction "
                "needs --reason"
            )
        row = existing
        old = row.content if isinstance(row.content, dict) else {}
        changed = sorted(k for k in set(old) | set(content) if old.get(k) != content.get(k))
        if not changed:
            raise Refused("follow_up: nothing changed")
        row.content = content
        row.salt = salt.hex()
        row.recorded_at = now
        row.recorded_by = actor.name
        kind = "followup_corrected"
    row.digest = content_digest(ASSESSMENT_TABLE, row.id, content, salt)
    payload: dict[str, Any] = {
        "table": ASSESSMENT_TABLE,
        "id": row.id,
        "op": "insert" if kind == "followup_recorded" else "update",
        "study": study,
        "procedure": str(proc.procedure_uuid),
        "time_point": a.time_point,
        "digest": row.digest,
        "fields": changed,
        "by": actor.name,
        "reason": reason,
    }
    head = _append(session, node=node, kind=kind, payload=payload, now=now)
    row.audit_seq = head.seq
    session.flush()
    in_window = True
    tp = next((t for t in profile.follow_up_points if t.id == a.time_point), None)
    if tp is not None:
        w = window_for(
            FollowedProcedure(proc.procedure_uuid, proc.subject, proc.opened_at), tp, profile.zone
        )
        in_window = w.contains(a.assessed_on)
    return head, row.id, in_window


# ---- adverse events and further interventions after close --------------------------------
def _event_problems(
    profile: StudyProfile, proc: ProcedureView, ae: AdverseEventRecord, now: dt.datetime
) -> list[Problem]:
    problems = check_adverse_event(ae, opened_at=proc.opened_at, tz=profile.zone, prefix="event")
    if ae.onset is not None and parse_partial(ae.onset).earliest(profile.zone) > now:
        problems.append(Problem("event.onset", f"{ae.onset} is in the future"))
    return problems


def _event_content(ae: AdverseEventRecord, event_id: int) -> dict[str, Any]:
    data = ae.model_dump(mode="json", exclude_none=True)
    data["ae_id"] = event_id
    return data


def record_event(
    session: Session,
    actor: Actor,
    profile: StudyProfile,
    *,
    subject: str,
    procedure: uuid.UUID | None,
    data: Mapping[str, Any],
    now: dt.datetime,
    node: str,
) -> tuple[Head, int]:
    study = profile.study.id
    if _is_withdrawn(session, study, subject):
        raise Refused(f"subject: {subject!r} withdrew from study {study}")
    proc = find_procedure(session, study, subject, procedure)
    _require(
        may_record(actor.grants, study, proc.site),
        actor,
        f"record events in {study} at {proc.site}",
    )
    ae = parse_model(
        AdverseEventRecord, {k: v for k, v in data.items() if v is not None}, prefix="event"
    )
    problems = _event_problems(profile, proc, ae, now)
    if problems:
        raise ResearchDataError(problems)
    row = FollowUpEventRow(
        study=study,
        site=proc.site,
        subject=subject,
        procedure_uuid=str(proc.procedure_uuid),
        content=None,
        salt=None,
        digest="0" * 64,
        version=1,
        recorded_at=now,
        recorded_by=actor.name,
        audit_seq=0,
    )
    session.add(row)
    session.flush()
    content = _event_content(ae, row.id)
    head = _seal_event(session, row, content, ae, actor, node=node, now=now,
                       kind="event_recorded", fields=sorted(content), reason=None)  # fmt: skip
    return head, row.id


def _event(session: Session, event_id: int) -> FollowUpEventRow:
    row = session.get(FollowUpEventRow, event_id)
    if row is None:
        raise Refused(f"event: no follow-up event {event_id}")
    if row.redacted_seq is not None or row.content is None:
        raise Refused(f"event: {event_id} was redacted (consent withdrawn)")
    return row


def _signature(session: Session, row: FollowUpEventRow) -> SignatureRow | None:
    """The signature of the event's current version, if signed."""
    return session.execute(
        select(SignatureRow)
        .where(SignatureRow.event_id == row.id, SignatureRow.event_version == row.version)
        .order_by(SignatureRow.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _was_signed(session: Session, row: FollowUpEventRow) -> bool:
    return (
        session.execute(
            select(SignatureRow.id).where(SignatureRow.event_id == row.id).limit(1)
        ).first()
        is not None
    )


def change_event(
    session: Session,
    actor: Actor,
    profile: StudyProfile,
    *,
    event_id: int,
    changes: Mapping[str, Any],
    reason: str | None,
    now: dt.datetime,
    node: str,
) -> tuple[Head, int]:
    """A new version of an event; a signed event changes only with a reason (and is then
    unsigned until an investigator signs the new version)."""
    row = _event(session, event_id)
    _require(
        may_record(actor.grants, row.study, row.site),
        actor,
        f"change events in {row.study} at {row.site}",
    )
    signed = _was_signed(session, row)
    if signed and reason is None:
        raise Refused(
            f"reason: event {event_id} is signed; a change to a signed event needs --reason"
        )
    old: dict[str, Any] = dict(row.content or {})
    merged = {**old, **dict(changes.items())}
    merged = {k: v for k, v in merged.items() if v is not None and k != "ae_id"}
    ae = parse_model(AdverseEventRecord, merged, prefix="event")
    proc = find_procedure(session, row.study, str(row.subject), uuid.UUID(row.procedure_uuid))
    problems = _event_problems(profile, proc, ae, now)
    if problems:
        raise ResearchDataError(problems)
    content = _event_content(ae, row.id)
    changed = sorted(k for k in set(old) | set(content) if old.get(k) != content.get(k))
    if not changed:
        raise Refused("event: nothing changed")
    row.version += 1
    row.recorded_at, row.recorded_by = now, actor.name
    head = _seal_event(session, row, content, ae, actor, node=node, now=now,
                       kind="event_changed", fields=changed, reason=reason,
                       was_signed=signed)  # fmt: skip
    return head, row.version


def _seal_event(
    session: Session,
    row: FollowUpEventRow,
    content: dict[str, Any],
    ae: AdverseEventRecord,
    actor: Actor,
    *,
    node: str,
    now: dt.datetime,
    kind: str,
    fields: list[str],
    reason: str | None,
    was_signed: bool | None = None,
) -> Head:
    """Store ``content`` in the event row with a fresh salt and its digest, and append the
    chain entry (``event_recorded`` for version 1, ``event_changed`` after) that covers it."""
    salt = new_salt()
    row.content, row.salt = content, salt.hex()
    row.digest = content_digest(EVENT_TABLE, row.id, content, salt)
    payload: dict[str, Any] = {
        "table": EVENT_TABLE,
        "id": row.id,
        "op": "insert" if row.version == 1 else "update",
        "version": row.version,
        "study": row.study,
        "procedure": row.procedure_uuid,
        "category": ae.category.value,
        "digest": row.digest,
        "fields": fields,
        "by": actor.name,
        "reason": reason,
    }
    if was_signed is not None:
        payload["was_signed"] = was_signed
    head = _append(session, node=node, kind=kind, payload=payload, now=now)
    row.audit_seq = head.seq
    session.flush()
    return head


@dataclass(frozen=True, slots=True)
class SignedEvent:
    head: Head
    event_id: int
    version: int
    meaning: str


def event_for_signing(session: Session, event_id: int) -> tuple[dict[str, Any], int]:
    """What the signer sees before signing: the event's content and version."""
    row = _event(session, event_id)
    return dict(row.content or {}), row.version


def sign_event(
    session: Session, actor: Actor, *, event_id: int, now: dt.datetime, node: str
) -> SignedEvent:
    row = _event(session, event_id)
    _require(
        may_sign(actor.grants, row.study, row.site),
        actor,
        f"sign events in {row.study} at {row.site} (investigators sign)",
    )
    if _signature(session, row) is not None:
        raise Refused(f"event: {event_id} version {row.version} is signed already")
    meaning = signature_meaning(actor.name, row.id, row.version)
    sig = SignatureRow(
        event_id=row.id,
        event_version=row.version,
        digest=row.digest,
        signer=actor.name,
        meaning=meaning,
        signed_at=now,
        audit_seq=0,
    )
    session.add(sig)
    session.flush()
    head = _append(
        session,
        node=node,
        kind="event_signed",
        payload={
            "signature": sig.id,
            "event": row.id,
            "version": row.version,
            "digest": row.digest,
            "meaning": meaning,
            "by": actor.name,
        },
        now=now,
    )
    sig.audit_seq = head.seq
    session.flush()
    return SignedEvent(head, row.id, row.version, meaning)


# ---- what one procedure has (the web app's procedure page and forms) -----------------------
@dataclass(frozen=True, slots=True)
class EventView:
    """An event after close as it stands: its current version and that version's signature."""

    id: int
    study: str
    site: str
    procedure_uuid: str
    version: int
    content: dict[str, Any]
    recorded_at: dt.datetime
    recorded_by: str
    signed_by: str | None  # of the current version
    signed_at: dt.datetime | None
    was_signed: bool  # some version was (a change to it needs a reason)


@dataclass(frozen=True, slots=True)
class ProcedureFollowUp:
    #: time point -> the recorded assessment's content (with who and when)
    assessments: dict[str, dict[str, Any]]
    events: list[EventView]


def _event_view(session: Session, row: FollowUpEventRow) -> EventView:
    sig = _signature(session, row)
    return EventView(
        id=row.id,
        study=row.study,
        site=row.site,
        procedure_uuid=row.procedure_uuid,
        version=row.version,
        content=dict(row.content or {}),
        recorded_at=row.recorded_at,
        recorded_by=row.recorded_by,
        signed_by=None if sig is None else sig.signer,
        signed_at=None if sig is None else sig.signed_at,
        was_signed=sig is not None or _was_signed(session, row),
    )


def procedure_followup(session: Session, procedure_uuid: uuid.UUID) -> ProcedureFollowUp:
    """The follow-up recorded for one procedure (redacted rows left out)."""
    key = str(procedure_uuid)
    assessments: dict[str, dict[str, Any]] = {}
    for a in session.execute(
        select(FollowUpAssessmentRow).where(
            FollowUpAssessmentRow.procedure_uuid == key,
            FollowUpAssessmentRow.redacted_seq.is_(None),
        )
    ).scalars():
        if isinstance(a.content, dict):
            assessments[a.time_point] = {
                **a.content,
                "recorded_at": a.recorded_at,
                "recorded_by": a.recorded_by,
            }
    events = [
        _event_view(session, row)
        for row in session.execute(
            select(FollowUpEventRow)
            .where(
                FollowUpEventRow.procedure_uuid == key,
                FollowUpEventRow.redacted_seq.is_(None),
                FollowUpEventRow.content.is_not(None),
            )
            .order_by(FollowUpEventRow.id)
        ).scalars()
    ]
    return ProcedureFollowUp(assessments, events)


def event_view(session: Session, event_id: int) -> EventView:
    """One event (``Refused`` if there is none or it was redacted)."""
    return _event_view(session, _event(session, event_id))


# ---- withdrawal ---------------------------------------------------------------------------
@dataclass
class WithdrawalReport:
    head: Head
    redacted: dict[str, int]
    rooms: list[str]
    exports: list[dict[str, Any]] = field(default_factory=list)


def withdraw(
    session: Session,
    actor: Actor,
    profile: StudyProfile,
    *,
    subject: str,
    reason: str,
    now: dt.datetime,
    node: str,
) -> WithdrawalReport:
    """Consent withdrawn: erase the subject's follow-up rows (content and salt; digests
    kept, a ``redacted`` entry each), stop their follow-up, list where copies remain."""
    study = profile.study.id
    if not reason.strip():
        raise Refused("reason: a withdrawal states its reason")
    procs = [p for p in study_procedures(session, study) if p.subject == subject]
    if not procs:
        raise Refused(f"subject: no procedure of subject {subject!r} in study {study} was received")
    for p in procs:
        _require(
            may_record(actor.grants, study, p.site),
            actor,
            f"withdraw subjects in {study} at {p.site}",
        )
    digest = subject_digest(study, subject)
    if _is_withdrawn(session, study, subject):
        raise Refused(f"subject: {subject!r} has already withdrawn from study {study}")
    redacted = {ASSESSMENT_TABLE: 0, EVENT_TABLE: 0}
    tables: Sequence[tuple[str, Any]] = (
        (ASSESSMENT_TABLE, FollowUpAssessmentRow),
        (EVENT_TABLE, FollowUpEventRow),
    )
    for table, model in tables:
        rows = session.execute(
            select(model).where(model.study == study, model.subject == subject).order_by(model.id)
        ).scalars()
        for row in rows:
            head = _append(
                session,
                node=node,
                kind="redacted",
                payload={
                    "table": table,
                    "id": row.id,
                    "op": "redact",
                    "digest": row.digest,
                    "by": actor.name,
                    "reason": "consent withdrawn",
                },
                now=now,
            )
            row.content, row.salt, row.subject = None, None, None
            row.redacted_seq = head.seq
            redacted[table] += 1
    head = _append(
        session,
        node=node,
        kind="subject_withdrawn",
        payload={
            "study": study,
            "subject_digest": digest,
            "redacted": redacted,
            "by": actor.name,
            "reason": reason,
        },
        now=now,
    )
    session.add(
        WithdrawalRow(
            study=study,
            subject_digest=digest,
            reason=reason,
            withdrawn_at=now,
            withdrawn_by=actor.name,
            audit_seq=head.seq,
        )
    )
    session.flush()
    exports = [
        {
            "entry": e.seq,
            "at": e.at.isoformat(),
            "format": e.payload.get("format"),
            "path": e.payload.get("path"),
        }
        for e in session.execute(
            select(AuditEntry).where(AuditEntry.kind == "exported").order_by(AuditEntry.seq)
        ).scalars()
        if isinstance(e.payload, dict)
        and e.payload.get("study") == study
        and digest in (e.payload.get("subjects") or [])
    ]
    return WithdrawalReport(head, redacted, sorted({p.node for p in procs}), exports)


# ---- exports -------------------------------------------------------------------------------
def record_export(
    session: Session,
    actor: Actor,
    *,
    study: str,
    site: str | None,
    fmt: str,
    path: str,
    subjects: Sequence[str],
    files: Mapping[str, str],
    now: dt.datetime,
    node: str,
) -> Head:
    """The export itself, audited: who, what, where, which subjects (as digests)."""
    _require(may_read(actor.grants, study, site), actor, f"export study {study}")
    return _append(
        session,
        node=node,
        kind="exported",
        payload={
            "study": study,
            "site": site,
            "format": fmt,
            "path": path,
            "subjects": sorted(subject_digest(study, s) for s in set(subjects)),
            "files": dict(files),
            "by": actor.name,
        },
        now=now,
    )


# ---- reading it all back ----------------------------------------------------------------
@dataclass
class StudySnapshot:
    """Everything of one study the exports and the summary need (withdrawn subjects out)."""

    procedures: list[ProcedureView]
    assessments: list[tuple[str, dict[str, Any], str]]  # procedure uuid, content, subject
    events: list[
        tuple[int, str, dict[str, Any], str, bool]
    ]  # id, procedure, content, subject, signed
    withdrawn: int


def snapshot(session: Session, study: str, site: str | None = None) -> StudySnapshot:
    gone = withdrawn_digests(session, study)
    procs = [
        p
        for p in study_procedures(session, study, site)
        if subject_digest(study, p.subject) not in gone
    ]
    uuids = {str(p.procedure_uuid) for p in procs}
    assessments = [
        (r.procedure_uuid, dict(r.content), str(r.subject))
        for r in session.execute(
            select(FollowUpAssessmentRow)
            .where(FollowUpAssessmentRow.study == study)
            .order_by(FollowUpAssessmentRow.id)
        ).scalars()
        if r.content is not None and r.procedure_uuid in uuids
    ]
    events = []
    for r in session.execute(
        select(FollowUpEventRow)
        .where(FollowUpEventRow.study == study)
        .order_by(FollowUpEventRow.id)
    ).scalars():
        if r.content is None or r.procedure_uuid not in uuids:
            continue
        events.append(
            (
                r.id,
                r.procedure_uuid,
                dict(r.content),
                str(r.subject),
                _signature(session, r) is not None,
            )
        )
    return StudySnapshot(procs, assessments, events, len(gone))


def stored_followup(session: Session) -> list[StoredFollowUp]:
    out = [
        StoredFollowUp(ASSESSMENT_TABLE, r.id, r.content, r.salt, r.digest, r.redacted_seq)
        for r in session.execute(select(FollowUpAssessmentRow)).scalars()
    ]
    out += [
        StoredFollowUp(EVENT_TABLE, r.id, r.content, r.salt, r.digest, r.redacted_seq)
        for r in session.execute(select(FollowUpEventRow)).scalars()
    ]
    return out


def followed(procs: Sequence[ProcedureView]) -> list[FollowedProcedure]:
    return [FollowedProcedure(p.procedure_uuid, p.subject, p.opened_at) for p in procs]


_ASSESSMENT_EXTRA = (
    "pain_scale",
    "recall_period",
    "qol_instrument",
    "qol_version",
    "function_instrument",
    "function_version",
)


def study_data(profile: StudyProfile, snap: StudySnapshot, generated_at: dt.datetime) -> StudyData:
    """The exports' and summary's input from a snapshot (contents re-validated)."""
    assessments = tuple(
        (
            uuid.UUID(u),
            FollowUpAssessment.model_validate(
                {k: v for k, v in content.items() if k not in _ASSESSMENT_EXTRA}
            ),
        )
        for u, content, _subject in snap.assessments
    )
    events = tuple(
        FollowUpEvent(event_id, uuid.UUID(u), AdverseEventRecord.model_validate(content), signed)
        for event_id, u, content, _subject, signed in snap.events
    )
    return StudyData(profile, tuple(snap.procedures), assessments, events, generated_at)
