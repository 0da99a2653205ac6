"""The room's procedure-day record (issue 19 tables) read by the collector, end to end.

A room database is built with the daemon's own store code (a procedure opened under
the example study profile, the baseline pain before the first freeze, a cycle, two
adverse events: one changed, one redacted by the room, then closed); every chain entry
is read back with the record channel's source functions and encoded as the room
publishes it (``RecordEncoder``, privacy check on), then driven through the collector's
ingest core and store. The collector's exports (every format) and summary must carry
the room's baseline pain and procedure-day adverse event, beside the later ones.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cryod.daemon.record_channel.message import RecordEncoder, record_document
from cryod.daemon.record_channel.source import content_of, head_seq, profile_of, read_entries
from cryod.daemon.store import migrate, records
from cryod.daemon.store.db import make_engine
from cryod.daemon.store.redaction import redact_row
from cryod.hub import admin
from cryod.hub.exports import FollowUpEvent, StudyData, export_files
from cryod.hub.followup_store import record_assessment, study_procedures
from cryod.hub.ingest import Accept, decide
from cryod.hub.messages import parse_message
from cryod.hub.store import received
from cryod.hub.store.db import writer
from cryod.hub.summary import summarise
from cryod.integrity import format_time
from cryod.research.followup import FollowUpAssessment, local_date
from cryod.research.profile import load_study_profile
from cryod.research.record import AdverseEventRecord
from tests.store.conftest import procedure_meta
from tests.store.test_study_record import ae, baseline_and_cycle, study_fields, write

from .conftest import NODE, T0
from .fake_room import FakeRoom
from .followup_study import register

MN = load_study_profile("mortons-neuroma-example")
#: the collector knows the profile the room recorded under (else it holds the record)
PROFILES = {(MN.study.id, MN.version): MN.content_hash}
ROOM, SITE, SUBJECT = "unnamed", "site-a", "MN-0042"
DAY_TERM = "blanching of the skin over the probe entry site"
LATER_TERM = "wound infection at the entry site"


def build_room(path: Path) -> tuple[Engine, int]:
    """A room database: one study procedure with baseline pain 7, a cycle, an adverse
    event changed while open (grade 1 -> 2), a second one the room redacts, closed."""
    migrate.upgrade_on_start(path)
    engine = make_engine(path)
    study = records.prepare_study(MN, **study_fields())
    meta = procedure_meta(study_id=None, patient_ref=SUBJECT)
    pid = write(engine, lambda s: records.open_procedure(s, meta, study=study))
    baseline_and_cycle(engine, pid)
    today = local_date(dt.datetime.now(dt.UTC), MN.zone).isoformat()
    kept = write(engine, lambda s: records.add_adverse_event(s, pid, ae(onset=today), by="op-a"))
    write(engine, lambda s: records.update_adverse_event(s, kept, {"ctcae_grade": 2}, by="op-a"))
    gone = write(
        engine,
        lambda s: records.add_adverse_event(
            s, pid, ae(onset=today, verbatim_term="entered in error"), by="op-a"
        ),
    )
    write(
        engine,
        lambda s: redact_row(s, "adverse_events", {"id": gone}, by="op-a", reason="in error"),
    )
    write(
        engine,
        lambda s: records.close_procedure(
            s, records.ProcedureClose(procedure_id=pid, closed_by="op-a")
        ),
    )
    return engine, pid


def room_messages(engine: Engine) -> list[bytes]:
    """Every entry's record message, encoded exactly as the room's channel does."""
    enc = RecordEncoder(records.check_patient_ref, records.REDACTED)
    out = []
    with engine.connect() as conn:
        for entry in read_entries(conn, 1, head_seq(conn)):
            rows, block, withheld = content_of(conn, entry)
            doc = record_document(
                site=SITE, node=ROOM, entry=entry, rows=rows, block=block,
                profile=profile_of(conn, entry), withheld=withheld,
                sent_at=format_time(dt.datetime.now(dt.UTC)),
            )  # fmt: skip
            out.append(enc.encode(doc))
    return out


def feed_raw(engine: Engine, messages: list[bytes]) -> None:
    for data in messages:
        with Session(writer(engine)) as s, s.begin():
            msg = parse_message(data)
            now = dt.datetime.now(dt.UTC)
            d = decide(msg, received.room_view(s, msg.node), received_at=now, profiles=PROFILES)
            assert isinstance(d, Accept), (d.message.entry, getattr(d, "reason", None), d)
            received.save(s, d)


@pytest.fixture
def room_db(tmp_path: Path) -> Any:
    engine, pid = build_room(tmp_path / "room.db")
    try:
        yield engine, pid
    finally:
        engine.dispose()


def later_event(procedure: uuid.UUID) -> FollowUpEvent:
    record = AdverseEventRecord.model_validate(
        {**ae(onset="2099-01-01", verbatim_term=LATER_TERM), "ae_id": 1}
    )
    return FollowUpEvent(event_id=1, procedure_uuid=procedure, event=record, signed=False)


def test_the_room_record_reaches_every_export_and_the_summary(
    migrated: Engine, room_db: Any
) -> None:
    room_engine, pid = room_db
    register(migrated, FakeRoom(ROOM, SITE))
    feed_raw(migrated, room_messages(room_engine))
    with Session(migrated) as s:
        procs = study_procedures(s, MN.study.id)
    assert [(p.subject, p.procedure_id) for p in procs] == [(SUBJECT, pid)]
    view = procs[0]
    assert view.record_problems == ()
    assert view.record is not None
    assert view.record.profile == MN.stamp()
    assert view.record.consent is not None
    assert view.record.consent.confirmed
    assert view.record.selection.neuroma_size_mm == 6.5
    assert view.record.procedure.anaesthetic_agent == "lidocaine 1%"
    assert view.record.baseline_pain is not None
    assert view.record.baseline_pain.score == 7
    # newest version of the changed event; the redacted one left out
    assert [(e.verbatim_term, e.ctcae_grade) for e in view.record.adverse_events] == [(DAY_TERM, 2)]
    u = view.procedure_uuid
    data = StudyData(MN, tuple(procs), (), (later_event(u),), T0)

    doc = json.loads(export_files(data, "json")[f"{MN.study.id}.json"])
    proc = doc["subjects"][0]["procedures"][0]
    assert proc["procedure_record"]["baseline_pain"]["score"] == 7
    assert proc["procedure_record"]["consent"] == {"confirmed": True, "form_version": "1.0"}
    assert proc["procedure_record"]["selection"]["web_space"] == "third"
    assert proc["procedure_record"]["procedure_details"]["setting"] == "day_case"
    assert [e["verbatim_term"] for e in proc["procedure_day_adverse_events"]] == [DAY_TERM]
    assert [e["verbatim_term"] for e in proc["later_adverse_events"]] == [LATER_TERM]

    files = export_files(data, "csv")
    (row,) = csv.DictReader(io.StringIO(files["procedures.csv"]))
    assert row["baseline_pain_score"] == "7"
    assert row["consent_confirmed"] == "True"
    assert row["selection_prior_treatments"] == "insoles_footwear"
    assert row["procedure_imaging"] == "ultrasound"
    assert row["procedure_day_adverse_events"] == "1"
    (day,) = csv.DictReader(io.StringIO(files["adverse_events_procedure_day.csv"]))
    assert (day["verbatim_term"], day["ctcae_grade"], day["room"]) == (DAY_TERM, "2", ROOM)
    (later,) = csv.DictReader(io.StringIO(files["adverse_events_after_close.csv"]))
    assert later["verbatim_term"] == LATER_TERM

    bundle = json.loads(export_files(data, "fhir")[f"{MN.study.id}.fhir.json"])
    resources = [e["resource"] for e in bundle["entry"]]
    aes = [r for r in resources if r["resourceType"] == "AdverseEvent"]
    assert sorted(DAY_TERM in json.dumps(r) for r in aes) == [False, True]
    assert sorted(LATER_TERM in json.dumps(r) for r in aes) == [False, True]
    pains = [
        r
        for r in resources
        if r["resourceType"] == "Observation" and r.get("valueInteger", r.get("valueQuantity"))
    ]
    assert any(
        r.get("valueInteger") == 7 or (r.get("valueQuantity") or {}).get("value") == 7
        for r in pains
    )

    redcap = list(csv.DictReader(io.StringIO(export_files(data, "redcap")["records.csv"])))
    base_rows = [r for r in redcap if r["redcap_repeat_instrument"] == "pain"]
    assert [(r["redcap_event_name"].startswith(MN.follow_up.baseline), r["pain_score"])
            for r in base_rows] == [(True, "7")]  # fmt: skip
    ae_rows = [r for r in redcap if r["redcap_repeat_instrument"] == "adverse_event"]
    assert sorted(r["ae_verbatim"] for r in ae_rows) == sorted([DAY_TERM, LATER_TERM])
    day_row = next(r for r in ae_rows if r["ae_verbatim"] == DAY_TERM)
    assert day_row["redcap_event_name"].startswith("procedure")
    proc_row = next(r for r in redcap if r["redcap_repeat_instrument"] == "procedure")
    assert proc_row["proc_profile_hash"] == MN.content_hash

    sdtm = export_files(data, "sdtm")
    ae_sdtm = list(csv.DictReader(io.StringIO(sdtm["ae.csv"])))
    assert [(r["AETERM"], r["AESPID"]) for r in ae_sdtm] == [
        (DAY_TERM, f"{u}/day/{view.record.adverse_events[0].ae_id}"),
        (LATER_TERM, f"{u}/1"),
    ]
    qs = list(csv.DictReader(io.StringIO(sdtm["qs.csv"])))
    assert [(r["QSTESTCD"], r["QSORRES"], r["QSBLFL"]) for r in qs] == [("PAIN", "7", "Y")]

    summary = summarise(data, dt.date(2099, 1, 1))
    baseline = next(r for r in summary.pain if r.time_point == MN.follow_up.baseline)
    assert (baseline.n, baseline.median.value) == (1, 7)
    assert [(a.category, a.grade, a.events) for a in summary.procedure_day_events] == [
        ("damage_to_adjacent_structures", "2", 1)
    ]
    assert [(a.grade, a.events) for a in summary.adverse_events] == [("1", 1)]
    assert "events 1 subjects 1\n" in summary.text()
    assert "procedure_day_adverse_events,damage_to_adjacent_structures/2/" in summary.csv()


def test_the_rooms_baseline_wins_over_a_collector_transcription(
    migrated: Engine, room_db: Any
) -> None:
    room_engine, _pid = room_db
    register(migrated, FakeRoom(ROOM, SITE))
    feed_raw(migrated, room_messages(room_engine))
    with Session(migrated) as s:
        (view,) = study_procedures(s, MN.study.id)
    base = MN.follow_up.baseline
    assessed_on = local_date(view.opened_at, MN.zone).isoformat()
    nurse = admin.Actor("nurse", (admin.Grant(admin.Role.COORDINATOR, MN.study.id, SITE),))
    with Session(writer(migrated)) as s, s.begin(), pytest.raises(admin.Refused) as info:
        record_assessment(
            s, nurse, MN, subject=SUBJECT, procedure=None,
            data={"time_point": base, "assessed_on": assessed_on, "status": "done",
                  "mode": "clinic", "pain_score": 3},
            reason=None, now=view.opened_at + dt.timedelta(hours=2), node=NODE,
        )  # fmt: skip
    assert "the room's value is the baseline" in str(info.value)
    # one transcribed before the room's row arrived: left out everywhere, flagged in JSON
    old = FollowUpAssessment.model_validate(
        {
            "time_point": base,
            "assessed_on": assessed_on,
            "status": "done",
            "mode": "clinic",
            "pain_score": 3,
        }
    )
    data = StudyData(MN, (view,), ((view.procedure_uuid, old),), (), T0)
    summary = summarise(data, dt.date(2099, 1, 1))
    row = next(r for r in summary.pain if r.time_point == base)
    assert (row.n, row.median.value) == (1, 7)
    doc = json.loads(export_files(data, "json")[f"{MN.study.id}.json"])
    proc = doc["subjects"][0]["procedures"][0]
    assert [a["pain_score"] for a in proc["baseline_pain_superseded"]] == [3]
    assert all("pain_score" not in a for a in proc["follow_up"])
    qs = list(csv.DictReader(io.StringIO(export_files(data, "sdtm")["qs.csv"])))
    assert [r["QSORRES"] for r in qs if r["QSTESTCD"] == "PAIN"] == ["7"]
    redcap = export_files(data, "redcap")["records.csv"]
    pain_rows = [r for r in csv.DictReader(io.StringIO(redcap)) if r["pain_score"]]
    assert [r["pain_score"] for r in pain_rows] == ["7"]


def test_a_room_row_that_does_not_validate_is_named_never_guessed() -> None:
    from cryod.hub.followup import room_record
    from cryod.integrity import Kind
    from cryod.research.profile import canonical_json

    study = {
        "procedure_id": (Kind.INT, 1),
        "profile_id": (Kind.TEXT, MN.study.id),
        "profile_version": (Kind.TEXT, MN.version),
        "profile_hash": (Kind.TEXT, MN.content_hash),
        "profile": (Kind.TEXT, canonical_json(MN)),
        "consent_confirmed": (Kind.BOOL, True),
        "consent_form_version": (Kind.TEXT, "1.0"),
        "selection": (Kind.JSON, {"web_space": "third"}),
        "details": (Kind.JSON, {"setting": "day_case"}),
    }
    pain = {
        "id": (Kind.INT, 4),
        "procedure_id": (Kind.INT, 1),
        "time_point": (Kind.TEXT, MN.follow_up.baseline),
        "scale": (Kind.TEXT, MN.instruments.pain.scale.value),
        "score": (Kind.REAL, 6.0),
        "recall_period": (Kind.TEXT, MN.instruments.pain.recall_period.value),
        "assessed_at": (Kind.TIME, "2026-03-20T10:00:00.000000Z"),
    }
    good = {k: (Kind.TEXT, v) for k, v in ae(onset="2026-03-20").items()}
    good["id"] = (Kind.INT, 2)
    good["ctcae_grade"] = (Kind.INT, 1)
    good["serious"] = (Kind.BOOL, False)
    bad = {**good, "id": (Kind.INT, 3), "category": (Kind.TEXT, "no_such_category")}
    record, problems = room_record(study, [pain], [good, bad])
    assert record is not None
    assert record.baseline_pain is not None
    assert record.baseline_pain.score == 6
    assert [e.ae_id for e in record.adverse_events] == [2]
    assert len(problems) == 1
    assert problems[0].startswith("adverse_events 3: category:")
    # a profile edited after it was stamped: no record at all, and why
    edited = {**study, "profile_hash": (Kind.TEXT, "sha256:" + "0" * 64)}
    record, problems = room_record(edited, [pain], [good])
    assert record is None
    assert problems == [f"procedure_study: the profile does not hash to sha256:{'0' * 64} (edited)"]
