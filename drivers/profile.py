"""Console profiles: the machine-readable register map of a Modbus console.

The simulator and the Modbus driver both read the same profile, so the
driver under test is the driver that ships, and a new Modbus console is a new
TOML file (format: docs/console-profile.md), not new code. Encoding rejects
out-of-range values; it never clamps.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cryod.common.validation import problem_lines

from .tomlfile import read_toml

__all__ = [
    "REQUIRED_PROBE_REGISTERS",
    "REQUIRED_REGISTERS",
    "ConsoleSpec",
    "Profile",
    "ProfileError",
    "RegisterSpec",
    "ResolvedRegister",
    "builtin_profile_path",
    "decode_words",
    "encode_value",
    "load_profile",
]

RegType = Literal["uint16", "int16", "uint32", "int32", "string"]
_WORDS = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2}

#: registers every profile must define (the driver and simulator rely on them)
REQUIRED_REGISTERS = (
    "status",
    "faults",
    "lease_remaining_ms",
    "lease_expiry_count",
    "console_time_ms",
    "supply_kpa",
    "cylinder_kpa",
    "lease_timeout_ms_rb",
    "model",
    "serial",
    "firmware",
    "probe_count",
    "gas",
    "capabilities",
    "lease_timeout_ms",
    "heartbeat",
    "fault_reset",
    "master_cmd",
)
REQUIRED_PROBE_REGISTERS = (
    "tip_c",
    "return_kpa",
    "probe_status",
    "tc_status",
    "trip_cause",
    "trip_time_ms",
    "on_time_ms",
    "freeze_cmd",
    "thaw_cmd",
)
LIMIT_PROBE_REGISTERS = (
    "limit_max_on_time_s",
    "limit_min_tip_c",
    "limit_max_supply_kpa",
    "limit_consecutive",
    "limits_arm",
)


class ProfileError(ValueError):
    """A profile file is unreadable or invalid; the message names file, key and reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RegisterSpec(_Strict):
    table: Literal["input", "holding"]
    address: int | None = Field(default=None, ge=0, le=65535)  # scalar registers
    offset: int | None = Field(default=None, ge=0, le=1000)  # per-probe registers
    type: RegType = "uint16"
    length: int = Field(default=1, ge=1, le=64)  # registers, for strings
    scale: float = 1.0
    unit: str = ""
    access: Literal["r", "w", "rw"] = "r"
    min: int | None = None  # raw register value bounds for writes
    max: int | None = None
    bits: dict[str, int] = Field(default_factory=dict)
    enum: dict[str, int] = Field(default_factory=dict)
    sentinels: dict[str, int] = Field(default_factory=dict)
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> RegisterSpec:
        if self.table == "input" and self.access != "r":
            raise ValueError("input registers are read-only (access must be 'r')")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        for name, bit in self.bits.items():
            if not 0 <= bit < 16 * self.words:
                raise ValueError(f"bit {name}={bit} does not fit a {self.type}")
        return self

    @property
    def words(self) -> int:
        return self.length if self.type == "string" else _WORDS[self.type]


