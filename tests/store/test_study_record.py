"""The procedure-day record of a study in the store (issue 19): the profile stamp,
selection and details checked against the profile, the baseline pain score before
the first freeze, adverse events with every refusal and the message it prints,
the old yes/no codes as rows, and the exports (JSON, CSV, FHIR, REDCap) of it."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cryod.daemon.store import export, migrate, queries, records, study_export
from cryod.daemon.store.chain import ChainedSession
from cryod.daemon.store.models import Cycle, Outcome, parse_utc
from cryod.daemon.store.record_check import check_record
from cryod.research.problems import ResearchDataError
from cryod.research.profile import StudyProfile, load_study_profile
from cryod.research.redcap_rules import check_redcap_files
from tests.research.examples import adverse_event

from .conftest import cycle_open, procedure_meta

T = TypeVar("T")
PROFILE = load_study_profile("mortons-neuroma-example")


def study_fields(**changes: Any) -> dict[str, Any]:
    """The example study's fields as an operator gives them (a complete set)."""
    fields: dict[str, Any] = {
        "consent": {"confirmed": True, "form_version": "1.0"},
        "selection": {
            "indication": "mortons_neuroma",
            "eligibility": {"items": {"*": True}},
            "symptom_duration_months": 18,
            "prior_treatments": ["insoles_footwear"],
            "aetiology": "idiopathic_mortons",
            "nerve": "common_plantar_digital",
            "web_space": "third",
            "neuroma_size_mm": 6.5,
        },
        "details": {
            "imaging": ["ultrasound"],
            "technical_success": True,
            "anaesthesia": "local",
            "anaesthetic_agent": "lidocaine 1%",
            "setting": "day_case",
            "probe_model": "CP-17G",
            "probe_gauge": 17,
            "probe_count": 1,
            "probe_lot": "L2026-07",
            "gas": "argon",
        },
    }
    fields.update(changes)
    return fields


def ae(**changes: Any) -> dict[str, Any]:
    """The examples' adverse event, with an onset after any opening this test makes."""
    return adverse_event(**{"onset": "2099-01-01", **changes})


def write(engine: Engine, fn: Callable[[Session], T]) -> T:
    with ChainedSession(engine) as s, s.begin():
        return fn(s)


def open_study(engine: Engine, profile: StudyProfile = PROFILE, **changes: Any) -> int:
    study = records.prepare_study(profile, **study_fields(**changes))
    meta = procedure_meta(study_id=None)
    return write(engine, lambda s: records.open_procedure(s, meta, study=study))


def refusal(fn: Callable[[], Any]) -> str:
    with pytest.raises((ResearchDataError, records.RecordError)) as info:
        fn()
    return str(info.value)


# ---- open --------------------------------------------------------------------------
def test_a_procedure_records_the_profile_it_was_opened_under(engine: Engine) -> None:
    pid = open_study(engine)
    with Session(engine) as s:
        record = queries.study_record(s, pid)
        detail = queries.load_procedure(s, pid)
    assert record is not None
    assert record.profile == PROFILE.stamp()
    assert record.profile.content_hash.startswith("sha256:")
    assert record.selection.web_space == "third"
    # the checklist's id and version come from the profile; "*" confirmed every item
    assert record.selection.eligibility is not None
    assert record.selection.eligibility.checklist_id == "MN-ELIG"
    assert set(record.selection.eligibility.items) == {i.id for i in PROFILE.eligibility.items}  # type: ignore[union-attr]
    assert detail.metadata["study_id"] == "MN-CRYO-EXAMPLE"  # the profile's study
    assert detail.study is not None
    assert detail.study["profile"]["version"] == "1.0.0"


def test_open_refuses_a_missing_required_field_naming_each() -> None:
    fields = study_fields()
    del fields["selection"]["nerve"]
    del fields["details"]["setting"]
    message = refusal(lambda: records.prepare_study(PROFILE, **fields))
    assert "selection.nerve: required by study MN-CRYO-EXAMPLE" in message
    assert "procedure.setting: required by study MN-CRYO-EXAMPLE" in message


