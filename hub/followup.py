"""Follow-up in the collector: the pure part (no database, no I/O).

- **Procedures** come from what the rooms sent: the newest stored version of
  each ``procedures`` and ``cycles`` row (``received_rows``, canonical bytes
  decoded with ``cryod.integrity.decode_row``), unless the room redacted it
  later. ``procedure_from_columns`` and ``cycle_from_columns`` turn decoded
  columns into what the schedule and the exports need.
- **The room's procedure-day record** (issue 19) comes the same way from the
  ``procedure_study``, ``pain_assessments`` and ``adverse_events`` rows:
  ``room_record`` builds a ``ProcedureDayRecord`` (profile stamp, consent,
  selection, details, the baseline pain taken before the first freeze, the
  adverse events noticed up to close). A row that does not validate is left
  out and named in ``ProcedureView.record_problems``, never guessed.
- **Digests**: a follow-up row's content is hashed as a ``cryod.row/1`` row
  (table, ``id``, ``content`` as JSON) with a per-row salt
  (``cryod.integrity.row_digest``); the audit chain holds the digest only.
  ``check_followup`` re-hashes every row against the newest chain entry for
  it and lists redactions apart from mismatches.
- **Who may**: a coordinator or investigator whose grant covers the study
  and site records follow-up and withdrawals; only an investigator signs;
  any role reads (export, summary).
- **Signatures**: the meaning shown before the password is asked, recorded
  with the signature and in the chain (21 CFR Part 11 style).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from pydantic import ValidationError

from cryod.integrity import Kind, encode_row, row_digest
from cryod.research.facts import ConsoleFacts, CycleFacts
from cryod.research.followup import DueState, FollowedProcedure, Window, due_state, schedule
from cryod.research.profile import StudyProfile, StudyProfileError
from cryod.research.record import AdverseEventRecord, PainAssessment, ProcedureDayRecord
from cryod.research.vocab import Coded, CycleOutcome, CyclePhase

from .access import Grant, Role

__all__ = [
    "ASSESSMENT_TABLE",
    "EVENT_TABLE",
    "SIGNATURE_MEANING",
    "DueItem",
    "FollowUpFinding",
    "FollowUpReport",
    "ProcedureView",
    "StoredFollowUp",
    "check_followup",
    "content_digest",
    "cycle_from_columns",
    "due_list",
    "may_read",
    "may_record",
    "may_sign",
    "newest_profiles",
    "procedure_from_columns",
    "room_record",
    "signature_meaning",
    "subject_digest",
]

ASSESSMENT_TABLE: Final = "followup_assessments"
EVENT_TABLE: Final = "followup_events"

#: what an investigator's signature of a follow-up event means (shown, then recorded)
SIGNATURE_MEANING: Final = (
    "Investigator review: I have reviewed this adverse event as recorded "
    "(category, grade, seriousness, relatedness, outcome and dates) and confirm "
    "that it is accurate and complete."
)


def signature_meaning(signer: str, event_id: int, version: int) -> str:
    return f"{SIGNATURE_MEANING} Signed by {signer} for event {event_id} version {version}."


# ---- procedures as the rooms sent them --------------------------------------------------
@dataclass(frozen=True, slots=True)
class ProcedureView:
    """One procedure of a room, from its newest received ``procedures`` row."""

    node: str
    site: str  # the room's site
    procedure_id: int  # the room's store number
    procedure_uuid: uuid.UUID
    subject: str  # the study pseudonym (patient_ref)
    study: str | None
    opened_at: dt.datetime
    closed_at: dt.datetime | None
    body_site: str | None
    side: str | None
    console: ConsoleFacts
    probe_model: str | None
    probe_lot: str | None
    cycles: tuple[CycleFacts, ...] = field(default=())
    #: the room's procedure-day record (procedure_study, pain_assessments, adverse_events)
    record: ProcedureDayRecord | None = None
    #: room rows of this procedure that did not validate (table, key and reason)
    record_problems: tuple[str, ...] = ()


def _time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    text = str(value)
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def _text(cols: Mapping[str, tuple[Kind, Any]], name: str) -> str | None:
    value = cols.get(name, (Kind.TEXT, None))[1]
    return None if value is None or value == "" else str(value)


def procedure_from_columns(
    node: str, site: str, cols: Mapping[str, tuple[Kind, Any]]
) -> ProcedureView | None:
    """A ``procedures`` row's decoded columns; ``None`` if it lacks what follow-up needs."""
    opened = _time(cols.get("opened_at", (Kind.TIME, None))[1])
    ref = _text(cols, "patient_ref")
    uid = _text(cols, "uuid")
    pid = cols.get("id", (Kind.INT, None))[1]
    if opened is None or ref is None or uid is None or not isinstance(pid, int):
        return None
    return ProcedureView(
        node=node,
        site=site,
        procedure_id=pid,
        procedure_uuid=uuid.UUID(uid),
        subject=ref,
        study=_text(cols, "study_id"),
        opened_at=opened,
        closed_at=_time(cols.get("closed_at", (Kind.TIME, None))[1]),
        body_site=_text(cols, "site"),
        side=_text(cols, "side"),
        console=ConsoleFacts(
            name=_text(cols, "console"),
            model=_text(cols, "console_model"),
            serial=_text(cols, "console_serial"),
            firmware=_text(cols, "console_firmware"),
        ),
        probe_model=_text(cols, "probe_model"),
        probe_lot=_text(cols, "probe_lot"),
    )


