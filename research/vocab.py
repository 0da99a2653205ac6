"""The code lists of the procedure-day record: one enum per coded field.

Every code is lower-case letters, digits and underscores (REDCap choice codes
and checkbox column names need exactly that) and carries a display label.
A study profile may narrow a list (``allowed``) but never extend it. The
lists follow NICE IPG747's research questions and safety outcomes, the
published case series and the HL7 adverse-event vocabulary
(``docs/data-dictionary.md`` has them as tables).

Indication and procedure codes are not here: they are SNOMED CT (or other)
codings configured in each study profile, never hard-coded.
"""

from __future__ import annotations

import enum
from typing import Self

__all__ = [
    "AE_SUBCATEGORIES",
    "ActionTaken",
    "AeCategory",
    "AeOutcome",
    "AeSubcategory",
    "Aetiology",
    "Anaesthesia",
    "Coded",
    "CycleOutcome",
    "CyclePhase",
    "FurtherIntervention",
    "Gas",
    "ImagingModality",
    "Nerve",
    "PainScale",
    "PriorTreatment",
    "RecallPeriod",
    "Relatedness",
    "SeriousnessCriterion",
    "Setting",
    "VisitMode",
    "VisitStatus",
    "WebSpace",
]


class Coded(enum.StrEnum):
    """A code (the enum's value) with a display label."""

    label: str

    def __new__(cls, code: str, label: str) -> Self:
        obj = str.__new__(cls, code)
        obj._value_ = code
        obj.label = label
        return obj

    @classmethod
    def choices(cls) -> list[tuple[str, str]]:
        return [(m.value, m.label) for m in cls]


# ---- selection ------------------------------------------------------------------
class PriorTreatment(Coded):
    """Treatments tried and failed before cryoablation (several may apply)."""

    INSOLES_FOOTWEAR = ("insoles_footwear", "Insoles or footwear modification")
    MEDICATION = ("medication", "Oral or topical medication")
    STEROID_INJECTION = ("steroid_injection", "Corticosteroid injection")
    ALCOHOL_INJECTION = ("alcohol_injection", "Alcohol (sclerosant) injection")
    RADIOFREQUENCY_ABLATION = ("radiofrequency_ablation", "Radiofrequency ablation")
    SURGERY = ("surgery", "Surgery (neurectomy or excision)")
    PHYSIOTHERAPY = ("physiotherapy", "Physiotherapy")
    OTHER = ("other", "Other")


class Aetiology(Coded):
    IDIOPATHIC_MORTONS = ("idiopathic_mortons", "Idiopathic (Morton's neuroma)")
    POST_AMPUTATION = ("post_amputation", "Post-amputation (stump neuroma)")
    POST_SURGICAL = ("post_surgical", "Post-surgical")
    TRAUMATIC = ("traumatic", "Traumatic")
    OTHER = ("other", "Other")


class Nerve(Coded):
    COMMON_PLANTAR_DIGITAL = ("common_plantar_digital", "Common plantar digital nerve")
    SCIATIC = ("sciatic", "Sciatic nerve")
    TIBIAL = ("tibial", "Tibial nerve")
    COMMON_PERONEAL = ("common_peroneal", "Common peroneal (fibular) nerve")
    SUPERFICIAL_PERONEAL = ("superficial_peroneal", "Superficial peroneal nerve")
    DEEP_PERONEAL = ("deep_peroneal", "Deep peroneal nerve")
    SURAL = ("sural", "Sural nerve")
    SAPHENOUS = ("saphenous", "Saphenous nerve")
    FEMORAL = ("femoral", "Femoral nerve")
    MEDIAN = ("median", "Median nerve")
    ULNAR = ("ulnar", "Ulnar nerve")
    RADIAL = ("radial", "Radial nerve")
    OTHER = ("other", "Other")


class WebSpace(Coded):
    """Intermetatarsal web space of a Morton's neuroma (1st = between toes 1 and 2)."""

    FIRST = ("first", "First (1st/2nd toe)")
    SECOND = ("second", "Second (2nd/3rd toe)")
    THIRD = ("third", "Third (3rd/4th toe)")
    FOURTH = ("fourth", "Fourth (4th/5th toe)")


# ---- procedure ------------------------------------------------------------------
class ImagingModality(Coded):
    ULTRASOUND = ("ultrasound", "Ultrasound")
    CT = ("ct", "CT")
    MRI = ("mri", "MRI")


