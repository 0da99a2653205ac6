"""The procedure-day record: what a study needs beyond the console's figures.

Ownership (issue 19): the daemon records what happens from procedure open to
close (consent, patient selection, procedure details, the baseline pain
assessment taken before the first freeze, adverse events noticed up to
close); everything after close belongs to the study collector, which builds
on these same models.

These models check only what a single field can tell (types, ranges, code
lists, date formats). What depends on the study profile, on the procedure's
times or on other fields is checked by the pure functions of
``cryod.research.validation``, which return every problem at once. Field
names carry their unit (``_mm``, ``_months``).
"""

from __future__ import annotations

import types
import typing
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from .partial_dates import parse_partial
from .vocab import (
    ActionTaken,
    AeCategory,
    AeOutcome,
    AeSubcategory,
    Aetiology,
    Anaesthesia,
    FurtherIntervention,
    Gas,
    ImagingModality,
    Nerve,
    PainScale,
    PriorTreatment,
    RecallPeriod,
    Relatedness,
    SeriousnessCriterion,
    Setting,
    WebSpace,
)

__all__ = [
    "AdverseEventRecord",
    "Consent",
    "Eligibility",
    "PainAssessment",
    "PartialDate",
    "ProcedureDayRecord",
    "ProcedureDetails",
    "ProfileStamp",
    "Selection",
    "field_element_type",
]


def _check_partial(value: str) -> str:
    parse_partial(value)
    return value


#: ISO 8601 text: YYYY, YYYY-MM, YYYY-MM-DD or a date and time (offset optional)
PartialDate = Annotated[str, AfterValidator(_check_partial)]
_Text64 = Annotated[str, Field(min_length=1, max_length=64)]
_Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, hide_input_in_errors=True
    )


class ProfileStamp(_Model):
    """Which study profile a record was made under (its id, version and content hash)."""

    profile_id: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=32)
    content_hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")


class Consent(_Model):
    confirmed: bool
    form_version: str | None = Field(default=None, min_length=1, max_length=32)


class Eligibility(_Model):
    """The study's eligibility checklist as answered: each item id -> confirmed."""

    checklist_id: str = Field(min_length=1, max_length=64)
    checklist_version: str = Field(min_length=1, max_length=32)
    items: dict[_Key, bool]


class Selection(_Model):
    """Patient selection (NICE IPG747 asks research to report it)."""

    indication: _Key | None = None  # a key of the profile's [[codes.indications]]
    eligibility: Eligibility | None = None
    symptom_duration_months: int | None = Field(default=None, ge=0, le=1200)
    prior_treatments: list[PriorTreatment] | None = None  # [] = none tried
    aetiology: Aetiology | None = None
    nerve: Nerve | None = None
    web_space: WebSpace | None = None
    neuroma_size_mm: float | None = Field(default=None, gt=0, le=200)


class ProcedureDetails(_Model):
    imaging: list[ImagingModality] | None = Field(default=None, min_length=1)
    technical_success: bool | None = None  # the ice ball covers the target
    anaesthesia: Anaesthesia | None = None
    anaesthetic_agent: _Text64 | None = None
    setting: Setting | None = None
    probe_model: _Text64 | None = None
    probe_gauge: int | None = Field(default=None, ge=8, le=30)
    probe_count: int | None = Field(default=None, ge=1, le=25)
    probe_lot: _Text64 | None = None
    probe_udi: str | None = Field(default=None, min_length=1, max_length=255)
    gas: Gas | None = None  # from the console profile
    treatment_number: int = Field(default=1, ge=1, le=99)
    repeat_of: uuid.UUID | None = None  # the earlier procedure's uuid

    @field_validator("imaging")
    @classmethod
    def _distinct(cls, value: list[ImagingModality] | None) -> list[ImagingModality] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("each imaging modality once")
        return value


class PainAssessment(_Model):
    """A pain score at a time point of the profile (an assessment, never an adverse event)."""

    time_point: _Key
    scale: PainScale
    score: float = Field(ge=0, le=100)
    recall_period: RecallPeriod
    assessed_at: AwareDatetime


class AdverseEventRecord(_Model):
    """One adverse event; ``ae_id`` is assigned by the store that keeps it."""

    ae_id: int | None = Field(default=None, ge=1)
    category: AeCategory
    subcategory: AeSubcategory
    verbatim_term: str = Field(min_length=1, max_length=500)
    onset: PartialDate | None = None
    resolution: PartialDate | None = None
    ctcae_grade: int | None = None
    serious: bool | None = None
    seriousness_criteria: list[SeriousnessCriterion] = Field(default_factory=list)
    relatedness_device: Relatedness | None = None
    relatedness_procedure: Relatedness | None = None
    outcome: AeOutcome | None = None
    action_taken: ActionTaken | None = None
    further_intervention: FurtherIntervention | None = None
    further_intervention_date: PartialDate | None = None
    yellow_card_ref: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9/-]{0,39}$")
    migration_reason: str | None = Field(default=None, max_length=500)

    @field_validator("ctcae_grade")
    @classmethod
    def _grade(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 5:
            raise ValueError(f"CTCAE v5 grade must be 1-5 (got {value})")
        return value


class ProcedureDayRecord(_Model):
    """Everything the daemon records for a study from procedure open to close."""

    profile: ProfileStamp
    consent: Consent | None = None
    selection: Selection = Selection()
    procedure: ProcedureDetails = ProcedureDetails()
    baseline_pain: PainAssessment | None = None
    adverse_events: list[AdverseEventRecord] = Field(default_factory=list)


def field_element_type(model: type[BaseModel], name: str) -> Any:
    """The type of one value of a field: ``list[X] | None`` and ``X | None`` give ``X``."""
    annotation = model.model_fields[name].annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = args[0] if len(args) == 1 else annotation
    if typing.get_origin(annotation) is list:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation
