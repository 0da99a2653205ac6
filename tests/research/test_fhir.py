"""FHIR R4B bundle: a full record validates with fhir.resources AND the project check.

Each negative test changes one thing of a valid bundle and shows which of the
two validations refuses it; ``status="bogus"`` passes the library and fails
the project check (the reason the project check exists).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from cryod.research.facts import CycleFacts
from cryod.research.fhir_bundle import StudyProcedure, build_bundle
from cryod.research.fhir_check import project_problems, validate_bundle
from cryod.research.fhir_library import library_problems
from cryod.research.fhir_terms import UCUM, cs
from cryod.research.legacy import migrate_legacy_adverse_events
from cryod.research.profile import StudyProfile

from .examples import PROCEDURE_UUID, facts, mortons, record, study_procedure, stump

JSON = dict[str, Any]


def _bundle(profile: StudyProfile | None = None) -> JSON:
    p = profile or mortons()
    return build_bundle(p, [study_procedure(p)])


def _resources(bundle: JSON, kind: str) -> list[JSON]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


@pytest.mark.parametrize("profile", [mortons(), stump()], ids=["mortons", "stump"])
def test_full_record_validates_both_ways(profile: StudyProfile) -> None:
    bundle = _bundle(profile)
    assert library_problems(bundle) == []
    assert project_problems(bundle, profile) == []
    kinds = sorted(e["resource"]["resourceType"] for e in bundle["entry"])
    assert kinds == sorted(
        [
            "Organization",
            "ResearchStudy",
            "Patient",
            "ResearchSubject",
            "Device",
            "Device",
            "Procedure",
            "Observation",
            "Observation",
            "Observation",
            "Observation",
            "AdverseEvent",
        ]
    )


def test_the_bundle_is_the_same_for_the_same_record() -> None:
    assert _bundle() == _bundle()
    assert build_bundle(mortons(), [study_procedure(mortons())], generated_at=None) == _bundle()


def test_patient_carries_the_pseudonym_only() -> None:
    (patient,) = _resources(_bundle(), "Patient")
    assert set(patient) == {"resourceType", "id", "identifier"}
    assert patient["identifier"] == [
        {"system": "urn:cryod:study:MN-CRYO-EXAMPLE:pseudonym", "value": "MN-0042"}
    ]


def test_baseline_pain_is_loinc_72514_3_in_score_units() -> None:
    pain = next(
        o
        for o in _resources(_bundle(), "Observation")
        if o["code"]["coding"][0]["code"] == "72514-3"
    )
    assert pain["code"]["coding"][0]["system"] == "http://loinc.org"
    assert pain["valueQuantity"] == {"value": 7, "unit": "score", "system": UCUM, "code": "{score}"}
    vas = next(
        o
        for o in _resources(_bundle(stump()), "Observation")
        if o["code"]["coding"][0]["code"] == "pain-vas-100mm"
    )
    assert vas["valueQuantity"]["code"] == "mm"


def test_cycle_figures_carry_ucum_units_and_absent_reasons() -> None:
    cycles = [
        o
        for o in _resources(_bundle(), "Observation")
        if o["code"]["coding"][0]["system"] == cs("cycle")
    ]
    freeze, thaw = cycles
    figures = {c["code"]["coding"][0]["code"]: c for c in freeze["component"]}
    assert figures["min-tip-temperature"]["valueQuantity"]["code"] == "Cel"
    assert figures["min-tip-temperature"]["valueQuantity"]["value"] == -78.4
    assert figures["supply-pressure-start"]["valueQuantity"]["code"] == "kPa"
    assert figures["time-below-minus-40c"]["valueQuantity"]["code"] == "s"
    # a thaw figure in a freeze is not applicable; a figure that was not computed is unknown
    reason = figures["thaw-to-0c"]["dataAbsentReason"]["coding"][0]["code"]
    assert reason == "not-applicable"
    thaw_figs = {c["code"]["coding"][0]["code"]: c for c in thaw["component"]}
    assert thaw_figs["gas-used-estimate"]["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert "valueQuantity" not in thaw_figs["gas-used-estimate"]


def test_an_open_procedure_and_a_running_cycle() -> None:
    running = CycleFacts(
        cycle_id=3,
        probe=1,
        phase="freeze",
        started_at=dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC),
    )
    sp = StudyProcedure(record=record(mortons()), facts=facts(closed_at=None, cycles=[running]))
    bundle = build_bundle(mortons(), [sp])
    assert validate_bundle(bundle, mortons()) == []
    (proc,) = _resources(bundle, "Procedure")
    assert proc["status"] == "in-progress"
    assert "end" not in proc["performedPeriod"]
    (subject,) = _resources(bundle, "ResearchSubject")
    assert subject["status"] == "on-study-intervention"
    cycle = next(o for o in _resources(bundle, "Observation") if "device" in o)
    assert cycle["status"] == "preliminary"


def test_adverse_event_mapping() -> None:
    (ae,) = _resources(_bundle(), "AdverseEvent")
    assert ae["actuality"] == "actual"
    assert ae["event"]["text"] == "blanching of the skin over the probe entry site"
    assert ae["event"]["coding"][0]["code"] == "cold_injury"
    assert ae["date"] == "2026-03-02T09:25:00+00:00"
    assert ae["severity"]["coding"][0]["code"] == "mild"
    assert ae["outcome"]["coding"][0]["code"] == "recovering"
    assert ae["seriousness"]["coding"][0]["code"] == "non-serious"
    grades = [x["valueInteger"] for x in ae["extension"] if x["url"].endswith("/ctcae-grade")]
    assert grades == [1]
    assessments = [
        s["causality"][0]["assessment"]["coding"][0]["code"] for s in ae["suspectEntity"]
    ]
    assert assessments == ["probably", "possibly"]  # procedure, then the probe


def test_migrated_adverse_events_validate_too() -> None:
    p = mortons()
    rows = migrate_legacy_adverse_events([{"code": "infection", "text": None}])
    sp = StudyProcedure(
        record=record(p, adverse_events=[r.model_dump() for r in rows]), facts=facts()
    )
    bundle = build_bundle(p, [sp])
    assert validate_bundle(bundle, p) == []
    (ae,) = _resources(bundle, "AdverseEvent")
    assert "severity" not in ae
    assert ae["event"]["coding"][0]["display"] == "unspecified (migrated)"


def test_two_procedures_of_one_subject_share_patient_and_console() -> None:
    p = mortons()
    second = facts(
        procedure_id=2,
        procedure_uuid="5d0d7c8e-2d1b-4a57-9d8e-7e0c1b2a3f45",
        opened_at=dt.datetime(2026, 4, 20, 9, 0, tzinfo=dt.UTC),
        closed_at=dt.datetime(2026, 4, 20, 9, 30, tzinfo=dt.UTC),
        cycles=[],
    )
    repeat = record(p).model_copy(
        update={
            "procedure": record(p).procedure.model_copy(
                update={"treatment_number": 2, "repeat_of": PROCEDURE_UUID}
            )
        }
    )
    bundle = build_bundle(p, [study_procedure(p), StudyProcedure(record=repeat, facts=second)])
    assert validate_bundle(bundle, p) == []
    assert len(_resources(bundle, "Patient")) == 1
    assert len(_resources(bundle, "Procedure")) == 2
    consoles = [
        d for d in _resources(bundle, "Device") if d["type"]["coding"][0]["code"] == "console"
    ]
    assert len(consoles) == 1


# ---- negative tests: what each validation refuses ------------------------------------
def _first(kind: str) -> Callable[[JSON], JSON]:
    def pick(bundle: JSON) -> JSON:
        return _resources(bundle, kind)[0]

    return pick


def _mutated(change: Callable[[JSON], None]) -> JSON:
    bundle = copy.deepcopy(_bundle())
    change(bundle)
    return bundle


def test_status_bogus_passes_fhir_resources_but_fails_the_project_check() -> None:
    def bogus(b: JSON) -> None:
        _first("Observation")(b)["status"] = "bogus"

    bundle = _mutated(bogus)
    assert library_problems(bundle) == []
    (problem,) = project_problems(bundle, mortons())
    assert problem.field.endswith("(Observation).status")
    assert problem.message.startswith("'bogus' is not in the required value set")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda b: _first("Procedure")(b).update(status="done"),
            "is not in the required value set",
        ),
        (
            lambda b: _first("ResearchStudy")(b).update(status="open"),
            "is not in the required value set",
        ),
        (lambda b: _first("ResearchSubject")(b).update(status="enrolled"), "required value set"),
        (lambda b: _first("Device")(b).update(status="on"), "is not in the required value set"),
        (lambda b: _first("AdverseEvent")(b).update(actuality="real"), "required value set"),
        (
            lambda b: _first("AdverseEvent")(b)["outcome"]["coding"][0].update(code="recovered"),
            "needs a code of http://terminology.hl7.org/CodeSystem/adverse-event-outcome",
        ),
        (
            lambda b: _first("AdverseEvent")(b)["severity"]["coding"][0].update(code="grade-1"),
            "needs a code of http://terminology.hl7.org/CodeSystem/adverse-event-severity",
        ),
        (
            lambda b: _first("AdverseEvent")(b)["event"]["coding"][0].update(code="frostbite"),
            "'frostbite' is not a code of https://cryod.invalid/fhir/CodeSystem/ae-subcategory",
        ),
        (
            lambda b: _first("Procedure")(b)["code"]["coding"][0].update(code="71388002"),
            "the study's procedure code is http://snomed.info/sct|26782000",
        ),
        (
            lambda b: _first("Procedure")(b)["reasonCode"][0]["coding"][0].update(code="123"),
            "http://snomed.info/sct|123 is not an indication of study MN-CRYO-EXAMPLE",
        ),
        (
            lambda b: _first("Patient")(b).update(name=[{"family": "Smith"}]),
            "a Patient carries its pseudonym only (found: name)",
        ),
        (
            lambda b: _first("Patient")(b).update(birthDate="1970-01-01"),
            "a Patient carries its pseudonym only (found: birthDate)",
        ),
        (
            lambda b: _first("Observation")(b)["subject"].update(reference="urn:uuid:nowhere"),
            "reference urn:uuid:nowhere does not resolve inside the bundle",
        ),
        (
            lambda b: _first("Observation")(b)["subject"].update(
                reference=b["entry"][1]["fullUrl"]
            ),
            "refers to a ResearchStudy, allowed: Patient",
        ),
        (
            lambda b: b["entry"][1].update(fullUrl=b["entry"][0]["fullUrl"]),
            "duplicate fullUrl",
        ),
        (
            lambda b: next(o for o in _resources(b, "Observation") if "valueQuantity" in o)[
                "valueQuantity"
            ].update(code="[degF]"),
            "a quantity's unit is UCUM",
        ),
        (
            lambda b: _first("Procedure")(b)["extension"].append(
                {"url": "https://cryod.invalid/fhir/StructureDefinition/mood", "valueString": "x"}
            ),
            "unknown cryod extension",
        ),
        (
            lambda b: _first("Observation")(b)["component"][0]["code"]["coding"][0].update(
                code="shoe-size"
            ),
            "'shoe-size' is not a code of",
        ),
        (
            lambda b: next(o for o in _resources(b, "Observation") if "valueQuantity" in o)[
                "code"
            ].update(coding=[{"system": cs("assessment"), "code": "pain-vas-100mm"}]),
            "study MN-CRYO-EXAMPLE scores pain on nrs_0_10",
        ),
        (
            lambda b: b.update(type="pile"),
            "'pile' is not a Bundle type",
        ),
    ],
)
def test_the_project_check_refuses(change: Callable[[JSON], None], expected: str) -> None:
    problems = [str(p) for p in project_problems(_mutated(change), mortons())]
    assert any(expected in p for p in problems), problems


def test_fhir_resources_refuses_what_is_not_r4b() -> None:
    def bad(b: JSON) -> None:
        _first("Procedure")(b)["performer"] = "op-a"  # must be a list of objects
        _first("Observation")(b)["colour"] = "blue"  # no such element

    problems = [str(p) for p in library_problems(_mutated(bad))]
    assert any("colour: unknown key (fhir.resources)" in p for p in problems), problems
    assert any(".performer" in p for p in problems), problems
    assert len(validate_bundle(_mutated(bad), mortons())) == len(problems)


def test_the_project_check_refuses_a_non_bundle() -> None:
    assert [str(p) for p in project_problems({"resourceType": "Patient"}, mortons())] == [
        "Bundle: not a Bundle"
    ]
