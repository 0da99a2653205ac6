"""A minimal third-party driver: it only proves the entry point is found and used."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from cryod.drivers.base import ConsoleFaults, ConsoleLimits, Driver, Identity, LinkStats, Snapshot


class DemoDriver(Driver):
    name: ClassVar[str] = "demo-console"

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting
        self._stats = LinkStats()

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, source: str = "<config>") -> DemoDriver:
        unknown = set(options) - {"greeting"}
        if unknown:
            raise ValueError(f"{source}.{sorted(unknown)[0]}: unknown option")
        return cls(str(options.get("greeting", "hello")))

    @property
    def stats(self) -> LinkStats:
        return self._stats

    def min_poll_period_s(self) -> float:
        return 0.5

    async def connect(self) -> None:
        self._stats.connected = True

    async def close(self) -> None:
        self._stats.connected = False

    async def identify(self) -> Identity:
        return Identity(model=self.greeting, serial="0", firmware="0", probes=1, gas="co2")

    async def read_snapshot(self) -> Snapshot:
        raise NotImplementedError

    async def set_freeze(self, probe: int, on: bool) -> None:
        raise NotImplementedError

    async def set_thaw(self, probe: int, on: bool) -> None:
        raise NotImplementedError

    async def set_master(self, on: bool) -> None:
        raise NotImplementedError

    async def arm_lease(self, timeout_ms: int) -> None:
        raise NotImplementedError

    async def renew_lease(self) -> None:
        raise NotImplementedError

    async def read_faults(self) -> ConsoleFaults:
        return ConsoleFaults()

    async def reset_faults(self) -> None:
        return None

    async def write_limits(self, probe: int, limits: ConsoleLimits) -> None:
        raise NotImplementedError

    async def read_limits(self, probe: int) -> ConsoleLimits | None:
        return None
