"""Follow-up end to end through ``cryohub`` on PostgreSQL and SQLite.

A study of four subjects reaches the collector as the rooms' received rows
(tests/hub/followup_study.py, through the pure ingest and the store); a
research nurse records the time points, an investigator signs a day-7
infection recorded after close, one subject withdraws; then every export
and the summary. Each refusal is shown with the message it prints.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, update
from sqlalchemy.orm import Session

from cryod.hub import cli
from cryod.hub.store.models import AuditEntry, FollowUpAssessmentRow, FollowUpEventRow
from cryod.research.profile import builtin_study_path

from .followup_study import STUDY, build_study, procedure_uuid
from .test_cli import NODE, ROOT_PW, out, run

NURSE_PW = "nurse-correct-horse"
INV_PW = "investigator-battery"
MON_PW = "monitor-staple-horse"
#: "now" for every command: well after the day-45 windows, before month 3 closes
NOW = dt.datetime(2026, 5, 20, 9, 0, tzinfo=dt.UTC)


class DrainedJournal:
    """journald's socket, read continuously: a study sends more heads than a datagram
    socket queues (Linux: 10), and a full queue would block the sender."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while not self.stop.is_set():
            try:
                self.lines.append(self.sock.recv(65536).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[DrainedJournal]:
    j = DrainedJournal(tmp_path / "journal.sock")
    yield j
    j.close()


@pytest.fixture
def study_config(tmp_path: Path, db_url: str, journal: DrainedJournal) -> Path:
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(builtin_study_path("mortons-neuroma-example"), studies / "mn.toml")
    cfg = tmp_path / "cryohub.toml"
    cfg.write_text(
        f'[collector]\nid = "{NODE}"\n\n[database]\nurl = "{db_url}"\n\n'
        f'[studies]\nprofiles_dir = "studies"\n\n'
        f'[anchors]\nfile = "anchors/cryohub.jsonl"\njournal_socket = "{journal.path}"\n'
    )
    (tmp_path / "anchors").mkdir()
    return cfg


@pytest.fixture
def study(
    study_config: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Path:
    monkeypatch.setattr(cli, "_now", lambda: NOW)
    assert run(study_config, "migrate") == 0
    assert run(study_config, "user", "add", "root", "--role", "admin", passwords=[ROOT_PW]) == 0
    for name, role, pw in (
        ("nurse", "coordinator", NURSE_PW),
        ("inv", "investigator", INV_PW),
        ("mon", "monitor", MON_PW),
    ):
        argv = ["user", "add", name, "--role", role, "--study", STUDY, "--as", "root"]
        assert run(study_config, *argv, passwords=[ROOT_PW, pw]) == 0
    engine = create_engine(db_url)
    try:
        build_study(engine, NODE)
    finally:
        engine.dispose()
    out(capsys)
    return study_config


def nurse(config: Path, *argv: str) -> int:
    return run(config, *argv, "--as", "nurse", passwords=[NURSE_PW])


def record(config: Path, subject: str, tp: str, date: str, *extra: str) -> int:
    return nurse(
        config,
        "followup",
        "record",
        "--subject",
        subject,
        "--time-point",
        tp,
        "--date",
        date,
        *extra,
    )


def refused(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in out(capsys)[1].splitlines() if line]


# ---- refusals, each with its message ---------------------------------------------------------
def test_each_refusal_names_the_field(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = ("--mode", "clinic")
    assert record(study, "MN-0001", "d7", "2026-03-27", *ok, "--pain", "11") == 2
    assert refused(capsys) == [
        "cryohub: refused: follow_up.pain_score: an NRS score is an integer 0-10 (got 11)"
    ]
    assert record(study, "MN-0001", "d7", "2026-03-27", *ok, "--pain", "7.5") == 2
    assert refused(capsys) == [
        "cryohub: refused: follow_up.pain_score: an NRS score is an integer 0-10 (got 7.5)"
    ]
    assert record(study, "MN-0001", "d7", "2026-03-19", *ok, "--pain", "3") == 2
    assert refused(capsys) == [
        "cryohub: refused: follow_up.assessed_on: 2026-03-19 is before the procedure (2026-03-20)"
    ]
    assert record(study, "MN-0001", "d8", "2026-03-28", *ok, "--pain", "3") == 2
    assert refused(capsys) == [
        "cryohub: refused: follow_up.time_point: 'd8' is not a time point of study "
        "MN-CRYO-EXAMPLE (time points: baseline, d7, m1, d45, m3, m6, m12)"
    ]
    assert record(study, "MN-9999", "d7", "2026-03-27", *ok, "--pain", "3") == 2
    assert refused(capsys) == [
        "cryohub: subject: no procedure of subject 'MN-9999' in study MN-CRYO-EXAMPLE was received"
    ]
    other = "00000000-0000-4000-8000-000000000000"
    argv = ("--procedure", other, *ok, "--pain", "3")
    assert record(study, "MN-0001", "d7", "2026-03-27", *argv) == 2
    assert refused(capsys) == [
        f"cryohub: procedure: {other} is not a procedure of subject 'MN-0001' in study "
        "MN-CRYO-EXAMPLE"
    ]
    assert record(study, "MN-0001", "d7", "2026-03-27", "--status", "missed") == 2
    assert refused(capsys) == ["cryohub: refused: follow_up.reason: required with status 'missed'"]
    # every problem at once
    assert record(study, "MN-0001", "d7", "2026-03-27", "--pain", "12", "--qol", "0.7") == 2
    assert refused(capsys) == [
        "cryohub: refused: follow_up.mode: required for a visit that was done "
        "(clinic, phone, post, online)",
        "cryohub: refused: follow_up.pain_score: an NRS score is an integer 0-10 (got 12)",
    ]
    # an adverse event with the room's rules: onset before the procedure, grade out of range
    ae = ("followup", "ae", "--subject", "MN-0001", "--category", "infection")
    argv2 = ("--subcategory", "superficial_infection", "--term", "Wound infection")
    full = ("--serious", "no", "--rel-device", "unlikely", "--rel-procedure", "probably")
    full += ("--outcome", "recovered_resolved", "--action", "treatment_given")
    assert nurse(study, *ae, *argv2, *full, "--onset", "2026-03-10", "--grade", "2") == 2
    assert refused(capsys) == [
        "cryohub: refused: event.onset: 2026-03-10 is before the procedure opened "
        "(2026-03-20T10:00+00:00)"
    ]
    assert nurse(study, *ae, *argv2, *full, "--onset", "2026-03-27", "--grade", "7") == 2
    assert refused(capsys) == [
        "cryohub: refused: event.ctcae_grade: CTCAE v5 grade must be 1-5 (got 7)"
    ]
    # a monitor reads, never records; no --as is refused too
    argv3 = ("followup", "record", "--subject", "MN-0001", "--time-point", "d7")
    argv3 += ("--date", "2026-03-27", "--mode", "clinic", "--pain", "3")
    assert run(study, *argv3, "--as", "mon", passwords=[MON_PW]) == 7
    assert "mon may not record follow-up in MN-CRYO-EXAMPLE at site-a" in out(capsys)[1]
    assert run(study, *argv3) == 7
    assert "who is acting? --as USER" in out(capsys)[1]
    # nothing was recorded by any of it
    engine = create_engine(_url(study))
    try:
        with Session(engine) as s:
            assert s.execute(select(FollowUpAssessmentRow)).first() is None
            assert s.execute(select(FollowUpEventRow)).first() is None
    finally:
        engine.dispose()


def _url(config: Path) -> str:
    from cryod.hub.config import load_config

    return load_config(config).url.render_as_string(hide_password=False)


def test_a_signed_event_changes_only_with_a_reason(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ae = ("followup", "ae", "--subject", "MN-0001", "--category", "infection")
    argv = ("--subcategory", "superficial_infection", "--term", "Wound infection")
    full = ("--serious", "no", "--rel-device", "unlikely", "--rel-procedure", "probably")
    full += ("--outcome", "recovering_resolving", "--action", "treatment_given")
    assert nurse(study, *ae, *argv, *full, "--onset", "2026-03-27", "--grade", "2") == 0
    assert "event 1 recorded (infection/superficial_infection)" in out(capsys)[0]
    # a coordinator may not sign; an investigator sees the meaning, re-enters the password
    assert run(study, "followup", "sign", "1", "--as", "nurse", passwords=[NURSE_PW]) == 7
    assert "nurse may not sign events" in out(capsys)[1]
    assert run(study, "followup", "sign", "1", "--as", "inv", passwords=["wrong-password-x"]) == 7
    out(capsys)
    assert run(study, "followup", "sign", "1", "--as", "inv", passwords=[INV_PW]) == 0
    shown = out(capsys)[0]
    assert "Meaning of this signature:" in shown
    assert "Investigator review: I have reviewed this adverse event" in shown
    assert "event 1 version 1 signed by inv" in shown
    change = ("followup", "change", "1", "--set", "outcome=recovered_resolved")
    change += ("--set", "resolution=2026-04-05")
    assert nurse(study, *change) == 2
    assert refused(capsys) == [
        "cryohub: reason: event 1 is signed; a change to a signed event needs --reason"
    ]
    assert nurse(study, *change, "--reason", "resolved at the day-45 visit") == 0
    assert "event 1 changed to version 2 (outcome, resolution" in out(capsys)[0]
    # the chain holds who, when, what and why; the new version awaits a signature
    assert run(study, "followup", "events", "--json") == 0
    (ev,) = json.loads(out(capsys)[0])
    assert ev["signed"] is False
    engine = create_engine(_url(study))
    try:
        from cryod.hub.store import audit

        with Session(engine) as s:
            chain = audit.entries(s)
    finally:
        engine.dispose()
    kinds = [e.kind for e in chain]
    assert kinds[-3:] == ["event_recorded", "event_signed", "event_changed"]
    signed, changed = chain[-2].payload, chain[-1].payload
    assert signed["by"] == "inv"
    assert signed["meaning"].startswith("Investigator review")
    assert changed["by"] == "nurse"
    assert changed["reason"] == "resolved at the day-45 visit"
    assert changed["fields"] == ["outcome", "resolution"]
    assert changed["was_signed"] is True
    assert "Wound infection" not in json.dumps([e.payload for e in chain])  # digests only
    assert run(study, "verify", "--self") == 0


def test_a_correction_needs_its_reason(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = ("--mode", "phone", "--pain", "3")
    assert record(study, "MN-0001", "d7", "2026-03-27", *done) == 0
    assert "MN-0001 d7 recorded as done" in out(capsys)[0]
    assert record(study, "MN-0001", "d7", "2026-03-27", "--mode", "phone", "--pain", "4") == 2
    assert refused(capsys) == [
        "cryohub: reason: d7 of this procedure is recorded already; a correction needs --reason"
    ]
    argv = ("--mode", "phone", "--pain", "4", "--correction", "transcription error")
    assert record(study, "MN-0001", "d7", "2026-03-27", *argv) == 0
    out(capsys)
    assert run(study, "verify", "--self") == 0


def test_due_lists_what_is_due_and_overdue(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uid = procedure_uuid("MN-0001")
    assert run(study, "followup", "due", "--on", "2026-03-28", "--json") == 0
    items = json.loads(out(capsys)[0])
    mine = [i for i in items if i["subject"] == "MN-0001"]
    assert mine == [
        {
            "study": STUDY,
            "site": "site-a",
            "subject": "MN-0001",
            "procedure": str(uid),
            "time_point": "d7",
            "label": "7 days",
            "target": "2026-03-27",
            "window": ["2026-03-25", "2026-03-30"],
            "state": "due",
            "on": "2026-03-28",
        }
    ]
    assert record(study, "MN-0001", "d7", "2026-03-27", "--mode", "clinic", "--pain", "3") == 0
    out(capsys)
    assert run(study, "followup", "due", "--on", "2026-04-03", "--site", "site-b") == 0
    text = out(capsys)[0]
    assert "overdue  MN-CRYO-EXAMPLE site-b     MN-0004      d7" in text
    assert "MN-0001" not in text
    assert run(study, "followup", "due", "--on", "2026-04-01", "--json") == 0
    states = {(i["subject"], i["time_point"]): i["state"] for i in json.loads(out(capsys)[0])}
    assert ("MN-0001", "d7") not in states
    assert states[("MN-0002", "d7")] == "overdue"
    # lost to follow-up ends the subject's follow-up: nothing further is due
    argv = ("--status", "lost_to_follow_up", "--reason", "no reply to three calls")
    assert record(study, "MN-0002", "d7", "2026-03-31", *argv) == 0
    out(capsys)
    assert run(study, "followup", "due", "--on", "2026-05-10", "--json") == 0
    assert not [i for i in json.loads(out(capsys)[0]) if i["subject"] == "MN-0002"]


# ---- the day-7 infection everywhere, a withdrawn subject nowhere -----------------------------
def _follow_the_study(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for subject, day, pain in (
        ("MN-0001", "2026-03-20", "7"),
        ("MN-0002", "2026-03-21", "6"),
        ("MN-0003", "2026-03-22", "8"),
        ("MN-0004", "2026-03-23", "5"),
    ):
        assert record(study, subject, "baseline", day, "--mode", "clinic", "--pain", pain) == 0
    done = ("--mode", "clinic")
    assert record(study, "MN-0001", "d7", "2026-03-27", *done, "--pain", "4", "--qol", "0.71") == 0
    argv = ("--status", "missed", "--reason", "patient on holiday")
    assert record(study, "MN-0002", "d7", "2026-03-28", *argv) == 0
    assert record(study, "MN-0003", "d7", "2026-03-29", *done, "--pain", "6") == 0
    assert record(study, "MN-0004", "d7", "2026-03-30", "--mode", "phone", "--pain", "3") == 0
    assert (
        record(study, "MN-0001", "m1", "2026-04-19", *done, "--pain", "2", "--function", "35") == 0
    )
    argv = ("--status", "lost_to_follow_up", "--reason", "moved away, no contact")
    assert record(study, "MN-0002", "m1", "2026-04-20", *argv) == 0
    assert record(study, "MN-0004", "m1", "2026-04-22", "--mode", "post", "--pain", "2") == 0
    assert record(study, "MN-0001", "d45", "2026-05-04", *done, "--pain", "1") == 0
    ae = ("followup", "ae", "--category", "infection", "--subcategory", "superficial_infection")
    ae += ("--serious", "no", "--rel-device", "unlikely", "--rel-procedure", "probably")
    ae += ("--outcome", "recovered_resolved", "--action", "treatment_given", "--grade", "2")
    ae += ("--intervention", "antibiotics", "--intervention-date", "2026-03-27")
    argv = ("--onset", "2026-03-27", "--resolution", "2026-04-03")
    assert nurse(study, *ae, "--subject", "MN-0001", "--term", "Wound infection day 7", *argv) == 0
    assert nurse(study, *ae, "--subject", "MN-0003", "--term", "Cellulitis", *argv) == 0
    assert run(study, "followup", "sign", "1", "--as", "inv", passwords=[INV_PW]) == 0
    out(capsys)


def test_day7_infection_in_every_export_and_the_summary_withdrawn_subject_in_none(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _follow_the_study(study, capsys)
    argv = ("withdraw", "MN-0003", "--reason", "consent withdrawn by phone 2026-05-01")
    assert nurse(study, *argv) == 0
    text = out(capsys)[0]
    assert "MN-0003 withdrawn" in text
    assert "redacted 2 followup_assessments, 1 followup_events" in text
    assert "room room-a: its own database" in text
    # no further follow-up for a withdrawn subject
    assert record(study, "MN-0003", "m1", "2026-04-21", "--mode", "clinic", "--pain", "2") == 2
    assert "withdrew from study MN-CRYO-EXAMPLE" in out(capsys)[1]

    exports: dict[str, dict[str, str]] = {}
    for fmt in ("json", "csv", "fhir", "redcap", "sdtm"):
        dest = tmp_path / "out" / fmt
        assert run(study, "export", "--format", fmt, "--out", str(dest), "--as", "mon",
                   passwords=[MON_PW]) == 0, out(capsys)  # fmt: skip
        assert "validated and written" in out(capsys)[0]
        exports[fmt] = {p.name: p.read_text(encoding="utf-8") for p in sorted(dest.iterdir())}
    for fmt, files in exports.items():
        joined = "\n".join(files.values())
        assert "MN-0003" not in joined, fmt
        assert "Cellulitis" not in joined, fmt
        assert str(procedure_uuid("MN-0003")) not in joined, fmt

    doc = json.loads(exports["json"]["MN-CRYO-EXAMPLE.json"])
    s1 = next(s for s in doc["subjects"] if s["subject"] == "MN-0001")
    (ae,) = s1["procedures"][0]["later_adverse_events"]
    assert (ae["subcategory"], ae["onset"], ae["signed"]) == (
        "superficial_infection",
        "2026-03-27",
        True,
    )

    events = list(csv.DictReader(io.StringIO(exports["csv"]["adverse_events_after_close.csv"])))
    assert [(e["subject"], e["subcategory"], e["onset"], e["signed"]) for e in events] == [
        ("MN-0001", "superficial_infection", "2026-03-27", "True")
    ]

    bundle = json.loads(exports["fhir"]["MN-CRYO-EXAMPLE.fhir.json"])
    res = [e["resource"] for e in bundle["entry"]]
    (fhir_ae,) = [r for r in res if r["resourceType"] == "AdverseEvent"]
    assert fhir_ae["event"]["coding"][0]["code"] == "superficial_infection"
    assert fhir_ae["date"] == "2026-03-27"
    pain = [
        r
        for r in res
        if r["resourceType"] == "Observation" and r["code"]["coding"][0].get("code") == "72514-3"
    ]
    tps = sorted(
        next(x["valueString"] for x in r["extension"] if "time-point" in x["url"]) for r in pain
    )
    assert tps == sorted(["baseline"] * 3 + ["d7"] * 2 + ["m1"] * 2 + ["d45"])
    qr = [r for r in res if r["resourceType"] == "QuestionnaireResponse"]
    assert {r["questionnaire"].split("|")[0] for r in qr} == {
        "https://example.org/fhir/Questionnaire/eq-5d-5l",
        "https://example.org/fhir/Questionnaire/moxfq",
    }

    records = list(csv.DictReader(io.StringIO(exports["redcap"]["records.csv"])))
    (rc_ae,) = [r for r in records if r["redcap_repeat_instrument"] == "adverse_event"]
    assert (rc_ae["record_id"], rc_ae["redcap_event_name"], rc_ae["ae_subcategory"]) == (
        "MN-0001",
        "d7_arm_1",
        "superficial_infection",
    )
    visits = {
        (r["record_id"], r["redcap_event_name"]): r["visit_status"]
        for r in records
        if r.get("visit_status")
    }
    assert visits[("MN-0002", "d7_arm_1")] == "missed"
    assert visits[("MN-0002", "m1_arm_1")] == "lost_to_follow_up"

    sd_ae = list(csv.DictReader(io.StringIO(exports["sdtm"]["ae.csv"])))
    assert [(a["USUBJID"], a["AEDECOD"], a["AESTDTC"], a["AESTDY"], a["AEREL"]) for a in sd_ae] == [
        ("MN-CRYO-EXAMPLE-MN-0001", "SUPERFICIAL INFECTION", "2026-03-27", "8", "PROBABLY RELATED")
    ]
    qs = list(csv.DictReader(io.StringIO(exports["sdtm"]["qs.csv"])))
    base = [q for q in qs if q["QSBLFL"] == "Y"]
    assert sorted(q["USUBJID"] for q in base) == [
        "MN-CRYO-EXAMPLE-MN-0001",
        "MN-CRYO-EXAMPLE-MN-0002",
        "MN-CRYO-EXAMPLE-MN-0004",
    ]
    assert all(q["QSTESTCD"] == "PAIN" and q["QSDY"] == "1" for q in base)
    missed = [q for q in qs if q["QSSTAT"] == "NOT DONE"]
    assert [(q["VISIT"], q["QSREASND"]) for q in missed] == [
        ("7 DAYS", "MISSED: patient on holiday"),
        ("1 MONTH", "LOST TO FOLLOW-UP: moved away, no contact"),
    ]
    dm = list(csv.DictReader(io.StringIO(exports["sdtm"]["dm.csv"])))
    assert [(d["USUBJID"], d["SITEID"], d["RFSTDTC"]) for d in dm] == [
        ("MN-CRYO-EXAMPLE-MN-0001", "site-a", "2026-03-20T10:00"),
        ("MN-CRYO-EXAMPLE-MN-0002", "site-a", "2026-03-21T10:00"),
        ("MN-CRYO-EXAMPLE-MN-0004", "site-b", "2026-03-23T10:00"),
    ]

    # the summary: pain by time point, the infection, completeness and loss to follow-up
    plot, table = tmp_path / "pain.png", tmp_path / "summary.csv"
    argv2 = ("summary", "--on", "2026-05-20", "--csv", str(table), "--plot", str(plot))
    assert run(study, *argv2) == 0
    text = out(capsys)[0]
    assert "3 subject(s), 3 procedure(s)" in text
    assert "withdrawn subjects excluded: 1" in text
    # baseline 7, 6, 5: median 6, inclusive quartiles 5.5-6.5; d7: 4 and 3, changes -3, -2
    assert "baseline       3       6       5.5–6.5         0              —" in text
    assert "d7             2     3.5     3.25–3.75         2           -2.5" in text
    assert "infection                      grade 2   procedure probably" in text
    assert "events 1 subjects 1 signed 1" in text
    # d7: 3 windows closed, 2 done, 1 missed; m1: MN-0002 lost
    assert "d7                  3     2       1     0         0     0        0     66.7%" in text
    assert "m1                  3     2       0     1         0     0        0     66.7%" in text
    # MN-0002 was lost at m1, so their d45 counts as lost; MN-0004's d45 was not recorded
    assert "d45                 3     1       0     1         0     0        1     33.3%" in text
    assert "Subjects lost to follow-up: 1" in text
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    change = {(r["key"], r["measure"]): r["value"] for r in rows if r["table"] == "pain"}
    assert change[("d7", "change_median")] == "-2.5"
    assert change[("baseline", "change_median")] == ""
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # verify: the withdrawn subject's rows are redactions, nothing else is off
    assert run(study, "verify", "--self") == 0
    shown = out(capsys)[0]
    # MN-0003's baseline (row 3), day 7 (row 7) and cellulitis (event 2)
    for row in ("followup_assessments 3", "followup_assessments 7", "followup_events 2"):
        assert f"  {row}: redacted (consent withdrawn) at entry" in shown
    assert shown.count("redacted (consent withdrawn)") == 3
    # and the withdrawal lists the exports made before it, where copies remain
    argv3 = ("withdraw", "MN-0001", "--reason", "consent withdrawn in clinic")
    assert nurse(study, *argv3) == 0
    listed = out(capsys)[0]
    assert listed.count("export (entry") == 5


def test_verify_names_a_follow_up_row_edited_behind_cryohub(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert record(study, "MN-0001", "d7", "2026-03-27", "--mode", "clinic", "--pain", "4") == 0
    out(capsys)
    engine = create_engine(_url(study))
    try:
        with Session(engine) as s, s.begin():
            row = s.execute(select(FollowUpAssessmentRow)).scalar_one()
            content = dict(row.content)
            content["pain_score"] = 1.0
            s.execute(
                update(FollowUpAssessmentRow)
                .where(FollowUpAssessmentRow.id == row.id)
                .values(content=content)
            )
    finally:
        engine.dispose()
    assert run(study, "verify", "--self") == 4
    assert "followup_assessments 1: content edited after entry" in out(capsys)[0]


def test_an_output_path_that_cannot_be_written_is_one_line_and_records_nothing(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], db_url: str
) -> None:
    """summary --csv/--plot and export --out are checked before the work (and the password
    prompt); a write that fails anyway is one line too. A refused export is not recorded."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (("summary", "--study", STUDY, "--csv", str(tmp_path / "no" / "t.csv")),
         f"cryohub: --csv {tmp_path / 'no' / 't.csv'}: directory {tmp_path / 'no'} does not exist"),
        (("summary", "--study", STUDY, "--plot", str(tmp_path)),
         f"cryohub: --plot {tmp_path}: is a directory"),
        (("export", "--study", STUDY, "--format", "csv", "--out", str(a_file / "x"), "--as", "mon"),
         f"cryohub: --out {a_file / 'x'}: {a_file} is not a directory"),
        (("export", "--study", STUDY, "--format", "csv", "--out", str(a_file), "--as", "mon"),
         f"cryohub: --out {a_file}: exists and is not a directory"),
    ]  # fmt: skip
    engine = create_engine(db_url)
    with Session(engine) as s:
        entries = s.execute(select(func.count()).select_from(AuditEntry)).scalar_one()
    for argv, message in cases:
        pw = [MON_PW] if argv[0] == "export" else None
        assert run(study, *argv, passwords=pw) == 2, argv
        got, err = out(capsys)
        assert err.strip() == message
        assert "Traceback" not in err
        assert "subjects" not in got  # refused before the summary was printed
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(AuditEntry)).scalar_one() == entries
    engine.dispose()