class ConsoleSpec(_Strict):
    model: str = Field(min_length=1, max_length=16)
    vendor: str = ""
    firmware: str = Field(default="", max_length=8)
    probes: int = Field(ge=1, le=25)
    gas: Literal["argon", "n2o", "co2"]
    capabilities: list[
        Literal["active_thaw_helium", "active_thaw_electric", "skin_channel", "console_limits"]
    ] = Field(default_factory=list)
    min_tip_c: float = Field(ge=-200, le=0)
    supply_working_kpa: tuple[float, float]
    supply_max_kpa: float = Field(gt=0, le=65000)
    lease_timeout_ms_range: tuple[int, int] = (100, 60000)
    tick_s: float = Field(default=0.01, gt=0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> ConsoleSpec:
        lo, hi = self.supply_working_kpa
        if not 0 < lo < hi <= self.supply_max_kpa:
            raise ValueError("supply_working_kpa must be 0 < low < high <= supply_max_kpa")
        tlo, thi = self.lease_timeout_ms_range
        if not 1 <= tlo <= thi <= 65535:
            raise ValueError("lease_timeout_ms_range must be 1 <= low <= high <= 65535")
        return self


class ModbusSpec(_Strict):
    unit_id: int = Field(default=1, ge=1, le=247)
    max_block: int = Field(default=125, ge=1, le=125)
    word_order: Literal["big", "little"] = "big"


class ProbeBlockSpec(_Strict):
    input_base: int = Field(ge=0, le=65535)
    input_stride: int = Field(ge=1, le=1000)
    holding_base: int = Field(ge=0, le=65535)
    holding_stride: int = Field(ge=1, le=1000)


@dataclass(frozen=True, slots=True)
class ResolvedRegister:
    """A register at its absolute address."""

    name: str
    table: Literal["input", "holding"]
    address: int
    spec: RegisterSpec

    @property
    def count(self) -> int:
        return self.spec.words


class Profile(_Strict):
    schema_: Literal["cryod.profile/1"] = Field(alias="schema")
    console: ConsoleSpec
    modbus: ModbusSpec = ModbusSpec()
    registers: dict[str, RegisterSpec]
    probe_block: ProbeBlockSpec
    probe_registers: dict[str, RegisterSpec]

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True
    )

    @model_validator(mode="after")
    def _check(self) -> Profile:
        missing = [n for n in REQUIRED_REGISTERS if n not in self.registers]
        if missing:
            raise ValueError(f"registers missing: {', '.join(missing)}")
        missing = [n for n in REQUIRED_PROBE_REGISTERS if n not in self.probe_registers]
        if "console_limits" in self.console.capabilities:
            missing += [n for n in LIMIT_PROBE_REGISTERS if n not in self.probe_registers]
        if missing:
            raise ValueError(f"probe_registers missing: {', '.join(missing)}")
        for name, spec in self.registers.items():
            if spec.address is None:
                raise ValueError(f"registers.{name}: needs an address")
        for name, spec in self.probe_registers.items():
            if spec.offset is None:
                raise ValueError(f"probe_registers.{name}: needs an offset")
            stride = (
                self.probe_block.input_stride
                if spec.table == "input"
                else self.probe_block.holding_stride
            )
            if spec.offset + spec.words > stride:
                raise ValueError(f"probe_registers.{name}: does not fit the stride {stride}")
        self._check_overlaps()
        return self

    def _check_overlaps(self) -> None:
        used: dict[tuple[str, int], str] = {}
        for probe in range(1, self.console.probes + 1):
            regs = [self.reg(n) for n in self.registers] + [
                self.probe_reg(n, probe) for n in self.probe_registers
            ]
            for r in regs:
                for a in range(r.address, r.address + r.count):
                    key = (r.table, a)
                    if key in used and used[key] != r.name:
                        raise ValueError(f"{r.name} overlaps {used[key]} at {r.table} {a}")
                    used[key] = r.name

    @property
    def has_console_limits(self) -> bool:
        return "console_limits" in self.console.capabilities

    def reg(self, name: str) -> ResolvedRegister:
        spec = self.registers[name]
        assert spec.address is not None
        return ResolvedRegister(name, spec.table, spec.address, spec)

    def probe_reg(self, name: str, probe: int) -> ResolvedRegister:
        if not 1 <= probe <= self.console.probes:
            raise ValueError(f"probe {probe} outside 1..{self.console.probes}")
        spec = self.probe_registers[name]
        assert spec.offset is not None
        pb = self.probe_block
        if spec.table == "input":
            base = pb.input_base + (probe - 1) * pb.input_stride
        else:
            base = pb.holding_base + (probe - 1) * pb.holding_stride
        return ResolvedRegister(f"{name}[{probe}]", spec.table, base + spec.offset, spec)

    def snapshot_span(self) -> list[tuple[int, int]]:
        """Input-register (address, count) blocks covering one snapshot, each <= max_block."""
        names = [n for n, s in self.registers.items() if s.table == "input" and s.type != "string"]
        names = [n for n in names if self.registers[n].address is not None]
        addrs: list[int] = []
        for n in names:
            r = self.reg(n)
            if n in ("probe_count", "gas", "capabilities"):
                continue
            addrs.extend(range(r.address, r.address + r.count))
        for probe in range(1, self.console.probes + 1):
            for n, s in self.probe_registers.items():
                if s.table == "input":
                    r = self.probe_reg(n, probe)
                    addrs.extend(range(r.address, r.address + r.count))
        return _blocks(sorted(set(addrs)), self.modbus.max_block)


