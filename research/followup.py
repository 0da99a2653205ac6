"""Follow-up after the procedure day: the schedule and the assessments (pure).

The study profile's time points (``[follow_up]``) become, for each subject
and procedure, **windows of calendar dates at the site**: the procedure's
local date (its opening time read in the profile's IANA zone) plus the time
point's target day, minus/plus its window. A window is a span of local
dates, so its instants (``starts_at``/``ends_at``, UTC) follow the site's
clock across a daylight-saving change: a window holding the change is an
hour shorter or longer than its days times 24 h.

A repeat procedure (a later procedure of the same subject in the same
study) starts the schedule again when the profile says
``restart_after_repeat``: the earlier procedure's time points whose window
has not opened by the repeat's date are no longer due. Otherwise the
subject keeps the first procedure's schedule.

An assessment (``FollowUpAssessment``) is checked against the profile and
the procedure by ``check_assessment``, which returns every problem, each
naming its field: a time point the profile does not define, a date before
the procedure or in the future (a baseline transcribed at the collector is
dated the procedure day), a pain score off the profile's scale (NRS
is an integer 0-10; VAS 0-100 mm), a score on a visit that did not happen,
a function score outside the instrument's range.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from .problems import Problem, ResearchDataError
from .profile import StudyProfile, TimePoint
from .validation import parse_model
from .vocab import PainScale, VisitMode, VisitStatus

__all__ = [
    "DueState",
    "FollowUpAssessment",
    "FollowedProcedure",
    "Window",
    "check_assessment",
    "due_state",
    "local_date",
    "parse_assessment",
    "schedule",
    "window_for",
]

#: statuses that end a subject's follow-up for good
FINAL_STATUSES = frozenset({VisitStatus.LOST_TO_FOLLOW_UP, VisitStatus.WITHDRAWN, VisitStatus.DIED})


class FollowUpAssessment(BaseModel):
    """One follow-up time point of one procedure, as recorded by the study team.

    ``pain_score`` is on the profile's scale and recall period (both recorded
    beside it); ``qol_total`` is the total of the profile's quality-of-life
    instrument (name and version recorded beside it); ``function_score`` the
    profile's function instrument; ``satisfaction`` a 5-point Likert answer
    (1 very dissatisfied ... 5 very satisfied).
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, hide_input_in_errors=True
    )

    time_point: str = Field(min_length=1, max_length=32)
    assessed_on: dt.date
    status: VisitStatus
    reason: str | None = Field(default=None, min_length=1, max_length=500)
    mode: VisitMode | None = None
    pain_score: float | None = Field(default=None, ge=0)
    qol_total: float | None = None
    function_score: float | None = None
    satisfaction: int | None = Field(default=None, ge=1, le=5)


@dataclass(frozen=True, slots=True)
class FollowedProcedure:
    """What the schedule needs of a procedure: who, when, in which study."""

    procedure_uuid: uuid.UUID
    subject: str  # the study pseudonym
    opened_at: dt.datetime  # aware


@dataclass(frozen=True, slots=True)
class Window:
    """One time point of one procedure, in local dates and UTC instants."""

    procedure_uuid: uuid.UUID
    subject: str
    time_point: str
    label: str
    target_on: dt.date
    earliest_on: dt.date
    latest_on: dt.date
    starts_at: dt.datetime  # local midnight of earliest_on, in UTC
    ends_at: dt.datetime  # local midnight after latest_on, in UTC (exclusive)

    def contains(self, day: dt.date) -> bool:
        return self.earliest_on <= day <= self.latest_on


class DueState(enum.StrEnum):
    UPCOMING = "upcoming"
    DUE = "due"
    OVERDUE = "overdue"


def local_date(at: dt.datetime, zone: ZoneInfo) -> dt.date:
    """The calendar date at the site of an aware instant."""
    return at.astimezone(zone).date()


def _midnight(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.UTC)


def window_for(proc: FollowedProcedure, tp: TimePoint, zone: ZoneInfo) -> Window:
    day0 = local_date(proc.opened_at, zone)
    earliest = day0 + dt.timedelta(days=tp.earliest_day)
    latest = day0 + dt.timedelta(days=tp.latest_day)
    return Window(
        procedure_uuid=proc.procedure_uuid,
        subject=proc.subject,
        time_point=tp.id,
        label=tp.label,
        target_on=day0 + dt.timedelta(days=tp.target_day),
        earliest_on=earliest,
        latest_on=latest,
        starts_at=_midnight(earliest, zone),
        ends_at=_midnight(latest + dt.timedelta(days=1), zone),
    )