def test_open_refuses_an_out_of_list_value_naming_it() -> None:
    fields = study_fields()
    fields["selection"]["web_space"] = "first"
    fields["details"]["imaging"] = ["ct"]
    message = refusal(lambda: records.prepare_study(PROFILE, **fields))
    assert "selection.web_space: 'first' is not allowed by study MN-CRYO-EXAMPLE" in message
    assert "(allowed: second, third)" in message
    assert "procedure.imaging: 'ct' is not allowed" in message


def test_open_refuses_an_unknown_code() -> None:
    fields = study_fields()
    fields["selection"]["aetiology"] = "magic"
    message = refusal(lambda: records.prepare_study(PROFILE, **fields))
    assert "selection.aetiology: unknown code 'magic'" in message


def test_open_refuses_without_consent_where_the_study_demands_it() -> None:
    for consent in (None, {"confirmed": False}):
        message = refusal(
            lambda c=consent: records.prepare_study(PROFILE, **study_fields(consent=c))
        )  # type: ignore[misc]
        assert (
            "consent.confirmed: study MN-CRYO-EXAMPLE requires consent confirmed before the "
            "procedure opens"
        ) in message


def test_study_defaults_say_each_thing_once() -> None:
    meta = {"imaging": "ultrasound", "anaesthesia": "local", "probe_lot": "L1"}
    _sel, det = records.study_defaults(
        meta, {"indication": "mortons_neuroma"}, {}, PROFILE, gas="argon"
    )
    assert det == {
        "imaging": ["ultrasound"],
        "anaesthesia": "local",
        "probe_lot": "L1",
        "gas": "argon",
    }
    assert meta["indication"] == "mortons_neuroma"
    meta2: dict[str, Any] = {}
    records.study_defaults(
        meta2, {}, {"imaging": ["mri", "ultrasound"], "anaesthesia": "sedation"}, PROFILE
    )
    assert meta2 == {"imaging": "mri"}  # sedation has no code in the procedure's own list
    stump = load_study_profile("stump-neuroma-example")
    meta3: dict[str, Any] = {}
    records.study_defaults(meta3, {"indication": "traumatic_neuroma"}, {}, stump)
    assert meta3["indication"] == "other"
    assert meta3["indication_other"] == stump.indication("traumatic_neuroma").display  # type: ignore[union-attr]


# ---- baseline pain ------------------------------------------------------------------------
def test_run_waits_for_the_baseline_pain_score(engine: Engine) -> None:
    pid = open_study(engine)
    gate = queries.baseline_gate(engine, pid)
    assert [str(p) for p in gate] == [
        "baseline_pain: study MN-CRYO-EXAMPLE requires the baseline pain score (nrs_0_10) "
        "before the first freeze"
    ]
    write(engine, lambda s: records.record_baseline_pain(s, pid, {"score": 6}, by="op-a"))
    assert queries.baseline_gate(engine, pid) == []
    with Session(engine) as s:
        record = queries.study_record(s, pid)
    assert record is not None
    assert record.baseline_pain is not None
    assert (record.baseline_pain.score, record.baseline_pain.scale) == (6, "nrs_0_10")
    message = refusal(
        lambda: write(engine, lambda s: records.record_baseline_pain(s, pid, {"score": 5}, by="x"))
    )
    assert message == f"procedure {pid} already has its baseline pain score"


def test_a_procedure_without_a_study_has_no_gate(engine: Engine) -> None:
    pid = write(engine, lambda s: records.open_procedure(s, procedure_meta()))
    assert queries.baseline_gate(engine, pid) == []


def test_baseline_pain_is_refused_after_the_first_freeze_and_off_scale(engine: Engine) -> None:
    pid = open_study(engine)
    message = refusal(
        lambda: write(
            engine, lambda s: records.record_baseline_pain(s, pid, {"score": 7.5}, by="a")
        )
    )
    assert message == "baseline_pain.score: an NRS score is an integer 0-10 (got 7.5)"
    write(engine, lambda s: records.open_cycle(s, cycle_open(pid)))
    message = refusal(
        lambda: write(engine, lambda s: records.record_baseline_pain(s, pid, {"score": 7}, by="a"))
    )
    assert "baseline_pain.assessed_at: the baseline is taken before the first freeze" in message