def _float(cols: Mapping[str, tuple[Kind, Any]], name: str) -> float | None:
    value = cols.get(name, (Kind.REAL, None))[1]
    return None if value is None else float(value)


_C = TypeVar("_C", bound=Coded)


def _member(vocab: type[_C], code: str) -> _C:
    for member in vocab:
        if member.value == code:
            return member
    raise ValueError(f"unknown code {code!r} of {vocab.__name__}")


def _int(cols: Mapping[str, tuple[Kind, Any]], name: str) -> int | None:
    value = cols.get(name, (Kind.INT, None))[1]
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def cycle_from_columns(cols: Mapping[str, tuple[Kind, Any]]) -> tuple[int, CycleFacts] | None:
    """(procedure id, cycle) from a ``cycles`` row's decoded columns."""
    started = _time(cols.get("started_at", (Kind.TIME, None))[1])
    pid = cols.get("procedure_id", (Kind.INT, None))[1]
    cid = cols.get("id", (Kind.INT, None))[1]
    phase = _text(cols, "phase")
    if started is None or not isinstance(pid, int) or not isinstance(cid, int) or phase is None:
        return None
    probe = cols.get("probe", (Kind.INT, 1))[1]
    outcome = _text(cols, "outcome")
    return pid, CycleFacts(
        cycle_id=cid,
        probe=probe if isinstance(probe, int) and probe >= 1 else 1,
        phase=_member(CyclePhase, phase),
        step_index=_int(cols, "step_index"),
        protocol=_text(cols, "protocol"),
        planned_s=_float(cols, "planned_s"),
        target_tip_c=_float(cols, "target_tip_c"),
        started_at=started,
        ended_at=_time(cols.get("ended_at", (Kind.TIME, None))[1]),
        duration_s=_float(cols, "duration_s"),
        outcome=None if outcome is None else _member(CycleOutcome, outcome),
        outcome_reason=_text(cols, "outcome_reason"),
        min_tip_c=_float(cols, "min_tip_c"),
        time_to_target_s=_float(cols, "time_to_target_s"),
        time_below_m20_s=_float(cols, "time_below_m20_s"),
        time_below_m40_s=_float(cols, "time_below_m40_s"),
        thaw_to_0_s=_float(cols, "thaw_to_0_s"),
        supply_start_kpa=_float(cols, "supply_start_kpa"),
        supply_end_kpa=_float(cols, "supply_end_kpa"),
        gas_used_est_l=_float(cols, "gas_used_est_l"),
    )


# ---- the room's procedure-day record (issue 19 tables) ----------------------------------
def _plain(cols: Mapping[str, tuple[Kind, Any]]) -> dict[str, Any]:
    return {name: value for name, (_kind, value) in cols.items()}


