"""The terms of cryod's FHIR R4B export: code systems, extensions, units, required bindings.

cryod's own code systems and extensions live under ``CRYOD_FHIR_BASE``. The
``.invalid`` top-level domain is reserved (RFC 2606): the URLs name the code
systems and never resolve; an organisation that publishes them as FHIR
CodeSystem resources changes this one constant. The FHIR mapping table is
docs/fhir-mapping.md.
"""

from __future__ import annotations

from .vocab import (
    ActionTaken,
    AeCategory,
    AeSubcategory,
    Aetiology,
    Anaesthesia,
    Coded,
    CycleOutcome,
    FurtherIntervention,
    Gas,
    ImagingModality,
    Nerve,
    PriorTreatment,
    RecallPeriod,
    Relatedness,
    SeriousnessCriterion,
    Setting,
    WebSpace,
)

CRYOD_FHIR_BASE = "https://cryod.invalid/fhir"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
UUID_SYSTEM = "urn:ietf:rfc:3986"
HL7_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem"
AE_SERIOUSNESS = f"{HL7_TERMINOLOGY}/adverse-event-seriousness"
AE_SEVERITY = f"{HL7_TERMINOLOGY}/adverse-event-severity"
AE_OUTCOME = f"{HL7_TERMINOLOGY}/adverse-event-outcome"
OBSERVATION_CATEGORY = f"{HL7_TERMINOLOGY}/observation-category"
DATA_ABSENT_REASON = f"{HL7_TERMINOLOGY}/data-absent-reason"
SNOMED = "http://snomed.info/sct"

#: LOINC "Pain severity - 0-10 verbal numeric rating [Score] - Reported"
LOINC_PAIN_NRS = "72514-3"


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


def cs(name: str) -> str:
    """URL of one of cryod's code systems."""
    return f"{CRYOD_FHIR_BASE}/CodeSystem/{name}"


def ext(name: str) -> str:
    """URL of one of cryod's extensions."""
    return f"{CRYOD_FHIR_BASE}/StructureDefinition/{name}"


def sid(name: str) -> str:
    """URL of one of cryod's identifier systems."""
    return f"{CRYOD_FHIR_BASE}/sid/{name}"


#: cryod code systems that are one of the record's vocabularies
VOCAB_SYSTEMS: dict[str, type[Coded]] = {
    cs("ae-category"): AeCategory,
    cs("ae-subcategory"): AeSubcategory,
    cs("relatedness"): Relatedness,
    cs("seriousness-criterion"): SeriousnessCriterion,
    cs("action-taken"): ActionTaken,
    cs("further-intervention"): FurtherIntervention,
    cs("aetiology"): Aetiology,
    cs("nerve"): Nerve,
    cs("web-space"): WebSpace,
    cs("prior-treatment"): PriorTreatment,
    cs("imaging-modality"): ImagingModality,
    cs("anaesthesia"): Anaesthesia,
    cs("setting"): Setting,
    cs("gas"): Gas,
    cs("cycle-outcome"): CycleOutcome,
    cs("recall-period"): RecallPeriod,
}

#: figure code -> (display, UCUM code, field of CycleFacts); value[x] is a Quantity
CYCLE_FIGURES: dict[str, tuple[str, str, str]] = {
    "planned-duration": ("Planned duration", "s", "planned_s"),
    "target-tip-temperature": ("Target tip temperature", "Cel", "target_tip_c"),
    "duration": ("Duration (valve open, monotonic clock)", "s", "duration_s"),
    "min-tip-temperature": ("Coldest valid tip temperature", "Cel", "min_tip_c"),
    "time-to-target": ("Time to reach the target tip temperature", "s", "time_to_target_s"),
    "time-below-minus-20c": ("Time at or below -20 Cel", "s", "time_below_m20_s"),
    "time-below-minus-40c": ("Time at or below -40 Cel", "s", "time_below_m40_s"),
    "thaw-to-0c": ("Thaw: time until the tip reached 0 Cel", "s", "thaw_to_0_s"),
    "supply-pressure-start": ("Gas supply pressure at start", "kPa", "supply_start_kpa"),
    "supply-pressure-end": ("Gas supply pressure at end", "kPa", "supply_end_kpa"),
    "gas-used-estimate": ("Estimated gas used (standard litres)", "L", "gas_used_est_l"),
}