# ---- adverse events ------------------------------------------------------------------------
def test_adverse_events_are_recorded_updated_and_listed(engine: Engine) -> None:
    pid = open_study(engine)
    aid = write(engine, lambda s: records.add_adverse_event(s, pid, ae(), by="op-a"))
    write(
        engine,
        lambda s: records.update_adverse_event(
            s, aid, {"outcome": "recovered_resolved", "resolution": "2099-01-02"}, by="op-b"
        ),
    )
    (row,) = queries.list_adverse_events(engine, pid)
    assert row["ae_id"] == aid
    assert (row["outcome"], row["resolution"], row["updated_by"]) == (
        "recovered_resolved",
        "2099-01-02",
        "op-b",
    )
    assert row["recorded_by"] == "op-a"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"onset": "2020-05-01"},
            "adverse_event.onset: 2020-05-01 is before the procedure opened",
        ),
        (
            {"onset": "2099-03-02", "resolution": "2099-03-01", "outcome": "recovered_resolved"},
            "adverse_event.resolution: 2099-03-01 is before the onset 2099-03-02",
        ),
        ({"ctcae_grade": 7}, "adverse_event.ctcae_grade: CTCAE v5 grade must be 1-5 (got 7)"),
        ({"ctcae_grade": 0}, "adverse_event.ctcae_grade: CTCAE v5 grade must be 1-5 (got 0)"),
        ({"category": "gremlins"}, "adverse_event.category: unknown code 'gremlins'"),
        (
            {"subcategory": "deep_infection"},
            "adverse_event.subcategory: 'deep_infection' is not a subcategory of "
            "'damage_to_adjacent_structures'",
        ),
        ({"relatedness_device": "maybe"}, "adverse_event.relatedness_device: unknown code 'maybe'"),
    ],
)
def test_adverse_event_refusals_say_why(
    engine: Engine, changes: dict[str, Any], expected: str
) -> None:
    pid = open_study(engine)
    message = refusal(
        lambda: write(engine, lambda s: records.add_adverse_event(s, pid, ae(**changes), by="a"))
    )
    assert expected in message
    assert queries.list_adverse_events(engine, pid) == []


def test_no_change_to_adverse_events_after_close(engine: Engine) -> None:
    pid = open_study(engine)
    aid = write(engine, lambda s: records.add_adverse_event(s, pid, ae(), by="op-a"))
    write(engine, lambda s: records.record_baseline_pain(s, pid, {"score": 6}, by="op-a"))
    write(
        engine,
        lambda s: records.close_procedure(
            s, records.ProcedureClose(procedure_id=pid, closed_by="op-a")
        ),
    )
    collector = (
        f"procedure {pid} is closed: {{}} after close is the study collector's to record, "
        "not the daemon's"
    )
    assert refusal(
        lambda: write(engine, lambda s: records.add_adverse_event(s, pid, ae(), by="a"))
    ) == collector.format("an adverse event")
    assert refusal(
        lambda: write(
            engine, lambda s: records.update_adverse_event(s, aid, {"ctcae_grade": 2}, by="a")
        )
    ) == collector.format("a change to an adverse event")
    # the close summarised the rows in the old yes/no list
    with Session(engine) as s:
        meta = queries.load_procedure(s, pid).metadata
    assert meta["adverse_events"] == [
        {"code": "damage_to_adjacent_structures", "text": ae()["verbatim_term"]}
    ]


def test_codes_given_at_close_become_rows_with_the_reason(engine: Engine) -> None:
    pid = write(engine, lambda s: records.open_procedure(s, procedure_meta()))
    close = records.ProcedureClose(
        procedure_id=pid,
        closed_by="op-a",
        adverse_events=[{"code": "infection"}, {"code": "other", "text": "itch"}],  # type: ignore[list-item]
    )
    write(engine, lambda s: records.close_procedure(s, close))
    rows = queries.list_adverse_events(engine, pid)
    assert [(r["category"], r["subcategory"], r["verbatim_term"]) for r in rows] == [
        ("infection", "unspecified_migrated", "Infection"),
        ("other", "unspecified_migrated", "itch"),
    ]
    assert all(r["ctcae_grade"] is None and r["relatedness_device"] is None for r in rows)
    assert "entered at close as the yes/no code 'infection'" in rows[0]["migration_reason"]
    with Session(engine) as s:
        meta = queries.load_procedure(s, pid).metadata
    assert meta["adverse_events"] == [
        {"code": "infection", "text": None},
        {"code": "other", "text": "itch"},
    ]