class Anaesthesia(Coded):
    LOCAL = ("local", "Local")
    REGIONAL = ("regional", "Regional")
    SEDATION = ("sedation", "Sedation")
    GENERAL = ("general", "General")


class Setting(Coded):
    DAY_CASE = ("day_case", "Day case")
    OUTPATIENT = ("outpatient", "Outpatient")
    INPATIENT = ("inpatient", "Inpatient")


class Gas(Coded):
    """Cryogen, as the console profile names it."""

    ARGON = ("argon", "Argon")
    N2O = ("n2o", "Nitrous oxide")
    CO2 = ("co2", "Carbon dioxide")


class CyclePhase(Coded):
    FREEZE = ("freeze", "Freeze")
    THAW = ("thaw", "Thaw")


class CycleOutcome(Coded):
    """How a cycle ended (the daemon's outcome codes, docs/export-schema.md)."""

    COMPLETED = ("completed", "Completed (ran its planned time)")
    STOPPED = ("stopped", "Stopped by the operator")
    ABORTED = ("aborted", "Aborted (operator abort or safe state)")
    FAULTED = ("faulted", "Faulted (supervisor or console fault)")
    INTERRUPTED = ("interrupted", "Interrupted (daemon restarted; never resumed)")


# ---- assessments ----------------------------------------------------------------
class PainScale(Coded):
    NRS_0_10 = ("nrs_0_10", "Numeric rating scale 0-10 (integer)")
    VAS_0_100_MM = ("vas_0_100_mm", "Visual analogue scale 0-100 mm")


class RecallPeriod(Coded):
    NOW = ("now", "Pain now")
    PAST_24_HOURS = ("past_24_hours", "Average pain over the past 24 hours")
    PAST_7_DAYS = ("past_7_days", "Average pain over the past 7 days")
    PAST_4_WEEKS = ("past_4_weeks", "Average pain over the past 4 weeks")


class VisitStatus(Coded):
    """Follow-up status at a time point (filled by the study collector)."""

    DONE = ("done", "Done")
    MISSED = ("missed", "Missed")
    LOST_TO_FOLLOW_UP = ("lost_to_follow_up", "Lost to follow-up")
    WITHDRAWN = ("withdrawn", "Withdrawn")
    DIED = ("died", "Died")


class VisitMode(Coded):
    CLINIC = ("clinic", "Clinic")
    PHONE = ("phone", "Telephone")
    POST = ("post", "Post")
    ONLINE = ("online", "Online")


# ---- adverse events -------------------------------------------------------------
class AeCategory(Coded):
    """NICE IPG747 key safety outcomes (the old yes/no codes, refined by subcategory).

    ``pain`` is pain caused by the procedure (a safety code, including after
    it); the efficacy pain score is an assessment, never an adverse event.
    """

    PAIN = ("pain", "Pain (as an adverse event)")
    WORSENING_OF_SYMPTOMS = ("worsening_of_symptoms", "Worsening of symptoms")
    INFECTION = ("infection", "Infection")
    DAMAGE_TO_ADJACENT_STRUCTURES = (
        "damage_to_adjacent_structures",
        "Damage to adjacent structures",
    )
    FURTHER_INTERVENTION = ("further_intervention", "Further intervention needed")
    OTHER = ("other", "Other")


class AeSubcategory(Coded):
    PROCEDURAL_PAIN = ("procedural_pain", "Procedural pain")
    POST_PROCEDURAL_PAIN = ("post_procedural_pain", "Post-procedural pain")
    INCREASED_NEUROMA_PAIN = ("increased_neuroma_pain", "Increased neuroma pain")
    NEW_NEUROPATHIC_PAIN = ("new_neuropathic_pain", "New neuropathic pain")
    SENSORY_DISTURBANCE = ("sensory_disturbance", "New numbness or paraesthesia")
    REDUCED_MOBILITY = ("reduced_mobility", "Reduced mobility")
    SUPERFICIAL_INFECTION = ("superficial_infection", "Superficial infection")
    DEEP_INFECTION = ("deep_infection", "Deep infection")
    NERVE_DAMAGE = ("nerve_damage", "Nerve damage")
    SKIN_INJURY = ("skin_injury", "Skin injury")
    COLD_INJURY = ("cold_injury", "Cold injury of the skin (frostbite, chilblain)")
    VESSEL_DAMAGE = ("vessel_damage", "Vessel damage (bleeding, haematoma)")
    OTHER_STRUCTURE_DAMAGE = ("other_structure_damage", "Damage to another structure")
    REPEAT_CRYOABLATION = ("repeat_cryoablation", "Repeat cryoablation")
    SURGICAL_INTERVENTION = ("surgical_intervention", "Surgical intervention")
    INJECTION = ("injection", "Injection")
    OTHER_INTERVENTION = ("other_intervention", "Other intervention")
    OTHER = ("other", "Other")
    UNSPECIFIED_MIGRATED = ("unspecified_migrated", "unspecified (migrated)")


