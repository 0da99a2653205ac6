"""The arguments of each control command: one pydantic model per command.

Every model refuses an unknown argument (``extra="forbid"``) and a NaN or an
infinity anywhere in the request (``allow_inf_nan=False``, and the free-form
study sections are scanned too), so a refused request never reaches the
console. Ranges that depend on the console or the limits (probe numbers,
durations) are the engine's to refuse, with its own codes; these models check
shape and type. A model's errors never repeat the input (patient references).

``COMMANDS`` maps the command name on the socket to its model;
``daemon/service.py`` validates ``args`` with it before any handler runs.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "COMMANDS",
    "Ack",
    "AeAdd",
    "AeList",
    "AeUpdate",
    "BaselinePain",
    "Command",
    "Export",
    "Extend",
    "Freeze",
    "NoArgs",
    "ProcedureClose",
    "ProcedureOpen",
    "Run",
    "Show",
    "Thaw",
    "Verify",
    "finite_copy",
    "recorded_args",
    "refusal_message",
]

_Text = Field(default=None, min_length=1, max_length=500)


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    return False


def finite_copy(value: Any) -> Any:
    """``value`` with every NaN or infinity spelled out (for the operator-actions record)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: finite_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_copy(v) for v in value]
    return value


#: what the record keeps of an argument the command does not take (its value could be
#: anything an operator or a script typed, a patient's name included: rule 6)
NOT_RECORDED = "<unknown argument: value not recorded>"


def recorded_args(args: dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """A request's arguments as the operator-actions record keeps them: NaN spelled out,
    a study profile's text (up to 1 MiB) replaced by its digest and size, and the value
    of an argument ``command``'s model does not declare replaced by ``NOT_RECORDED``
    (the refusal names the key; the chain and the record channel never see the value)."""
    import hashlib

    out: dict[str, Any] = dict(finite_copy(args)) if isinstance(args, dict) else {}
    model = COMMANDS.get(command) if command is not None else None
    if model is not None:
        out = {k: (v if k in model.model_fields else NOT_RECORDED) for k, v in out.items()}
    text = out.get("study_toml")
    if isinstance(text, str):
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        out["study_toml"] = f"sha256:{digest} ({len(text.encode('utf-8'))} bytes)"
    return out


def _finite_section(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and _non_finite(value):
        raise ValueError("NaN or Infinity is not a value")
    return value


class Command(BaseModel):
    """Arguments common to every command (``console``: which one, with several)."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, frozen=True, hide_input_in_errors=True
    )

    console: str | None = Field(default=None, min_length=1, max_length=64)


class NoArgs(Command):
    """stop, continue, abort, reset, status, procedures."""


class ProcedureOpen(Command):
    """The procedure's fields (``procedure_fields.OPEN_FIELDS``, checked by
    ``store.records.ProcedureOpen``) and, under a study profile, its sections
    (checked against the profile by ``store.records.prepare_study``)."""

    patient_ref: str | None = None
    indication: str | None = None
    indication_other: str | None = None
    site: str | None = None
    side: str | None = None
    imaging: str | None = None
    anaesthesia: str | None = None
    operator: str | None = None
    study_id: str | None = None
    probe_model: str | None = None
    probe_lot: str | None = None
    #: a built-in study profile's name (``config/studies``), or with ``study_toml`` the
    #: file name the client read it from (for messages); the daemon reads no other file
    study: str | None = Field(default=None, min_length=1, max_length=4096)
    #: a study profile file's text, read by the client (cryoctl --study FILE.toml)
    study_toml: str | None = Field(default=None, min_length=1, max_length=1024 * 1024)
    consent: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None
    details: dict[str, Any] | None = None

    _finite = field_validator("consent", "selection", "details")(_finite_section)


class LegacyAdverseEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    code: str
    text: str | None = None


class ProcedureClose(Command):
    notes: str | None = Field(default=None, max_length=10_000)
    closed_by: str | None = Field(default=None, min_length=1, max_length=64)
    adverse_events: list[LegacyAdverseEvent] = Field(default_factory=list)


class Run(Command):
    protocol: str = Field(min_length=1, max_length=4096)
    probes: list[int] = Field(default_factory=lambda: [1], min_length=1, max_length=25)


class Freeze(Command):
    probe: int
    seconds: float


class Thaw(Command):
    probe: int
    seconds: float | None = None
    mode: Literal["passive", "active"] = "passive"


class Extend(Command):
    seconds: float


class Ack(Command):
    alarm: str | None = None


class BaselinePain(Command):
    """The baseline pain score; time point, scale and recall period default to the
    study profile's."""

    score: float
    assessed_at: AwareDatetime | None = None
    scale: str | None = None
    recall_period: str | None = None
    time_point: str | None = None


class AeAdd(Command):
    """One adverse event (the fields of ``cryod.research.record.AdverseEventRecord``)."""

    event: dict[str, Any]

    _finite = field_validator("event")(_finite_section)


class AeUpdate(Command):
    ae_id: int = Field(ge=1)
    changes: dict[str, Any] = Field(min_length=1)

    _finite = field_validator("changes")(_finite_section)


class AeList(Command):
    procedure_id: int | None = Field(default=None, ge=1)


class Show(Command):
    id: int = Field(ge=1)


class Export(Command):
    id: int | None = Field(default=None, ge=1)
    format: Literal["json", "csv", "fhir", "redcap"] = "json"


class Verify(Command):
    anchors: list[dict[str, Any]] = Field(default_factory=list)


class RecordResend(Command):
    """``cryoctl record resend``: chain entries ``first..last`` (``last``: the chain's end)."""

    first: int = Field(ge=1)
    last: int | None = Field(default=None, ge=1)


#: command name on the socket -> its arguments
COMMANDS: dict[str, type[Command]] = {
    "status": NoArgs,
    "procedure_open": ProcedureOpen,
    "procedure_close": ProcedureClose,
    "baseline_pain": BaselinePain,
    "ae_add": AeAdd,
    "ae_update": AeUpdate,
    "ae_list": AeList,
    "run": Run,
    "freeze": Freeze,
    "thaw": Thaw,
    "stop": NoArgs,
    "continue": NoArgs,
    "extend": Extend,
    "abort": NoArgs,
    "ack": Ack,
    "reset": NoArgs,
    "procedures": NoArgs,
    "show": Show,
    "export": Export,
    "verify": Verify,
    "record_resend": RecordResend,
}


def refusal_message(exc: ValidationError) -> str:
    """A model's errors as ``key: reason`` lines, never echoing the input."""
    parts = []
    for e in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(x) for x in e["loc"]) or "<request>"
        if e["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown argument")
        elif e["type"] == "finite_number" or "NaN" in str(e["msg"]):
            parts.append(f"{where}: NaN or Infinity is not a value")
        else:
            parts.append(f"{where}: {str(e['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)
