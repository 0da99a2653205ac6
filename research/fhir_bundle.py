"""The procedure-day record as a FHIR R4B Bundle (type ``collection``), as plain JSON data.

Resources: ResearchStudy (+ Organization for its sponsor), per subject a
Patient (the pseudonymous identifier only) and a ResearchSubject, per
procedure a Procedure, a Device for the console and one per probe, an
Observation for patient selection, one for the baseline pain score (LOINC
72514-3 for NRS) and one per cycle (figures as components with UCUM units
under cryod's code system), and an AdverseEvent per adverse event. From the
study collector's follow-up: a pain Observation per time point done, a
QuestionnaireResponse per quality-of-life (and function) total, and an
AdverseEvent per event found after close.

Ids are UUID v5 of stable keys (study id, pseudonym, procedure uuid), so the
same record always gives the same bundle; every reference is the
``urn:uuid:`` full URL of an entry of the bundle. A figure that could not be
computed is a component with a ``dataAbsentReason``, never 0. The mapping
table is docs/fhir-mapping.md; ``fhir_check.validate_bundle`` checks the
result both with fhir.resources and with the project's own rules.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .facts import CycleFacts, ProcedureFacts
from .fhir_terms import (
    AE_OUTCOME,
    AE_SERIOUSNESS,
    AE_SEVERITY,
    CYCLE_FIGURES,
    DATA_ABSENT_REASON,
    LOINC,
    LOINC_PAIN_NRS,
    OBSERVATION_CATEGORY,
    SNOMED,
    UCUM,
    UCUM_UNITS,
    UUID_SYSTEM,
    coding,
    cs,
    ext,
    sid,
)
from .followup import FollowUpAssessment
from .partial_dates import parse_partial
from .profile import StudyProfile
from .record import AdverseEventRecord, PainAssessment, ProcedureDayRecord, Selection
from .vocab import AeOutcome, CyclePhase, PainScale, Relatedness, VisitStatus

__all__ = ["StudyProcedure", "build_bundle", "pain_code"]

JSON = dict[str, Any]

#: namespace of the UUID v5 ids of the bundle's resources
NAMESPACE = uuid.UUID("4f6b3c2e-9a1d-5e7f-8b20-6c1d0e9a7f31")

_AE_OUTCOME = {
    AeOutcome.RECOVERED_RESOLVED: "resolved",
    AeOutcome.RECOVERING_RESOLVING: "recovering",
    AeOutcome.NOT_RECOVERED: "ongoing",
    AeOutcome.RECOVERED_WITH_SEQUELAE: "resolvedWithSequelae",
    AeOutcome.FATAL: "fatal",
    AeOutcome.UNKNOWN: "unknown",
}
#: CTCAE grade -> R4B AdverseEvent.severity (required binding: mild | moderate | severe)
_SEVERITY = {1: "mild", 2: "moderate", 3: "severe", 4: "severe", 5: "severe"}
_SUCCESS = {
    True: {"system": SNOMED, "code": "385669000", "display": "Successful"},
    False: {"system": SNOMED, "code": "385671000", "display": "Unsuccessful"},
}


@dataclass(frozen=True, slots=True)
class StudyProcedure:
    """One procedure of a study: what was recorded for the study, and the console's side.

    The study collector adds what it learns after close: ``follow_up`` (the
    assessments at the profile's time points) and ``later_events`` (adverse
    events and further interventions found after close, ``ae_id`` set).
    """

    record: ProcedureDayRecord
    facts: ProcedureFacts
    follow_up: tuple[FollowUpAssessment, ...] = ()
    later_events: tuple[AdverseEventRecord, ...] = ()


def _uuid(key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, key))


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ref(url: str) -> JSON:
    return {"reference": url}


def _quantity(value: float, ucum: str) -> JSON:
    return {"value": value, "unit": UCUM_UNITS[ucum], "system": UCUM, "code": ucum}


def _concept(system: str, code: str) -> JSON:
    return {"coding": [coding(system, code)]}


def pain_code(scale: PainScale) -> JSON:
    """Observation.code of a pain score: LOINC 72514-3 for NRS, cryod's code for VAS."""
    if scale is PainScale.NRS_0_10:
        return {
            "coding": [
                {
                    "system": LOINC,
                    "code": LOINC_PAIN_NRS,
                    "display": "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
                }
            ]
        }
    return _concept(cs("assessment"), "pain-vas-100mm")


