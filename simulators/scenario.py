"""Timed fault scripts (``cryosim scenario FILE``) run against a live simulator.

A scenario is a TOML file: an optional ``description`` and a list of
``[[step]]`` tables, each ``at_s`` (wall seconds after the scenario starts),
``action`` ("fault" or "clear"), ``kind`` (a FAULT_KINDS name; optional for
clear = clear everything), and for faults optional ``probe``, ``value`` and
``for_s``. Unknown keys are errors; every error names the file, the key and
the reason. Example::

    description = "thermocouple drops out mid-freeze, then the link goes quiet"
    [[step]]
    at_s = 2.0
    action = "fault"
    kind = "tc-open"
    probe = 1
    for_s = 3.0
    [[step]]
    at_s = 6.0
    action = "fault"
    kind = "comms-silent"
    [[step]]
    at_s = 9.0
    action = "clear"
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cryod.common.validation import problem_lines
from cryod.drivers.tomlfile import read_toml

from .console import FAULT_KINDS

__all__ = ["Scenario", "ScenarioError", "Step", "load_scenario", "run_scenario"]


class ScenarioError(ValueError):
    """The scenario file is unreadable or invalid; the message names file, key and reason."""


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at_s: float = Field(ge=0, allow_inf_nan=False)
    action: Literal["fault", "clear"]
    kind: str | None = None
    probe: int | None = Field(default=None, ge=1, le=25)
    value: float | None = Field(default=None, allow_inf_nan=False)
    for_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check(self) -> Step:
        if self.kind is not None and self.kind not in FAULT_KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if self.action == "fault" and self.kind is None:
            raise ValueError("a fault step needs a kind")
        if self.action == "clear" and (
            self.probe is not None or self.value is not None or self.for_s is not None
        ):
            raise ValueError("a clear step takes only kind (probe, value, for_s are for faults)")
        return self

    def request(self) -> dict[str, Any]:
        """The control-socket request for this step."""
        if self.action == "clear":
            return {"cmd": "clear", "kind": self.kind}
        return {
            "cmd": "fault",
            "kind": self.kind,
            "probe": self.probe,
            "value": self.value,
            "for_s": self.for_s,
        }

    def describe(self) -> str:
        parts = [f"{self.action} {self.kind or 'all'}"]
        for name in ("probe", "value", "for_s"):
            v = getattr(self, name)
            if v is not None:
                parts.append(f"{name}={v:g}")
        return " ".join(parts)


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    step: list[Step] = Field(min_length=1)

    def ordered(self) -> list[Step]:
        """Steps by time (stable: steps at the same time keep the file's order)."""
        return sorted(self.step, key=lambda s: s.at_s)


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    data = read_toml(p, ScenarioError)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError("\n".join(problem_lines(exc, str(p)))) from exc


def run_scenario(
    scenario: Scenario,
    send: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    echo: Callable[[str], None] = print,
) -> int:
    """Play the steps at their times through ``send``; returns the steps sent.
    Times are measured from the start, so a slow step does not shift the rest."""
    t0 = clock()
    sent = 0
    for step in scenario.ordered():
        wait = t0 + step.at_s - clock()
        if wait > 0:
            sleep(wait)
        send(step.request())
        sent += 1
        echo(f"{clock() - t0:8.3f} s  {step.describe()}")
    return sent
