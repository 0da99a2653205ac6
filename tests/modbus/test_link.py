"""ModbusLink's reconnection follows the drivers' back-off rule (no wire needed)."""

from __future__ import annotations

import pytest

from cryod.drivers.backoff import BackoffPolicy
from cryod.drivers.base import LinkError, LinkStats
from cryod.drivers.modbus.codec import Request
from cryod.drivers.modbus.transport import RECONNECT_FIRST_S, ModbusLink, Transport


class Refusing(Transport):
    """A console that is not there: every open fails."""

    opens = 0

    def __init__(self, stats: LinkStats) -> None:
        super().__init__(stats)

    async def open(self, timeout_s: float) -> None:
        Refusing.opens += 1
        raise OSError("connection refused")

    async def close(self) -> None:
        return None


async def test_a_failed_connect_waits_out_the_backoff() -> None:
    Refusing.opens = 0
    link = ModbusLink(Refusing, unit_id=1, timeout_s=0.1, retries=2, reconnect_max_s=1.0)
    with pytest.raises(LinkError, match="connect failed: connection refused"):
        await link.connect()
    # within the first back-off (at most RECONNECT_FIRST_S): refused at once, no new attempt
    with pytest.raises(LinkError, match="next reconnect in") as err:
        await link.transact(Request.read("input", 0, 1))
    wait_s = float(str(err.value).rsplit("in ", 1)[1].removesuffix(" s"))
    assert wait_s <= RECONNECT_FIRST_S
    assert Refusing.opens == 1
    assert not link.stats.connected
    # an explicit connect does not wait: it tries again, and the ceiling doubles
    with pytest.raises(LinkError, match="connect failed"):
        await link.connect()
    assert Refusing.opens == 2
    assert link._backoff.failures == 2
    policy = BackoffPolicy(first_s=RECONNECT_FIRST_S, max_s=1.0)
    assert link._backoff.policy == policy
