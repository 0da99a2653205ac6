"""The tables a study report needs, from a ``StudyData`` (pure; the plot is ``summary_plot``).

- **Pain by time point**: n, median, interquartile range (Q1-Q3, inclusive
  quartiles), and the change from baseline (each procedure's score minus its
  own baseline; n and median of the paired differences). The baseline is the
  room's pain score taken before the first freeze where the room sent one
  (on the profile's scale), else the collector's transcribed baseline. A figure that
  cannot be computed (no scores) is ``None`` with the reason, never 0.
- **Adverse events found after close** by category, CTCAE grade and
  relatedness (to the procedure and to the device), signed or not; and apart,
  the **procedure-day adverse events** the rooms recorded up to close.
- **Completeness and loss to follow-up** per time point: the windows that
  have closed by ``on`` (expected), how many were done, missed, lost to
  follow-up, withdrawn, died, and not recorded; completeness = done /
  expected.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import statistics
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryod.research.followup import (
    FINAL_STATUSES,
    FollowedProcedure,
    FollowUpAssessment,
    schedule,
)
from cryod.research.record import AdverseEventRecord
from cryod.research.vocab import VisitStatus

from .exports import StudyData, room_baselines

__all__ = ["AeRow", "Completeness", "Figure", "PainRow", "Summary", "final_statuses", "summarise"]


@dataclass(frozen=True, slots=True)
class Figure:
    value: float | None
    reason: str | None = None  # why ``value`` is None

    def text(self, fmt: str = "{:g}") -> str:
        return "—" if self.value is None else fmt.format(self.value)


@dataclass(frozen=True, slots=True)
class PainRow:
    time_point: str
    label: str
    n: int
    median: Figure
    q1: Figure
    q3: Figure
    change_n: int
    change_median: Figure


@dataclass(frozen=True, slots=True)
class AeRow:
    category: str
    grade: str
    relatedness_procedure: str
    relatedness_device: str
    events: int
    subjects: int
    signed: int


@dataclass(frozen=True, slots=True)
class Completeness:
    time_point: str
    expected: int
    done: int
    missed: int
    lost_to_follow_up: int
    withdrawn: int
    died: int
    not_recorded: int

    @property
    def completeness(self) -> Figure:
        if self.expected == 0:
            return Figure(None, "no window closed yet")
        return Figure(round(100 * self.done / self.expected, 1))


@dataclass
class Summary:
    study: str
    on: dt.date
    subjects: int
    procedures: int
    withdrawn_excluded: int
    scale: str
    pain: list[PainRow] = field(default_factory=list)
    adverse_events: list[AeRow] = field(default_factory=list)
    #: adverse events the rooms recorded from open to close (never signed in the collector)
    procedure_day_events: list[AeRow] = field(default_factory=list)
    completeness: list[Completeness] = field(default_factory=list)
    lost_subjects: int = 0

    # ---- text -------------------------------------------------------------------------
    def text(self) -> str:
        out = [
            f"Study {self.study}: {self.subjects} subject(s), {self.procedures} procedure(s) "
            f"(on {self.on.isoformat()}; withdrawn subjects excluded: {self.withdrawn_excluded})",
            "",
            f"Pain ({self.scale}) by time point",
            f"{'time point':<12}{'n':>4}{'median':>8}{'IQR':>14}{'change n':>10}"
            f"{'median change':>15}",
        ]
        for r in self.pain:
            iqr = "—" if r.q1.value is None else f"{r.q1.text()}–{r.q3.text()}"
            out.append(
                f"{r.time_point:<12}{r.n:>4}{r.median.text():>8}{iqr:>14}{r.change_n:>10}"
                f"{r.change_median.text('{:+g}'):>15}"
            )
        out += ["", "Adverse events up to close, from the rooms (category, grade, relatedness)"]
        if not self.procedure_day_events:
            out.append("none recorded")
        for a in self.procedure_day_events:
            out.append(
                f"{a.category:<30} grade {a.grade:<3} procedure {a.relatedness_procedure:<12} "
                f"device {a.relatedness_device:<12} events {a.events} subjects {a.subjects}"
            )
        out += ["", "Adverse events after close (category, grade, relatedness)"]
        if not self.adverse_events:
            out.append("none recorded")
        for a in self.adverse_events:
            out.append(
                f"{a.category:<30} grade {a.grade:<3} procedure {a.relatedness_procedure:<12} "
                f"device {a.relatedness_device:<12} events {a.events} subjects {a.subjects} "
                f"signed {a.signed}"
            )
        out += [
            "",
            "Completeness by time point (windows closed by the date)",
            f"{'time point':<12}{'expected':>9}{'done':>6}{'missed':>8}{'lost':>6}"
            f"{'withdrawn':>10}{'died':>6}{'not rec.':>9}{'complete':>10}",
        ]
        for c in self.completeness:
            pct = c.completeness
            shown = f"{pct.text()}%" if pct.value is not None else "—"
            out.append(
                f"{c.time_point:<12}{c.expected:>9}{c.done:>6}{c.missed:>8}"
                f"{c.lost_to_follow_up:>6}{c.withdrawn:>10}{c.died:>6}{c.not_recorded:>9}"
                f"{shown:>10}"
            )
        out.append(f"Subjects lost to follow-up: {self.lost_subjects}")
        return "\n".join(out) + "\n"

    # ---- CSV (one file, a ``table`` column) ---------------------------------------------
    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        w.writerow(["table", "key", "measure", "value", "note"])
        for r in self.pain:
            for name, fig in (
                ("median", r.median),
                ("q1", r.q1),
                ("q3", r.q3),
                ("change_median", r.change_median),
            ):
                w.writerow(["pain", r.time_point, name, _cell(fig.value), fig.reason or ""])
            w.writerow(["pain", r.time_point, "n", r.n, ""])
            w.writerow(["pain", r.time_point, "change_n", r.change_n, ""])
        for a in self.adverse_events:
            key = f"{a.category}/{a.grade}/{a.relatedness_procedure}/{a.relatedness_device}"
            w.writerow(["adverse_events", key, "events", a.events, ""])
            w.writerow(["adverse_events", key, "subjects", a.subjects, ""])
            w.writerow(["adverse_events", key, "signed", a.signed, ""])
        for a in self.procedure_day_events:
            key = f"{a.category}/{a.grade}/{a.relatedness_procedure}/{a.relatedness_device}"
            w.writerow(["procedure_day_adverse_events", key, "events", a.events, ""])
            w.writerow(["procedure_day_adverse_events", key, "subjects", a.subjects, ""])
        for c in self.completeness:
            for name in (
                "expected",
                "done",
                "missed",
                "lost_to_follow_up",
                "withdrawn",
                "died",
                "not_recorded",
            ):
                w.writerow(["completeness", c.time_point, name, getattr(c, name), ""])
            pct = c.completeness
            w.writerow(
                ["completeness", c.time_point, "percent", _cell(pct.value), pct.reason or ""]
            )
        w.writerow(["loss_to_follow_up", "subjects", "lost", self.lost_subjects, ""])
        return buf.getvalue()


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _quartiles(values: Sequence[float]) -> tuple[Figure, Figure, Figure]:
    if not values:
        none = Figure(None, "no scores")
        return none, none, none
    if len(values) == 1:
        v = Figure(values[0])
        return v, v, v
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Figure(q2), Figure(q1), Figure(q3)


def final_statuses(data: StudyData) -> dict[str, tuple[dt.date, VisitStatus]]:
    """Subject -> (date, status) of the visit that ended their follow-up (lost, withdrawn,
    died): the windows after it count under that status, not as not recorded."""
    subject_of = {v.procedure_uuid: v.subject for v in data.procedures}
    out: dict[str, tuple[dt.date, VisitStatus]] = {}
    for u, a in data.assessments:
        if a.status in FINAL_STATUSES:
            subject = subject_of.get(u)
            if subject is not None and (subject not in out or a.assessed_on < out[subject][0]):
                out[subject] = (a.assessed_on, a.status)
    return out


def _ae_table(events: Iterable[tuple[AdverseEventRecord, str, bool]]) -> list[AeRow]:
    """(event, subject, signed) grouped by category, grade and relatedness."""
    groups: dict[tuple[str, str, str, str], list[tuple[str, bool]]] = {}
    for ae, subject, signed in events:
        key = (
            ae.category.value,
            "?" if ae.ctcae_grade is None else str(ae.ctcae_grade),
            "?" if ae.relatedness_procedure is None else ae.relatedness_procedure.value,
            "?" if ae.relatedness_device is None else ae.relatedness_device.value,
        )
        groups.setdefault(key, []).append((subject, signed))
    return [
        AeRow(
            *key,
            events=len(groups[key]),
            subjects=len({i[0] for i in groups[key]}),
            signed=sum(1 for i in groups[key] if i[1]),
        )
        for key in sorted(groups)
    ]


def summarise(data: StudyData, on: dt.date, *, withdrawn: int = 0) -> Summary:
    p = data.profile
    procs = data.procedures
    by_proc: dict[uuid.UUID, dict[str, FollowUpAssessment]] = {}
    for u, a in data.assessments:
        by_proc.setdefault(u, {})[a.time_point] = a
    # the room's baseline pain (before the first freeze) is the baseline: it wins over a
    # collector transcription of the same time point (exports.room_baselines)
    for u, base_a in room_baselines(data).items():
        by_proc.setdefault(u, {})[base_a.time_point] = base_a
    s = Summary(
        study=p.study.id,
        on=on,
        subjects=len({v.subject for v in procs}),
        procedures=len(procs),
        withdrawn_excluded=withdrawn,
        scale=p.instruments.pain.scale.label,
    )
    base = p.follow_up.baseline
    for tp in p.follow_up.time_points:
        scores: list[float] = []
        changes: list[float] = []
        for tps in by_proc.values():
            got = tps.get(tp.id)
            if got is None or got.status is not VisitStatus.DONE or got.pain_score is None:
                continue
            scores.append(got.pain_score)
            b = tps.get(base)
            if tp.id != base and b is not None and b.pain_score is not None:
                changes.append(got.pain_score - b.pain_score)
        med, q1, q3 = _quartiles(scores)
        if tp.id == base:
            change = Figure(None, "baseline")
        elif changes:
            change = Figure(statistics.median(changes))
        else:
            change = Figure(None, "no paired baseline")
        s.pain.append(PainRow(tp.id, tp.label, len(scores), med, q1, q3, len(changes), change))

    subject_of = {v.procedure_uuid: v.subject for v in procs}
    s.adverse_events = _ae_table(
        (e.event, subject_of.get(e.procedure_uuid, "?"), e.signed) for e in data.events
    )
    s.procedure_day_events = _ae_table(
        (ae, v.subject, False)
        for v in procs
        if v.record is not None
        for ae in v.record.adverse_events
    )

    windows = schedule(
        p, [FollowedProcedure(v.procedure_uuid, v.subject, v.opened_at) for v in procs]
    )
    lost: set[str] = set()
    ended = final_statuses(data)
    for tp in p.follow_up_points:
        counts: Counter[str] = Counter()
        for w in windows:
            if w.time_point != tp.id or w.latest_on >= on:
                continue
            counts["expected"] += 1
            found = by_proc.get(w.procedure_uuid, {}).get(tp.id)
            end = ended.get(w.subject)
            if found is not None:
                status = found.status
            elif end is not None and end[0] <= w.latest_on:
                status = end[1]
            else:
                counts["not_recorded"] += 1
                continue
            counts[status.value] += 1
            if status is VisitStatus.LOST_TO_FOLLOW_UP:
                lost.add(w.subject)
        s.completeness.append(
            Completeness(
                time_point=tp.id,
                expected=counts["expected"],
                done=counts["done"],
                missed=counts["missed"],
                lost_to_follow_up=counts["lost_to_follow_up"],
                withdrawn=counts["withdrawn"],
                died=counts["died"],
                not_recorded=counts["not_recorded"],
            )
        )
    s.lost_subjects = len(lost)
    return s
