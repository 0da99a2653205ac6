"""A problem found in study data: which field, and why, in one line.

Every check of ``cryod.research`` returns the whole list of problems rather
than stopping at the first, so an operator fixes a form in one pass. Pydantic
errors are turned into the same shape with messages written for people
(``unknown code 'x' (allowed: a, b)``), never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

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


def _join(prefix: str, loc: tuple[int | str, ...]) -> str:
    parts = [prefix] if prefix else []
    parts.extend(str(p) for p in loc)
    return ".".join(parts) or "<top>"


def _shown(value: Any) -> str | None:
    """The input repeated in a message only for codes and numbers (never free text)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str) and len(value) <= 40 and value.replace("_", "").isalnum():
        return repr(value)
    return None


def _message(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    shown = _shown(err.get("input"))
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in ("enum", "literal_error"):
        got = f"unknown code {shown}" if shown else "unknown code"
        return f"{got} (allowed: {ctx.get('expected', '?')})"
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    if msg[:1].isupper() and not msg[:2].isupper():
        msg = msg[0].lower() + msg[1:]
    if kind.startswith(("greater", "less", "int_", "float_", "bool_")) and shown:
        msg = f"{msg} (got {shown})"
    return msg


def problems_from_validation(exc: ValidationError, prefix: str = "") -> list[Problem]:
    """One problem per pydantic error, the field as a dotted path under ``prefix``."""
    return [Problem(_join(prefix, tuple(err["loc"])), _message(err)) for err in exc.errors()]