def schedule(profile: StudyProfile, procedures: Iterable[FollowedProcedure]) -> list[Window]:
    """Every follow-up window (baseline excluded) of every subject, per the profile.

    With ``restart_after_repeat`` each procedure has its schedule, cut where
    the subject's next procedure begins (windows opening on or after the
    repeat's date are dropped); without it only each subject's first
    procedure is followed.
    """
    zone = profile.zone
    by_subject: dict[str, list[FollowedProcedure]] = {}
    for p in procedures:
        by_subject.setdefault(p.subject, []).append(p)
    out: list[Window] = []
    for subject in sorted(by_subject):
        procs = sorted(by_subject[subject], key=lambda p: p.opened_at)
        followed = procs if profile.follow_up.restart_after_repeat else procs[:1]
        for i, proc in enumerate(followed):
            nxt = followed[i + 1] if i + 1 < len(followed) else None
            cut = None if nxt is None else local_date(nxt.opened_at, zone)
            for tp in profile.follow_up_points:
                w = window_for(proc, tp, zone)
                if cut is not None and w.earliest_on >= cut:
                    continue
                out.append(w)
    return out


def due_state(window: Window, on: dt.date) -> DueState:
    if on < window.earliest_on:
        return DueState.UPCOMING
    if on <= window.latest_on:
        return DueState.DUE
    return DueState.OVERDUE


def check_assessment(
    profile: StudyProfile,
    a: FollowUpAssessment,
    *,
    opened_at: dt.datetime,
    today: dt.date,
    prefix: str = "follow_up",
) -> list[Problem]:
    """Every problem of an assessment for a procedure opened at ``opened_at``."""
    problems: list[Problem] = []

    def add(name: str, message: str) -> None:
        problems.append(Problem(f"{prefix}.{name}", message))

    study = profile.study.id
    ids = [tp.id for tp in profile.follow_up.time_points]
    if a.time_point not in ids:
        add(
            "time_point",
            f"{a.time_point!r} is not a time point of study {study} (time points: "
            f"{', '.join(ids)})",
        )
    day0 = local_date(opened_at, profile.zone)
    if a.assessed_on < day0:
        add(
            "assessed_on",
            f"{a.assessed_on.isoformat()} is before the procedure ({day0.isoformat()})",
        )
    elif a.time_point == profile.follow_up.baseline and a.assessed_on != day0:
        add(
            "assessed_on",
            f"the baseline ({a.time_point}) is taken on the procedure day ({day0.isoformat()}), "
            "before the first freeze",
        )
    if a.assessed_on > today:
        add(
            "assessed_on",
            f"{a.assessed_on.isoformat()} is in the future (today {today.isoformat()})",
        )
    done = a.status is VisitStatus.DONE
    if done:
        if a.mode is None:
            add("mode", "required for a visit that was done (clinic, phone, post, online)")
        if a.pain_score is None:
            scale = profile.instruments.pain.scale.value
            add("pain_score", f"required for a visit that was done ({scale})")
    else:
        if a.reason is None:
            add("reason", f"required with status {a.status.value!r}")
        for name in ("mode", "pain_score", "qol_total", "function_score", "satisfaction"):
            if getattr(a, name) is not None:
                add(name, f"not recorded for a visit with status {a.status.value!r}")
    if a.pain_score is not None:
        scale = profile.instruments.pain.scale
        if scale is PainScale.NRS_0_10:
            if a.pain_score != int(a.pain_score) or a.pain_score > 10:
                add("pain_score", f"an NRS score is an integer 0-10 (got {a.pain_score:g})")
        elif a.pain_score > 100:
            add("pain_score", f"a VAS score is 0-100 mm (got {a.pain_score:g})")
    fn = profile.instruments.function
    if a.function_score is not None:
        if fn is None:
            add("function_score", f"study {study} has no function instrument")
        elif not fn.score_min <= a.function_score <= fn.score_max:
            add(
                "function_score",
                f"{fn.name} scores {fn.score_min:g}-{fn.score_max:g} (got {a.function_score:g})",
            )
    return problems


def parse_assessment(
    profile: StudyProfile,
    data: dict[str, object],
    *,
    opened_at: dt.datetime,
    today: dt.date,
) -> FollowUpAssessment:
    """An assessment from raw data, checked; ``ResearchDataError`` with every problem."""
    a = parse_model(FollowUpAssessment, data, prefix="follow_up")
    problems = check_assessment(profile, a, opened_at=opened_at, today=today)
    if problems:
        raise ResearchDataError(problems)
    return a
