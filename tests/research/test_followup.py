"""The follow-up schedule and assessment checks (pure), with fixed dates.

Europe/London changes to summer time on 2026-03-29 (01:00 UTC) and back on
2026-10-25 (01:00 UTC): windows holding those days are 23 h and 25 h short
or long of whole days, and the schedule still works in local dates.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from cryod.research.followup import (
    DueState,
    FollowedProcedure,
    FollowUpAssessment,
    check_assessment,
    due_state,
    local_date,
    parse_assessment,
    schedule,
    window_for,
)
from cryod.research.problems import ResearchDataError
from cryod.research.profile import load_study_profile

MN = load_study_profile("mortons-neuroma-example")  # NRS, restarts after a repeat
STUMP = load_study_profile("stump-neuroma-example")  # VAS, does not restart
TODAY = dt.date(2026, 12, 1)
NO_FUNCTION = MN.model_copy(
    update={"instruments": MN.instruments.model_copy(update={"function": None})}
)


def proc(subject: str, opened: dt.datetime, n: int = 1) -> FollowedProcedure:
    return FollowedProcedure(uuid.uuid5(uuid.NAMESPACE_URL, f"{subject}/{n}"), subject, opened)


def test_a_window_across_the_spring_dst_change_is_an_hour_short() -> None:
    p = proc("MN-1", dt.datetime(2026, 3, 20, 10, 0, tzinfo=dt.UTC))
    d7 = next(tp for tp in MN.follow_up.time_points if tp.id == "d7")
    w = window_for(p, d7, MN.zone)
    assert (w.target_on, w.earliest_on, w.latest_on) == (
        dt.date(2026, 3, 27),
        dt.date(2026, 3, 25),
        dt.date(2026, 3, 30),
    )
    # local midnight of 25 March is GMT, the midnight after 30 March is BST
    assert w.starts_at == dt.datetime(2026, 3, 25, 0, 0, tzinfo=dt.UTC)
    assert w.ends_at == dt.datetime(2026, 3, 30, 23, 0, tzinfo=dt.UTC)
    assert w.ends_at - w.starts_at == dt.timedelta(days=6, hours=-1)


def test_a_window_across_the_autumn_dst_change_is_an_hour_long() -> None:
    p = proc("MN-2", dt.datetime(2026, 10, 15, 9, 0, tzinfo=dt.UTC))
    d7 = next(tp for tp in MN.follow_up.time_points if tp.id == "d7")
    w = window_for(p, d7, MN.zone)
    assert (w.earliest_on, w.latest_on) == (dt.date(2026, 10, 20), dt.date(2026, 10, 25))
    assert w.starts_at == dt.datetime(2026, 10, 19, 23, 0, tzinfo=dt.UTC)  # BST midnight
    assert w.ends_at == dt.datetime(2026, 10, 26, 0, 0, tzinfo=dt.UTC)  # GMT midnight
    assert w.ends_at - w.starts_at == dt.timedelta(days=6, hours=1)


def test_the_procedure_day_is_the_site_date_not_the_utc_date() -> None:
    # 23:30 UTC on 30 March is 00:30 BST on 31 March in London
    late = dt.datetime(2026, 3, 30, 23, 30, tzinfo=dt.UTC)
    assert local_date(late, MN.zone) == dt.date(2026, 3, 31)
    d7 = next(tp for tp in MN.follow_up.time_points if tp.id == "d7")
    assert window_for(proc("MN-3", late), d7, MN.zone).target_on == dt.date(2026, 4, 7)


def test_schedule_lists_every_follow_up_point_not_the_baseline() -> None:
    windows = schedule(MN, [proc("MN-1", dt.datetime(2026, 3, 20, 10, tzinfo=dt.UTC))])
    assert [(w.time_point, w.target_on.isoformat()) for w in windows] == [
        ("d7", "2026-03-27"),
        ("m1", "2026-04-19"),
        ("d45", "2026-05-04"),
        ("m3", "2026-06-19"),
        ("m6", "2026-09-18"),
        ("m12", "2027-03-20"),
    ]


def test_a_repeat_restarts_the_schedule_when_the_profile_says_so() -> None:
    first = proc("MN-1", dt.datetime(2026, 3, 20, 10, tzinfo=dt.UTC), 1)
    repeat = proc("MN-1", dt.datetime(2026, 7, 1, 10, tzinfo=dt.UTC), 2)
    windows = schedule(MN, [repeat, first])
    by_proc = {
        n: [w.time_point for w in windows if w.procedure_uuid == p.procedure_uuid]
        for n, p in ((1, first), (2, repeat))
    }
    # the first procedure's m6 and m12 windows open after the repeat: dropped
    assert by_proc[1] == ["d7", "m1", "d45", "m3"]
    assert by_proc[2] == ["d7", "m1", "d45", "m3", "m6", "m12"]
    # without restart (the stump profile) only the first procedure is followed
    stump = schedule(STUMP, [repeat, first])
    assert {w.procedure_uuid for w in stump} == {first.procedure_uuid}
    assert [w.time_point for w in stump] == [tp.id for tp in STUMP.follow_up_points]


def test_due_states_at_the_window_edges() -> None:
    p = proc("MN-1", dt.datetime(2026, 3, 20, 10, tzinfo=dt.UTC))
    d7 = next(tp for tp in MN.follow_up.time_points if tp.id == "d7")
    w = window_for(p, d7, MN.zone)
    assert due_state(w, dt.date(2026, 3, 24)) is DueState.UPCOMING
    assert due_state(w, dt.date(2026, 3, 25)) is DueState.DUE
    assert due_state(w, dt.date(2026, 3, 30)) is DueState.DUE
    assert due_state(w, dt.date(2026, 3, 31)) is DueState.OVERDUE


OPENED = dt.datetime(2026, 3, 20, 10, tzinfo=dt.UTC)


def problems(profile: object, **kw: object) -> list[str]:
    data = {"time_point": "d7", "assessed_on": "2026-03-27", "status": "done", "mode": "clinic"}
    data.update(kw)  # type: ignore[arg-type]
    a = FollowUpAssessment.model_validate({k: v for k, v in data.items() if v is not None})
    return [str(p) for p in check_assessment(profile, a, opened_at=OPENED, today=TODAY)]  # type: ignore[arg-type]


def test_an_acceptable_assessment_has_no_problem() -> None:
    assert problems(MN, pain_score=3, qol_total=0.71, function_score=35, satisfaction=4) == []
    assert problems(STUMP, pain_score=42.5) == []


@pytest.mark.parametrize(
    ("profile", "kw", "expected"),
    [
        (MN, {"pain_score": 11}, "follow_up.pain_score: an NRS score is an integer 0-10 (got 11)"),
        (
            MN,
            {"pain_score": 7.5},
            "follow_up.pain_score: an NRS score is an integer 0-10 (got 7.5)",
        ),
        (STUMP, {"pain_score": 101}, "follow_up.pain_score: a VAS score is 0-100 mm (got 101)"),
        (
            MN,
            {"pain_score": 3, "assessed_on": "2026-03-19"},
            "follow_up.assessed_on: 2026-03-19 is before the procedure (2026-03-20)",
        ),
        (
            MN,
            {"pain_score": 3, "assessed_on": "2026-12-02"},
            "follow_up.assessed_on: 2026-12-02 is in the future (today 2026-12-01)",
        ),
        (
            MN,
            {"pain_score": 3, "time_point": "w2"},
            "follow_up.time_point: 'w2' is not a time point of study MN-CRYO-EXAMPLE "
            "(time points: baseline, d7, m1, d45, m3, m6, m12)",
        ),
        (
            MN,
            {"pain_score": 3, "time_point": "baseline"},
            "follow_up.assessed_on: the baseline (baseline) is taken on the procedure day "
            "(2026-03-20), before the first freeze",
        ),
        (
            MN,
            {"pain_score": 3, "function_score": 101},
            "follow_up.function_score: Manchester-Oxford Foot Questionnaire (MOXFQ) index "
            "scores 0-100 (got 101)",
        ),
        (
            NO_FUNCTION,
            {"pain_score": 3, "function_score": 10},
            "follow_up.function_score: study MN-CRYO-EXAMPLE has no function instrument",
        ),
        (MN, {}, "follow_up.pain_score: required for a visit that was done (nrs_0_10)"),
        (
            MN,
            {"mode": None, "pain_score": 2},
            "follow_up.mode: required for a visit that was done (clinic, phone, post, online)",
        ),
        (MN, {"status": "missed", "mode": None}, "follow_up.reason: required with status 'missed'"),
        (
            MN,
            {"status": "died", "reason": "unrelated", "pain_score": 2},
            "follow_up.mode: not recorded for a visit with status 'died'",
        ),
    ],
)
def test_each_refusal_names_its_field(
    profile: object, kw: dict[str, object], expected: str
) -> None:
    assert expected in problems(profile, **kw)


def test_parse_assessment_raises_every_problem_at_once() -> None:
    data = {"time_point": "d7", "assessed_on": "2026-03-27", "status": "done", "pain_score": "12"}
    with pytest.raises(ResearchDataError) as exc:
        parse_assessment(MN, data, opened_at=OPENED, today=TODAY)
    assert str(exc.value).splitlines() == [
        "follow_up.mode: required for a visit that was done (clinic, phone, post, online)",
        "follow_up.pain_score: an NRS score is an integer 0-10 (got 12)",
    ]
    with pytest.raises(ResearchDataError) as exc:
        parse_assessment(MN, {**data, "satisfaction": "6"}, opened_at=OPENED, today=TODAY)
    assert "follow_up.satisfaction: input should be less than or equal to 5" in str(exc.value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_score_that_is_not_a_number_is_refused_by_the_model(value: str) -> None:
    data = {"time_point": "d7", "assessed_on": "2026-03-27", "status": "done", "mode": "clinic"}
    for name in ("pain_score", "qol_total", "function_score"):
        with pytest.raises(ResearchDataError) as exc:
            parse_assessment(MN, {**data, name: value}, opened_at=OPENED, today=TODAY)
        assert f"follow_up.{name}:" in str(exc.value)
