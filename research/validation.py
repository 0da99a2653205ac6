"""Checks of procedure-day data against a study profile: pure functions, every problem.

Each ``check_*`` function returns the list of problems it found (empty: the
data is acceptable), each naming its field and saying why in one line; the
``parse_*`` functions turn raw input (CLI flags, a TOML file, JSON) into the
model and raise ``ResearchDataError`` with every problem at once.

What is refused (issue 19): a missing required field or a value outside the
profile's list (each named), consent not confirmed where the study demands
it, an adverse event's onset before the procedure opened or its resolution
before its onset (partial dates compared as intervals: only what is
certainly earlier is refused), a CTCAE grade outside 1-5, unknown codes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .partial_dates import definitely_before, parse_partial
from .problems import Problem, ResearchDataError, problems_from_validation
from .profile import FieldRules, StudyProfile
from .record import (
    AdverseEventRecord,
    Consent,
    PainAssessment,
    ProcedureDayRecord,
    ProcedureDetails,
    Selection,
)
from .vocab import AE_SUBCATEGORIES, AeCategory, AeOutcome, AeSubcategory, PainScale

__all__ = [
    "baseline_pain_gate",
    "check_adverse_event",
    "check_baseline_pain",
    "check_consent",
    "check_procedure_details",
    "check_record",
    "check_selection",
    "parse_adverse_event",
    "parse_model",
    "parse_record",
]

M = TypeVar("M", bound=BaseModel)

#: what a newly reported adverse event must state (a migrated one may lack them)
AE_REQUIRED = (
    "onset",
    "ctcae_grade",
    "serious",
    "relatedness_device",
    "relatedness_procedure",
    "outcome",
    "action_taken",
)


def parse_model(model: type[M], data: Mapping[str, Any], prefix: str = "") -> M:
    """``model`` from raw data, or ``ResearchDataError`` with one problem per bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ResearchDataError(problems_from_validation(exc, prefix)) from None


def _rules(study: str, section: str, rules: FieldRules, obj: BaseModel) -> list[Problem]:
    problems: list[Problem] = []
    for name in rules.required:
        if getattr(obj, name) is None:
            problems.append(Problem(f"{section}.{name}", f"required by study {study}"))
    for name, allowed in rules.allowed.items():
        value = getattr(obj, name)
        if value is None:
            continue
        listed = ", ".join(str(a) for a in allowed)
        for v in value if isinstance(value, list) else [value]:
            if v not in allowed:
                problems.append(
                    Problem(
                        f"{section}.{name}",
                        f"{str(v)!r} is not allowed by study {study} (allowed: {listed})",
                    )
                )
    return problems


def check_consent(profile: StudyProfile, consent: Consent | None) -> list[Problem]:
    rules = profile.consent
    problems: list[Problem] = []
    if rules.required and (consent is None or not consent.confirmed):
        problems.append(
            Problem(
                "consent.confirmed",
                f"study {profile.study.id} requires consent confirmed before the procedure opens",
            )
        )
    if consent is not None and rules.form_versions:
        if consent.form_version is None:
            if consent.confirmed:
                problems.append(Problem("consent.form_version", "required with consent"))
        elif consent.form_version not in rules.form_versions:
            problems.append(
                Problem(
                    "consent.form_version",
                    f"{consent.form_version!r} is not a consent form of study "
                    f"{profile.study.id} (allowed: {', '.join(rules.form_versions)})",
                )
            )
    return problems


