"""Codec of the cryod serial line protocol (docs/line-protocol.md): pure, no I/O.

Both ends use it: the simulator's line server and the ``serial-line``
driver, so the two cannot drift apart. A frame is one ASCII line::

    $<seq> <VERB> [arg ...] [key=value ...]*<CRC16 hex>\\r\\n

The checksum is CRC-16/CCITT-FALSE over the body (the bytes between ``$``
and ``*``). Decoding raises only ``FrameError`` (with a stable ``code``),
whatever the input, so a reader can count and drop a bad frame and go on.
``LineSplitter`` cuts a byte stream into frames and errors, resynchronising
on ``$`` so garbage between frames and truncated frames cost one frame each.
"""

from __future__ import annotations

import binascii
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .base import TcStatus, TripCause

__all__ = [
    "FRAME_ERROR_CODES",
    "MAX_LINE_BYTES",
    "PROTOCOL_VERSION",
    "SEQ_MODULO",
    "Frame",
    "FrameError",
    "LineSplitter",
    "ProbeTel",
    "SeqCounter",
    "Telemetry",
    "crc16_ccitt_false",
    "decode",
    "encode",
    "fmt_fixed",
    "fmt_num",
    "parse_bool",
    "parse_float",
    "parse_int",
    "seq_gap",
    "telemetry_max_len",
]

PROTOCOL_VERSION = 1
#: longest line, ``$`` to ``\n`` inclusive; anything longer is a bad frame
MAX_LINE_BYTES = 1024
SEQ_MODULO = 65536
MAX_TOKENS = 64

#: codes of FrameError (also the NAK codes a console sends for them)
FRAME_ERROR_CODES = ("bad_frame", "too_long", "bad_checksum", "bad_syntax")

_VERB_RE = re.compile(r"[A-Z][A-Z0-9_]{0,15}\??")
_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,15}")
_SEQ_RE = re.compile(r"0|[1-9][0-9]{0,4}")
_HEX = frozenset(b"0123456789ABCDEFabcdef")


class FrameError(ValueError):
    """A line that is not a valid frame. ``code`` is one of FRAME_ERROR_CODES;
    ``seq`` is the sender's sequence number when it could be read from a line
    whose checksum was good (so the receiver can NAK it by number)."""

    def __init__(self, code: str, detail: str = "", seq: int | None = None) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.seq = seq


