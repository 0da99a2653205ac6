"""A pydantic validation error as file, key and reason: the one formatter.

Every configuration, profile, protocol, scenario, driver-options and study-data
loader reports a refused document the same way, one line per problem::

    /etc/cryod/cryod.toml: consoles.0.poll_hz: input should be a finite number

The key is the dotted path of the field (list indices included); the reason is
pydantic's, made readable: "required" for a missing key, "unknown key" for one
the model does not have, the allowed values for an unknown code, and the input
repeated only when it is a number or a short code (never free text, which may be
personal data).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

__all__ = ["FieldProblem", "field_problems", "problem_lines", "reason"]

#: where a problem is when pydantic gives no location (the whole document)
TOP = "<top>"


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One refused field: ``key`` a dotted path (``steps.1.duration_s``), ``reason`` why."""

    key: str
    reason: str

    def line(self, source: str | None = None) -> str:
        """``source: key: reason`` (without ``source``: ``key: reason``)."""
        return f"{source}: {self.key}: {self.reason}" if source else f"{self.key}: {self.reason}"


def field_problems(
    exc: ValidationError, *, prefix: str = "", union_tags: Collection[str] = ()
) -> list[FieldProblem]:
    """One problem per pydantic error, its key under ``prefix``.

    ``union_tags``: the tags of a discriminated union, which pydantic inserts in the
    location after a list index (``steps.0.freeze.duration_s``) and a reader of the
    file never wrote: dropped (``steps.0.duration_s``)."""
    return [
        FieldProblem(_key(prefix, tuple(err["loc"]), union_tags), reason(err))
        for err in exc.errors()
    ]


def problem_lines(
    exc: ValidationError,
    source: str | None,
    *,
    prefix: str = "",
    union_tags: Collection[str] = (),
) -> list[str]:
    """``source: key: reason``, one line per problem."""
    return [p.line(source) for p in field_problems(exc, prefix=prefix, union_tags=union_tags)]


def reason(err: Any) -> str:
    """Why pydantic refused a value, for a person (one error of ``exc.errors()``)."""
    kind = str(err["type"])
    ctx = err.get("ctx") or {}
    shown = _shown(err.get("input"))
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in ("enum", "literal_error"):
        got = f"unknown code {shown}" if shown else "unknown code"
        return f"{got} (allowed: {ctx.get('expected', '?')})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if msg[:1].isupper() and not msg[:2].isupper():
        msg = msg[0].lower() + msg[1:]
    if kind.startswith(("greater", "less", "int_", "float_", "bool_")) and shown:
        msg = f"{msg} (got {shown})"
    return msg


def _key(prefix: str, loc: tuple[int | str, ...], union_tags: Collection[str]) -> str:
    parts: list[str] = [prefix] if prefix else []
    for i, part in enumerate(loc):
        if i and isinstance(loc[i - 1], int) and part in union_tags:
            continue
        parts.append(str(part))
    return ".".join(parts) or TOP


def _shown(value: object) -> str | None:
    """The input repeated in a message only for codes and numbers (never free text)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str) and len(value) <= 40 and value.replace("_", "").isalnum():
        return repr(value)
    return None