def check_selection(profile: StudyProfile, selection: Selection) -> list[Problem]:
    study = profile.study.id
    problems = _rules(study, "selection", profile.selection, selection)
    if selection.indication is not None and profile.indication(selection.indication) is None:
        keys = ", ".join(c.key for c in profile.codes.indications)
        problems.append(
            Problem(
                "selection.indication",
                f"unknown indication {selection.indication!r} for study {study} (allowed: {keys})",
            )
        )
    elig, checklist = selection.eligibility, profile.eligibility
    if elig is not None:
        if checklist is None:
            problems.append(Problem("selection.eligibility", f"study {study} has no checklist"))
        elif (elig.checklist_id, elig.checklist_version) != (
            checklist.checklist_id,
            checklist.version,
        ):
            problems.append(
                Problem(
                    "selection.eligibility",
                    f"checklist {elig.checklist_id} v{elig.checklist_version} is not the "
                    f"study's ({checklist.checklist_id} v{checklist.version})",
                )
            )
        else:
            known = {item.id for item in checklist.items}
            for item in checklist.items:
                answer = elig.items.get(item.id)
                if answer is None:
                    problems.append(
                        Problem(f"selection.eligibility.items.{item.id}", "not answered")
                    )
                elif not answer:
                    problems.append(
                        Problem(
                            f"selection.eligibility.items.{item.id}",
                            f"not confirmed ({item.text}): the patient is not eligible",
                        )
                    )
            for extra in sorted(set(elig.items) - known):
                problems.append(
                    Problem(f"selection.eligibility.items.{extra}", "not an item of the checklist")
                )
    return problems


def check_procedure_details(profile: StudyProfile, details: ProcedureDetails) -> list[Problem]:
    problems = _rules(profile.study.id, "procedure", profile.procedure, details)
    if details.treatment_number > 1 and details.repeat_of is None:
        problems.append(
            Problem("procedure.repeat_of", "a repeat treatment (number > 1) names the earlier one")
        )
    if details.treatment_number == 1 and details.repeat_of is not None:
        problems.append(
            Problem("procedure.treatment_number", "a repeat (repeat_of given) is number 2 or more")
        )
    return problems


def check_baseline_pain(
    profile: StudyProfile,
    pain: PainAssessment,
    *,
    first_freeze_at: dt.datetime | None = None,
) -> list[Problem]:
    """The baseline score on the profile's scale, recall period and time point."""
    want = profile.instruments.pain
    problems: list[Problem] = []
    if pain.time_point != profile.follow_up.baseline:
        problems.append(
            Problem(
                "baseline_pain.time_point",
                f"{pain.time_point!r} is not the baseline time point "
                f"{profile.follow_up.baseline!r}",
            )
        )
    if pain.scale != want.scale:
        problems.append(
            Problem("baseline_pain.scale", f"study {profile.study.id} uses {want.scale.value}")
        )
    elif pain.scale is PainScale.NRS_0_10 and (pain.score != int(pain.score) or pain.score > 10):
        problems.append(
            Problem("baseline_pain.score", f"an NRS score is an integer 0-10 (got {pain.score:g})")
        )
    if pain.recall_period != want.recall_period:
        problems.append(
            Problem(
                "baseline_pain.recall_period",
                f"study {profile.study.id} asks for {want.recall_period.value}",
            )
        )
    if first_freeze_at is not None and pain.assessed_at >= first_freeze_at:
        problems.append(
            Problem("baseline_pain.assessed_at", "the baseline is taken before the first freeze")
        )
    return problems


def baseline_pain_gate(profile: StudyProfile, pain: PainAssessment | None) -> list[Problem]:
    """Why ``run``/``freeze`` must wait: the study's baseline pain score is not recorded yet."""
    if profile.instruments.pain.required_at_baseline and pain is None:
        return [
            Problem(
                "baseline_pain",
                f"study {profile.study.id} requires the baseline pain score "
                f"({profile.instruments.pain.scale.value}) before the first freeze",
            )
        ]
    return []