#: cryod code systems with codes of their own (not a vocabulary)
OWN_SYSTEMS: dict[str, dict[str, str]] = {
    cs("cycle-figure"): {
        **{code: spec[0] for code, spec in CYCLE_FIGURES.items()},
        "outcome": "Cycle outcome",
        "protocol": "Protocol name",
        "step-index": "Step of the protocol (0-based)",
    },
    cs("cycle"): {"freeze-cycle": "Freeze cycle", "thaw-cycle": "Thaw cycle"},
    cs("selection"): {
        "patient-selection": "Patient selection",
        "symptom-duration": "Symptom duration",
        "neuroma-size": "Neuroma size on imaging",
        "aetiology": "Aetiology",
        "nerve": "Nerve",
        "web-space": "Web space",
        "prior-treatment": "Prior treatment that failed",
        "eligibility-item": "Eligibility checklist item confirmed",
    },
    cs("assessment"): {"pain-vas-100mm": "Pain visual analogue scale 0-100 mm"},
    cs("device-type"): {"console": "Cryoablation console", "probe": "Cryoprobe"},
    cs("device-property"): {"gas": "Cryogen", "gauge": "Probe gauge"},
}

#: cryod's extensions (url -> what it carries)
EXTENSIONS: dict[str, str] = {
    ext("study-profile"): "id, version and content hash of the study profile",
    ext("imaging-modality"): "image guidance used (repeats)",
    ext("anaesthesia"): "anaesthesia",
    ext("anaesthetic-agent"): "anaesthetic agent",
    ext("setting"): "setting",
    ext("treatment-number"): "treatment number (1 = first)",
    ext("repeat-of"): "the earlier procedure this one repeats",
    ext("consent"): "consent confirmed and the consent form version",
    ext("recall-period"): "recall period of a pain score",
    ext("time-point"): "time point of the study schedule",
    ext("ctcae-grade"): "CTCAE v5 grade 1-5",
    ext("seriousness-criterion"): "seriousness criterion (repeats)",
    ext("resolution-date"): "date the adverse event resolved",
    ext("action-taken"): "action taken",
    ext("further-intervention"): "further intervention: type and date",
    ext("migration-reason"): "why a migrated row lacks details",
}

#: UCUM codes the export uses (a Quantity with any other unit is refused)
UCUM_UNITS: dict[str, str] = {
    "Cel": "°C",
    "kPa": "kPa",
    "s": "s",
    "mm": "mm",
    "mo": "month",
    "L": "L",
    "{score}": "score",
    "{gauge}": "gauge",
}

#: R4B elements with a required binding that the bundle uses: (resource, path) -> codes
REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Bundle", "type"): _codes(
        "document message transaction transaction-response batch batch-response "
        "history searchset collection"
    ),
    ("ResearchStudy", "status"): _codes(
        "active administratively-completed approved closed-to-accrual "
        "closed-to-accrual-and-intervention completed disapproved in-review "
        "temporarily-closed-to-accrual temporarily-closed-to-accrual-and-intervention "
        "withdrawn"
    ),
    ("ResearchSubject", "status"): _codes(
        "candidate eligible follow-up ineligible not-registered off-study on-study "
        "on-study-intervention on-study-observation pending-on-study "
        "potential-candidate screening withdrawn"
    ),
    ("Procedure", "status"): _codes(
        "preparation in-progress not-done on-hold stopped completed entered-in-error unknown"
    ),
    ("Observation", "status"): _codes(
        "registered preliminary final amended corrected cancelled entered-in-error unknown"
    ),
    ("Device", "status"): _codes("active inactive entered-in-error unknown"),
    ("Device", "deviceName.type"): _codes(
        "udi-label-name user-friendly-name patient-reported-name manufacturer-name model-name other"
    ),
    ("Device", "udiCarrier.entryType"): _codes("barcode rfid manual card self-reported unknown"),
    ("AdverseEvent", "actuality"): frozenset({"actual", "potential"}),
    ("QuestionnaireResponse", "status"): _codes(
        "in-progress completed amended entered-in-error stopped"
    ),
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
}
#: identifier use and quantity comparator, wherever they appear
IDENTIFIER_USE = frozenset({"usual", "official", "temp", "secondary", "old"})
QUANTITY_COMPARATOR = frozenset({"<", "<=", ">=", ">"})