# ---- checksum ---------------------------------------------------------------
def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR,
    which is the standard library's ``binascii.crc_hqx`` started at 0xFFFF.

    Check value: crc16_ccitt_false(b"123456789") == 0x29B1.
    """
    return binascii.crc_hqx(data, 0xFFFF)


# ---- frames -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``args`` are bare words, ``fields`` key=value pairs
    (in order; keys unique). On the wire args come first, then fields."""

    seq: int
    verb: str
    args: tuple[str, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()

    @classmethod
    def make(
        cls,
        seq: int,
        verb: str,
        args: Iterable[str] = (),
        fields: Mapping[str, object] | None = None,
    ) -> Frame:
        """Build a frame from a field mapping; values are str()-ed, floats via fmt_num."""
        items: list[tuple[str, str]] = []
        for key, value in (fields or {}).items():
            if isinstance(value, bool):
                text = "1" if value else "0"
            elif isinstance(value, float):
                text = fmt_num(value)
            else:
                text = str(value)
            items.append((key, text))
        return cls(seq, verb, tuple(args), tuple(items))

    def get(self, key: str) -> str | None:
        for k, v in self.fields:
            if k == key:
                return v
        return None

    def field_map(self) -> dict[str, str]:
        return dict(self.fields)

    def body(self) -> str:
        parts = [str(self.seq), self.verb, *self.args]
        parts.extend(f"{k}={v}" for k, v in self.fields)
        return " ".join(parts)


def _token_ok(token: str) -> bool:
    return bool(token) and all(0x21 <= ord(c) <= 0x7E and c not in "$*" for c in token)


def encode(frame: Frame) -> bytes:
    """Frame to wire bytes; raises FrameError("bad_syntax") for a frame that
    could not be decoded again (bad verb, key, token characters, too long)."""
    if not 0 <= frame.seq < SEQ_MODULO:
        raise FrameError("bad_syntax", f"seq {frame.seq} outside 0..65535")
    if not _VERB_RE.fullmatch(frame.verb):
        raise FrameError("bad_syntax", f"bad verb {frame.verb!r}")
    keys = set()
    for arg in frame.args:
        if not _token_ok(arg) or "=" in arg:
            raise FrameError("bad_syntax", f"bad argument {arg!r}")
    for key, value in frame.fields:
        if not _KEY_RE.fullmatch(key) or key in keys:
            raise FrameError("bad_syntax", f"bad or repeated key {key!r}")
        if not _token_ok(value):
            raise FrameError("bad_syntax", f"bad value {value!r} for {key}")
        keys.add(key)
    if 2 + len(frame.args) + len(frame.fields) > MAX_TOKENS:
        raise FrameError("bad_syntax", "too many tokens")
    body = frame.body().encode("ascii")
    line = b"$" + body + b"*" + f"{crc16_ccitt_false(body):04X}".encode() + b"\r\n"
    if len(line) > MAX_LINE_BYTES:
        raise FrameError("too_long", f"{len(line)} bytes > {MAX_LINE_BYTES}")
    return line


def decode(line: bytes) -> Frame:
    """Wire line (with or without its ``\\r\\n``) to a Frame; raises only FrameError."""
    if len(line) > MAX_LINE_BYTES:
        raise FrameError("too_long", f"{len(line)} bytes > {MAX_LINE_BYTES}")
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line.startswith(b"$"):
        raise FrameError("bad_frame", "does not start with '$'")
    star = line.rfind(b"*")
    if star < 0 or len(line) - star - 1 != 4 or not all(b in _HEX for b in line[star + 1 :]):
        raise FrameError("bad_frame", "no '*' followed by 4 hex digits at the end")
    body = line[1:star]
    if int(line[star + 1 :], 16) != crc16_ccitt_false(body):
        raise FrameError("bad_checksum", "checksum mismatch")
    if any(not 0x20 <= b <= 0x7E or b in b"$*" for b in body):
        raise FrameError("bad_syntax", "byte outside printable ASCII or a '$'/'*' in the body")
    tokens = body.decode("ascii").split(" ")
    if not tokens[0] or not _SEQ_RE.fullmatch(tokens[0]) or int(tokens[0]) >= SEQ_MODULO:
        raise FrameError("bad_syntax", "sequence number is not 0..65535")
    seq = int(tokens[0])
    if any(t == "" for t in tokens):
        raise FrameError("bad_syntax", "empty token (use single spaces)", seq)
    if len(tokens) < 2 or not _VERB_RE.fullmatch(tokens[1]):
        raise FrameError("bad_syntax", "missing or bad verb", seq)
    if len(tokens) > MAX_TOKENS:
        raise FrameError("bad_syntax", f"more than {MAX_TOKENS} tokens", seq)
    args: list[str] = []
    fields: list[tuple[str, str]] = []
    keys: set[str] = set()
    for token in tokens[2:]:
        if "=" in token:
            key, _, value = token.partition("=")
            if not _KEY_RE.fullmatch(key) or not value or key in keys:
                raise FrameError("bad_syntax", f"bad, empty or repeated field {key!r}", seq)
            keys.add(key)
            fields.append((key, value))
        else:
            args.append(token)
    return Frame(seq, tokens[1], tuple(args), tuple(fields))


@dataclass
class LineSplitter:
    """Cut a byte stream into frames; every rejected piece is one FrameError.

    A ``$`` always starts a new frame: bytes before it that are not a whole
    frame are garbage or a truncated frame. Blank lines are ignored. A line
    longer than MAX_LINE_BYTES is reported once and skipped to the next
    ``$`` or newline.
    """

    bad: int = 0
    frames: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _skipping: bool = False

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        for piece in re.split(rb"([$\n])", data):
            if piece == b"$":
                self._flush_partial(out)
                self._skipping = False
                self._buf += b"$"
            elif piece == b"\n":
                if not self._skipping:
                    self._end_line(out)
                self._skipping = False
                self._buf.clear()
            elif piece and not self._skipping:
                self._buf += piece
                if len(self._buf) > MAX_LINE_BYTES:
                    self._error(out, FrameError("too_long", f"line over {MAX_LINE_BYTES} bytes"))
                    self._buf.clear()
                    self._skipping = True
        return out

    def _error(self, out: list[Frame | FrameError], err: FrameError) -> None:
        self.bad += 1
        out.append(err)

    def _flush_partial(self, out: list[Frame | FrameError]) -> None:
        if self._buf.strip():
            kind = "truncated frame" if self._buf.startswith(b"$") else "garbage between frames"
            self._error(out, FrameError("bad_frame", kind))
        self._buf.clear()

    def _end_line(self, out: list[Frame | FrameError]) -> None:
        line = bytes(self._buf) + b"\n"
        if not line.strip():
            return
        if not line.startswith(b"$"):
            self._error(out, FrameError("bad_frame", "garbage between frames"))
            return
        try:
            frame = decode(line)
        except FrameError as exc:
            self._error(out, exc)
            return
        self.frames += 1
        out.append(frame)


# ---- sequence numbers -------------------------------------------------------
@dataclass
class SeqCounter:
    """Per-sender sequence numbers 0..65535, wrapping."""

    value: int = 0

    def next(self) -> int:
        seq = self.value
        self.value = (self.value + 1) % SEQ_MODULO
        return seq


def seq_gap(previous: int | None, current: int) -> int:
    """Frames missing between two received sequence numbers (0 = none).

    A repeat or a step backwards (sender restarted) counts as 0: the receiver
    resynchronises on it.
    """
    if previous is None:
        return 0
    step = (current - previous) % SEQ_MODULO
    if step == 0 or step > SEQ_MODULO // 2:
        return 0
    return step - 1


# ---- values -----------------------------------------------------------------
def fmt_num(value: float, decimals: int = 3) -> str:
    """Shortest decimal with at most ``decimals`` places ('-0' written as '0'):
    command fields, e.g. ``on_s=90``."""
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def fmt_fixed(value: float, decimals: int) -> str:
    """Exactly ``decimals`` places, trailing zeros kept (no point for 0; a negative
    zero written without its sign): the telemetry numbers of docs/line-protocol.md
    section 7, e.g. ``t=12.500``, ``sup=25850``."""
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    text = f"{value:.{decimals}f}"
    if text.startswith("-") and not text.strip("-0."):
        text = text[1:]  # -0.0 is 0.0
    return text


_NUM_RE = re.compile(r"-?[0-9]{1,10}(\.[0-9]{1,6})?")
_INT_RE = re.compile(r"-?[0-9]{1,10}")


def parse_float(text: str) -> float:
    """Decimal number as the protocol writes it (no exponent, no inf/nan)."""
    if not _NUM_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a decimal number")
    return float(text)


def parse_int(text: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not an integer")
    return int(text)


def parse_bool(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(f"{text!r} is not 0 or 1")
    return text == "1"


# ---- telemetry ----------------------------------------------------------------
STATUS_BITS = {"lease_armed": 0, "master_open": 1, "supply_low": 2, "helium_ok": 3}
FAULT_BITS = {"lease_expired": 0, "overpressure": 1, "console_limit": 2}
PROBE_BITS = {"freeze_open": 0, "thaw_on": 1, "limits_armed": 2}
_TC_MARK = {TcStatus.OPEN: "open", TcStatus.SHORT: "short"}


@dataclass(frozen=True, slots=True)
class ProbeTel:
    """One probe in a TEL frame: ``p<n>=<tip>,<return_kpa>,<flags>,<trip>[,<trip_t>]``."""

    tip_c: float | None  # None when tc_status is not OK
    tc_status: TcStatus
    return_kpa: float
    freeze_open: bool
    thaw_on: bool
    limits_armed: bool
    trip: TripCause = TripCause.NONE
    trip_time_s: float = 0.0

    def encode(self) -> str:
        tip = _TC_MARK[self.tc_status] if self.tc_status != TcStatus.OK else None
        if tip is None:
            if self.tip_c is None:
                raise ValueError("tip_c missing with tc_status OK")
            tip = fmt_fixed(self.tip_c, 1)
        flags = (
            (self.freeze_open << PROBE_BITS["freeze_open"])
            | (self.thaw_on << PROBE_BITS["thaw_on"])
            | (self.limits_armed << PROBE_BITS["limits_armed"])
        )
        parts = [tip, fmt_fixed(self.return_kpa, 1), f"{flags:X}", str(int(self.trip))]
        if self.trip != TripCause.NONE:
            parts.append(fmt_fixed(self.trip_time_s, 3))
        return ",".join(parts)

    @classmethod
    def decode(cls, text: str) -> ProbeTel:
        parts = text.split(",")
        if len(parts) not in (4, 5):
            raise ValueError(f"probe field {text!r} needs 4 or 5 parts")
        if parts[0] in ("open", "short"):
            tc = TcStatus.OPEN if parts[0] == "open" else TcStatus.SHORT
            tip: float | None = None
        else:
            tc, tip = TcStatus.OK, parse_float(parts[0])
        if len(parts[2]) != 1 or parts[2] not in "01234567":
            raise ValueError(f"probe flags {parts[2]!r} not a hex digit 0..7")
        flags = int(parts[2], 16)
        trip = TripCause(parse_int(parts[3])) if parts[3] in ("0", "1", "2", "3") else None
        if trip is None:
            raise ValueError(f"trip cause {parts[3]!r} not 0..3")
        if (trip == TripCause.NONE) != (len(parts) == 4):
            raise ValueError("a trip time comes with a trip cause, and only then")
        return cls(
            tip_c=tip,
            tc_status=tc,
            return_kpa=parse_float(parts[1]),
            freeze_open=bool(flags & 1),
            thaw_on=bool(flags & 2),
            limits_armed=bool(flags & 4),
            trip=trip,
            trip_time_s=parse_float(parts[4]) if len(parts) == 5 else 0.0,
        )


@dataclass(frozen=True, slots=True)
class Telemetry:
    """The fields of a TEL frame (and of the ACK to ``SNAP?``)."""

    console_time_s: float
    lease_armed: bool
    master_open: bool
    supply_low: bool
    helium_ok: bool
    lease_expired: bool
    overpressure: bool
    console_limit: bool
    supply_kpa: float
    cylinder_kpa: float
    skin_present: bool  # the console has a skin channel
    skin_c: float | None  # None with skin_present: open thermocouple
    lease_timeout_ms: int
    lease_remaining_ms: int
    lease_expiry_count: int
    probes: tuple[ProbeTel, ...]

    def to_fields(self) -> dict[str, str]:
        st = (
            (self.lease_armed << STATUS_BITS["lease_armed"])
            | (self.master_open << STATUS_BITS["master_open"])
            | (self.supply_low << STATUS_BITS["supply_low"])
            | (self.helium_ok << STATUS_BITS["helium_ok"])
        )
        fl = (
            (self.lease_expired << FAULT_BITS["lease_expired"])
            | (self.overpressure << FAULT_BITS["overpressure"])
            | (self.console_limit << FAULT_BITS["console_limit"])
        )
        out = {
            "t": fmt_fixed(self.console_time_s, 3),
            "st": f"{st:X}",
            "fl": f"{fl:X}",
            "sup": fmt_fixed(self.supply_kpa, 0),
            "cyl": fmt_fixed(self.cylinder_kpa, 0),
        }
        if self.skin_present:
            out["skin"] = "open" if self.skin_c is None else fmt_fixed(self.skin_c, 1)
        out["lt"] = str(self.lease_timeout_ms)
        out["lr"] = str(self.lease_remaining_ms)
        out["lx"] = str(self.lease_expiry_count)
        for n, p in enumerate(self.probes, start=1):
            out[f"p{n}"] = p.encode()
        return out

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Telemetry:
        """Parse TEL fields; raises ValueError naming the field on anything wrong."""
        probes: dict[int, ProbeTel] = {}
        for key, value in fields.items():
            if key in _TEL_SCALARS:
                continue
            if not re.fullmatch(r"p[1-9][0-9]?", key):
                raise ValueError(f"TEL field {key}: unknown field")
            probes[int(key[1:])] = _field(key, value, ProbeTel.decode)
        if not probes or sorted(probes) != list(range(1, len(probes) + 1)):
            raise ValueError("TEL probe fields are not p1..pN")

        def need(key: str) -> str:
            value = fields.get(key)
            if value is None:
                raise ValueError(f"TEL field {key} missing")
            return value

        def count(key: str) -> int:
            value = _field(key, need(key), parse_int)
            if not 0 <= value <= 65535:
                raise ValueError(f"TEL field {key}: {value} outside 0..65535")
            return value

        st = _field("st", need("st"), lambda t: _parse_bits(t, 0xF))
        fl = _field("fl", need("fl"), lambda t: _parse_bits(t, 0x7))
        skin = fields.get("skin")
        skin_c = None if skin is None or skin == "open" else _field("skin", skin, parse_float)
        return cls(
            console_time_s=_field("t", need("t"), parse_float),
            lease_armed=bool(st & 1),
            master_open=bool(st & 2),
            supply_low=bool(st & 4),
            helium_ok=bool(st & 8),
            lease_expired=bool(fl & 1),
            overpressure=bool(fl & 2),
            console_limit=bool(fl & 4),
            supply_kpa=_field("sup", need("sup"), parse_float),
            cylinder_kpa=_field("cyl", need("cyl"), parse_float),
            skin_present=skin is not None,
            skin_c=skin_c,
            lease_timeout_ms=count("lt"),
            lease_remaining_ms=count("lr"),
            lease_expiry_count=count("lx"),
            probes=tuple(probes[n] for n in sorted(probes)),
        )


_TEL_SCALARS = frozenset({"t", "st", "fl", "sup", "cyl", "skin", "lt", "lr", "lx"})
_T = TypeVar("_T")


def _field(key: str, text: str, parse: Callable[[str], _T]) -> _T:
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(f"TEL field {key}: {exc}") from None


def _parse_bits(text: str, mask: int) -> int:
    if not re.fullmatch(r"[0-9A-F]{1,4}", text):
        raise ValueError(f"{text!r} is not upper-case hex")
    value = int(text, 16)
    if value & ~mask:
        raise ValueError(f"{text!r} sets undefined bits")
    return value


def telemetry_max_len(probes: int, skin: bool = True) -> int:
    """Bytes of the longest possible TEL frame for a console (for link budgets)."""
    worst_probe = ProbeTel(
        -199.9, TcStatus.OK, 6553.5, True, True, True, TripCause.MAX_SUPPLY, 4294967.295
    )
    tel = Telemetry(
        console_time_s=4294967.295,
        lease_armed=True,
        master_open=True,
        supply_low=True,
        helium_ok=True,
        lease_expired=True,
        overpressure=True,
        console_limit=True,
        supply_kpa=65535,
        cylinder_kpa=65535,
        skin_present=skin,
        skin_c=-199.9,
        lease_timeout_ms=65535,
        lease_remaining_ms=65535,
        lease_expiry_count=65535,
        probes=(worst_probe,) * probes,
    )
    return len(encode(Frame.make(65535, "TEL", fields=tel.to_fields())))
