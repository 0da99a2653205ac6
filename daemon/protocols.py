"""Freeze/thaw protocols: pydantic models and validation against site and console
limits (format: docs/protocol-format.md).

Pure: no file is read here (``protocol_files`` reads protocol files and hands
their decoded data to ``parse_protocol``). Validation fails closed: every
problem is reported as ``file: key: reason`` (``ProtocolError``), nothing is
clamped or defaulted silently.

API::

    proto = parse_protocol(data, limits, console_min_tip_c, capabilities, source="my.toml")
    one = ad_hoc_freeze(90, limits, console_min_tip_c, capabilities)   # repositioning
    one = ad_hoc_thaw(None, "passive", limits, console_min_tip_c, capabilities)

A ``Protocol`` applies to the probe group chosen when it is run: every probe
of the group runs the same steps at the same time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cryod.common.validation import field_problems

from .limits import SafetyLimits

__all__ = [
    "ACTIVE_THAW_CAPABILITIES",
    "FreezeStep",
    "HoldStep",
    "Problem",
    "Protocol",
    "ProtocolError",
    "ProtocolMeta",
    "Step",
    "ThawStep",
    "ad_hoc_freeze",
    "ad_hoc_thaw",
    "effective_floor_c",
    "parse_protocol",
    "validate_protocol",
]

ACTIVE_THAW_CAPABILITIES = frozenset({"active_thaw_helium", "active_thaw_electric"})
_ABSURD_S = 7200.0  # no single step of a nerve freeze lasts two hours


@dataclass(frozen=True, slots=True)
class Problem:
    source: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.reason}"


class ProtocolError(ValueError):
    """A protocol is unreadable or invalid; one line per problem: file, key, reason."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class _Strict(BaseModel):
    # NaN and infinity are refused as such ("finite number"), not by a range check
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ProtocolMeta(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    title: str = Field(min_length=1, max_length=120)
    description: str = Field(default="", max_length=2000)
    source: str = Field(min_length=1, max_length=500)  # literature or site reference
    example: bool  # true: an example, not a clinical recommendation


class FreezeStep(_Strict):
    kind: Literal["freeze"]
    duration_s: float = Field(gt=0, le=_ABSURD_S)
    target_tip_c: float = Field(ge=-200, lt=0)  # should be reached (warmest acceptable)
    reach_within_s: float = Field(gt=0, le=_ABSURD_S)
    min_tip_c: float | None = Field(default=None, ge=-200, lt=0)  # floor: colder trips

    @model_validator(mode="after")
    def _check(self) -> FreezeStep:
        if self.reach_within_s > self.duration_s:
            raise ValueError("reach_within_s must not exceed duration_s")
        if self.min_tip_c is not None and self.min_tip_c > self.target_tip_c:
            raise ValueError("min_tip_c must be at or below target_tip_c")
        return self


class ThawStep(_Strict):
    kind: Literal["thaw"]
    mode: Literal["passive", "active"]
    duration_s: float | None = Field(default=None, gt=0, le=_ABSURD_S)
    until_tip_above_c: float | None = Field(default=None, ge=-20, le=40)

    @model_validator(mode="after")
    def _check(self) -> ThawStep:
        if self.duration_s is None and self.until_tip_above_c is None:
            raise ValueError("a thaw needs duration_s, until_tip_above_c or both")
        return self


class HoldStep(_Strict):
    kind: Literal["hold"]
    message: str = Field(default="", max_length=200)
    max_s: float | None = Field(default=None, gt=0, le=_ABSURD_S)


Step = Annotated[FreezeStep | ThawStep | HoldStep, Field(discriminator="kind")]


class Protocol(_Strict):
    schema_: Literal["cryod.protocol/1"] = Field(alias="schema")
    protocol: ProtocolMeta
    steps: list[Step] = Field(min_length=1)

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True
    )

    @property
    def name(self) -> str:
        return self.protocol.name

    @property
    def total_freeze_s(self) -> float:
        return sum(s.duration_s for s in self.steps if isinstance(s, FreezeStep))

    @property
    def has_freeze(self) -> bool:
        return any(isinstance(s, FreezeStep) for s in self.steps)


def effective_floor_c(step: FreezeStep, limits: SafetyLimits, console_min_tip_c: float) -> float:
    """The coldest tip temperature allowed during a freeze step: the step's own
    floor, else the site floor, never colder than the console can produce."""
    floor = step.min_tip_c if step.min_tip_c is not None else limits.floor_tip_c
    return max(floor, console_min_tip_c)