_S = AeSubcategory
#: the subcategories each category allows (``unspecified_migrated`` only on migrated rows)
AE_SUBCATEGORIES: dict[AeCategory, tuple[AeSubcategory, ...]] = {
    AeCategory.PAIN: (_S.PROCEDURAL_PAIN, _S.POST_PROCEDURAL_PAIN),
    AeCategory.WORSENING_OF_SYMPTOMS: (
        _S.INCREASED_NEUROMA_PAIN,
        _S.NEW_NEUROPATHIC_PAIN,
        _S.SENSORY_DISTURBANCE,
        _S.REDUCED_MOBILITY,
        _S.OTHER,
    ),
    AeCategory.INFECTION: (_S.SUPERFICIAL_INFECTION, _S.DEEP_INFECTION),
    AeCategory.DAMAGE_TO_ADJACENT_STRUCTURES: (
        _S.NERVE_DAMAGE,
        _S.SKIN_INJURY,
        _S.COLD_INJURY,
        _S.VESSEL_DAMAGE,
        _S.OTHER_STRUCTURE_DAMAGE,
    ),
    AeCategory.FURTHER_INTERVENTION: (
        _S.REPEAT_CRYOABLATION,
        _S.SURGICAL_INTERVENTION,
        _S.INJECTION,
        _S.OTHER_INTERVENTION,
    ),
    AeCategory.OTHER: (_S.OTHER,),
}


class SeriousnessCriterion(Coded):
    DEATH = ("death", "Resulted in death")
    LIFE_THREATENING = ("life_threatening", "Life-threatening")
    HOSPITALISATION = ("hospitalisation", "Inpatient hospitalisation or its prolongation")
    DISABILITY = ("disability", "Persistent or significant disability or incapacity")
    CONGENITAL_ANOMALY = ("congenital_anomaly", "Congenital anomaly or birth defect")
    IMPORTANT_MEDICAL_EVENT = ("important_medical_event", "Other important medical event")


class Relatedness(Coded):
    """Five-point causality scale, to the device and to the procedure separately."""

    NOT_RELATED = ("not_related", "Not related")
    UNLIKELY = ("unlikely", "Unlikely related")
    POSSIBLY = ("possibly", "Possibly related")
    PROBABLY = ("probably", "Probably related")
    DEFINITELY = ("definitely", "Definitely related")


class AeOutcome(Coded):
    RECOVERED_RESOLVED = ("recovered_resolved", "Recovered/resolved")
    RECOVERING_RESOLVING = ("recovering_resolving", "Recovering/resolving")
    NOT_RECOVERED = ("not_recovered", "Not recovered/not resolved")
    RECOVERED_WITH_SEQUELAE = ("recovered_with_sequelae", "Recovered/resolved with sequelae")
    FATAL = ("fatal", "Fatal")
    UNKNOWN = ("unknown", "Unknown")


class ActionTaken(Coded):
    NONE = ("none", "None")
    PROCEDURE_PAUSED = ("procedure_paused", "Procedure paused")
    PROCEDURE_STOPPED = ("procedure_stopped", "Procedure stopped")
    PROBE_REPOSITIONED = ("probe_repositioned", "Probe repositioned")
    TREATMENT_GIVEN = ("treatment_given", "Treatment given")
    FURTHER_INTERVENTION = ("further_intervention", "Further intervention")
    OTHER = ("other", "Other")


class FurtherIntervention(Coded):
    REPEAT_CRYOABLATION = ("repeat_cryoablation", "Repeat cryoablation")
    SURGICAL_EXCISION = ("surgical_excision", "Surgical excision")
    NERVE_BLOCK = ("nerve_block", "Nerve block")
    STEROID_INJECTION = ("steroid_injection", "Corticosteroid injection")
    ANTIBIOTICS = ("antibiotics", "Antibiotics")
    WOUND_CARE = ("wound_care", "Wound care")
    OTHER = ("other", "Other")