def _errors(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(row)'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


def room_record(
    study_cols: Mapping[str, tuple[Kind, Any]],
    pain_rows: Sequence[Mapping[str, tuple[Kind, Any]]],
    ae_rows: Sequence[Mapping[str, tuple[Kind, Any]]],
    profiles: dict[str, StudyProfile] | None = None,
) -> tuple[ProcedureDayRecord | None, list[str]]:
    """The procedure-day record from one procedure's decoded ``procedure_study`` row,
    its ``pain_assessments`` rows and its ``adverse_events`` rows (each in id order).

    The baseline is the first pain row at the baseline time point of the profile the
    room recorded under (its canonical JSON travels in the row and must hash to the
    stamp). Each adverse event keeps the room's row id as ``ae_id``. ``profiles``
    caches the profiles already parsed, by their JSON text. Returns the record
    (``None`` when the study row itself does not validate) and the problems."""
    problems: list[str] = []
    row = _plain(study_cols)
    text = str(row.get("profile"))
    cache = {} if profiles is None else profiles
    profile = cache.get(text)
    if profile is None:
        try:
            profile = StudyProfile.model_validate_json(text)
        except (ValidationError, StudyProfileError, ValueError) as exc:
            return None, [f"procedure_study: the profile does not validate ({_errors(exc)})"]
        cache[text] = profile
    if profile.content_hash != row.get("profile_hash"):
        return None, [
            f"procedure_study: the profile does not hash to {row.get('profile_hash')} (edited)"
        ]
    consent = (
        None
        if row.get("consent_confirmed") is None
        else {
            "confirmed": row["consent_confirmed"],
            "form_version": row.get("consent_form_version"),
        }
    )
    base = profile.follow_up.baseline
    baseline: PainAssessment | None = None
    for cols in pain_rows:
        pain = _plain(cols)
        if pain.get("time_point") != base or baseline is not None:
            continue
        try:
            baseline = PainAssessment.model_validate(
                {k: pain.get(k) for k in PainAssessment.model_fields}
            )
        except ValidationError as exc:
            problems.append(f"pain_assessments {pain.get('id')}: {_errors(exc)}")
    events: list[AdverseEventRecord] = []
    for cols in ae_rows:
        ae = _plain(cols)
        fields = {k: ae.get(k) for k in AdverseEventRecord.model_fields if k != "ae_id"}
        fields = {k: v for k, v in fields.items() if v is not None}
        try:
            events.append(AdverseEventRecord.model_validate({**fields, "ae_id": ae.get("id")}))
        except ValidationError as exc:
            problems.append(f"adverse_events {ae.get('id')}: {_errors(exc)}")
    try:
        record = ProcedureDayRecord.model_validate(
            {
                "profile": profile.stamp(),
                "consent": consent,
                "selection": row.get("selection") or {},
                "procedure": row.get("details") or {},
                "baseline_pain": baseline,
                "adverse_events": events,
            }
        )
    except ValidationError as exc:
        return None, [*problems, f"procedure_study: {_errors(exc)}"]
    return record, problems


# ---- digests ----------------------------------------------------------------------------
def subject_digest(study: str, subject: str) -> str:
    """Names a withdrawn subject in ``withdrawals`` without keeping the pseudonym there."""
    return hashlib.sha256(f"{study}/{subject}".encode()).hexdigest()


def content_digest(table: str, row_id: int, content: Any, salt: bytes) -> str:
    """The salted digest of a follow-up row's content (``cryod.row/1`` bytes)."""
    canonical = encode_row(
        table, ["id"], {"id": (Kind.INT, row_id), "content": (Kind.JSON, content)}
    )
    return row_digest(salt, canonical)


def newest_profiles(profiles: Iterable[StudyProfile]) -> dict[str, StudyProfile]:
    """Study id -> its newest configured profile (the one new data follows), by study id."""
    newest: dict[str, StudyProfile] = {}
    for p in profiles:
        if p.study.id not in newest or p.version > newest[p.study.id].version:
            newest[p.study.id] = p
    return dict(sorted(newest.items()))


# ---- who may --------------------------------------------------------------------------------
def _covers(grants: Iterable[Grant], roles: set[Role], study: str, site: str) -> bool:
    return any(g.role in roles and g.covers_scope(study, site) for g in grants)


def may_record(grants: Iterable[Grant], study: str, site: str) -> bool:
    return _covers(grants, {Role.COORDINATOR, Role.INVESTIGATOR}, study, site)


def may_sign(grants: Iterable[Grant], study: str, site: str) -> bool:
    return _covers(grants, {Role.INVESTIGATOR}, study, site)


def may_read(grants: Iterable[Grant], study: str, site: str | None) -> bool:
    """One grant covers ``study`` at ``site`` (None: the whole study, which needs a grant
    not scoped to a site; a site grant of this study and an unscoped one of another study
    are not the whole study)."""
    return any(g.covers_scope(study, site) for g in grants)


# ---- verification of the follow-up tables ---------------------------------------------
@dataclass(frozen=True, slots=True)
class StoredFollowUp:
    """A follow-up row as stored: its content and salt (``None`` once redacted), digest."""

    table: str
    row_id: int
    content: Any
    salt: str | None
    digest: str
    redacted_seq: int | None


@dataclass(frozen=True, slots=True)
class FollowUpFinding:
    table: str
    row_id: int
    problem: str


@dataclass
class FollowUpReport:
    checked: int = 0
    findings: list[FollowUpFinding] = field(default_factory=list)
    redactions: list[tuple[str, int, int]] = field(default_factory=list)  # table, id, entry

    @property
    def ok(self) -> bool:
        return not self.findings

    def lines(self) -> list[str]:
        out = [
            f"follow-up: {self.checked} row(s) re-hashed against the chain"
            + (", consistent" if self.ok else f", {len(self.findings)} problem(s)")
        ]
        out += [f"  {f.table} {f.row_id}: {f.problem}" for f in self.findings]
        out += [
            f"  {table} {row_id}: redacted (consent withdrawn) at entry {seq}"
            for table, row_id, seq in self.redactions
        ]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "ok": self.ok,
            "findings": [
                {"table": f.table, "id": f.row_id, "problem": f.problem} for f in self.findings
            ],
            "redactions": [{"table": t, "id": i, "entry": s} for t, i, s in self.redactions],
        }


