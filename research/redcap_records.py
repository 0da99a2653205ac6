"""REDCap records: the procedure-day record as rows of the longitudinal design.

``follow_up_rows`` adds what the study collector learns after close to the
same design (no change to its data dictionary): per time point the visit
form (status, reason, date, mode), the pain score, the quality-of-life and
function totals; adverse events found after close on the follow-up event
whose window their onset falls in.

A row is one (record, event, repeating instrument, instance); the
non-repeating forms of an event share one row. Times are written in the
site's local time (REDCap datetimes carry no zone), booleans as 1/0,
checkboxes as one ``<field>___<code>`` column per choice, a value that is
not known as an empty cell. The study collector writes its follow-up rows
with the same ``RecordRow`` and the same design.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from .facts import ProcedureFacts
from .followup import FollowUpAssessment, local_date
from .partial_dates import parse_partial
from .profile import StudyProfile
from .record import AdverseEventRecord, ProcedureDayRecord
from .redcap_design import PROCEDURE_EVENT, Design, to_csv

__all__ = [
    "RECORD_COLUMNS",
    "RecordRow",
    "follow_up_rows",
    "local_time",
    "procedure_day_rows",
    "records_csv",
    "records_header",
]

#: the columns every longitudinal record row starts with
RECORD_COLUMNS = (
    "record_id",
    "redcap_event_name",
    "redcap_repeat_instrument",
    "redcap_repeat_instance",
)
COMPLETE = "2"  # REDCap's "Complete" status of a form


@dataclass(frozen=True, slots=True)
class RecordRow:
    record_id: str
    event: str  # unique event name
    instrument: str = ""  # repeating instrument (empty: the event's non-repeating forms)
    instance: int | None = None
    values: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, int | None]:
        return (self.record_id, self.event, self.instrument, self.instance)


def local_time(value: dt.datetime | None, tz: ZoneInfo) -> str:
    """A UTC record time as REDCap's ``datetime_seconds_ymd`` in the site's zone."""
    return "" if value is None else value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}" if value == int(value) else repr(value)
    return str(value)


def _checkbox(design: Design, name: str, chosen: Iterable[str] | None) -> dict[str, str]:
    if chosen is None:
        return {}
    picked = set(chosen)
    return {
        f"{name}___{code}": "1" if code in picked else "0"
        for code, _ in design.field_index[name].choices
    }


def _row(
    design: Design,
    record_id: str,
    event: str,
    form: str,
    instance: int | None,
    values: Mapping[str, Any],
) -> RecordRow:
    unique = design.event(event).unique_name
    repeating = design.is_repeating(event, form)
    cells = {k: _cell(v) for k, v in values.items()}
    cells[f"{form}_complete"] = COMPLETE
    return RecordRow(
        record_id=record_id,
        event=unique,
        instrument=form if repeating else "",
        instance=instance if repeating else None,
        values=cells,
    )


def procedure_day_rows(
    profile: StudyProfile, design: Design, record: ProcedureDayRecord, facts: ProcedureFacts
) -> list[RecordRow]:
    """The rows one procedure adds: enrolment, baseline pain, procedure, cycles, adverse events.

    Instances: the procedure's store number for ``procedure`` (and for the
    baseline assessments when follow-up restarts), the cycle id for
    ``cycle``, the adverse event's id (or its position) for ``adverse_event``.
    """
    tz = profile.zone
    rid = facts.patient_ref
    uid = str(facts.procedure_uuid)
    base = profile.follow_up.baseline
    restart = profile.follow_up.restart_after_repeat
    rows: list[RecordRow] = []
    consent = record.consent
    rows.append(
        _row(
            design,
            rid,
            base,
            "enrolment",
            None,
            {
                "record_id": rid,
                "enr_study_id": profile.study.id,
                "enr_consent": None if consent is None else consent.confirmed,
                "enr_consent_form": None if consent is None else consent.form_version,
            },
        )
    )
    pain = record.baseline_pain
    if pain is not None and (restart or record.procedure.treatment_number == 1):
        rows.append(
            _row(
                design,
                rid,
                base,
                "pain",
                facts.procedure_id,
                {
                    "pain_procedure_uuid": uid,
                    "pain_score": int(pain.score) if pain.score == int(pain.score) else pain.score,
                    "pain_assessed_at": local_time(pain.assessed_at, tz),
                },
            )
        )
    s, d, c = record.selection, record.procedure, facts.console
    values: dict[str, Any] = {
        "proc_uuid": uid,
        "proc_opened_at": local_time(facts.opened_at, tz),
        "proc_closed_at": local_time(facts.closed_at, tz),
        "proc_treatment_no": d.treatment_number,
        "proc_repeat_of": d.repeat_of,
        "proc_profile_id": record.profile.profile_id,
        "proc_profile_version": record.profile.version,
        "proc_profile_hash": record.profile.content_hash,
        "sel_indication": s.indication,
        "sel_symptom_months": s.symptom_duration_months,
        "sel_aetiology": s.aetiology,
        "sel_nerve": s.nerve,
        "sel_web_space": s.web_space,
        "sel_neuroma_mm": s.neuroma_size_mm,
        "proc_tech_success": d.technical_success,
        "proc_anaesthesia": d.anaesthesia,
        "proc_setting": d.setting,
        "proc_gas": d.gas,
        "proc_agent": d.anaesthetic_agent,
        "proc_probe_model": d.probe_model,
        "proc_probe_gauge": d.probe_gauge,
        "proc_probe_count": d.probe_count,
        "proc_probe_lot": d.probe_lot,
        "proc_probe_udi": d.probe_udi,
        "proc_console_model": c.model,
        "proc_console_serial": c.serial,
        "proc_console_fw": c.firmware,
        "proc_body_site": facts.body_site,
        "proc_side": facts.side,
    }
    if s.eligibility is not None and "sel_elig_checklist" in design.field_index:
        values["sel_elig_checklist"] = s.eligibility.checklist_id
        values["sel_elig_version"] = s.eligibility.checklist_version
        values.update({f"elig_{k}": v for k, v in s.eligibility.items.items()})
    values.update(_checkbox(design, "sel_prior_tx", s.prior_treatments))
    values.update(_checkbox(design, "proc_imaging", d.imaging))
    rows.append(_row(design, rid, PROCEDURE_EVENT, "procedure", facts.procedure_id, values))
    for cy in facts.cycles:
        rows.append(
            _row(
                design,
                rid,
                PROCEDURE_EVENT,
                "cycle",
                cy.cycle_id,
                {
                    "cyc_procedure_uuid": uid,
                    "cyc_probe": cy.probe,
                    "cyc_phase": cy.phase,
                    "cyc_step": cy.step_index,
                    "cyc_protocol": cy.protocol,
                    "cyc_planned_s": cy.planned_s,
                    "cyc_target_tip_c": cy.target_tip_c,
                    "cyc_started_at": local_time(cy.started_at, tz),
                    "cyc_ended_at": local_time(cy.ended_at, tz),
                    "cyc_duration_s": cy.duration_s,
                    "cyc_outcome": cy.outcome,
                    "cyc_outcome_reason": cy.outcome_reason,
                    "cyc_min_tip_c": cy.min_tip_c,
                    "cyc_time_to_target_s": cy.time_to_target_s,
                    "cyc_below_m20_s": cy.time_below_m20_s,
                    "cyc_below_m40_s": cy.time_below_m40_s,
                    "cyc_thaw_to_0_s": cy.thaw_to_0_s,
                    "cyc_supply_start_kpa": cy.supply_start_kpa,
                    "cyc_supply_end_kpa": cy.supply_end_kpa,
                    "cyc_gas_used_l": cy.gas_used_est_l,
                },
            )
        )
    for i, ae in enumerate(record.adverse_events):
        instance = ae.ae_id if ae.ae_id is not None else i + 1
        rows.append(
            _row(
                design, rid, PROCEDURE_EVENT, "adverse_event", instance, _ae_values(design, uid, ae)
            )
        )
    return rows


def _ae_values(design: Design, uid: str, ae: AdverseEventRecord) -> dict[str, Any]:
    values: dict[str, Any] = {
        "ae_procedure_uuid": uid,
        "ae_category": ae.category,
        "ae_subcategory": ae.subcategory,
        "ae_verbatim": ae.verbatim_term,
        "ae_onset": ae.onset,
        "ae_resolution": ae.resolution,
        "ae_grade": ae.ctcae_grade,
        "ae_serious": ae.serious,
        "ae_rel_device": ae.relatedness_device,
        "ae_rel_procedure": ae.relatedness_procedure,
        "ae_outcome": ae.outcome,
        "ae_action": ae.action_taken,
        "ae_fi_type": ae.further_intervention,
        "ae_fi_date": ae.further_intervention_date,
        "ae_yellow_card": ae.yellow_card_ref,
        "ae_migration_reason": ae.migration_reason,
    }
    values.update(_checkbox(design, "ae_serious_crit", ae.seriousness_criteria))
    return values


def _event_of(profile: StudyProfile, facts: ProcedureFacts, ae: AdverseEventRecord) -> str:
    """The follow-up event an adverse event found after close belongs to: the last time
    point whose window opens on or before its onset (the first one without an onset)."""
    points = profile.follow_up_points
    if ae.onset is None:
        return points[0].id
    onset = parse_partial(ae.onset).earliest(profile.zone).astimezone(profile.zone).date()
    days = (onset - local_date(facts.opened_at, profile.zone)).days
    chosen = points[0].id
    for tp in points:
        if tp.earliest_day <= days:
            chosen = tp.id
    return chosen


def follow_up_rows(
    profile: StudyProfile,
    design: Design,
    facts: ProcedureFacts,
    assessments: Iterable[FollowUpAssessment],
    later_events: Iterable[AdverseEventRecord],
) -> list[RecordRow]:
    """The rows the collector's follow-up adds for one procedure.

    Instances: with ``restart_after_repeat`` the assessments repeat, one
    instance per procedure followed (its store number, as for the baseline);
    an adverse event's instance is its collector id. Scores are written only
    for visits that were done.
    """
    rid = facts.patient_ref
    uid = str(facts.procedure_uuid)
    fn = profile.instruments.function
    rows: list[RecordRow] = []
    for a in assessments:
        event, inst = a.time_point, facts.procedure_id
        if a.time_point != profile.follow_up.baseline:
            rows.append(
                _row(
                    design,
                    rid,
                    event,
                    "visit",
                    inst,
                    {
                        "visit_procedure_uuid": uid,
                        "visit_status": a.status,
                        "visit_reason": a.reason,
                        "visit_date": a.assessed_on.isoformat(),
                        "visit_mode": a.mode,
                    },
                )
            )
        if a.pain_score is not None:
            score = int(a.pain_score) if a.pain_score == int(a.pain_score) else a.pain_score
            rows.append(
                _row(
                    design,
                    rid,
                    event,
                    "pain",
                    inst,
                    {"pain_procedure_uuid": uid, "pain_score": score},
                )
            )
        if a.qol_total is not None:
            qol = profile.instruments.qol
            rows.append(
                _row(
                    design,
                    rid,
                    event,
                    "quality_of_life",
                    inst,
                    {
                        "qol_procedure_uuid": uid,
                        "qol_instrument": qol.name,
                        "qol_version": qol.version,
                        "qol_score": a.qol_total,
                        "qol_date": a.assessed_on.isoformat(),
                    },
                )
            )
        if a.function_score is not None and fn is not None:
            rows.append(
                _row(
                    design,
                    rid,
                    event,
                    "function_score",
                    inst,
                    {
                        "fn_procedure_uuid": uid,
                        "fn_instrument": fn.name,
                        "fn_version": fn.version,
                        "fn_score": a.function_score,
                        "fn_date": a.assessed_on.isoformat(),
                    },
                )
            )
    for i, ae in enumerate(later_events):
        instance = ae.ae_id if ae.ae_id is not None else i + 1
        event = _event_of(profile, facts, ae)
        rows.append(
            _row(design, rid, event, "adverse_event", instance, _ae_values(design, uid, ae))
        )
    return rows


def records_header(design: Design) -> list[str]:
    """Every column a record row may have, in dictionary order."""
    header = list(RECORD_COLUMNS)
    for form in design.forms:
        for f in form.fields:
            if f.name == "record_id":
                continue
            if f.type == "checkbox":
                header += [f"{f.name}___{code}" for code, _ in f.choices]
            else:
                header.append(f.name)
        header.append(f"{form.name}_complete")
    return header


def records_csv(design: Design, rows: Iterable[RecordRow]) -> str:
    """The records CSV (REDCap's flat import format) of ``rows``.

    Rows with the same key are merged: an event's non-repeating forms share
    a row; for a value given twice the first non-empty one is kept (the
    earliest procedure's, when rows come in procedure order).
    """
    merged: dict[tuple[str, str, str, int | None], dict[str, str]] = {}
    for row in rows:
        cells = merged.setdefault(row.key, {})
        for k, v in row.values.items():
            if v != "" and cells.get(k, "") == "":
                cells[k] = v
    header = records_header(design)
    unknown = sorted({k for cells in merged.values() for k in cells} - set(header))
    if unknown:
        raise ValueError(f"columns not in the data dictionary: {', '.join(unknown)}")
    out_rows = []
    for (rid, event, instrument, instance), cells in merged.items():
        fixed = {
            "record_id": rid,
            "redcap_event_name": event,
            "redcap_repeat_instrument": instrument,
            "redcap_repeat_instance": "" if instance is None else str(instance),
        }
        out_rows.append([fixed.get(col, cells.get(col, "")) for col in header])
    return to_csv(header, out_rows)
