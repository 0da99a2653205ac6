"""Study profiles: a study described in one versioned TOML file (docs/study-profile.md).

A profile names the study (id, title, registry ids, sponsor), the site's IANA
time zone, the procedure and indication codings to use (configurable, never
hard-coded), the consent and eligibility the study demands, which selection
and procedure fields are required and their allowed values, the follow-up
schedule and the instruments. Every procedure records the profile's id,
version and content hash (``StudyProfile.stamp()``).

Content hash: ``sha256:`` + the SHA-256 of the profile's canonical JSON, that
is ``model_dump(mode="json", by_alias=True, exclude_unset=True)`` serialised
with sorted keys, no whitespace (``","`` and ``":"`` separators) and UTF-8
without ASCII escapes. So comments, whitespace, key order and TOML spelling
(``1`` or ``1.0`` for a number field, inline or standard tables) do not
change it; a changed value, an added key or a reordered list does. Keys left
out are left out of the hash too, so a later release that adds an optional
key keeps every existing profile's hash.

Loading collects every problem, one line each: ``<file>: <key>: <reason>``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .problems import Problem, problems_from_validation
from .record import ProcedureDetails, ProfileStamp, Selection, field_element_type
from .tomlfile import MAX_TOML_BYTES, read_toml
from .vocab import Coded, PainScale, RecallPeriod

__all__ = [
    "PROFILE_SCHEMA",
    "Coding",
    "FieldRules",
    "FunctionInstrument",
    "IndicationCoding",
    "PainInstrument",
    "Questionnaire",
    "StudyProfile",
    "StudyProfileError",
    "TimePoint",
    "builtin_study_names",
    "builtin_study_path",
    "canonical_json",
    "load_study_profile",
    "parse_study_profile",
    "profile_problems",
]

PROFILE_SCHEMA = "cryod.study/1"

_Uri = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", max_length=255)]
_Text = Annotated[str, Field(min_length=1, max_length=200)]
_Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
#: time point ids become REDCap event names (``<id>_arm_1``)
_TimePointId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,17}$")]


class StudyProfileError(ValueError):
    """A study profile is unreadable or invalid; one line per problem (file, key, reason)."""


def _problem(loc: tuple[str | int, ...], message: str, value: Any) -> dict[str, Any]:
    return {"type": PydanticCustomError("study_profile", message), "loc": loc, "input": value}


def _raise(title: str, errors: list[dict[str, Any]]) -> None:
    """Report every cross-field problem at once, each at its own key."""
    if errors:
        raise ValidationError.from_exception_data(title, errors)  # type: ignore[arg-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Coding(_Strict):
    """A code from a terminology (SNOMED CT, LOINC ...), as FHIR codes it."""

    system: _Uri
    code: str = Field(min_length=1, max_length=64, pattern=r"^\S+( \S+)*$")
    display: _Text


class IndicationCoding(Coding):
    key: _Key  # what a record's ``selection.indication`` names


class RegistryId(_Strict):
    system: _Uri  # the registry's identifier system
    value: str = Field(min_length=1, max_length=64)


class StudyInfo(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    title: _Text
    sponsor: _Text
    registry_ids: list[RegistryId] = Field(default_factory=list)
    pseudonym_system: _Uri | None = None  # identifier system of the subject pseudonyms


class SiteInfo(_Strict):
    time_zone: str

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/London)") from None
        return value


class Codes(_Strict):
    procedure: Coding
    indications: list[IndicationCoding] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        keys = [c.key for c in self.indications]
        _raise(
            "Codes",
            [
                _problem(("indications", i, "key"), f"duplicate key {key!r}", key)
                for i, key in enumerate(keys)
                if key in keys[:i]
            ],
        )
        return self


class ConsentRules(_Strict):
    required: bool
    form_versions: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list
    )


class ChecklistItem(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,20}$")  # REDCap field elig_<id>
    text: _Text


class EligibilityChecklist(_Strict):
    checklist_id: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=32)
    items: list[ChecklistItem] = Field(min_length=1)


_Allowed = list[str | int]


class FieldRules(_Strict):
    """Which fields of a section must be filled, and the values a field may take."""

    required: list[str] = Field(default_factory=list)
    allowed: dict[str, Annotated[_Allowed, Field(min_length=1)]] = Field(default_factory=dict)

    #: the record section these rules apply to
    section: ClassVar[type[BaseModel]]

    @model_validator(mode="after")
    def _known_fields(self) -> Self:
        _raise(type(self).__name__, _check_rules(self, self.section))
        return self


class SelectionRules(FieldRules):
    section = Selection


class ProcedureRules(FieldRules):
    section = ProcedureDetails


class TimePoint(_Strict):
    id: _TimePointId
    label: _Text
    target_day: int = Field(ge=0, le=3650)
    window_before_days: int = Field(ge=0, le=365)
    window_after_days: int = Field(ge=0, le=365)

    @property
    def earliest_day(self) -> int:
        return self.target_day - self.window_before_days

    @property
    def latest_day(self) -> int:
        return self.target_day + self.window_after_days


class FollowUp(_Strict):
    baseline: _TimePointId  # the time point of the baseline assessment (procedure day)
    restart_after_repeat: bool  # a repeat procedure starts the schedule again
    time_points: list[TimePoint] = Field(min_length=2)

    @model_validator(mode="after")
    def _schedule(self) -> Self:
        _raise("FollowUp", _check_time_points(self))
        return self


class PainInstrument(_Strict):
    scale: PainScale
    recall_period: RecallPeriod
    required_at_baseline: bool  # run/freeze refused until the baseline score is recorded


class Questionnaire(_Strict):
    name: _Text
    version: str = Field(min_length=1, max_length=64)
    url: _Uri  # the instrument's canonical (FHIR Questionnaire) URL


class FunctionInstrument(Questionnaire):
    score_min: float
    score_max: float

    @model_validator(mode="after")
    def _range(self) -> Self:
        if not self.score_min < self.score_max:
            _raise(
                "FunctionInstrument",
                [
                    _problem(
                        ("score_max",), "score_max must be greater than score_min", self.score_max
                    )
                ],
            )
        return self


class Instruments(_Strict):
    pain: PainInstrument
    qol: Questionnaire
    function: FunctionInstrument | None = None


class StudyProfile(_Strict):
    schema_: Literal["cryod.study/1"] = Field(alias="schema")
    version: str = Field(min_length=1, max_length=32)
    study: StudyInfo
    site: SiteInfo
    codes: Codes
    consent: ConsentRules
    eligibility: EligibilityChecklist | None = None
    selection: SelectionRules = Field(default_factory=SelectionRules)
    procedure: ProcedureRules = Field(default_factory=ProcedureRules)
    follow_up: FollowUp
    instruments: Instruments

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True
    )

    @model_validator(mode="after")
    def _eligibility(self) -> Self:
        if "eligibility" in self.selection.required and self.eligibility is None:
            _raise(
                "StudyProfile",
                [
                    _problem(
                        ("selection", "required"),
                        "'eligibility' is required but the profile has no [eligibility] checklist",
                        "eligibility",
                    )
                ],
            )
        return self

    # ---- what the rest of the package asks of a profile -----------------------
    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.site.time_zone)

    @property
    def content_hash(self) -> str:
        return "sha256:" + hashlib.sha256(canonical_json(self).encode("utf-8")).hexdigest()

    def stamp(self) -> ProfileStamp:
        return ProfileStamp(
            profile_id=self.study.id, version=self.version, content_hash=self.content_hash
        )

    def indication(self, key: str) -> IndicationCoding | None:
        return next((c for c in self.codes.indications if c.key == key), None)

    @property
    def baseline(self) -> TimePoint:
        return next(tp for tp in self.follow_up.time_points if tp.id == self.follow_up.baseline)

    @property
    def follow_up_points(self) -> list[TimePoint]:
        """The time points after the baseline."""
        return [tp for tp in self.follow_up.time_points if tp.id != self.follow_up.baseline]

    def allowed_values(self, section: Literal["selection", "procedure"], name: str) -> list[str]:
        """The codes a coded field may take in this study (its whole list if not narrowed)."""
        rules = self.selection if section == "selection" else self.procedure
        model = Selection if section == "selection" else ProcedureDetails
        if name in rules.allowed:
            return [str(v) for v in rules.allowed[name]]
        elem = field_element_type(model, name)
        if isinstance(elem, type) and issubclass(elem, Coded):
            return [m.value for m in elem]
        raise KeyError(f"{section}.{name} is not a coded field")

    @property
    def pseudonym_system(self) -> str:
        return self.study.pseudonym_system or f"urn:cryod:study:{self.study.id}:pseudonym"


def _check_time_points(follow_up: FollowUp) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    points = follow_up.time_points
    ids = [tp.id for tp in points]
    for i, tp in enumerate(points):
        if tp.id in ids[:i]:
            errors.append(_problem(("time_points", i, "id"), f"duplicate id {tp.id!r}", tp.id))
        if i and tp.target_day <= points[i - 1].target_day:
            errors.append(
                _problem(
                    ("time_points", i, "target_day"),
                    "time points must be in increasing target_day order",
                    tp.target_day,
                )
            )
        elif i and tp.earliest_day <= points[i - 1].latest_day:
            errors.append(
                _problem(
                    ("time_points", i, "window_before_days"),
                    f"window overlaps the window of {points[i - 1].id!r}",
                    tp.window_before_days,
                )
            )
    for i, tp in enumerate(points):
        if tp.id == "procedure":
            errors.append(
                _problem(
                    ("time_points", i, "id"),
                    "'procedure' is the procedure-day event, not a time point id",
                    tp.id,
                )
            )
    if follow_up.baseline not in ids:
        errors.append(
            _problem(
                ("baseline",), f"{follow_up.baseline!r} is not a time point id", follow_up.baseline
            )
        )
    elif ids[0] != follow_up.baseline:
        errors.append(
            _problem(("baseline",), "the baseline must be the first time point", follow_up.baseline)
        )
    return errors


def _vocabulary(elem: Any) -> type[Coded] | None:
    return elem if isinstance(elem, type) and issubclass(elem, Coded) else None


def _check_rules(rules: FieldRules, model: type[BaseModel]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    names = set(model.model_fields)
    for i, name in enumerate(rules.required):
        if name not in names:
            errors.append(
                _problem(
                    ("required", i),
                    f"unknown field {name!r} (fields: {', '.join(sorted(names))})",
                    name,
                )
            )
    for name, values in rules.allowed.items():
        loc: tuple[str | int, ...] = ("allowed", name)
        if name not in names:
            errors.append(_problem(loc, f"unknown field {name!r}", name))
            continue
        elem = field_element_type(model, name)
        if not (isinstance(elem, type) and (issubclass(elem, Coded) or elem in (str, int))):
            errors.append(
                _problem(loc, "allowed values apply to coded, text or integer fields", name)
            )
            continue
        vocab = _vocabulary(elem)
        codes = None if vocab is None else [m.value for m in vocab]
        for j, value in enumerate(values):
            if codes is not None:
                if not (isinstance(value, str) and value in codes):
                    errors.append(
                        _problem(
                            (*loc, j), f"unknown code {value!r} (codes: {', '.join(codes)})", value
                        )
                    )
            elif not isinstance(value, elem) or isinstance(value, bool):
                errors.append(_problem((*loc, j), f"not a {elem.__name__}: {value!r}", value))
    return errors


def canonical_json(profile: StudyProfile) -> str:
    """The text the content hash is taken over (see the module docstring)."""
    data = profile.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def builtin_study_path(name: str) -> Path:
    """Path of a study profile shipped as package data (``config/studies/<name>.toml``)."""
    ref = resources.files("cryod").joinpath("defaults", "studies", f"{name}.toml")
    return Path(str(ref))


def builtin_study_names() -> list[str]:
    folder = resources.files("cryod").joinpath("defaults", "studies")
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_study_profile(path: str | Path) -> StudyProfile:
    """Load and validate a profile; a bare name (no slash, no .toml) loads a built-in one.

    Raises ``StudyProfileError`` listing every problem, one line each.
    """
    if isinstance(path, str) and "/" not in path and not path.endswith(".toml"):
        p = builtin_study_path(path)
    else:
        p = Path(path)
    data = read_toml(p, StudyProfileError)
    try:
        return StudyProfile.model_validate(data)
    except ValidationError as exc:
        problems = problems_from_validation(exc)
        raise StudyProfileError("\n".join(f"{p}: {pr}" for pr in problems)) from None


def parse_study_profile(text: str, source: str) -> StudyProfile:
    """A profile from its TOML text (sent by a client that read the file), every
    problem named ``<source>: <key>: <reason>`` as ``load_study_profile`` does."""
    import tomllib

    if len(text.encode("utf-8")) > MAX_TOML_BYTES:
        raise StudyProfileError(f"{source}: larger than {MAX_TOML_BYTES} bytes")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyProfileError(f"{source}: not valid TOML: {exc}") from None
    try:
        return StudyProfile.model_validate(data)
    except ValidationError as exc:
        problems = problems_from_validation(exc)
        raise StudyProfileError("\n".join(f"{source}: {pr}" for pr in problems)) from None


def profile_problems(data: dict[str, Any]) -> Sequence[Problem]:
    """Every problem of a parsed profile document (empty: valid)."""
    try:
        StudyProfile.model_validate(data)
    except ValidationError as exc:
        return problems_from_validation(exc)
    return []