# ---- exports -------------------------------------------------------------------------------
def baseline_and_cycle(engine: Engine, pid: int) -> None:
    """Baseline pain 7, then one 90 s completed freeze cycle, on procedure ``pid``."""
    write(engine, lambda s: records.record_baseline_pain(s, pid, {"score": 7}, by="op-a"))
    cid = write(engine, lambda s: records.open_cycle(s, cycle_open(pid)))
    started = write(engine, lambda s: s.get(Cycle, cid).started_at)  # type: ignore[union-attr]
    write(
        engine,
        lambda s: records.close_cycle(
            s,
            records.CycleClose(
                cycle_id=cid,
                outcome=Outcome.COMPLETED,
                ended_at=started + dt.timedelta(seconds=90),
                ended_mono=None,
                min_tip_c=-80.0,
                time_to_target_s=20.0,
                time_below_m20_s=80.0,
                time_below_m40_s=70.0,
            ),
        ),
    )


def _full_procedure(engine: Engine) -> int:
    pid = open_study(engine)
    baseline_and_cycle(engine, pid)
    write(engine, lambda s: records.add_adverse_event(s, pid, ae(), by="op-a"))
    write(
        engine,
        lambda s: records.close_procedure(
            s, records.ProcedureClose(procedure_id=pid, closed_by="op-a")
        ),
    )
    return pid


def test_export_2_carries_the_study_record_and_verifies(engine: Engine, db_path: Path) -> None:
    pid = _full_procedure(engine)
    data = export.export_json(db_path, pid)
    jsonschema.validate(data, export.load_schema(), cls=jsonschema.Draft202012Validator)
    (p,) = data["procedures"]
    assert p["study"]["profile_hash"] == PROFILE.content_hash
    assert p["study"]["selection"]["web_space"] == "third"
    assert [a["score"] for a in p["pain_assessments"]] == [7.0]
    assert [a["subcategory"] for a in p["adverse_event_rows"]] == ["cold_injury"]
    assert p["gas"] == {"value": "argon", "note": None}
    (total,) = p["probe_totals"]
    assert (total["probe"], total["freeze_cycles"], total["freeze_s"]) == (1, 1, 90.0)
    assert total["gas_used_est_l"] is None  # not estimated: null with the reason, never 0
    assert total["note"] == f"gas_used_est_l: not estimated for cycle {p['cycles'][0]['cycle_id']}"
    report = export.verify_export(data, db=db_path)
    assert report.ok, report.lines()
    assert report.rows == 5  # the procedure, its cycle, pain score, adverse event and study row
    # an edited adverse event is named
    data["procedures"][0]["adverse_event_rows"][0]["ctcae_grade"] = 3
    bad = export.verify_export(data)
    assert [(f.table, f.columns) for f in bad.findings] == [("adverse_events", ("ctcae_grade",))]


def test_csv_carries_the_study_columns(engine: Engine, db_path: Path) -> None:
    _full_procedure(engine)
    (row,) = list(csv.DictReader(io.StringIO(export.export_csv(db_path), newline="")))
    assert row["study_profile_id"] == "MN-CRYO-EXAMPLE"
    assert row["sel_web_space"] == "third"
    assert row["sel_eligibility"] == "1"
    assert row["proc_imaging"] == "ultrasound"
    assert row["baseline_pain_score"] == "7.0"
    assert row["ae_rows"] == "1"
    assert row["ae_rows_summary"].endswith("damage_to_adjacent_structures/cold_injury grade 1")
    assert (row["gas"], row["probe_freeze_s"], row["probe_gas_used_est_l"]) == ("argon", "90.0", "")


def test_fhir_and_redcap_exports_of_the_database_pass_their_checks(
    engine: Engine, db_path: Path
) -> None:
    pid = _full_procedure(engine)
    bundle = study_export.fhir_export(db_path)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    for kind in (
        "ResearchStudy",
        "ResearchSubject",
        "Patient",
        "Procedure",
        "Device",
        "AdverseEvent",
    ):
        assert kind in kinds
    observations = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    assert any(
        c.get("code") == "72514-3" for o in observations for c in o["code"].get("coding", [])
    )
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    assert "name" not in patient
    assert "birthDate" not in patient
    files = study_export.redcap_export(db_path, pid)
    assert check_redcap_files(files) == []
    records_csv = list(csv.DictReader(io.StringIO(files["records.csv"], newline="")))
    assert {r["record_id"] for r in records_csv} == {"MN-0042"}
    assert any(r["redcap_repeat_instrument"] == "adverse_event" for r in records_csv)


