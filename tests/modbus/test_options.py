"""Driver options: validated, unknown keys are errors naming source and key."""

from __future__ import annotations

import pytest

from cryod.drivers.modbus import ModbusRtuDriver, ModbusTcpDriver


def test_tcp_defaults() -> None:
    d = ModbusTcpDriver.from_options({"host": "10.0.0.5"}, source="cryod.toml:driver")
    assert (d.host, d.port, d.unit_id, d.timeout_s, d.retries) == ("10.0.0.5", 502, 1, 0.2, 2)
    assert d.profile.console.model == "CRYOSIM-8"


def test_unknown_key_names_source_and_key() -> None:
    with pytest.raises(ValueError, match=r"cryod\.toml:driver\.hots: unknown key"):
        ModbusTcpDriver.from_options({"host": "h", "hots": "x"}, source="cryod.toml:driver")


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"host": "h", "port": 0}, "port"),
        ({"host": "h", "timeout_s": 0}, "timeout_s"),
        ({"host": "h", "retries": -1}, "retries"),
        ({"host": "h", "unit_id": 300}, "unit_id"),
        ({"port": 502}, "host"),
    ],
)
def test_bad_tcp_values(options: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=rf"src\.{key}:"):
        ModbusTcpDriver.from_options(options, source="src")


def test_rtu_options_and_bad_parity() -> None:
    d = ModbusRtuDriver.from_options({"port": "/dev/ttyUSB0", "baudrate": 19200, "parity": "E"})
    assert (d.port, d.baudrate, d.parity, d.stopbits) == ("/dev/ttyUSB0", 19200, "E", 1)
    with pytest.raises(ValueError, match=r"src\.parity"):
        ModbusRtuDriver.from_options({"port": "/dev/x", "parity": "Q"}, source="src")


def test_missing_profile_names_source_profile(tmp_path: object) -> None:
    with pytest.raises(ValueError, match=r"src\.profile: .*file not found"):
        ModbusTcpDriver.from_options({"host": "h", "profile": "/nonexistent/x.toml"}, source="src")
