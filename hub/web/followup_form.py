"""The follow-up forms' fields, their choices, and the conversions between what a form
holds (text) and what the store takes and gives back; pure (no I/O, no web framework).

- ``ASSESSMENT_FIELDS``, ``EVENT_FIELDS``, ``CHOICES``: what the forms show.
- ``form_errors``: a store refusal (``ResearchDataError``, ``Refused``,
  ``NotPermitted``) as messages beside the form's fields; ``placed`` moves the
  errors of fields a form does not show to its summary; ``first_error`` is the
  field that gets the focus.
- ``assessment_values``, ``event_values``: stored content as the form's text;
  ``event_data``: the posted form as ``record_event``/``change_event`` take it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from cryod.research.problems import ResearchDataError
from cryod.research.vocab import (
    ActionTaken,
    AeCategory,
    AeOutcome,
    AeSubcategory,
    FurtherIntervention,
    Relatedness,
    SeriousnessCriterion,
    VisitMode,
    VisitStatus,
)

__all__ = [
    "ASSESSMENT_FIELDS",
    "CHOICES",
    "EVENT_FIELDS",
    "assessment_values",
    "event_data",
    "event_values",
    "first_error",
    "form_errors",
    "placed",
]

ASSESSMENT_FIELDS: Final = (
    "assessed_on",
    "status",
    "reason",
    "mode",
    "pain_score",
    "qol_total",
    "function_score",
    "satisfaction",
    "correction",
)
EVENT_FIELDS: Final = (
    "category",
    "subcategory",
    "verbatim_term",
    "onset",
    "resolution",
    "ctcae_grade",
    "serious",
    "seriousness_criteria",
    "relatedness_device",
    "relatedness_procedure",
    "outcome",
    "action_taken",
    "further_intervention",
    "further_intervention_date",
    "yellow_card_ref",
)

CHOICES: Final = {
    "status": VisitStatus.choices(),
    "mode": VisitMode.choices(),
    "category": AeCategory.choices(),
    "subcategory": AeSubcategory.choices(),
    "seriousness_criteria": SeriousnessCriterion.choices(),
    "relatedness_device": Relatedness.choices(),
    "relatedness_procedure": Relatedness.choices(),
    "outcome": AeOutcome.choices(),
    "action_taken": ActionTaken.choices(),
    "further_intervention": FurtherIntervention.choices(),
    "serious": [("yes", "Yes"), ("no", "No")],
    "ctcae_grade": [(str(g), str(g)) for g in range(1, 6)],
    "satisfaction": [
        ("1", "1 very dissatisfied"),
        ("2", "2 dissatisfied"),
        ("3", "3 neither"),
        ("4", "4 satisfied"),
        ("5", "5 very satisfied"),
    ],
}


def form_errors(
    exc: Exception, fields: Iterable[str], renames: dict[str, str] | None = None
) -> dict[str, str]:
    """A store refusal as messages beside the form's fields (``""``: the whole form).

    ``ResearchDataError`` carries problems (``follow_up.pain_score: …``);
    ``Refused`` and ``NotPermitted`` one line, starting with the field when it
    names one (``reason: …``; ``renames`` maps it to the form's name).
    """
    known = set(fields)
    if isinstance(exc, ResearchDataError):
        pairs = [(p.field, p.message) for p in exc.problems]
    else:
        field, sep, message = str(exc).partition(": ")
        named = sep and " " not in field
        pairs = [((renames or {}).get(field, field), message)] if named else [("", str(exc))]
    out: dict[str, str] = {}
    for path, text in pairs:
        message = text.replace("needs --reason", "needs a reason")
        name = next((p for p in reversed(path.split(".")) if p in known), "")
        if name == "" and path not in ("", "follow_up", "event"):
            message = f"{path}: {message}"
        out[name] = f"{out[name]}; {message}" if name in out else message
    return out


def placed(errors: dict[str, str], shown: Iterable[str]) -> dict[str, str]:
    """Errors of fields the form does not show go to the form's summary (``""``)."""
    visible = set(shown)
    out = {k: v for k, v in errors.items() if k in visible}
    rest = [
        f"{k.replace('_', ' ')}: {v}" if k else v for k, v in errors.items() if k not in visible
    ]
    if rest:
        out[""] = "; ".join(rest)
    return out


def first_error(errors: dict[str, str], fields: Iterable[str]) -> str | None:
    """The first field in error (it gets the focus)."""
    return next((f for f in fields if f in errors), None)


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def assessment_values(existing: dict[str, Any] | None) -> dict[str, str]:
    if existing is None:
        return {"status": "done"}
    return {k: _text(existing.get(k)) for k in ASSESSMENT_FIELDS if k != "correction"}


def event_values(content: dict[str, Any]) -> dict[str, str]:
    return {k: _text(content.get(k)) for k in EVENT_FIELDS if k != "seriousness_criteria"}


def event_data(form: dict[str, str], criteria: list[str]) -> dict[str, Any]:
    """The form as ``record_event``/``change_event`` take it (None: empty, cleared)."""
    data: dict[str, Any] = {}
    for k in EVENT_FIELDS:
        if k == "seriousness_criteria":
            data[k] = criteria
            continue
        v = form.get(k, "").strip()
        data[k] = None if v == "" else v
    if data["serious"] is not None:
        data["serious"] = {"yes": True, "no": False}.get(data["serious"], data["serious"])
    return data