def test_a_study_export_without_a_study_says_so(engine: Engine, db_path: Path) -> None:
    pid = write(engine, lambda s: records.open_procedure(s, procedure_meta()))
    with pytest.raises(study_export.StudyExportError, match="not recorded under a study profile"):
        study_export.fhir_export(db_path, pid)
    with pytest.raises(queries.NotFound):
        study_export.redcap_export(db_path, 99)


# ---- upgrade ---------------------------------------------------------------------------------
def test_upgrade_from_0005_turns_old_codes_into_rows_and_keeps_every_record(
    tmp_path: Path,
) -> None:
    from cryod.daemon.store import chain
    from cryod.daemon.store.chained import RESEARCH

    db = tmp_path / "old.db"
    migrate.upgrade(db, "0005", node="ws-old")
    con = sqlite3.connect(db)
    old = [
        (1, json.dumps([{"code": "pain", "text": None}, {"code": "other", "text": "rash"}])),
        (2, json.dumps([])),
        (3, None),  # still open: not recorded
        (4, json.dumps([{"code": "teleportation", "text": "?"}])),  # corrupt: kept as other
    ]
    for pid, events in old:
        con.execute(
            "INSERT INTO procedures (id, uuid, console, opened_at, closed_at, patient_ref,"
            " indication, site, side, imaging, anaesthesia, operator, software_version,"
            " host_only_limits, adverse_events) VALUES (?, ?, 'c1', ?, ?, 'MN-0042',"
            " 'mortons_neuroma', 'site', 'left', 'ultrasound', 'local', 'op', '0.9', 0, ?)",
            (
                pid,
                f"00000000-0000-4000-8000-00000000000{pid}",
                "2026-02-01T09:00:00.000000Z",
                None if events is None else "2026-02-01T10:00:00.000000Z",
                events,
            ),
        )
        chain.cover_row(con, RESEARCH.by_name["procedures"], {"id": pid}, "insert")
    con.commit()
    before = con.execute("SELECT * FROM procedures ORDER BY id").fetchall()
    con.close()

    migrate.upgrade_on_start(db)

    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT * FROM procedures ORDER BY id").fetchall() == before
        rows = con.execute(
            "SELECT procedure_id, category, subcategory, verbatim_term, ctcae_grade,"
            " relatedness_device, relatedness_procedure, migration_reason, recorded_at"
            " FROM adverse_events ORDER BY id"
        ).fetchall()
        summary = json.loads(
            con.execute(
                "SELECT payload FROM audit WHERE kind = 'legacy_adverse_events'"
            ).fetchone()[0]
        )
    finally:
        con.close()
    assert [r[:4] for r in rows] == [
        (1, "pain", "unspecified_migrated", "Pain (as an adverse event)"),
        (1, "other", "unspecified_migrated", "rash"),
        (4, "other", "unspecified_migrated", "?"),
    ]
    assert all(r[4:7] == (None, None, None) for r in rows)  # grade and relatedness empty
    assert "migrated from the yes/no adverse-event code 'pain'" in rows[0][7]
    assert "unknown old adverse-event code 'teleportation'" in rows[2][7]
    assert parse_utc(rows[0][8]) == dt.datetime(2026, 2, 1, 10, tzinfo=dt.UTC)
    assert summary["rows"] == 3
    assert summary["procedures"] == {"1": 2, "4": 1}
    report = check_record(db)
    assert report.ok, report.lines()
    assert report.rows.verified["adverse_events"] == 3
    # shown as "unspecified (migrated)" wherever a label is shown
    from cryod.research.vocab import AeSubcategory

    assert AeSubcategory("unspecified_migrated").label == "unspecified (migrated)"
    # and a migrated row keeps what the old record said
    engine = migrate.make_engine(db)
    try:
        message = refusal(
            lambda: write(
                engine, lambda s: records.update_adverse_event(s, 1, {"ctcae_grade": 1}, by="a")
            )
        )
    finally:
        engine.dispose()
    assert "procedure 1 is closed" in message
