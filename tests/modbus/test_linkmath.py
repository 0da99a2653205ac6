"""Link physics: character times, gaps and the shortest poll period."""

from __future__ import annotations

import pytest

from cryod.drivers import linkmath as lm
from cryod.drivers.modbus import ModbusRtuDriver, ModbusTcpDriver
from cryod.drivers.profile import load_profile


def test_bits_per_char_follows_parity_and_stop_bits() -> None:
    assert lm.bits_per_char("N", 1) == 10
    assert lm.bits_per_char("E", 1) == 11  # the Modbus default framing
    assert lm.bits_per_char("N", 2) == 11
    assert lm.bits_per_char("O", 2) == 12
    with pytest.raises(ValueError, match="parity"):
        lm.bits_per_char("X", 1)


def test_gap_is_three_and_a_half_chars_up_to_19200_then_fixed() -> None:
    assert lm.inter_frame_gap_s(9600, 11) == pytest.approx(3.5 * 11 / 9600)
    assert lm.inter_frame_gap_s(19200, 11) == pytest.approx(3.5 * 11 / 19200)
    assert lm.inter_frame_gap_s(115200, 10) == pytest.approx(0.00175)


def test_frame_sizes() -> None:
    assert lm.read_registers_bytes(95) == (8, 195)
    assert lm.write_single_bytes() == (8, 8)
    assert lm.write_multiple_bytes(4) == (17, 8)
    with pytest.raises(ValueError, match=r"outside 1\.\.125"):
        lm.read_registers_bytes(126)


def test_snapshot_budget_by_hand_at_9600_8e1() -> None:
    span = load_profile().snapshot_span()
    assert span == [(0, 95)]  # one request for 8 probes
    budget = lm.snapshot_budget_rtu(span, 9600, "E", 1, turnaround_s=0.0)
    ct = 11 / 9600
    expected = (8 + 195) * ct + 2 * 3.5 * ct + (8 + 8) * ct + 2 * 3.5 * ct
    assert budget.period_s == pytest.approx(expected)
    assert 3.5 < budget.max_rate_hz < 4.5
    assert "9600 baud" in budget.description


def test_driver_refuses_a_rate_the_link_cannot_carry() -> None:
    slow = ModbusRtuDriver.from_options({"port": "/dev/null", "baudrate": 9600, "parity": "E"})
    slow.check_poll_rate(2.0)
    with pytest.raises(ValueError, match=r"exceeds the maximum 3\.\d Hz"):
        slow.check_poll_rate(10.0)
    fast = ModbusRtuDriver.from_options({"port": "/dev/null", "baudrate": 115200})
    assert fast.min_poll_period_s() < slow.min_poll_period_s() / 5
    fast.check_poll_rate(20.0)
    with pytest.raises(ValueError, match="maximum"):
        fast.check_poll_rate(100.0)
    tcp = ModbusTcpDriver.from_options({"host": "127.0.0.1"})
    assert tcp.min_poll_period_s() == pytest.approx(0.001)
    tcp.check_poll_rate(100.0)
    with pytest.raises(ValueError, match="positive"):
        tcp.check_poll_rate(0)
