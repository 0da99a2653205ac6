"""The procedure-day record against its study profile: each refusal with the message it gives."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from cryod.research.problems import Problem, ResearchDataError
from cryod.research.record import (
    Consent,
    PainAssessment,
    ProcedureDayRecord,
    ProcedureDetails,
    Selection,
)
from cryod.research.validation import (
    baseline_pain_gate,
    check_adverse_event,
    check_baseline_pain,
    check_consent,
    check_procedure_details,
    check_record,
    check_selection,
    parse_adverse_event,
    parse_model,
    parse_record,
)

from .examples import OPENED, adverse_event, mortons, record, record_data, stump


def _messages(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


def _ae_problems(**changes: Any) -> list[str]:
    with pytest.raises(ResearchDataError) as err:
        parse_adverse_event(adverse_event(**changes), opened_at=OPENED, tz=mortons().zone)
    return str(err.value).splitlines()


@pytest.mark.parametrize("profile", [mortons(), stump()], ids=["mortons", "stump"])
def test_a_complete_record_passes(profile: Any) -> None:
    assert check_record(profile, record(profile), opened_at=OPENED) == []
    assert parse_record(profile, record_data(profile), opened_at=OPENED) == record(profile)


def test_missing_required_fields_are_named_each() -> None:
    p = mortons()
    problems = check_selection(p, Selection()) + check_procedure_details(p, ProcedureDetails())
    assert _messages(problems) == [
        f"selection.{name}: required by study MN-CRYO-EXAMPLE" for name in p.selection.required
    ] + [f"procedure.{name}: required by study MN-CRYO-EXAMPLE" for name in p.procedure.required]


def test_values_outside_the_profile_list_are_named_each() -> None:
    p = mortons()
    sel = parse_model(Selection, {"aetiology": "traumatic", "web_space": "first"})
    proc = parse_model(
        ProcedureDetails, {"imaging": ["ct", "ultrasound", "mri"], "anaesthesia": "general"}
    )
    problems = _messages(check_selection(p, sel) + check_procedure_details(p, proc))
    assert (
        "selection.aetiology: 'traumatic' is not allowed by study MN-CRYO-EXAMPLE "
        "(allowed: idiopathic_mortons)" in problems
    )
    assert (
        "selection.web_space: 'first' is not allowed by study MN-CRYO-EXAMPLE "
        "(allowed: second, third)" in problems
    )
    assert (
        "procedure.imaging: 'ct' is not allowed by study MN-CRYO-EXAMPLE "
        "(allowed: ultrasound, mri)" in problems
    )
    assert (
        "procedure.anaesthesia: 'general' is not allowed by study MN-CRYO-EXAMPLE "
        "(allowed: local, regional)" in problems
    )


def test_unknown_codes_are_refused_with_the_list() -> None:
    with pytest.raises(ResearchDataError) as err:
        parse_model(ProcedureDetails, {"setting": "home", "gas": "helium"}, prefix="procedure")
    assert str(err.value).splitlines() == [
        "procedure.setting: unknown code 'home' (allowed: 'day_case', 'outpatient' or 'inpatient')",
        "procedure.gas: unknown code 'helium' (allowed: 'argon', 'n2o' or 'co2')",
    ]


def test_unknown_indication_is_refused() -> None:
    sel = Selection(indication="stump_neuroma")
    assert (
        "selection.indication: unknown indication 'stump_neuroma' for study MN-CRYO-EXAMPLE "
        "(allowed: mortons_neuroma)" in _messages(check_selection(mortons(), sel))
    )


def test_consent_refusals() -> None:
    p = mortons()
    expected = (
        "consent.confirmed: study MN-CRYO-EXAMPLE requires consent confirmed before the "
        "procedure opens"
    )
    assert _messages(check_consent(p, None)) == [expected]
    assert _messages(check_consent(p, Consent(confirmed=False))) == [expected]
    assert _messages(check_consent(p, Consent(confirmed=True))) == [
        "consent.form_version: required with consent"
    ]
    assert _messages(check_consent(p, Consent(confirmed=True, form_version="0.9"))) == [
        "consent.form_version: '0.9' is not a consent form of study MN-CRYO-EXAMPLE (allowed: 1.0)"
    ]
    assert check_consent(p, Consent(confirmed=True, form_version="1.0")) == []


def test_eligibility_checklist_refusals() -> None:
    p = mortons()
    data = record_data(p)["selection"]
    data["eligibility"]["items"]["no_local_infection"] = False
    del data["eligibility"]["items"]["age_18_or_over"]
    data["eligibility"]["items"]["likes_cats"] = True
    problems = _messages(check_selection(p, parse_model(Selection, data)))
    assert problems == [
        "selection.eligibility.items.age_18_or_over: not answered",
        "selection.eligibility.items.no_local_infection: not confirmed (No infection at the "
        "treatment site): the patient is not eligible",
        "selection.eligibility.items.likes_cats: not an item of the checklist",
    ]
    data["eligibility"]["checklist_version"] = "0.1"
    assert _messages(check_selection(p, parse_model(Selection, data))) == [
        "selection.eligibility: checklist MN-ELIG v0.1 is not the study's (MN-ELIG v1.0)"
    ]


def test_repeat_treatment_needs_the_earlier_procedure() -> None:
    p = mortons()
    base = record_data(p)["procedure"]
    assert (
        "procedure.repeat_of: a repeat treatment (number > 1) names the earlier one"
        in _messages(check_procedure_details(p, ProcedureDetails(**base, treatment_number=2)))
    )
    single = ProcedureDetails(**base, repeat_of="0b7f5d2c-1a64-4e53-9e4e-2f1c8d6a9b10")
    assert "procedure.treatment_number: a repeat (repeat_of given) is number 2 or more" in (
        _messages(check_procedure_details(p, single))
    )


def test_baseline_pain_refusals() -> None:
    p = mortons()
    when = dt.datetime(2026, 3, 2, 9, 5, tzinfo=dt.UTC)
    good = PainAssessment(
        time_point="baseline",
        scale="nrs_0_10",
        score=7,
        recall_period="past_7_days",
        assessed_at=when,
    )
    assert check_baseline_pain(p, good, first_freeze_at=when + dt.timedelta(minutes=5)) == []
    assert _messages(check_baseline_pain(p, good.model_copy(update={"score": 6.5}))) == [
        "baseline_pain.score: an NRS score is an integer 0-10 (got 6.5)"
    ]
    assert _messages(check_baseline_pain(p, good.model_copy(update={"score": 11}))) == [
        "baseline_pain.score: an NRS score is an integer 0-10 (got 11)"
    ]
    wrong = good.model_copy(
        update={"scale": "vas_0_100_mm", "recall_period": "now", "time_point": "d7"}
    )
    assert _messages(check_baseline_pain(p, wrong)) == [
        "baseline_pain.time_point: 'd7' is not the baseline time point 'baseline'",
        "baseline_pain.scale: study MN-CRYO-EXAMPLE uses nrs_0_10",
        "baseline_pain.recall_period: study MN-CRYO-EXAMPLE asks for past_7_days",
    ]
    assert _messages(check_baseline_pain(p, good, first_freeze_at=when)) == [
        "baseline_pain.assessed_at: the baseline is taken before the first freeze"
    ]


def test_run_and_freeze_wait_for_the_baseline_pain_score() -> None:
    p = mortons()
    assert _messages(baseline_pain_gate(p, None)) == [
        "baseline_pain: study MN-CRYO-EXAMPLE requires the baseline pain score (nrs_0_10) "
        "before the first freeze"
    ]
    assert baseline_pain_gate(p, record(p).baseline_pain) == []


def test_a_valid_adverse_event_is_accepted() -> None:
    ae = parse_adverse_event(adverse_event(), opened_at=OPENED, tz=mortons().zone)
    assert ae.subcategory == "cold_injury"


def test_pain_as_an_adverse_event_is_a_safety_code() -> None:
    ae = parse_adverse_event(
        adverse_event(category="pain", subcategory="post_procedural_pain"),
        opened_at=OPENED,
        tz=mortons().zone,
    )
    assert ae.category == "pain"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"onset": "2026-03-01"},
            "adverse_event.onset: 2026-03-01 is before the procedure opened "
            "(2026-03-02T09:00+00:00)",
        ),
        (
            {"onset": "2026-02"},
            "adverse_event.onset: 2026-02 is before the procedure opened (2026-03-02T09:00+00:00)",
        ),
        (
            {"onset": "2026-03-02T08:30"},
            "adverse_event.onset: 2026-03-02T08:30 is before the procedure opened "
            "(2026-03-02T09:00+00:00)",
        ),
        (
            {"resolution": "2026-03-01", "outcome": "recovered_resolved"},
            "adverse_event.resolution: 2026-03-01 is before the onset 2026-03-02T09:25",
        ),
        ({"ctcae_grade": 6}, "adverse_event.ctcae_grade: CTCAE v5 grade must be 1-5 (got 6)"),
        ({"ctcae_grade": 0}, "adverse_event.ctcae_grade: CTCAE v5 grade must be 1-5 (got 0)"),
        (
            {"category": "burns"},
            "adverse_event.category: unknown code 'burns' (allowed: 'pain', "
            "'worsening_of_symptoms', 'infection', 'damage_to_adjacent_structures', "
            "'further_intervention' or 'other')",
        ),
        (
            {"relatedness_device": "maybe"},
            "adverse_event.relatedness_device: unknown code 'maybe' (allowed: 'not_related', "
            "'unlikely', 'possibly', 'probably' or 'definitely')",
        ),
        (
            {"subcategory": "deep_infection"},
            "adverse_event.subcategory: 'deep_infection' is not a subcategory of "
            "'damage_to_adjacent_structures' (allowed: nerve_damage, skin_injury, cold_injury, "
            "vessel_damage, other_structure_damage)",
        ),
        (
            {"subcategory": "unspecified_migrated"},
            "adverse_event.subcategory: 'unspecified_migrated' is kept for migrated rows only",
        ),
        (
            {"serious": True},
            "adverse_event.seriousness_criteria: a serious adverse event names at least one "
            "criterion",
        ),
        (
            {"seriousness_criteria": ["hospitalisation"]},
            "adverse_event.seriousness_criteria: criteria apply to serious adverse events only",
        ),
        (
            {"ctcae_grade": 5, "serious": True, "seriousness_criteria": ["death"]},
            "adverse_event.outcome: CTCAE grade 5 (death) and outcome 'fatal' go together",
        ),
        (
            {"resolution": "2026-03-03"},
            "adverse_event.resolution: an event with outcome 'recovering_resolving' has not "
            "resolved",
        ),
        (
            {"category": "further_intervention", "subcategory": "surgical_intervention"},
            "adverse_event.further_intervention: required for category 'further_intervention'",
        ),
        (
            {"further_intervention": "wound_care", "further_intervention_date": "2026-03-01"},
            "adverse_event.further_intervention_date: 2026-03-01 is before the onset",
        ),
        (
            {"onset": "2026-3-2"},
            "adverse_event.onset: not an ISO 8601 date: use YYYY, YYYY-MM, "
            "YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][offset]",
        ),
        (
            {"migration_reason": "x"},
            "adverse_event.migration_reason: set only by the migration of old records",
        ),
    ],
)
def test_adverse_event_refusals(changes: dict[str, Any], expected: str) -> None:
    assert expected in _ae_problems(**changes)


def test_an_adverse_event_states_what_a_study_needs() -> None:
    data = {"category": "infection", "subcategory": "superficial_infection", "verbatim_term": "x"}
    with pytest.raises(ResearchDataError) as err:
        parse_adverse_event(data, opened_at=OPENED, tz=mortons().zone)
    assert str(err.value).splitlines() == [
        f"adverse_event.{name}: required"
        for name in (
            "onset",
            "ctcae_grade",
            "serious",
            "relatedness_device",
            "relatedness_procedure",
            "outcome",
            "action_taken",
        )
    ]


def test_partial_onset_is_never_refused_for_what_it_might_be() -> None:
    for onset in ("2026", "2026-03", "2026-03-02"):
        ae = parse_adverse_event(adverse_event(onset=onset), opened_at=OPENED, tz=mortons().zone)
        assert check_adverse_event(ae, opened_at=OPENED, tz=mortons().zone) == []


def test_parse_record_reports_every_problem_of_every_section() -> None:
    p = mortons()
    data = record_data(
        p,
        consent={"confirmed": False},
        baseline_pain=None,
        adverse_events=[adverse_event(ctcae_grade=7), adverse_event(onset="2025")],
    )
    with pytest.raises(ResearchDataError) as err:
        parse_record(p, data, opened_at=OPENED)
    assert str(err.value).splitlines() == [
        "adverse_events.0.ctcae_grade: CTCAE v5 grade must be 1-5 (got 7)",
    ]
    data["adverse_events"] = [adverse_event(onset="2025")]
    with pytest.raises(ResearchDataError) as err:
        parse_record(p, data, opened_at=OPENED)
    assert str(err.value).splitlines() == [
        "consent.confirmed: study MN-CRYO-EXAMPLE requires consent confirmed before the "
        "procedure opens",
        "baseline_pain: study MN-CRYO-EXAMPLE requires the baseline pain score (nrs_0_10) "
        "before the first freeze",
        "adverse_events.0.onset: 2025 is before the procedure opened (2026-03-02T09:00+00:00)",
    ]


def test_a_record_made_under_another_profile_is_refused() -> None:
    stamp = mortons().stamp().model_copy(update={"version": "0.9.0"})
    data = record_data(mortons())
    data["profile"] = stamp.model_dump()
    problems = _messages(
        check_record(mortons(), parse_model(ProcedureDayRecord, data), opened_at=OPENED)
    )
    assert problems[0].startswith("profile: recorded under MN-CRYO-EXAMPLE v0.9.0 (sha256:")


def test_free_text_is_never_echoed_in_a_message() -> None:
    with pytest.raises(ResearchDataError) as err:
        parse_model(ProcedureDetails, {"probe_model": "x" * 65}, prefix="procedure")
    assert "xxxx" not in str(err.value)
    assert str(err.value) == "procedure.probe_model: string should have at most 64 characters"