def check_adverse_event(
    ae: AdverseEventRecord,
    *,
    opened_at: dt.datetime,
    tz: dt.tzinfo,
    prefix: str = "adverse_event",
) -> list[Problem]:
    """A new or updated adverse event, against the procedure's opening and itself.

    Dates without an offset are read in ``tz`` (the site's time zone).
    """
    problems: list[Problem] = []

    def add(name: str, message: str) -> None:
        problems.append(Problem(f"{prefix}.{name}", message))

    for name in AE_REQUIRED:
        if getattr(ae, name) is None:
            add(name, "required")
    if ae.subcategory is AeSubcategory.UNSPECIFIED_MIGRATED:
        add("subcategory", "'unspecified_migrated' is kept for migrated rows only")
    elif ae.subcategory not in AE_SUBCATEGORIES[ae.category]:
        listed = ", ".join(s.value for s in AE_SUBCATEGORIES[ae.category])
        add(
            "subcategory",
            f"{ae.subcategory.value!r} is not a subcategory of {ae.category.value!r} "
            f"(allowed: {listed})",
        )
    onset = parse_partial(ae.onset) if ae.onset else None
    if onset is not None and definitely_before(onset, opened_at, tz):
        opened_local = opened_at.astimezone(tz).isoformat(timespec="minutes")
        add("onset", f"{ae.onset} is before the procedure opened ({opened_local})")
    if ae.resolution is not None:
        resolution = parse_partial(ae.resolution)
        if onset is not None and definitely_before(resolution, onset, tz):
            add("resolution", f"{ae.resolution} is before the onset {ae.onset}")
        if ae.outcome in (AeOutcome.NOT_RECOVERED, AeOutcome.RECOVERING_RESOLVING):
            add("resolution", f"an event with outcome {ae.outcome.value!r} has not resolved")
    if ae.serious is True and not ae.seriousness_criteria:
        add("seriousness_criteria", "a serious adverse event names at least one criterion")
    if ae.serious is False and ae.seriousness_criteria:
        add("seriousness_criteria", "criteria apply to serious adverse events only")
    if (ae.ctcae_grade == 5) != (ae.outcome is AeOutcome.FATAL) and ae.ctcae_grade is not None:
        add("outcome", "CTCAE grade 5 (death) and outcome 'fatal' go together")
    if ae.category is AeCategory.FURTHER_INTERVENTION and ae.further_intervention is None:
        add("further_intervention", "required for category 'further_intervention'")
    if ae.further_intervention_date is not None:
        if ae.further_intervention is None:
            add("further_intervention", "a further intervention date needs its type")
        when = parse_partial(ae.further_intervention_date)
        if onset is not None and definitely_before(when, onset, tz):
            add("further_intervention_date", f"{ae.further_intervention_date} is before the onset")
    if ae.migration_reason is not None:
        add("migration_reason", "set only by the migration of old records")
    return problems


def check_record(
    profile: StudyProfile, record: ProcedureDayRecord, *, opened_at: dt.datetime
) -> list[Problem]:
    """The whole procedure-day record (at close, or for an export's self-check)."""
    problems: list[Problem] = []
    if record.profile != profile.stamp():
        problems.append(
            Problem(
                "profile",
                f"recorded under {record.profile.profile_id} v{record.profile.version} "
                f"({record.profile.content_hash[:15]}...), not this profile",
            )
        )
    problems += check_consent(profile, record.consent)
    problems += check_selection(profile, record.selection)
    problems += check_procedure_details(profile, record.procedure)
    if record.baseline_pain is not None:
        problems += check_baseline_pain(profile, record.baseline_pain)
    else:
        problems += baseline_pain_gate(profile, None)
    for i, ae in enumerate(record.adverse_events):
        if ae.subcategory is AeSubcategory.UNSPECIFIED_MIGRATED:
            continue  # a migrated row keeps what the old record said, no more
        problems += check_adverse_event(
            ae, opened_at=opened_at, tz=profile.zone, prefix=f"adverse_events.{i}"
        )
    return problems


def parse_record(
    profile: StudyProfile, data: Mapping[str, Any], *, opened_at: dt.datetime
) -> ProcedureDayRecord:
    """A record from raw data, checked against ``profile``; every problem raised at once."""
    record = parse_model(ProcedureDayRecord, data)
    problems = check_record(profile, record, opened_at=opened_at)
    if problems:
        raise ResearchDataError(problems)
    return record


def parse_adverse_event(
    data: Mapping[str, Any], *, opened_at: dt.datetime, tz: dt.tzinfo
) -> AdverseEventRecord:
    """An adverse event from raw data (``cryoctl ae add``); every problem raised at once."""
    ae = parse_model(AdverseEventRecord, data, prefix="adverse_event")
    problems = check_adverse_event(ae, opened_at=opened_at, tz=tz)
    if problems:
        raise ResearchDataError(problems)
    return ae