def validate_protocol(
    proto: Protocol,
    limits: SafetyLimits,
    console_min_tip_c: float,
    capabilities: Iterable[str],
    *,
    source: str,
) -> Protocol:
    """Check a parsed protocol against the site limits and the console; raise
    ``ProtocolError`` listing every problem."""
    caps = frozenset(capabilities)
    problems: list[Problem] = []

    def bad(key: str, reason: str) -> None:
        problems.append(Problem(source, key, reason))

    if len(proto.steps) > limits.max_steps:
        bad("steps", f"{len(proto.steps)} steps, more than the site maximum {limits.max_steps}")
    prev: Step | None = None
    for i, step in enumerate(proto.steps):
        k = f"steps.{i}"
        if isinstance(step, FreezeStep):
            if step.duration_s < limits.min_step_s:
                bad(f"{k}.duration_s", f"{step.duration_s} s is shorter than {limits.min_step_s} s")
            if step.duration_s > limits.max_freeze_s_per_cycle:
                bad(
                    f"{k}.duration_s",
                    f"{step.duration_s} s exceeds max_freeze_s_per_cycle "
                    f"{limits.max_freeze_s_per_cycle} s",
                )
            if step.target_tip_c < console_min_tip_c:
                bad(
                    f"{k}.target_tip_c",
                    f"{step.target_tip_c} C is colder than the console can reach "
                    f"({console_min_tip_c} C)",
                )
            if step.min_tip_c is not None and step.min_tip_c < console_min_tip_c:
                bad(
                    f"{k}.min_tip_c",
                    f"{step.min_tip_c} C is colder than the console can reach "
                    f"({console_min_tip_c} C)",
                )
            if step.target_tip_c <= effective_floor_c(step, limits, console_min_tip_c):
                bad(f"{k}.target_tip_c", "target is at or below the tip floor")
            if isinstance(prev, FreezeStep):
                bad(k, "freeze directly after a freeze: make it one step (or add a thaw)")
        elif isinstance(step, ThawStep):
            if step.duration_s is not None and step.duration_s < limits.min_step_s:
                bad(f"{k}.duration_s", f"{step.duration_s} s is shorter than {limits.min_step_s} s")
            if step.duration_s is not None and step.duration_s > limits.max_thaw_s:
                bad(
                    f"{k}.duration_s",
                    f"{step.duration_s} s exceeds max_thaw_s {limits.max_thaw_s} s",
                )
            if step.mode == "active" and not caps & ACTIVE_THAW_CAPABILITIES:
                bad(f"{k}.mode", "active thaw, but the console has no active-thaw capability")
        else:
            if step.max_s is not None and step.max_s > limits.max_hold_s:
                bad(f"{k}.max_s", f"{step.max_s} s exceeds max_hold_s {limits.max_hold_s} s")
        prev = step
    total = proto.total_freeze_s
    if total > limits.max_freeze_s_per_protocol:
        bad(
            "steps",
            f"total freeze time {total} s exceeds max_freeze_s_per_protocol "
            f"{limits.max_freeze_s_per_protocol} s",
        )
    if problems:
        raise ProtocolError(problems)
    return proto


def _pydantic_problems(source: str, exc: ValidationError) -> list[Problem]:
    # the step kind is the union tag pydantic inserts ("steps.0.freeze.duration_s")
    found = field_problems(exc, union_tags=("freeze", "thaw", "hold"))
    return [Problem(source, p.key, p.reason) for p in found]


def parse_protocol(
    data: Any,
    limits: SafetyLimits,
    console_min_tip_c: float,
    capabilities: Iterable[str],
    *,
    source: str,
) -> Protocol:
    """Validate already-decoded TOML data (a dict)."""
    try:
        proto = Protocol.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(_pydantic_problems(source, exc)) from exc
    return validate_protocol(proto, limits, console_min_tip_c, capabilities, source=source)


def ad_hoc_freeze(
    seconds: float,
    limits: SafetyLimits,
    console_min_tip_c: float,
    capabilities: Iterable[str],
) -> Protocol:
    """A one-step freeze (e.g. after repositioning a probe), validated by the same
    limits as any protocol. Target and reach time are the site's ad-hoc defaults."""
    data = {
        "schema": "cryod.protocol/1",
        "protocol": {
            "name": "ad-hoc-freeze",
            "title": f"ad-hoc freeze {seconds} s",
            "source": "operator command",
            "example": False,
        },
        "steps": [
            {
                "kind": "freeze",
                "duration_s": seconds,
                "target_tip_c": limits.ad_hoc_target_tip_c,
                "reach_within_s": min(limits.ad_hoc_reach_within_s, seconds)
                if seconds > 0
                else limits.ad_hoc_reach_within_s,
            }
        ],
    }
    return parse_protocol(data, limits, console_min_tip_c, capabilities, source="<ad-hoc freeze>")


def ad_hoc_thaw(
    seconds: float | None,
    mode: str,
    limits: SafetyLimits,
    console_min_tip_c: float,
    capabilities: Iterable[str],
) -> Protocol:
    """A one-step thaw; ``seconds=None`` thaws until the tip is above the site's
    ad-hoc release temperature (bounded by ``max_thaw_s``)."""
    step: dict[str, Any] = {"kind": "thaw", "mode": mode}
    if seconds is None:
        step["until_tip_above_c"] = limits.ad_hoc_thaw_until_c
    else:
        step["duration_s"] = seconds
    data = {
        "schema": "cryod.protocol/1",
        "protocol": {
            "name": "ad-hoc-thaw",
            "title": "ad-hoc thaw",
            "source": "operator command",
            "example": False,
        },
        "steps": [step],
    }
    return parse_protocol(data, limits, console_min_tip_c, capabilities, source="<ad-hoc thaw>")
