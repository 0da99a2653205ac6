"""A complete procedure-day record under each example study (test data, pseudonymous)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from cryod.research.facts import ConsoleFacts, CycleFacts, ProbeFacts, ProcedureFacts
from cryod.research.fhir_bundle import StudyProcedure
from cryod.research.profile import StudyProfile, load_study_profile
from cryod.research.record import ProcedureDayRecord

OPENED = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
CLOSED = OPENED + dt.timedelta(minutes=40)
PROCEDURE_UUID = uuid.UUID("0b7f5d2c-1a64-4e53-9e4e-2f1c8d6a9b10")


def mortons() -> StudyProfile:
    return load_study_profile("mortons-neuroma-example")


def stump() -> StudyProfile:
    return load_study_profile("stump-neuroma-example")


def adverse_event(**changes: Any) -> dict[str, Any]:
    """A valid adverse event (raw data, as `cryoctl ae add` would pass it)."""
    data: dict[str, Any] = {
        "category": "damage_to_adjacent_structures",
        "subcategory": "cold_injury",
        "verbatim_term": "blanching of the skin over the probe entry site",
        "onset": "2026-03-02T09:25",
        "ctcae_grade": 1,
        "serious": False,
        "relatedness_device": "possibly",
        "relatedness_procedure": "probably",
        "outcome": "recovering_resolving",
        "action_taken": "treatment_given",
    }
    data.update(changes)
    return data


def record_data(profile: StudyProfile, **changes: Any) -> dict[str, Any]:
    """Raw data of a complete record that the profile accepts."""
    mortons_study = profile.study.id.startswith("MN")
    checklist = profile.eligibility
    assert checklist is not None
    data: dict[str, Any] = {
        "profile": profile.stamp().model_dump(),
        "consent": {"confirmed": True, "form_version": profile.consent.form_versions[0]},
        "selection": {
            "indication": profile.codes.indications[0].key,
            "eligibility": {
                "checklist_id": checklist.checklist_id,
                "checklist_version": checklist.version,
                "items": {item.id: True for item in checklist.items},
            },
            "symptom_duration_months": 18,
            "prior_treatments": ["insoles_footwear", "steroid_injection"],
            "aetiology": "idiopathic_mortons" if mortons_study else "post_amputation",
            "nerve": "common_plantar_digital" if mortons_study else "sciatic",
            "neuroma_size_mm": 6.5,
        },
        "procedure": {
            "imaging": ["ultrasound"],
            "technical_success": True,
            "anaesthesia": "local",
            "anaesthetic_agent": "lidocaine 1%",
            "setting": "day_case",
            "probe_model": "CRYOSIM-P17",
            "probe_gauge": 17,
            "probe_count": 1,
            "probe_lot": "LOT-2026-0042",
            "probe_udi": "(01)00000000000000(17)270101(10)LOT-2026-0042",
            "gas": "argon",
        },
        "baseline_pain": {
            "time_point": profile.follow_up.baseline,
            "scale": profile.instruments.pain.scale.value,
            "score": 7 if mortons_study else 62.5,
            "recall_period": profile.instruments.pain.recall_period.value,
            "assessed_at": "2026-03-02T09:05:00Z",
        },
        "adverse_events": [adverse_event(ae_id=1)],
    }
    if mortons_study:
        data["selection"]["web_space"] = "third"
    for key, value in changes.items():
        data[key] = value
    return data


def record(profile: StudyProfile, **changes: Any) -> ProcedureDayRecord:
    return ProcedureDayRecord.model_validate(record_data(profile, **changes))


def facts(**changes: Any) -> ProcedureFacts:
    t0 = OPENED + dt.timedelta(minutes=10)
    data: dict[str, Any] = {
        "procedure_id": 1,
        "procedure_uuid": PROCEDURE_UUID,
        "patient_ref": "MN-0042",
        "opened_at": OPENED,
        "closed_at": CLOSED,
        "body_site": "third intermetatarsal space",
        "side": "left",
        "console": ConsoleFacts(
            name="room-2", model="CRYOSIM-8", serial="SIM-0001", firmware="1.4.2", gas="argon"
        ),
        "probes": [ProbeFacts(probe=1)],
        "cycles": [
            CycleFacts(
                cycle_id=1,
                probe=1,
                phase="freeze",
                step_index=0,
                protocol="morton-neuroma-cazzato2016",
                planned_s=150.0,
                target_tip_c=-40.0,
                started_at=t0,
                ended_at=t0 + dt.timedelta(seconds=150.2),
                duration_s=150.2,
                outcome="completed",
                min_tip_c=-78.4,
                time_to_target_s=21.5,
                time_below_m20_s=140.0,
                time_below_m40_s=128.5,
                supply_start_kpa=25000.0,
                supply_end_kpa=24100.0,
                gas_used_est_l=41.0,
            ),
            CycleFacts(
                cycle_id=2,
                probe=1,
                phase="thaw",
                step_index=1,
                protocol="morton-neuroma-cazzato2016",
                started_at=t0 + dt.timedelta(seconds=151),
                ended_at=t0 + dt.timedelta(seconds=200),
                duration_s=49.0,
                outcome="completed",
                min_tip_c=-60.0,
                thaw_to_0_s=35.0,
            ),
        ],
    }
    data.update(changes)
    return ProcedureFacts.model_validate(data)


def study_procedure(profile: StudyProfile) -> StudyProcedure:
    return StudyProcedure(record=record(profile), facts=facts())