def check_followup(rows: Sequence[StoredFollowUp], entries: Iterable[Any]) -> FollowUpReport:
    """Each follow-up row against the newest chain entry naming it (``table``, ``id``).

    A row's digest must be the entry's; a row with content must re-hash to it
    with its salt; a row the chain redacted must hold no content or salt; a
    row the chain never named, or a chain row missing from the table, is a
    finding.
    """
    newest: dict[tuple[str, int], Any] = {}
    for e in entries:
        p = e.payload
        if isinstance(p, dict) and p.get("table") in (ASSESSMENT_TABLE, EVENT_TABLE):
            rid = p.get("id")
            if isinstance(rid, int):
                newest[(str(p["table"]), rid)] = e
    report = FollowUpReport()
    seen: set[tuple[str, int]] = set()
    for r in rows:
        key = (r.table, r.row_id)
        seen.add(key)
        e = newest.get(key)
        if e is None:
            report.findings.append(FollowUpFinding(r.table, r.row_id, "not in the audit chain"))
            continue
        report.checked += 1
        p = e.payload
        if p.get("op") == "redact":
            if r.content is not None or r.salt is not None:
                report.findings.append(
                    FollowUpFinding(
                        r.table, r.row_id, f"redacted at entry {e.seq}, yet holds content"
                    )
                )
            else:
                report.redactions.append((r.table, r.row_id, e.seq))
            continue
        if r.digest != p.get("digest"):
            report.findings.append(
                FollowUpFinding(r.table, r.row_id, f"digest differs from entry {e.seq}")
            )
            continue
        if r.content is None or r.salt is None:
            report.findings.append(
                FollowUpFinding(r.table, r.row_id, "content erased without a redaction entry")
            )
            continue
        if content_digest(r.table, r.row_id, r.content, bytes.fromhex(r.salt)) != r.digest:
            report.findings.append(
                FollowUpFinding(r.table, r.row_id, f"content edited after entry {e.seq}")
            )
    for key, e in newest.items():
        if key not in seen:
            report.findings.append(
                FollowUpFinding(
                    key[0], key[1], f"in the chain (entry {e.seq}) but not in the table"
                )
            )
    return report


# ---- what is due ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DueItem:
    window: Window
    state: DueState


def due_list(
    profile: StudyProfile,
    procedures: Sequence[ProcedureView],
    *,
    recorded: set[tuple[uuid.UUID, str]],
    ended: Mapping[str, dt.date],
    on: dt.date,
) -> list[DueItem]:
    """The windows open (due) or closed (overdue) on ``on`` with nothing recorded, for
    subjects whose follow-up has not ended (lost, withdrawn, died: ``ended``)."""
    windows = schedule(
        profile,
        [FollowedProcedure(p.procedure_uuid, p.subject, p.opened_at) for p in procedures],
    )
    out = []
    for w in windows:
        if (w.procedure_uuid, w.time_point) in recorded or w.subject in ended:
            continue
        state = due_state(w, on)
        if state is not DueState.UPCOMING:
            out.append(DueItem(w, state))
    return sorted(out, key=lambda d: (d.window.latest_on, d.window.subject, d.window.time_point))
