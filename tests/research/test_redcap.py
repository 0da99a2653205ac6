"""REDCap: the generated longitudinal project passes every import rule, and each rule can fail."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import pytest

from cryod.research.profile import StudyProfile
from cryod.research.redcap_design import (
    DICTIONARY_COLUMNS,
    DICTIONARY_FILE,
    EVENTS_FILE,
    MAPPING_FILE,
    RECORDS_FILE,
    REPEATING_FILE,
    design_files,
    design_for,
)
from cryod.research.redcap_records import RecordRow, procedure_day_rows, records_csv
from cryod.research.redcap_rules import check_redcap_files
from cryod.research.vocab import AeCategory, AeSubcategory, Relatedness

from .examples import facts, mortons, record, stump

PROFILES = [mortons(), stump()]
IDS = ["mortons", "stump"]


def _files(profile: StudyProfile) -> dict[str, str]:
    design = design_for(profile)
    files = design_files(design)
    files[RECORDS_FILE] = records_csv(
        design, procedure_day_rows(profile, design, record(profile), facts())
    )
    return files


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _dictionary(profile: StudyProfile) -> dict[str, dict[str, str]]:
    return {r["Variable / Field Name"]: r for r in _rows(_files(profile)[DICTIONARY_FILE])}


@pytest.mark.parametrize("profile", PROFILES, ids=IDS)
def test_the_generated_project_passes_every_rule(profile: StudyProfile) -> None:
    assert check_redcap_files(_files(profile)) == []


def test_dictionary_has_redcaps_18_columns_and_record_id_first() -> None:
    text = _files(mortons())[DICTIONARY_FILE]
    header = next(csv.reader(io.StringIO(text)))
    assert len(header) == 18
    assert tuple(header) == DICTIONARY_COLUMNS
    assert header[0] == "Variable / Field Name"
    assert _rows(text)[0]["Variable / Field Name"] == "record_id"
    assert text.endswith("\r\n")


def test_choices_equal_the_vocabularies_narrowed_by_the_profile() -> None:
    d = _dictionary(mortons())
    choices = d["ae_category"]["Choices, Calculations, OR Slider Labels"]
    assert [c.split(",")[0].strip() for c in choices.split("|")] == [m.value for m in AeCategory]
    sub = d["ae_subcategory"]["Choices, Calculations, OR Slider Labels"]
    assert [c.split(",")[0].strip() for c in sub.split("|")] == [m.value for m in AeSubcategory]
    assert "unspecified_migrated, unspecified (migrated)" in sub
    rel = d["ae_rel_device"]["Choices, Calculations, OR Slider Labels"]
    assert [c.split(",")[0].strip() for c in rel.split("|")] == [m.value for m in Relatedness]
    web = d["sel_web_space"]["Choices, Calculations, OR Slider Labels"]
    assert web == "second, Second (2nd/3rd toe) | third, Third (3rd/4th toe)"
    assert d["proc_imaging"]["Field Type"] == "checkbox"
    assert d["sel_indication"]["Choices, Calculations, OR Slider Labels"] == (
        "mortons_neuroma, Morton's metatarsalgia"
    )


def test_pain_score_is_nrs_integer_0_10_or_vas_0_100() -> None:
    nrs = _dictionary(mortons())["pain_score"]
    assert (
        nrs["Text Validation Type OR Show Slider Number"],
        nrs["Text Validation Min"],
        nrs["Text Validation Max"],
    ) == ("integer", "0", "10")
    vas = _dictionary(stump())["pain_score"]
    assert (vas["Text Validation Type OR Show Slider Number"], vas["Text Validation Max"]) == (
        "number",
        "100",
    )


def test_events_are_baseline_procedure_and_each_follow_up_time_point() -> None:
    events = _rows(_files(mortons())[EVENTS_FILE])
    assert [e["unique_event_name"] for e in events] == [
        "baseline_arm_1",
        "procedure_arm_1",
        "d7_arm_1",
        "m1_arm_1",
        "d45_arm_1",
        "m3_arm_1",
        "m6_arm_1",
        "m12_arm_1",
    ]
    d45 = events[4]
    assert (d45["day_offset"], d45["offset_min"], d45["offset_max"]) == ("45", "5", "7")


@pytest.mark.parametrize("profile", PROFILES, ids=IDS)
def test_procedures_cycles_and_adverse_events_repeat(profile: StudyProfile) -> None:
    rep = {(r["event_name"], r["form_name"]) for r in _rows(_files(profile)[REPEATING_FILE])}
    assert {
        ("procedure_arm_1", "procedure"),
        ("procedure_arm_1", "cycle"),
        ("procedure_arm_1", "adverse_event"),
        ("m12_arm_1", "adverse_event"),
    } <= rep
    restart = profile.follow_up.restart_after_repeat
    assert (("d7_arm_1", "pain") in rep) is restart
    assert (("baseline_arm_1", "pain") in rep) is restart


def test_records_carry_the_procedure_day() -> None:
    rows = _rows(_files(mortons())[RECORDS_FILE])
    by_form = {(r["redcap_event_name"], r["redcap_repeat_instrument"]): r for r in rows}
    enrol = by_form[("baseline_arm_1", "")]
    assert (enrol["record_id"], enrol["enr_consent"], enrol["enr_consent_form"]) == (
        "MN-0042",
        "1",
        "1.0",
    )
    pain = by_form[("baseline_arm_1", "pain")]
    assert (pain["pain_score"], pain["pain_assessed_at"]) == ("7", "2026-03-02 09:05:00")
    proc = by_form[("procedure_arm_1", "procedure")]
    assert proc["proc_imaging___ultrasound"] == "1"
    assert proc["proc_imaging___mri"] == "0"
    assert proc["sel_prior_tx___steroid_injection"] == "1"
    assert proc["elig_age_18_or_over"] == "1"
    cycles = [r for r in rows if r["redcap_repeat_instrument"] == "cycle"]
    assert [r["redcap_repeat_instance"] for r in cycles] == ["1", "2"]
    assert cycles[1]["cyc_gas_used_l"] == ""  # not computed: blank, never 0
    ae = by_form[("procedure_arm_1", "adverse_event")]
    assert (ae["ae_grade"], ae["ae_serious"], ae["ae_subcategory"]) == ("1", "0", "cold_injury")


def test_the_collector_adds_follow_up_rows_to_the_same_design() -> None:
    """Follow-up data goes into the same dictionary: rows, not a new design."""
    p = mortons()
    design = design_for(p)
    rows = procedure_day_rows(p, design, record(p), facts())
    uid = str(facts().procedure_uuid)
    rows += [
        RecordRow(
            "MN-0042",
            "d45_arm_1",
            "visit",
            1,
            {
                "visit_procedure_uuid": uid,
                "visit_status": "done",
                "visit_date": "2026-04-16",
                "visit_mode": "phone",
                "visit_complete": "2",
            },
        ),
        RecordRow(
            "MN-0042",
            "d45_arm_1",
            "pain",
            1,
            {
                "pain_procedure_uuid": uid,
                "pain_score": "3",
                "pain_complete": "2",
            },
        ),
        RecordRow(
            "MN-0042",
            "d45_arm_1",
            "quality_of_life",
            1,
            {
                "qol_procedure_uuid": uid,
                "qol_score": "0.81",
                "qol_date": "2026-04-16",
            },
        ),
        RecordRow(
            "MN-0042",
            "d45_arm_1",
            "adverse_event",
            1,
            {
                "ae_procedure_uuid": uid,
                "ae_category": "worsening_of_symptoms",
                "ae_subcategory": "sensory_disturbance",
                "ae_verbatim": "numb third toe",
                "ae_onset": "2026-04",
                "ae_grade": "1",
                "ae_serious": "0",
            },
        ),
        RecordRow(
            "MN-0042",
            "m3_arm_1",
            "visit",
            1,
            {
                "visit_status": "lost_to_follow_up",
                "visit_reason": "no answer",
            },
        ),
    ]
    files = design_files(design)
    files[RECORDS_FILE] = records_csv(design, rows)
    assert check_redcap_files(files) == []
    assert files[DICTIONARY_FILE] == design_files(design_for(p))[DICTIONARY_FILE]


def test_records_csv_refuses_a_column_outside_the_dictionary() -> None:
    design = design_for(mortons())
    with pytest.raises(ValueError, match="columns not in the data dictionary: pain_mood"):
        records_csv(design, [RecordRow("MN-0042", "d7_arm_1", "pain", 1, {"pain_mood": "x"})])


def test_two_procedures_merge_into_one_enrolment_row() -> None:
    p = stump()
    design = design_for(p)
    first = procedure_day_rows(p, design, record(p), facts())
    repeat = record(p).model_copy(
        update={
            "procedure": record(p).procedure.model_copy(
                update={"treatment_number": 2, "repeat_of": facts().procedure_uuid}
            )
        }
    )
    second = procedure_day_rows(
        p,
        design,
        repeat,
        facts(procedure_id=2, procedure_uuid="5d0d7c8e-2d1b-4a57-9d8e-7e0c1b2a3f45", cycles=[]),
    )
    files = design_files(design)
    files[RECORDS_FILE] = records_csv(design, first + second)
    assert check_redcap_files(files) == []
    rows = _rows(files[RECORDS_FILE])
    baseline = [r for r in rows if r["redcap_event_name"] == "baseline_arm_1"]
    # no restart after a repeat in this study: one baseline row, the first procedure's pain
    assert len(baseline) == 1
    assert baseline[0]["pain_procedure_uuid"] == str(facts().procedure_uuid)
    procs = [r for r in rows if r["redcap_repeat_instrument"] == "procedure"]
    assert [r["redcap_repeat_instance"] for r in procs] == ["1", "2"]


# ---- negative tests: each rule can fail -----------------------------------------------
def _edit(name: str, edit: Callable[[str], str]) -> list[str]:
    files = _files(mortons())
    changed = edit(files[name])
    assert changed != files[name], "the edit changed nothing"
    files[name] = changed
    return [str(p) for p in check_redcap_files(files)]


def _swap_lines(text: str, a: int, b: int) -> str:
    lines = text.split("\r\n")
    lines[a], lines[b] = lines[b], lines[a]
    return "\r\n".join(lines)


def _drop_line(text: str, start: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith(start))


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [
        (
            DICTIONARY_FILE,
            lambda t: t.replace("Field Note,", "Notes,", 1),
            "data_dictionary.csv:1: header must be REDCap's 18 columns in order",
        ),
        (
            DICTIONARY_FILE,
            lambda t: _swap_lines(t, 1, 2),
            "data_dictionary.csv:2: the first field must be record_id",
        ),
        (
            DICTIONARY_FILE,
            lambda t: t.replace("\r\npain_score,pain,", "\r\nPain Score,pain,"),
            "field name 'Pain Score': lower case letters",
        ),
        (
            DICTIONARY_FILE,
            lambda t: t.replace(
                "\r\nproc_side,procedure,", "\r\nproc_side_of_the_body_treated,procedure,"
            ),
            "at most 26 characters",
        ),
        (
            DICTIONARY_FILE,
            lambda t: t.replace("\r\ncyc_protocol,cycle,", "\r\ncyc_probe,cycle,"),
            "field 'cyc_probe' defined twice",
        ),
        (
            DICTIONARY_FILE,
            lambda t: t.replace("\r\ncyc_protocol,cycle,", "\r\ncyc_protocol,procedure,"),
            "form 'procedure': its fields are not contiguous",
        ),
        (
            DICTIONARY_FILE,
            lambda t: t.replace("freeze, Freeze | thaw, Thaw", "freeze, Freeze | thaw"),
            "cyc_phase: choices must be 'code, label | code, label'",
        ),
        (
            DICTIONARY_FILE,
            lambda t: t.replace("second, Second (2nd/3rd toe)", "2nd toe, Second (2nd/3rd toe)"),
            "sel_web_space: choice code '2nd toe' is not a valid code",
        ),
        (
            DICTIONARY_FILE,
            lambda t: t.replace("freeze, Freeze | thaw, Thaw", "freeze, Freeze | freeze, Thaw"),
            "cyc_phase: a choice code appears twice",
        ),
        (
            DICTIONARY_FILE,
            lambda t: t.replace("ultrasound, Ultrasound", "Ultrasound, Ultrasound"),
            "proc_imaging: choice code 'Ultrasound' is not a valid code",
        ),
        (
            DICTIONARY_FILE,
            lambda t: t.replace("integer,0,10", "integer,10,0"),
            "pain_score: validation min is above max",
        ),
        (
            DICTIONARY_FILE,
            lambda t: t.replace("integer,0,10", "integer,zero,10"),
            "pain_score: validation min 'zero' is not a number",
        ),
        (
            DICTIONARY_FILE,
            lambda t: t.replace("date_ymd", "date_ydm", 1),
            "unknown validation type 'date_ydm'",
        ),
        (
            DICTIONARY_FILE,
            lambda t: t.replace("[ae_serious] = '1'", "[ae_seriousness] = '1'"),
            "ae_serious_crit: branching logic names unknown field 'ae_seriousness'",
        ),
        (
            EVENTS_FILE,
            lambda t: t.replace("d7,1,7,2,3,d7_arm_1", "d7,1,7,2,3,day7_arm_1"),
            "unique_event_name 'day7_arm_1' is not <event_name>_arm_<arm_num>",
        ),
        (
            EVENTS_FILE,
            lambda t: t.replace("d7,1,7", "d7,2,7"),
            "arm '2' is not in arms.csv",
        ),
        (
            MAPPING_FILE,
            lambda t: _drop_line(t, "1,procedure_arm_1,cycle"),
            "form 'cycle' is not mapped to any event",
        ),
        (
            MAPPING_FILE,
            lambda t: t + "1,m24_arm_1,pain\r\n",
            "unknown event 'm24_arm_1'",
        ),
        (
            REPEATING_FILE,
            lambda t: t.replace(
                "procedure_arm_1,adverse_event,", "procedure_arm_1,adverse_events,"
            ),
            "repeating instrument 'adverse_events' is not a form name",
        ),
        (
            REPEATING_FILE,
            lambda t: t + "baseline_arm_1,cycle,Cycles\r\n",
            "repeating instrument 'cycle' is not mapped to 'baseline_arm_1'",
        ),
        (
            RECORDS_FILE,
            lambda t: t.replace("redcap_event_name,", "event,", 1),
            "header must start record_id, redcap_event_name",
        ),
        (
            RECORDS_FILE,
            lambda t: t.replace("pain_score,", "pain_mood,", 1),
            "column 'pain_mood' is not in the data dictionary",
        ),
        (
            RECORDS_FILE,
            lambda t: t.replace(
                "MN-0042,procedure_arm_1,cycle,2,", "MN-0042,procedure_arm_1,cycles,2,"
            ),
            "'cycles' is not a repeating instrument of 'procedure_arm_1'",
        ),
        (
            RECORDS_FILE,
            lambda t: t.replace(
                "MN-0042,procedure_arm_1,cycle,2,", "MN-0042,procedure_arm_1,cycle,0,"
            ),
            "repeat instance '0' is not a positive integer",
        ),
        (
            RECORDS_FILE,
            lambda t: t.replace(
                "MN-0042,procedure_arm_1,cycle,2,", "MN-0042,procedure_arm_1,cycle,1,"
            ),
            "the same record, event, instrument and instance twice",
        ),
        (
            RECORDS_FILE,
            lambda t: t.replace("MN-0042,procedure_arm_1,cycle,2,", "MN-0042,d7_arm_1,cycle,2,"),
            "'cycle' is not a repeating instrument of 'd7_arm_1'",
        ),
        (
            RECORDS_FILE,
            lambda t: t.replace("MN-0042,baseline_arm_1,,,", "MN-0042,baseline_arm_9,,,"),
            "unknown event 'baseline_arm_9'",
        ),
        (
            RECORDS_FILE,
            lambda t: t.replace(",cold_injury,", ",frostbite,"),
            "ae_subcategory: 'frostbite' is not a choice",
        ),
        (
            RECORDS_FILE,
            lambda t: t.replace(",7,2026-03-02 09:05:00,", ",11,2026-03-02 09:05:00,"),
            "pain_score: 11 is outside 0..10",
        ),
        (
            RECORDS_FILE,
            lambda t: t.replace(",7,2026-03-02 09:05:00,", ",7.5,2026-03-02 09:05:00,"),
            "pain_score: '7.5' is not an integer",
        ),
        (
            RECORDS_FILE,
            lambda t: t.replace(",7,2026-03-02 09:05:00,", ",7,2026-03-02T09:05:00,"),
            "pain_assessed_at: '2026-03-02T09:05:00' is not datetime_seconds_ymd",
        ),
        (
            RECORDS_FILE,
            lambda t: t.replace(
                "MN-0042,baseline_arm_1,,,MN-CRYO-EXAMPLE,1,",
                "MN-0042,baseline_arm_1,,,MN-CRYO-EXAMPLE,yes,",
            ),
            "enr_consent: 'yes' is not 0 or 1",
        ),
    ],
)
def test_each_rule_can_fail(name: str, edit: Callable[[str], str], expected: str) -> None:
    problems = _edit(name, edit)
    assert any(expected in p for p in problems), problems


def test_values_outside_their_event_or_instrument_are_refused() -> None:
    p = mortons()
    design = design_for(p)
    files = design_files(design)
    # a procedure-day form in a follow-up event, and a pain value in the cycle instrument
    files[RECORDS_FILE] = records_csv(
        design,
        [
            RecordRow("MN-0042", "d7_arm_1", "", None, {"enr_study_id": "x"}),
            RecordRow("MN-0042", "procedure_arm_1", "cycle", 1, {"pain_score": "3"}),
            RecordRow("MN-0042", "d7_arm_1", "", 4, {}),
            RecordRow("MN-0042", "d7_arm_1", "", None, {"pain_score": "3"}),
        ],
    )
    problems = [str(p) for p in check_redcap_files(files)]
    assert any("enr_study_id: form 'enrolment' is not mapped to 'd7_arm_1'" in x for x in problems)
    assert any("pain_score: form 'pain' is not mapped to 'procedure_arm_1'" in x for x in problems)
    assert any("a repeat instance without a repeating instrument" in x for x in problems)
    assert any("pain_score: form 'pain' repeats in 'd7_arm_1'" in x for x in problems)


def test_a_missing_file_is_named() -> None:
    files = _files(mortons())
    del files[MAPPING_FILE]
    assert [str(p) for p in check_redcap_files(files)] == [f"{MAPPING_FILE}: missing"]
