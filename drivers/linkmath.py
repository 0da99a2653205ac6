"""Link physics: how long a Modbus transaction takes on a serial line or TCP.

The driver uses these numbers to refuse a poll rate its link cannot carry
(issue 3) and to keep the inter-frame gap on RTU. Pure functions, no I/O.
Modbus RTU frames: 1 address byte + PDU + 2 CRC bytes; each character is a
start bit, the data bits, an optional parity bit and the stop bits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MODBUS_TCP_MIN_PERIOD_S",
    "RTU_FIXED_GAP_S",
    "LinkBudget",
    "bits_per_char",
    "char_time_s",
    "check_poll_rate",
    "inter_frame_gap_s",
    "read_registers_bytes",
    "rtu_transaction_s",
    "snapshot_budget_rtu",
    "snapshot_budget_tcp",
    "write_multiple_bytes",
    "write_single_bytes",
]

#: Modbus over serial line spec (V1.02, 2.5.1.1): above 19200 baud use fixed timings
RTU_FIXED_GAP_S = 0.00175
#: a loopback/LAN Modbus TCP poll is bounded by the console's processing, not the wire
MODBUS_TCP_MIN_PERIOD_S = 0.001


def bits_per_char(parity: str = "N", stopbits: float = 1, databits: int = 8) -> float:
    """Bits on the wire per character: start + data + parity + stop."""
    if parity.upper() not in ("N", "E", "O", "M", "S"):
        raise ValueError(f"parity {parity!r} not one of N, E, O, M, S")
    if stopbits not in (1, 1.5, 2):
        raise ValueError(f"stopbits {stopbits} not one of 1, 1.5, 2")
    if databits not in (5, 6, 7, 8):
        raise ValueError(f"databits {databits} not one of 5..8")
    return 1 + databits + (0 if parity.upper() == "N" else 1) + stopbits


def char_time_s(baudrate: int, bits: float) -> float:
    if baudrate <= 0:
        raise ValueError(f"baudrate {baudrate} must be positive")
    return bits / baudrate


def inter_frame_gap_s(baudrate: int, bits: float) -> float:
    """The 3.5-character silence that delimits RTU frames (fixed 1.75 ms above 19200 baud)."""
    if baudrate > 19200:
        return RTU_FIXED_GAP_S
    return 3.5 * char_time_s(baudrate, bits)


def read_registers_bytes(count: int) -> tuple[int, int]:
    """RTU (request, response) bytes of FC3/FC4 reading ``count`` registers."""
    if not 1 <= count <= 125:
        raise ValueError(f"register count {count} outside 1..125")
    return 8, 5 + 2 * count


def write_single_bytes() -> tuple[int, int]:
    """RTU (request, response) bytes of FC6 (the response echoes the request)."""
    return 8, 8


def write_multiple_bytes(count: int) -> tuple[int, int]:
    """RTU (request, response) bytes of FC16 writing ``count`` registers."""
    if not 1 <= count <= 123:
        raise ValueError(f"register count {count} outside 1..123")
    return 9 + 2 * count, 8


def rtu_transaction_s(
    request_bytes: int,
    response_bytes: int,
    baudrate: int,
    bits: float,
    turnaround_s: float = 0.0,
) -> float:
    """Wire time of one request/response pair, each frame preceded by its 3.5-char gap."""
    ct = char_time_s(baudrate, bits)
    gap = inter_frame_gap_s(baudrate, bits)
    return (request_bytes + response_bytes) * ct + 2 * gap + turnaround_s


@dataclass(frozen=True, slots=True)
class LinkBudget:
    """The shortest poll period of a link and how it was computed."""

    period_s: float
    description: str

    @property
    def max_rate_hz(self) -> float:
        return 1.0 / self.period_s


def snapshot_budget_rtu(
    blocks: Iterable[tuple[int, int]],
    baudrate: int,
    parity: str = "N",
    stopbits: float = 1,
    turnaround_s: float = 0.001,
) -> LinkBudget:
    """One poll = the snapshot read requests + one heartbeat write (FC6)."""
    bits = bits_per_char(parity, stopbits)
    total = 0.0
    regs = 0
    nblocks = 0
    for _address, count in blocks:
        req, resp = read_registers_bytes(count)
        total += rtu_transaction_s(req, resp, baudrate, bits, turnaround_s)
        regs += count
        nblocks += 1
    req, resp = write_single_bytes()
    total += rtu_transaction_s(req, resp, baudrate, bits, turnaround_s)
    desc = (
        f"Modbus RTU at {baudrate} baud 8{parity.upper()}{stopbits:g} "
        f"({bits:g} bits/char): {nblocks} read(s) of {regs} registers + 1 heartbeat write "
        f"= {total * 1000:.1f} ms"
    )
    return LinkBudget(total, desc)


def snapshot_budget_tcp() -> LinkBudget:
    return LinkBudget(MODBUS_TCP_MIN_PERIOD_S, "Modbus TCP: console processing bound, 1 ms")


def check_poll_rate(rate_hz: float, budget: LinkBudget) -> None:
    """Raise ValueError when ``rate_hz`` is faster than the link can carry."""
    if rate_hz <= 0:
        raise ValueError(f"poll rate {rate_hz} Hz must be positive")
    if 1.0 / rate_hz < budget.period_s:
        raise ValueError(
            f"poll rate {rate_hz:g} Hz exceeds the maximum {budget.max_rate_hz:.1f} Hz "
            f"this link can carry ({budget.description})"
        )