def _blocks(addrs: list[int], max_block: int) -> list[tuple[int, int]]:
    """Group sorted addresses into read requests, bridging small gaps."""
    out: list[tuple[int, int]] = []
    start = prev = addrs[0]
    for a in addrs[1:]:
        if a - start + 1 > max_block or a - prev > 8:
            out.append((start, prev - start + 1))
            start = a
        prev = a
    out.append((start, prev - start + 1))
    return out


def decode_words(spec: RegisterSpec, words: list[int], word_order: str = "big") -> int | str:
    """Raw register words to the raw integer (or string); scaling is the caller's."""
    if spec.type == "string":
        raw = b"".join(w.to_bytes(2, "big") for w in words)
        return raw.rstrip(b"\x00").decode("ascii", errors="replace")
    if spec.words == 2:
        hi, lo = (words[0], words[1]) if word_order == "big" else (words[1], words[0])
        value = (hi << 16) | lo
        if spec.type == "int32" and value >= 1 << 31:
            value -= 1 << 32
        return value
    value = words[0]
    if spec.type == "int16" and value >= 1 << 15:
        value -= 1 << 16
    return value


def encode_value(spec: RegisterSpec, raw: int | str, word_order: str = "big") -> list[int]:
    """Raw integer (or string) to register words; out-of-range raises, never clamps."""
    if spec.type == "string":
        data = str(raw).encode("ascii")
        if len(data) > 2 * spec.length:
            raise ValueError(f"string {raw!r} longer than {2 * spec.length} characters")
        data = data.ljust(2 * spec.length, b"\x00")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if not isinstance(raw, int):
        raise TypeError("numeric register needs an int")
    bounds = {
        "uint16": (0, 0xFFFF),
        "int16": (-0x8000, 0x7FFF),
        "uint32": (0, 0xFFFFFFFF),
        "int32": (-0x80000000, 0x7FFFFFFF),
    }[spec.type]
    lo = spec.min if spec.min is not None else bounds[0]
    hi = spec.max if spec.max is not None else bounds[1]
    if not (bounds[0] <= raw <= bounds[1] and lo <= raw <= hi):
        raise ValueError(f"value {raw} outside [{lo}, {hi}]")
    if spec.words == 1:
        return [raw & 0xFFFF]
    value = raw & 0xFFFFFFFF
    hi_w, lo_w = value >> 16, value & 0xFFFF
    return [hi_w, lo_w] if word_order == "big" else [lo_w, hi_w]


def builtin_profile_path(name: str = "cryosim-8") -> Path:
    """Path of a profile shipped as package data (works from a wheel install)."""
    ref = resources.files("cryod").joinpath("defaults", "consoles", f"{name}.toml")
    return Path(str(ref))


def load_profile(path: str | Path | None = None) -> Profile:
    """Load and validate a profile; ``None`` loads the built-in CRYOSIM-8 profile.

    A bare name (no slash, no .toml) loads a built-in profile of that name.
    """
    if path is None:
        p = builtin_profile_path()
    elif isinstance(path, str) and "/" not in path and not path.endswith(".toml"):
        p = builtin_profile_path(path)
    else:
        p = Path(path)
    data = read_toml(p, ProfileError)
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError("\n".join(problem_lines(exc, str(p)))) from exc
