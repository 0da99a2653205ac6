"""A problem found in study data: which field, and why, in one line.

Every check of ``cryod.research`` returns the whole list of problems rather
than stopping at the first, so an operator fixes a form in one pass. Pydantic
errors are turned into the same shape with messages written for people
(``unknown code 'x' (allowed: a, b)``), never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from cryod.common.validation import field_problems

__all__ = ["Problem", "ResearchDataError", "format_problems", "problems_from_validation"]


@dataclass(frozen=True, slots=True)
class Problem:
    """``field`` is a dotted path (``adverse_events.0.ctcae_grade``); ``message`` says why."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ResearchDataError(ValueError):
    """Refused study data; ``problems`` holds every reason, ``str()`` one line each."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        super().__init__(format_problems(self.problems, source))


def format_problems(problems: Iterable[Problem], source: str | None = None) -> str:
    prefix = f"{source}: " if source else ""
    return "\n".join(f"{prefix}{p}" for p in problems)


def problems_from_validation(exc: ValidationError, prefix: str = "") -> list[Problem]:
    """One problem per pydantic error, the field as a dotted path under ``prefix``."""
    return [Problem(p.key, p.reason) for p in field_problems(exc, prefix=prefix)]