class _Builder:
    def __init__(self, profile: StudyProfile) -> None:
        self.profile = profile
        self.entries: dict[str, JSON] = {}  # full URL -> resource, in insertion order
        self.study_url = self._add(f"study/{profile.study.id}", self._study())

    def _add(self, key: str, resource: JSON) -> str:
        rid = _uuid(key)
        url = f"urn:uuid:{rid}"
        if url not in self.entries:
            self.entries[url] = {
                "resourceType": resource.pop("resourceType"),
                "id": rid,
                **resource,
            }
        return url

    # ---- the study and its subjects ----------------------------------------------
    def _study(self) -> JSON:
        p = self.profile
        sponsor = self._add(
            f"sponsor/{p.study.id}", {"resourceType": "Organization", "name": p.study.sponsor}
        )
        identifiers = [{"system": sid("study"), "value": p.study.id}]
        identifiers += [{"system": r.system, "value": r.value} for r in p.study.registry_ids]
        return {
            "resourceType": "ResearchStudy",
            "identifier": identifiers,
            "title": p.study.title,
            "status": "active",
            "sponsor": _ref(sponsor),
            "condition": [
                {"coding": [{"system": c.system, "code": c.code, "display": c.display}]}
                for c in p.codes.indications
            ],
        }

    def subject(self, pseudonym: str, procedures: Sequence[StudyProcedure]) -> str:
        p = self.profile
        patient = self._add(
            f"patient/{p.study.id}/{pseudonym}",
            {
                "resourceType": "Patient",
                "identifier": [{"system": p.pseudonym_system, "value": pseudonym}],
            },
        )
        first = min(procedures, key=lambda sp: sp.facts.opened_at)
        consent = first.record.consent
        extensions: list[JSON] = []
        if consent is not None:
            parts: list[JSON] = [{"url": "confirmed", "valueBoolean": consent.confirmed}]
            if consent.form_version:
                parts.append({"url": "form-version", "valueString": consent.form_version})
            extensions.append({"url": ext("consent"), "extension": parts})
        open_now = any(sp.facts.closed_at is None for sp in procedures)
        subject: JSON = {
            "resourceType": "ResearchSubject",
            "status": "on-study-intervention" if open_now else "follow-up",
            "period": {"start": _time(first.facts.opened_at)},
            "study": _ref(self.study_url),
            "individual": _ref(patient),
        }
        if extensions:
            subject["extension"] = extensions
        self._add(f"subject/{p.study.id}/{pseudonym}", subject)
        return patient

    # ---- one procedure -----------------------------------------------------------
    def procedure(self, sp: StudyProcedure, patient: str) -> None:
        record, facts = sp.record, sp.facts
        key = f"procedure/{facts.procedure_uuid}"
        console = self._console(facts, key)
        probes = {n: self._probe(sp, n, console, key) for n in facts.probe_numbers()}
        proc_url = self._add(key, self._procedure(sp, patient, [console, *probes.values()]))
        selection = self._selection(record.selection, patient, proc_url)
        if selection is not None:
            self._add(f"{key}/selection", selection)
        if record.baseline_pain is not None:
            self._add(f"{key}/baseline-pain", self._pain(record.baseline_pain, patient))
        for c in facts.cycles:
            self._add(f"{key}/cycle/{c.cycle_id}", self._cycle(c, patient, proc_url, probes))
        suspects = list(probes.values()) or [console]
        for i, ae in enumerate(record.adverse_events):
            ae_key = f"{key}/ae/{ae.ae_id if ae.ae_id is not None else f'#{i}'}"
            self._add(ae_key, self._adverse_event(ae, patient, proc_url, suspects))
        for a in sp.follow_up:
            self._follow_up(a, key, patient, proc_url)
        for i, ae in enumerate(sp.later_events):
            ae_key = f"{key}/later-ae/{ae.ae_id if ae.ae_id is not None else f'#{i}'}"
            self._add(ae_key, self._adverse_event(ae, patient, proc_url, suspects))

    # ---- follow-up (the study collector) -------------------------------------------
    def _follow_up(self, a: FollowUpAssessment, key: str, patient: str, proc_url: str) -> None:
        """A done visit: its pain score (Observation) and questionnaire totals
        (QuestionnaireResponse), dated with the visit's date, tagged with its time point."""
        if a.status is not VisitStatus.DONE:
            return
        pain = self.profile.instruments.pain
        tp = {"url": ext("time-point"), "valueString": a.time_point}
        day = a.assessed_on.isoformat()
        if a.pain_score is not None:
            score: float = int(a.pain_score) if pain.scale is PainScale.NRS_0_10 else a.pain_score
            unit = "{score}" if pain.scale is PainScale.NRS_0_10 else "mm"
            self._add(
                f"{key}/pain/{a.time_point}",
                {
                    "resourceType": "Observation",
                    "extension": [
                        {
                            "url": ext("recall-period"),
                            "valueCoding": coding(cs("recall-period"), pain.recall_period),
                        },
                        tp,
                    ],
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": OBSERVATION_CATEGORY,
                                    "code": "survey",
                                    "display": "Survey",
                                }
                            ]
                        }
                    ],
                    "code": pain_code(pain.scale),
                    "subject": _ref(patient),
                    "partOf": [_ref(proc_url)],
                    "effectiveDateTime": day,
                    "valueQuantity": _quantity(score, unit),
                },
            )
        instruments = [("qol", self.profile.instruments.qol, a.qol_total)]
        fn = self.profile.instruments.function
        if fn is not None:
            instruments.append(("function", fn, a.function_score))
        for name, q, total in instruments:
            if total is None:
                continue
            self._add(
                f"{key}/{name}/{a.time_point}",
                {
                    "resourceType": "QuestionnaireResponse",
                    "extension": [tp],
                    "questionnaire": f"{q.url}|{q.version}",
                    "status": "completed",
                    "subject": _ref(patient),
                    "partOf": [_ref(proc_url)],
                    "authored": day,
                    "item": [
                        {
                            "linkId": "total",
                            "text": f"{q.name} total score",
                            "answer": [{"valueDecimal": total}],
                        }
                    ],
                },
            )

    def _procedure(self, sp: StudyProcedure, patient: str, devices: list[str]) -> JSON:
        record, facts, p = sp.record, sp.facts, self.profile
        d = record.procedure
        extensions: list[JSON] = [
            {
                "url": ext("study-profile"),
                "extension": [
                    {"url": "id", "valueString": record.profile.profile_id},
                    {"url": "version", "valueString": record.profile.version},
                    {"url": "content-hash", "valueString": record.profile.content_hash},
                ],
            },
            {"url": ext("treatment-number"), "valueInteger": d.treatment_number},
        ]
        for m in d.imaging or []:
            extensions.append(
                {"url": ext("imaging-modality"), "valueCoding": coding(cs("imaging-modality"), m)}
            )
        if d.anaesthesia is not None:
            extensions.append(
                {"url": ext("anaesthesia"), "valueCoding": coding(cs("anaesthesia"), d.anaesthesia)}
            )
        if d.anaesthetic_agent is not None:
            extensions.append({"url": ext("anaesthetic-agent"), "valueString": d.anaesthetic_agent})
        if d.setting is not None:
            extensions.append(
                {"url": ext("setting"), "valueCoding": coding(cs("setting"), d.setting)}
            )
        if d.repeat_of is not None:
            extensions.append(
                {
                    "url": ext("repeat-of"),
                    "valueIdentifier": {"system": UUID_SYSTEM, "value": f"urn:uuid:{d.repeat_of}"},
                }
            )
        pc = p.codes.procedure
        out: JSON = {
            "resourceType": "Procedure",
            "extension": extensions,
            "identifier": [{"system": UUID_SYSTEM, "value": f"urn:uuid:{facts.procedure_uuid}"}],
            "status": "in-progress" if facts.closed_at is None else "completed",
            "code": {"coding": [{"system": pc.system, "code": pc.code, "display": pc.display}]},
            "subject": _ref(patient),
            "performedPeriod": {"start": _time(facts.opened_at)},
            "usedReference": [_ref(u) for u in devices],
        }
        if facts.closed_at is not None:
            out["performedPeriod"]["end"] = _time(facts.closed_at)
        indication = (
            p.indication(record.selection.indication) if record.selection.indication else None
        )
        if indication is not None:
            out["reasonCode"] = [
                {
                    "coding": [
                        {
                            "system": indication.system,
                            "code": indication.code,
                            "display": indication.display,
                        }
                    ]
                }
            ]
        site = ", ".join(x for x in (facts.body_site, facts.side) if x)
        if site:
            out["bodySite"] = [{"text": site}]
        if d.technical_success is not None:
            out["outcome"] = {"coding": [_SUCCESS[d.technical_success]]}
        return out

    def _console(self, facts: ProcedureFacts, key: str) -> str:
        c = facts.console
        names = [{"name": c.model, "type": "model-name"}] if c.model else []
        if c.name:
            names.append({"name": c.name, "type": "user-friendly-name"})
        device: JSON = {
            "resourceType": "Device",
            "status": "active",
            "type": _concept(cs("device-type"), "console"),
        }
        if names:
            device["deviceName"] = names
        if c.model:
            device["modelNumber"] = c.model
        if c.serial:
            device["serialNumber"] = c.serial
        if c.firmware:
            device["version"] = [{"value": c.firmware}]
        if c.gas is not None:
            device["property"] = [
                {
                    "type": _concept(cs("device-property"), "gas"),
                    "valueCode": [_concept(cs("gas"), c.gas)],
                }
            ]
        same = f"console/{c.model}/{c.serial}" if c.serial and c.model else f"{key}/console"
        return self._add(same, device)

    def _probe(self, sp: StudyProcedure, number: int, console: str, key: str) -> str:
        pf, d = sp.facts.probe(number), sp.record.procedure
        model = pf.model or d.probe_model
        lot = pf.lot or d.probe_lot
        udi = pf.udi or d.probe_udi
        gauge = pf.gauge or d.probe_gauge
        device: JSON = {
            "resourceType": "Device",
            "status": "active",
            "type": _concept(cs("device-type"), "probe"),
            "deviceName": [{"name": f"probe {number}", "type": "user-friendly-name"}],
            "parent": _ref(console),
        }
        if model:
            device["deviceName"].insert(0, {"name": model, "type": "model-name"})
            device["modelNumber"] = model
        if lot:
            device["lotNumber"] = lot
        if udi:
            device["udiCarrier"] = [{"carrierHRF": udi, "entryType": "manual"}]
        if gauge is not None:
            device["property"] = [
                {
                    "type": _concept(cs("device-property"), "gauge"),
                    "valueQuantity": [_quantity(gauge, "{gauge}")],
                }
            ]
        return self._add(f"{key}/probe/{number}", device)

    # ---- observations ------------------------------------------------------------
    def _selection(self, s: Selection, patient: str, proc_url: str) -> JSON | None:
        sel = cs("selection")
        comps: list[JSON] = []
        if s.symptom_duration_months is not None:
            comps.append(
                {
                    "code": _concept(sel, "symptom-duration"),
                    "valueQuantity": _quantity(s.symptom_duration_months, "mo"),
                }
            )
        if s.neuroma_size_mm is not None:
            comps.append(
                {
                    "code": _concept(sel, "neuroma-size"),
                    "valueQuantity": _quantity(s.neuroma_size_mm, "mm"),
                }
            )
        for name, value in (
            ("aetiology", s.aetiology),
            ("nerve", s.nerve),
            ("web-space", s.web_space),
        ):
            if value is not None:
                comps.append(
                    {"code": _concept(sel, name), "valueCodeableConcept": _concept(cs(name), value)}
                )
        for t in s.prior_treatments or []:
            comps.append(
                {
                    "code": _concept(sel, "prior-treatment"),
                    "valueCodeableConcept": _concept(cs("prior-treatment"), t),
                }
            )
        checklist = self.profile.eligibility
        if s.eligibility is not None and checklist is not None:
            texts = {item.id: item.text for item in checklist.items}
            for item_id, confirmed in s.eligibility.items.items():
                comps.append(
                    {
                        "code": {
                            "coding": [
                                {
                                    "system": cs("eligibility-item"),
                                    "code": item_id,
                                    "display": texts.get(item_id, item_id),
                                }
                            ],
                            "text": f"{s.eligibility.checklist_id} "
                            f"v{s.eligibility.checklist_version}",
                        },
                        "valueBoolean": confirmed,
                    }
                )
        if not comps:
            return None
        return {
            "resourceType": "Observation",
            "status": "final",
            "code": _concept(sel, "patient-selection"),
            "subject": _ref(patient),
            "partOf": [_ref(proc_url)],
            "component": comps,
        }

    def _pain(self, pain: PainAssessment, patient: str) -> JSON:
        score: float = int(pain.score) if pain.scale is PainScale.NRS_0_10 else pain.score
        unit = "{score}" if pain.scale is PainScale.NRS_0_10 else "mm"
        return {
            "resourceType": "Observation",
            "extension": [
                {
                    "url": ext("recall-period"),
                    "valueCoding": coding(cs("recall-period"), pain.recall_period),
                },
                {"url": ext("time-point"), "valueString": pain.time_point},
            ],
            "status": "final",
            "category": [
                {
                    "coding": [
                        {"system": OBSERVATION_CATEGORY, "code": "survey", "display": "Survey"}
                    ]
                }
            ],
            "code": pain_code(pain.scale),
            "subject": _ref(patient),
            "effectiveDateTime": _time(pain.assessed_at),
            "valueQuantity": _quantity(score, unit),
        }

    def _cycle(self, c: CycleFacts, patient: str, proc_url: str, probes: dict[int, str]) -> JSON:
        fig = cs("cycle-figure")
        comps: list[JSON] = []
        for code, (_label, ucum, field) in CYCLE_FIGURES.items():
            value = getattr(c, field)
            comp: JSON = {"code": _concept(fig, code)}
            if value is not None:
                comp["valueQuantity"] = _quantity(value, ucum)
            else:
                inapplicable = (code == "thaw-to-0c" and c.phase is CyclePhase.FREEZE) or (
                    code in ("time-to-target", "target-tip-temperature")
                    and c.phase is CyclePhase.THAW
                )
                reason = "not-applicable" if inapplicable else "unknown"
                comp["dataAbsentReason"] = {
                    "coding": [{"system": DATA_ABSENT_REASON, "code": reason}]
                }
            comps.append(comp)
        if c.outcome is not None:
            comps.append(
                {
                    "code": _concept(fig, "outcome"),
                    "valueCodeableConcept": {
                        **_concept(cs("cycle-outcome"), c.outcome),
                        **({"text": c.outcome_reason} if c.outcome_reason else {}),
                    },
                }
            )
        if c.protocol:
            comps.append({"code": _concept(fig, "protocol"), "valueString": c.protocol})
        if c.step_index is not None:
            comps.append({"code": _concept(fig, "step-index"), "valueInteger": c.step_index})
        period = {"start": _time(c.started_at)}
        if c.ended_at is not None:
            period["end"] = _time(c.ended_at)
        return {
            "resourceType": "Observation",
            "status": "preliminary" if c.outcome is None else "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": OBSERVATION_CATEGORY,
                            "code": "procedure",
                            "display": "Procedure",
                        }
                    ]
                }
            ],
            "code": _concept(cs("cycle"), f"{c.phase.value}-cycle"),
            "subject": _ref(patient),
            "partOf": [_ref(proc_url)],
            "effectivePeriod": period,
            "device": _ref(probes[c.probe]),
            "component": comps,
        }

    # ---- adverse events ----------------------------------------------------------
    def _adverse_event(
        self, ae: AdverseEventRecord, patient: str, proc_url: str, devices: list[str]
    ) -> JSON:
        tz = self.profile.zone
        extensions: list[JSON] = []
        if ae.ctcae_grade is not None:
            extensions.append({"url": ext("ctcae-grade"), "valueInteger": ae.ctcae_grade})
        for crit in ae.seriousness_criteria:
            extensions.append(
                {
                    "url": ext("seriousness-criterion"),
                    "valueCoding": coding(cs("seriousness-criterion"), crit),
                }
            )
        if ae.resolution is not None:
            extensions.append(
                {
                    "url": ext("resolution-date"),
                    "valueDateTime": parse_partial(ae.resolution).fhir(tz),
                }
            )
        if ae.action_taken is not None:
            extensions.append(
                {
                    "url": ext("action-taken"),
                    "valueCoding": coding(cs("action-taken"), ae.action_taken),
                }
            )
        if ae.further_intervention is not None:
            parts: list[JSON] = [
                {
                    "url": "type",
                    "valueCoding": coding(cs("further-intervention"), ae.further_intervention),
                }
            ]
            if ae.further_intervention_date is not None:
                parts.append(
                    {
                        "url": "date",
                        "valueDateTime": parse_partial(ae.further_intervention_date).fhir(tz),
                    }
                )
            extensions.append({"url": ext("further-intervention"), "extension": parts})
        if ae.migration_reason is not None:
            extensions.append({"url": ext("migration-reason"), "valueString": ae.migration_reason})
        out: JSON = {
            "resourceType": "AdverseEvent",
            "actuality": "actual",
            "category": [_concept(cs("ae-category"), ae.category)],
            "event": {**_concept(cs("ae-subcategory"), ae.subcategory), "text": ae.verbatim_term},
            "subject": _ref(patient),
            "study": [_ref(self.study_url)],
        }
        if extensions:
            out["extension"] = extensions
        if ae.yellow_card_ref is not None:
            out["identifier"] = {"system": sid("mhra-yellow-card"), "value": ae.yellow_card_ref}
        if ae.onset is not None:
            out["date"] = parse_partial(ae.onset).fhir(tz)
        if ae.serious is not None:
            code = "serious" if ae.serious else "non-serious"
            out["seriousness"] = {
                "coding": [
                    {
                        "system": AE_SERIOUSNESS,
                        "code": code,
                        "display": "Serious" if ae.serious else "Non-serious",
                    }
                ]
            }
        if ae.ctcae_grade is not None:
            out["severity"] = {
                "coding": [{"system": AE_SEVERITY, "code": _SEVERITY[ae.ctcae_grade]}]
            }
        if ae.outcome is not None:
            out["outcome"] = {"coding": [{"system": AE_OUTCOME, "code": _AE_OUTCOME[ae.outcome]}]}
        suspects = self._suspects(ae, proc_url, devices)
        if suspects:
            out["suspectEntity"] = suspects
        return out

    @staticmethod
    def _suspects(ae: AdverseEventRecord, proc_url: str, devices: list[str]) -> list[JSON]:
        def causality(r: Relatedness) -> list[JSON]:
            return [{"assessment": _concept(cs("relatedness"), r)}]

        out: list[JSON] = []
        if ae.relatedness_procedure is not None:
            out.append(
                {"instance": _ref(proc_url), "causality": causality(ae.relatedness_procedure)}
            )
        if ae.relatedness_device is not None:
            out += [
                {"instance": _ref(d), "causality": causality(ae.relatedness_device)}
                for d in devices
            ]
        return out

    def bundle(self, key: str, generated_at: dt.datetime | None) -> JSON:
        out: JSON = {"resourceType": "Bundle", "id": _uuid(f"bundle/{key}"), "type": "collection"}
        if generated_at is not None:
            out["timestamp"] = _time(generated_at)
        out["entry"] = [{"fullUrl": url, "resource": res} for url, res in self.entries.items()]
        return out


def build_bundle(
    profile: StudyProfile,
    procedures: Sequence[StudyProcedure],
    *,
    generated_at: dt.datetime | None = None,
) -> JSON:
    """A FHIR R4B Bundle of one study's procedures (JSON-ready dicts)."""
    b = _Builder(profile)
    by_subject: dict[str, list[StudyProcedure]] = {}
    for sp in procedures:
        by_subject.setdefault(sp.facts.patient_ref, []).append(sp)
    for pseudonym, group in by_subject.items():
        patient = b.subject(pseudonym, group)
        for sp in sorted(group, key=lambda x: x.facts.opened_at):
            b.procedure(sp, patient)
    key = ",".join(sorted(str(sp.facts.procedure_uuid) for sp in procedures))
    return b.bundle(f"{profile.study.id}/{key}", generated_at)
