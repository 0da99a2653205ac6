"""The Modbus TCP and RTU console drivers: a console profile (register map) driven
over a ``ModbusLink``.

Reads are grouped into block requests from the profile; every command is
written, then confirmed by reading back what the console reports (a refusal
raises ``RejectedError`` with the console's reason, never a silent no-op).
Link, framing and retries: ``transport`` and ``codec``; decoding: ``regmap``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cryod.common.validation import problem_lines

from ..base import (
    ConsoleFaults,
    ConsoleLimits,
    Driver,
    DriverError,
    Identity,
    LinkStats,
    ProtocolError,
    RejectedError,
    Snapshot,
)
from ..linkmath import LinkBudget, check_poll_rate, snapshot_budget_rtu, snapshot_budget_tcp
from ..profile import Profile, ProfileError, ResolvedRegister, encode_value, load_profile
from .codec import MAX_WRITE_REGISTERS, ModbusExceptionResponse, Request
from .regmap import Image, RegisterMap, SnapshotDecoder, group_addresses
from .transport import ModbusLink, RtuTransport, TcpTransport, Transport

__all__ = ["ModbusRtuDriver", "ModbusTcpDriver", "RtuOptions", "TcpOptions"]

_LIMIT_FIELDS = (
    ("limit_max_on_time_s", "max_on_time_s"),
    ("limit_min_tip_c", "min_tip_c"),
    ("limit_max_supply_kpa", "max_supply_kpa"),
    ("limit_consecutive", "consecutive"),
)


# ---- options ---------------------------------------------------------------
class _CommonOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    profile: str = "cryosim-8"
    unit_id: int | None = Field(default=None, ge=1, le=247)
    timeout_s: float = Field(default=0.2, gt=0, le=30)
    retries: int = Field(default=2, ge=0, le=10)
    reconnect_max_s: float = Field(default=2.0, gt=0, le=300)


class TcpOptions(_CommonOptions):
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)


class RtuOptions(_CommonOptions):
    port: str = Field(min_length=1)
    baudrate: int = Field(default=115200, ge=300, le=4_000_000)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


def _validate(model: type[BaseModel], options: Mapping[str, Any], source: str) -> Any:
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise ValueError("\n".join(problem_lines(exc, None, prefix=source))) from exc


def _load_profile(name: str, source: str) -> Profile:
    try:
        return load_profile(name)
    except ProfileError as exc:
        raise ValueError(f"{source}.profile: {exc}") from exc


# ---- the driver --------------------------------------------------------------
class _ModbusDriver(Driver):
    """Everything but the transport: register map, decoding, confirmation."""

    def __init__(
        self,
        profile: Profile,
        *,
        unit_id: int | None,
        timeout_s: float,
        retries: int,
        reconnect_max_s: float,
    ) -> None:
        self.profile = profile
        self.unit_id = unit_id if unit_id is not None else profile.modbus.unit_id
        self.timeout_s = timeout_s
        self.retries = retries
        self.reconnect_max_s = reconnect_max_s
        self._link = ModbusLink(
            self._make_transport,
            unit_id=self.unit_id,
            timeout_s=timeout_s,
            retries=retries,
            reconnect_max_s=reconnect_max_s,
        )
        self._map = RegisterMap(profile)
        self._decoder = SnapshotDecoder(self._map)
        self._heartbeat = 0
        self._identity: Identity | None = None

    # ---- plumbing ----------------------------------------------------------
    @property
    def stats(self) -> LinkStats:
        return self._link.stats

    def _make_transport(self, stats: LinkStats) -> Transport:
        raise NotImplementedError

    def link_budget(self) -> LinkBudget:
        raise NotImplementedError

    def min_poll_period_s(self) -> float:
        return self.link_budget().period_s

    def check_poll_rate(self, rate_hz: float) -> None:
        """Raise ValueError naming the maximum when ``rate_hz`` is faster than the link allows."""
        check_poll_rate(rate_hz, self.link_budget())

    async def connect(self) -> None:
        await self._link.connect()

    async def close(self) -> None:
        await self._link.close()

    async def _transact(self, req: Request) -> list[int]:
        return await self._link.transact(req)

    async def _read_regs(self, regs: list[ResolvedRegister]) -> Image:
        """Read the given registers (one request per contiguous group)."""
        table = regs[0].table
        image: Image = {}
        for start, count in self._map.read_blocks(regs):
            for i, w in enumerate(await self._transact(Request.read(table, start, count))):
                image[start + i] = w
        return image

    async def _write(self, reg: ResolvedRegister, raw: int) -> None:
        """Write one register (range-checked, never clamped); refusals raise RejectedError."""
        words = encode_value(reg.spec, raw, self.profile.modbus.word_order)
        await self._write_words(reg.address, words, reg.name)

    async def _write_words(self, address: int, words: list[int], what: str) -> None:
        try:
            await self._transact(Request.write(address, words))
        except ModbusExceptionResponse as exc:
            raise RejectedError(f"console refused {what}: {await self._reason(exc)}") from exc

    async def _reason(self, exc: ModbusExceptionResponse) -> str:
        """Why the console refused: its exception code plus what its status shows."""
        text = str(exc).split(": ", 1)[-1]
        if exc.code != 4:
            return text
        try:
            image = await self._read_regs([self.profile.reg("status"), self.profile.reg("faults")])
        except DriverError:
            return text
        faults = [
            n
            for n in self.profile.registers["faults"].bits
            if self._map.bit(image, self.profile.reg("faults"), n)
        ]
        if faults:
            return f"{text}: faults latched: {', '.join(faults)}"
        if not self._map.bit(image, self.profile.reg("status"), "lease_armed"):
            return f"{text}: lease not armed"
        return text

    def _check_probe(self, probe: int) -> None:
        if not 1 <= probe <= self.profile.console.probes:
            raise ValueError(f"probe {probe} outside 1..{self.profile.console.probes}")

    # ---- identity ----------------------------------------------------------
    async def identify(self) -> Identity:
        p = self.profile
        names = ("model", "serial", "firmware", "probe_count", "gas", "capabilities")
        image = await self._read_regs([p.reg(n) for n in names])
        model = str(self._map.raw(image, p.reg("model")))
        probes = self._map.integer(image, p.reg("probe_count"))
        if probes != p.console.probes:
            raise ProtocolError(
                f"console reports {probes} probes but profile {p.console.model} declares "
                f"{p.console.probes}: wrong profile for this console"
            )
        if model != p.console.model:
            raise ProtocolError(
                f"console reports model {model!r} but the profile is for {p.console.model!r}"
            )
        gas_raw = self._map.integer(image, p.reg("gas"))
        gas = {v: k for k, v in p.registers["gas"].enum.items()}.get(gas_raw)
        if gas is None:
            raise ProtocolError(f"console reports unknown gas code {gas_raw}")
        caps_reg = p.reg("capabilities")
        caps = frozenset(n for n in caps_reg.spec.bits if self._map.bit(image, caps_reg, n))
        self._identity = Identity(
            model=model,
            serial=str(self._map.raw(image, p.reg("serial"))),
            firmware=str(self._map.raw(image, p.reg("firmware"))),
            probes=probes,
            gas=gas,
            capabilities=caps,
        )
        return self._identity

    # ---- snapshot ------------------------------------------------------------
    async def _read_image(self) -> tuple[Image, float, float]:
        image: Image = {}
        for req in self._map.span_requests:
            for i, w in enumerate(await self._transact(req), start=req.address):
                image[i] = w
        return image, time.monotonic(), time.time()

    async def read_snapshot(self) -> Snapshot:
        image, t_mono, t_utc = await self._read_image()
        return self._decoder.decode(image, t_mono, t_utc)

    def _decode_snapshot(self, image: Image, t_mono: float, t_utc: float) -> Snapshot:
        """The register image as a Snapshot (the poll path's decode, no I/O)."""
        return self._decoder.decode(image, t_mono, t_utc)

    # ---- commands ---------------------------------------------------------------
    async def _confirm_bit(self, reg: ResolvedRegister, bit: str, want: bool, what: str) -> None:
        image = await self._read_regs([reg])
        if self._map.bit(image, reg, bit) != want:
            raise RejectedError(f"{what} not confirmed: console reports {bit}={not want}")

    async def set_freeze(self, probe: int, on: bool) -> None:
        self._check_probe(probe)
        await self._write(self.profile.probe_reg("freeze_cmd", probe), int(on))
        await self._confirm_bit(
            self.profile.probe_reg("probe_status", probe),
            "freeze_open",
            on,
            f"probe {probe} freeze {'open' if on else 'close'}",
        )

    async def set_thaw(self, probe: int, on: bool) -> None:
        self._check_probe(probe)
        await self._write(self.profile.probe_reg("thaw_cmd", probe), int(on))
        await self._confirm_bit(
            self.profile.probe_reg("probe_status", probe),
            "thaw_on",
            on,
            f"probe {probe} thaw {'on' if on else 'off'}",
        )

    async def set_master(self, on: bool) -> None:
        await self._write(self.profile.reg("master_cmd"), int(on))
        await self._confirm_bit(
            self.profile.reg("status"), "master_open", on, f"master {'open' if on else 'close'}"
        )

    async def arm_lease(self, timeout_ms: int) -> None:
        lo, hi = self.profile.console.lease_timeout_ms_range
        if timeout_ms != 0 and not lo <= timeout_ms <= hi:
            raise ValueError(f"lease timeout {timeout_ms} ms outside {lo}..{hi} (or 0 to disarm)")
        await self._write(self.profile.reg("lease_timeout_ms"), timeout_ms)
        rb = self.profile.reg("lease_timeout_ms_rb")
        got = self._map.integer(await self._read_regs([rb]), rb)
        if got != timeout_ms:
            raise RejectedError(f"lease timeout not confirmed: wrote {timeout_ms}, reads {got}")

    async def renew_lease(self) -> None:
        self._heartbeat = (self._heartbeat + 1) & 0xFFFF
        await self._write(self.profile.reg("heartbeat"), self._heartbeat)

    async def read_faults(self) -> ConsoleFaults:
        return (await self.read_snapshot()).faults

    async def reset_faults(self) -> None:
        await self._write(self.profile.reg("fault_reset"), 1)
        faults = await self.read_faults()
        if faults.any:
            raise RejectedError(f"faults still latched after reset: {', '.join(faults.names())}")

    async def write_limits(self, probe: int, limits: ConsoleLimits) -> None:
        self._check_probe(probe)
        p = self.profile
        if not p.has_console_limits:
            raise RejectedError(
                f"console {p.console.model} does not hold per-probe limits "
                "(profile lacks the console_limits capability)"
            )
        words: dict[int, int] = {}
        for reg_name, attr in _LIMIT_FIELDS:
            reg = p.probe_reg(reg_name, probe)
            raw = round(float(getattr(limits, attr)) / reg.spec.scale)
            for i, w in enumerate(encode_value(reg.spec, raw, p.modbus.word_order)):
                words[reg.address + i] = w
        for start, count in group_addresses(sorted(words), MAX_WRITE_REGISTERS):
            await self._write_words(
                start, [words[a] for a in range(start, start + count)], f"probe {probe} limits"
            )
        await self._write(p.probe_reg("limits_arm", probe), 1)
        held = await self.read_limits(probe)
        if held is None or not _same_limits(held, limits, p, probe):
            raise RejectedError(f"probe {probe} limits not confirmed: console holds {held}")

    async def read_limits(self, probe: int) -> ConsoleLimits | None:
        self._check_probe(probe)
        p = self.profile
        if not p.has_console_limits:
            return None
        regs = [p.probe_reg(n, probe) for n, _ in _LIMIT_FIELDS] + [
            p.probe_reg("limits_arm", probe)
        ]
        image = await self._read_regs(regs)
        if self._map.integer(image, regs[-1]) != 1:
            return None
        values = {
            attr: round(self._map.integer(image, r) * r.spec.scale, 6)
            for (_, attr), r in zip(_LIMIT_FIELDS, regs, strict=False)
        }
        try:
            return ConsoleLimits(
                max_on_time_s=values["max_on_time_s"],
                min_tip_c=values["min_tip_c"],
                max_supply_kpa=values["max_supply_kpa"],
                consecutive=int(values["consecutive"]),
            )
        except ValueError as exc:
            raise ProtocolError(f"probe {probe}: console holds invalid limits: {exc}") from exc


def _same_limits(a: ConsoleLimits, b: ConsoleLimits, p: Profile, probe: int) -> bool:
    for reg_name, attr in _LIMIT_FIELDS:
        tol = p.probe_reg(reg_name, probe).spec.scale / 2 + 1e-9
        if abs(float(getattr(a, attr)) - float(getattr(b, attr))) > tol:
            return False
    return True


class ModbusTcpDriver(_ModbusDriver):
    """A console on Modbus TCP."""

    name: ClassVar[str] = "modbus-tcp"

    def __init__(self, host: str, port: int = 502, *, profile: Profile, **kw: Any) -> None:
        super().__init__(profile, **kw)
        self.host, self.port = host, port

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, source: str = "<config>"
    ) -> ModbusTcpDriver:
        o: TcpOptions = _validate(TcpOptions, options, source)
        return cls(
            o.host,
            o.port,
            profile=_load_profile(o.profile, source),
            unit_id=o.unit_id,
            timeout_s=o.timeout_s,
            retries=o.retries,
            reconnect_max_s=o.reconnect_max_s,
        )

    def _make_transport(self, stats: LinkStats) -> Transport:
        return TcpTransport(stats, self.host, self.port)

    def link_budget(self) -> LinkBudget:
        return snapshot_budget_tcp()


class ModbusRtuDriver(_ModbusDriver):
    """A console on Modbus RTU over a serial line."""

    name: ClassVar[str] = "modbus-rtu"

    def __init__(
        self,
        port: str,
        baudrate: int = 115200,
        parity: str = "N",
        stopbits: int = 1,
        *,
        profile: Profile,
        **kw: Any,
    ) -> None:
        super().__init__(profile, **kw)
        self.port, self.baudrate, self.parity, self.stopbits = port, baudrate, parity, stopbits

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, source: str = "<config>"
    ) -> ModbusRtuDriver:
        o: RtuOptions = _validate(RtuOptions, options, source)
        return cls(
            o.port,
            o.baudrate,
            o.parity,
            o.stopbits,
            profile=_load_profile(o.profile, source),
            unit_id=o.unit_id,
            timeout_s=o.timeout_s,
            retries=o.retries,
            reconnect_max_s=o.reconnect_max_s,
        )

    def _make_transport(self, stats: LinkStats) -> Transport:
        return RtuTransport(stats, self.port, self.baudrate, self.parity, self.stopbits)

    def link_budget(self) -> LinkBudget:
        return snapshot_budget_rtu(self._map.span, self.baudrate, self.parity, self.stopbits)
