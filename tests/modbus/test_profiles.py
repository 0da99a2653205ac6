"""Another console profile: no console-held limits, or a console that is not the profile's."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryod.drivers.base import ConsoleLimits, ProtocolError, RejectedError
from cryod.drivers.modbus import ModbusTcpDriver
from cryod.drivers.profile import Profile, builtin_profile_path, load_profile

from .conftest import FAST, running_sim, tcp_server

LIMITS = ConsoleLimits(max_on_time_s=100, min_tip_c=-100, max_supply_kpa=33000, consecutive=2)


def variant(tmp_path: Path, name: str, edit: str) -> Path:
    text = builtin_profile_path().read_text()
    if edit == "no-limits":
        text = text.replace(
            'capabilities = ["active_thaw_helium", "skin_channel", "console_limits"]',
            'capabilities = ["active_thaw_helium", "skin_channel"]',
        )
    elif edit == "four-probes":
        text = text.replace("probes = 8", "probes = 4")
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


async def test_console_without_limits_capability(tmp_path: Path) -> None:
    path = variant(tmp_path, "nolimits", "no-limits")
    profile = load_profile(path)
    assert not profile.has_console_limits
    async with running_sim(tmp_path, profile) as sim, tcp_server(sim) as port:
        d = ModbusTcpDriver.from_options(
            {"host": "127.0.0.1", "port": port, "profile": str(path), **FAST}
        )
        await d.connect()
        try:
            assert not (await d.identify()).has_console_limits
            assert await d.read_limits(1) is None  # nothing echoed: the daemon must not freeze
            with pytest.raises(RejectedError, match="console_limits"):
                await d.write_limits(1, LIMITS)
        finally:
            await d.close()


async def test_console_ignoring_the_limit_registers_is_refused(tmp_path: Path) -> None:
    """The console's profile lacks the capability but the driver's claims it: the
    limit writes are refused by the console, so write_limits raises."""
    path = variant(tmp_path, "nolimits", "no-limits")
    async with running_sim(tmp_path, load_profile(path)) as sim, tcp_server(sim) as port:
        d = ModbusTcpDriver.from_options({"host": "127.0.0.1", "port": port, **FAST})
        await d.connect()
        try:
            with pytest.raises(RejectedError, match="limits"):
                await d.write_limits(1, LIMITS)
            assert await d.read_limits(1) is None
        finally:
            await d.close()


async def test_identify_detects_the_wrong_profile(tmp_path: Path) -> None:
    four: Profile = load_profile(variant(tmp_path, "four", "four-probes"))
    async with running_sim(tmp_path, four) as sim, tcp_server(sim) as port:
        d = ModbusTcpDriver.from_options({"host": "127.0.0.1", "port": port, **FAST})
        await d.connect()
        try:
            with pytest.raises(ProtocolError, match=r"reports 4 probes .* declares 8"):
                await d.identify()
        finally:
            await d.close()
