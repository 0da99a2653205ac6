"""The collector's follow-up core (pure) and what the store reads from the rooms' rows."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cryod.hub.access import Grant, Role
from cryod.hub.exports import StudyData, export_files
from cryod.hub.exports import study_procedures as mapped
from cryod.hub.followup import (
    ASSESSMENT_TABLE,
    EVENT_TABLE,
    StoredFollowUp,
    check_followup,
    content_digest,
    due_list,
    may_read,
    may_record,
    may_sign,
    newest_profiles,
)
from cryod.hub.followup_store import study_procedures
from cryod.hub.summary import summarise
from cryod.research.profile import load_study_profile

from .conftest import T0
from .fake_room import FakeRoom
from .followup_study import STUDY, feed, procedure_doc, procedure_uuid, register

MN = load_study_profile("mortons-neuroma-example")


@dataclass
class E:
    seq: int
    payload: dict[str, Any]


def stored(table: str, row_id: int, content: Any) -> tuple[StoredFollowUp, E]:
    salt = secrets.token_bytes(16)
    digest = content_digest(table, row_id, content, salt)
    row = StoredFollowUp(table, row_id, content, salt.hex(), digest, None)
    return row, E(row_id + 10, {"table": table, "id": row_id, "op": "insert", "digest": digest})


def test_check_followup_names_each_kind_of_tampering() -> None:
    good, e1 = stored(ASSESSMENT_TABLE, 1, {"pain_score": 3})
    edited, e2 = stored(ASSESSMENT_TABLE, 2, {"pain_score": 4})
    edited = StoredFollowUp(
        ASSESSMENT_TABLE, 2, {"pain_score": 1}, edited.salt, edited.digest, None
    )
    erased, e3 = stored(EVENT_TABLE, 3, {"category": "infection"})
    erased = StoredFollowUp(EVENT_TABLE, 3, None, None, erased.digest, None)
    redacted, e4 = stored(EVENT_TABLE, 4, {"category": "infection"})
    e4r = E(30, {"table": EVENT_TABLE, "id": 4, "op": "redact", "digest": redacted.digest})
    redacted = StoredFollowUp(EVENT_TABLE, 4, None, None, redacted.digest, 30)
    stray, _ = stored(ASSESSMENT_TABLE, 5, {"pain_score": 2})
    _, e6 = stored(ASSESSMENT_TABLE, 6, {"pain_score": 2})  # deleted from the table
    report = check_followup([good, edited, erased, redacted, stray], [e1, e2, e3, e4, e4r, e6])
    assert not report.ok
    assert [(f.table, f.row_id, f.problem) for f in report.findings] == [
        (ASSESSMENT_TABLE, 2, "content edited after entry 12"),
        (EVENT_TABLE, 3, "content erased without a redaction entry"),
        (ASSESSMENT_TABLE, 5, "not in the audit chain"),
        (ASSESSMENT_TABLE, 6, "in the chain (entry 16) but not in the table"),
    ]
    assert report.redactions == [(EVENT_TABLE, 4, 30)]
    assert check_followup([good], [e1]).ok


def test_who_may_record_sign_and_read() -> None:
    nurse = (Grant(Role.COORDINATOR, STUDY, "site-a"),)
    inv = (Grant(Role.INVESTIGATOR, STUDY),)
    mon = (Grant(Role.MONITOR, STUDY, "site-b"),)
    admin = (Grant(Role.ADMIN),)
    assert may_record(nurse, STUDY, "site-a")
    assert not may_record(nurse, STUDY, "site-b")
    assert not may_record(nurse, "OTHER", "site-a")
    assert not may_sign(nurse, STUDY, "site-a")
    assert may_sign(inv, STUDY, "site-b")
    assert not may_record(mon, STUDY, "site-b")
    assert may_read(mon, STUDY, "site-b")
    assert not may_read(mon, STUDY, None)  # the whole study: a site-scoped grant is not enough
    assert not may_record(admin, STUDY, "site-a")


def test_the_whole_study_needs_one_grant_covering_it_not_two_halves() -> None:
    """A site-scoped grant of this study plus an unscoped grant of another study (or a
    grant of this study at another site) does not make the whole study readable."""
    nurse_a = Grant(Role.COORDINATOR, STUDY, "site-a")
    assert not may_read((nurse_a, Grant(Role.MONITOR, "OTHER")), STUDY, None)
    assert not may_read((nurse_a, Grant(Role.MONITOR, "OTHER", None)), STUDY, "site-b")
    assert may_read((nurse_a, Grant(Role.MONITOR, "OTHER")), STUDY, "site-a")
    assert may_read((nurse_a, Grant(Role.MONITOR, "OTHER")), "OTHER", None)
    assert may_read((Grant(Role.INVESTIGATOR, STUDY),), STUDY, None)
    assert may_read((Grant(Role.INVESTIGATOR),), STUDY, "site-b")  # every study, every site


def test_procedures_come_from_the_rooms_rows_and_a_room_redaction_removes_one(
    migrated: Engine,
) -> None:
    room = FakeRoom("room-a", "site-a")
    register(migrated, room)
    opened = dt.datetime(2026, 3, 20, 10, tzinfo=dt.UTC)
    docs = [
        procedure_doc(room, row_id=1, subject="MN-0001", opened_at=opened),
        procedure_doc(room, row_id=2, subject="MN-0002", opened_at=opened, study="OTHER"),
        procedure_doc(room, row_id=3, subject="MN-0003", opened_at=opened),
        procedure_doc(
            room, row_id=4, subject="MN-0001", opened_at=opened + dt.timedelta(days=120), n=2
        ),
    ]
    docs.append(
        room._entry(
            "row",
            {"table": "procedures", "key": {"id": 3}, "op": "redact", "digest": "0" * 64},
        )
    )
    feed(migrated, docs)
    with Session(migrated) as s:
        procs = study_procedures(s, STUDY)
    assert [(p.subject, p.procedure_id, p.site) for p in procs] == [
        ("MN-0001", 1, "site-a"),
        ("MN-0001", 4, "site-a"),
    ]
    # a repeat is treatment 2 and names the one it repeats, in every mapping
    data = StudyData(MN, tuple(procs), (), (), T0)
    first, repeat = mapped(data)
    assert repeat.record.procedure.treatment_number == 2
    assert repeat.record.procedure.repeat_of == procedure_uuid("MN-0001", 1)
    for fmt in ("json", "csv", "fhir", "redcap", "sdtm"):
        assert export_files(data, fmt)  # each validates, or raises with every problem
    # due on a date: both procedures' day-7 windows, per the restart rule
    items = due_list(MN, procs, recorded=set(), ended={}, on=dt.date(2026, 7, 25))
    assert [(i.window.procedure_uuid, i.window.time_point, i.state.value) for i in items][-1] == (
        procedure_uuid("MN-0001", 2),
        "d7",
        "due",
    )
    assert not due_list(MN, procs, recorded=set(), ended={"MN-0001": dt.date(2026, 4, 1)},
                        on=dt.date(2026, 7, 25))  # fmt: skip
    # with no follow-up yet, every figure is null with its reason, never 0
    s = summarise(data, dt.date(2026, 7, 25))
    assert s.pain[1].median.value is None
    assert s.pain[1].median.reason == "no scores"
    assert s.pain[1].change_median.reason == "no paired baseline"
    assert s.completeness[0].not_recorded == 1
    assert uuid.UUID(str(first.facts.procedure_uuid)) == procedure_uuid("MN-0001", 1)


def test_a_vas_study_without_restart_exports_and_validates() -> None:
    """The stump profile: VAS 0-100 mm, follow-up not restarted after a repeat."""
    from cryod.hub.followup import ProcedureView
    from cryod.research.facts import ConsoleFacts
    from cryod.research.followup import FollowUpAssessment

    stump = load_study_profile("stump-neuroma-example")
    opened = dt.datetime(2026, 3, 20, 10, tzinfo=dt.UTC)

    def view(n: int, at: dt.datetime) -> ProcedureView:
        return ProcedureView(
            node="room-a",
            site="site-a",
            procedure_id=n,
            procedure_uuid=procedure_uuid("SN-0001", n),
            subject="SN-0001",
            study=stump.study.id,
            opened_at=at,
            closed_at=at + dt.timedelta(hours=1),
            body_site=None,
            side=None,
            console=ConsoleFacts(),
            probe_model=None,
            probe_lot=None,
        )

    procs = (view(1, opened), view(2, opened + dt.timedelta(days=100)))
    first = procs[0].procedure_uuid
    tps = [tp.id for tp in stump.follow_up.time_points]
    a = FollowUpAssessment.model_validate(
        {"time_point": tps[1], "assessed_on": "2026-03-27", "status": "done",
         "mode": "phone", "pain_score": 42.5, "qol_total": 0.6}
    )  # fmt: skip
    data = StudyData(stump, procs, ((first, a),), (), T0)
    bundle = export_files(data, "fhir")[f"{stump.study.id}.fhir.json"]
    assert '"code": "pain-vas-100mm"' in bundle
    assert '"code": "mm"' in bundle
    records = export_files(data, "redcap")["records.csv"]
    # not restarted: the follow-up forms do not repeat, so no repeat instrument on the visit
    visit = next(line for line in records.splitlines() if ",phone" in line or "phone" in line)
    assert f"SN-0001,{tps[1]}_arm_1,," in visit
    qs = export_files(data, "sdtm")["qs.csv"]
    assert ",42.5,mm,42.5,42.5,mm," in qs


def test_newest_profiles_takes_each_studys_highest_version() -> None:
    from types import SimpleNamespace

    def prof(study: str, version: int) -> Any:
        return SimpleNamespace(study=SimpleNamespace(id=study), version=version)

    b1, a2, a1, b3 = prof("B", 1), prof("A", 2), prof("A", 1), prof("B", 3)
    got = newest_profiles([b1, a2, a1, b3])
    assert list(got) == ["A", "B"]
    assert got["A"] is a2
    assert got["B"] is b3
    assert newest_profiles([]) == {}