#: R4B CodeableConcept elements with a required binding: (resource, path) -> (system, codes)
REQUIRED_CONCEPTS: dict[tuple[str, str], tuple[str, frozenset[str]]] = {
    ("AdverseEvent", "outcome"): (
        AE_OUTCOME,
        _codes("resolved recovering ongoing resolvedWithSequelae fatal unknown"),
    ),
    ("AdverseEvent", "severity"): (AE_SEVERITY, frozenset({"mild", "moderate", "severe"})),
}

#: codes checked from their HL7 code systems wherever a Coding uses them
HL7_CODES: dict[str, frozenset[str]] = {
    AE_SERIOUSNESS: frozenset({"serious", "non-serious"}),
    DATA_ABSENT_REASON: _codes(
        "unknown asked-unknown temp-unknown not-asked asked-declined masked "
        "not-applicable unsupported as-text error not-a-number negative-infinity "
        "positive-infinity not-performed not-permitted"
    ),
    OBSERVATION_CATEGORY: _codes(
        "social-history vital-signs imaging laboratory procedure survey exam therapy activity"
    ),
}

#: what each reference of the bundle may point at: (resource, path) -> resource types
REFERENCE_TARGETS: dict[tuple[str, str], frozenset[str]] = {
    ("ResearchStudy", "sponsor"): frozenset({"Organization"}),
    ("ResearchSubject", "study"): frozenset({"ResearchStudy"}),
    ("ResearchSubject", "individual"): frozenset({"Patient"}),
    ("Procedure", "subject"): frozenset({"Patient"}),
    ("Procedure", "usedReference"): frozenset({"Device"}),
    ("Device", "parent"): frozenset({"Device"}),
    ("Observation", "subject"): frozenset({"Patient"}),
    ("Observation", "partOf"): frozenset({"Procedure"}),
    ("Observation", "device"): frozenset({"Device"}),
    ("AdverseEvent", "subject"): frozenset({"Patient"}),
    ("QuestionnaireResponse", "subject"): frozenset({"Patient"}),
    ("QuestionnaireResponse", "partOf"): frozenset({"Procedure", "Observation"}),
    ("AdverseEvent", "study"): frozenset({"ResearchStudy"}),
    ("AdverseEvent", "suspectEntity.instance"): frozenset({"Procedure", "Device"}),
}

#: the only elements a Patient may carry: a pseudonymous identifier, nothing identifying
PATIENT_KEYS = frozenset({"resourceType", "id", "meta", "identifier"})


def display(system: str, code: str) -> str | None:
    """The display of a cryod code, or ``None`` when the code is not in the system."""
    vocab = VOCAB_SYSTEMS.get(system)
    if vocab is not None:
        member = vocab._value2member_map_.get(code)
        return member.label if isinstance(member, Coded) else None
    own = OWN_SYSTEMS.get(system)
    return None if own is None else own.get(code)


def coding(system: str, code: str) -> dict[str, str]:
    """A Coding of a cryod code system, with its display."""
    shown = display(system, code)
    if shown is None:
        raise KeyError(f"{code!r} is not a code of {system}")
    return {"system": system, "code": code, "display": shown}
