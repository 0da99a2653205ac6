"""The console side of a procedure, as plain data an export is built from.

The daemon (and later the study collector) fills these from its own store:
``cryod.research`` never reads a database. Field names and units follow the
daemon's export (``docs/export-schema.md``); a figure that could not be
computed is ``None`` (exports then say why it is absent, never 0).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .vocab import CycleOutcome, CyclePhase, Gas

__all__ = ["ConsoleFacts", "CycleFacts", "ProbeFacts", "ProcedureFacts"]

_Text = Annotated[str, Field(min_length=1, max_length=128)]


class _Facts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ConsoleFacts(_Facts):
    name: _Text | None = None  # the console's name in the daemon configuration
    model: _Text | None = None
    serial: _Text | None = None
    firmware: _Text | None = None
    gas: Gas | None = None


class ProbeFacts(_Facts):
    """One probe used (number as printed on the console); unset details come from the record."""

    probe: int = Field(ge=1, le=25)
    model: _Text | None = None
    lot: _Text | None = None
    udi: str | None = Field(default=None, min_length=1, max_length=255)
    gauge: int | None = Field(default=None, ge=8, le=30)


class CycleFacts(_Facts):
    cycle_id: int = Field(ge=1)
    probe: int = Field(ge=1, le=25)
    phase: CyclePhase
    step_index: int | None = Field(default=None, ge=0)
    protocol: _Text | None = None
    planned_s: float | None = None
    target_tip_c: float | None = None
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    duration_s: float | None = None
    outcome: CycleOutcome | None = None  # None: still running
    outcome_reason: str | None = Field(default=None, max_length=500)
    min_tip_c: float | None = None
    time_to_target_s: float | None = None
    time_below_m20_s: float | None = None
    time_below_m40_s: float | None = None
    thaw_to_0_s: float | None = None
    supply_start_kpa: float | None = None
    supply_end_kpa: float | None = None
    gas_used_est_l: float | None = None


class ProcedureFacts(_Facts):
    procedure_id: int = Field(ge=1)  # the store's number (REDCap repeat instance)
    procedure_uuid: uuid.UUID
    patient_ref: str = Field(min_length=3, max_length=32)  # the study pseudonym
    opened_at: AwareDatetime
    closed_at: AwareDatetime | None = None
    body_site: _Text | None = None  # free text, e.g. "third intermetatarsal space"
    side: _Text | None = None
    console: ConsoleFacts = ConsoleFacts()
    probes: list[ProbeFacts] = Field(default_factory=list)
    cycles: list[CycleFacts] = Field(default_factory=list)

    def probe_numbers(self) -> list[int]:
        """Every probe that appears, in the probe list or in a cycle."""
        return sorted({p.probe for p in self.probes} | {c.probe for c in self.cycles})

    def probe(self, number: int) -> ProbeFacts:
        return next((p for p in self.probes if p.probe == number), ProbeFacts(probe=number))
