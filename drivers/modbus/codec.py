"""Modbus PDUs and frames, both ends: pure functions of bytes, no I/O.

The one module of cryod that imports pymodbus. pymodbus encodes the request
PDUs, decodes requests on the simulator's side and encodes its answers; the
checks that decide whether bytes are an answer at all are ours, small, and
fuzzed with hypothesis: ``decode_tcp_adu`` (MBAP), ``find_rtu_frame`` (RTU
framing and CRC) and ``parse_response`` (the PDU against its request) either
return a response or raise ``ProtocolError``. The driver (host) and the
simulator (console) frame with the same functions, so there is one Modbus
RTU CRC (``crc16``) and one MBAP layout. Wire format: docs/modbus.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
)

from ..base import ProtocolError

__all__ = [
    "MBAP_MAX_LENGTH",
    "MBAP_MIN_LENGTH",
    "ExcCodes",
    "ModbusExceptionResponse",
    "ParsedRequest",
    "Request",
    "RequestRefused",
    "crc16",
    "decode_tcp_adu",
    "encode_answer",
    "exception_answer",
    "find_rtu_frame",
    "mbap_length",
    "parse_request",
    "parse_response",
    "rtu_frame",
    "rtu_request_size",
    "tcp_adu",
]

#: the MBAP length field counts the unit id and the PDU: 2..254 bytes
MBAP_MIN_LENGTH = 2
MBAP_MAX_LENGTH = 254
#: most registers one write-multiple request carries
MAX_WRITE_REGISTERS = 123

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    6: "device busy",
}


class ModbusExceptionResponse(ProtocolError):
    """The console answered with a Modbus exception (counted as a bad frame)."""

    def __init__(self, function_code: int, code: int) -> None:
        name = _EXCEPTION_NAMES.get(code, "unknown")
        super().__init__(f"function {function_code}: exception {code} ({name})")
        self.function_code = function_code
        self.code = code


# ---- the host's side: requests out, answers checked ----------------------------
class Request:
    """One request PDU and what a valid answer to it looks like."""

    def __init__(self, pdu: ModbusPDU) -> None:
        self.function_code = pdu.function_code
        self.address = pdu.address
        self.count = pdu.count
        self.pdu = bytes([pdu.function_code]) + pdu.encode()

    @classmethod
    def read(cls, table: str, address: int, count: int) -> Request:
        klass = ReadInputRegistersRequest if table == "input" else ReadHoldingRegistersRequest
        return cls(klass(address=address, count=count))

    @classmethod
    def write(cls, address: int, words: list[int]) -> Request:
        if len(words) == 1:
            return cls._write_single(address, words[0])
        return cls(WriteMultipleRegistersRequest(address=address, registers=words))

    @classmethod
    def _write_single(cls, address: int, word: int) -> Request:
        """Function 6 built directly (the lease renewal sends one every poll); the same
        bytes as pymodbus's WriteSingleRegisterRequest (tests/modbus/test_poll_path.py)."""
        req = cls.__new__(cls)
        req.function_code, req.address, req.count = 6, address, 1
        req.pdu = struct.pack(">BHH", 6, address, word)
        return req

    def response_size(self) -> int:
        """PDU bytes of a normal response."""
        if self.function_code in (3, 4):
            return 2 + 2 * self.count
        return 5


_CLIENT_DECODER = DecodePDU(is_server=False)


def parse_response(req: Request, pdu: bytes) -> list[int]:
    """Validate a response PDU against its request; registers read (or [] for writes).

    Raises ModbusExceptionResponse for an exception answer, ProtocolError for
    anything else that is not exactly the expected answer.
    """
    if not pdu:
        raise ProtocolError("empty response PDU")
    fc = pdu[0]
    if fc == req.function_code | 0x80:
        if len(pdu) != 2:
            raise ProtocolError(f"exception response of {len(pdu)} bytes")
        raise ModbusExceptionResponse(req.function_code, pdu[1])
    if fc != req.function_code:
        raise ProtocolError(f"wrong function code {fc} (expected {req.function_code})")
    if len(pdu) != req.response_size():
        raise ProtocolError(f"response PDU of {len(pdu)} bytes (expected {req.response_size()})")
    if fc in (3, 4) and pdu[1] != 2 * req.count:
        raise ProtocolError(f"byte count {pdu[1]} (expected {2 * req.count})")
    if fc == 6 and pdu != req.pdu:
        raise ProtocolError("write-single echo differs from the request")
    if fc == 16 and pdu[1:5] != req.pdu[1:5]:
        raise ProtocolError("write-multiple answer names another address or count")
    if fc in (3, 4):
        # length and byte count checked above: the registers are the rest, big-endian
        return list(struct.unpack(f">{req.count}H", pdu[2:]))
    if fc in (6, 16):
        return []  # the whole answer was compared with the request above
    decoded = _CLIENT_DECODER.decode(pdu)
    if decoded is None or decoded.function_code != fc:
        raise ProtocolError("response PDU does not decode")
    return []


# ---- RTU framing ------------------------------------------------------------------
def crc16(data: bytes) -> bytes:
    """Modbus RTU CRC as sent on the wire (low byte first)."""
    return FramerRTU.compute_CRC(data).to_bytes(2, "big")


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """An RTU frame: unit id, PDU, CRC."""
    body = bytes([unit]) + pdu
    return body + crc16(body)


def find_rtu_frame(buf: bytes, unit: int, req: Request) -> tuple[bytes | None, int]:
    """Look for the answer to ``req`` in received bytes.

    Returns (pdu, garbage_bytes_skipped) when a frame with a good CRC from
    ``unit`` answering ``req``'s function starts somewhere in ``buf``;
    (None, 0) when more bytes may still complete one.
    """
    normal = req.response_size() + 3
    for start in range(len(buf)):
        if buf[start] != unit or start + 1 >= len(buf):
            continue
        fc = buf[start + 1]
        if fc == req.function_code | 0x80:
            size = 5
        elif fc == req.function_code:
            size = normal
        else:
            continue
        frame = buf[start : start + size]
        if len(frame) < size:
            continue
        if crc16(frame[:-2]) == frame[-2:]:
            return frame[1:-2], start
    return None, 0


# ---- TCP framing (MBAP) -----------------------------------------------------------
def tcp_adu(tid: int, unit: int, pdu: bytes) -> bytes:
    """An MBAP frame: transaction id, protocol 0, length, unit id, PDU."""
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def mbap_length(head: bytes | bytearray) -> int | None:
    """The length field of the MBAP header at the start of ``head`` (6 bytes or more);
    None when no Modbus TCP frame can have that header (protocol id not 0, or a
    length outside 2..254)."""
    length = head[4] << 8 | head[5]
    if head[2] or head[3] or not MBAP_MIN_LENGTH <= length <= MBAP_MAX_LENGTH:
        return None
    return length


def decode_tcp_adu(adu: bytes, tid: int, unit: int) -> bytes:
    """Check one complete MBAP frame; the PDU it carries. Raises ProtocolError."""
    if len(adu) < 8:
        raise ProtocolError(f"MBAP frame of {len(adu)} bytes")
    rtid, pid, length, runit = struct.unpack(">HHHB", adu[:7])
    if pid != 0:
        raise ProtocolError(f"MBAP protocol id {pid}")
    if length != len(adu) - 6:
        raise ProtocolError(f"MBAP length {length} for {len(adu) - 6} bytes")
    if rtid != tid:
        raise ProtocolError(f"transaction id {rtid} (expected {tid})")
    if runit != unit:
        raise ProtocolError(f"unit id {runit} (expected {unit})")
    return adu[7:]


# ---- the console's side: requests checked, answers out ----------------------------
class RequestRefused(Exception):
    """A request the console answers with a Modbus exception ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A request a console can serve: read (3 holding, 4 input) or write (6, 16)."""

    function_code: int
    address: int
    count: int
    #: the words written (empty for reads)
    registers: tuple[int, ...] = ()

    @property
    def table(self) -> str:
        return "input" if self.function_code == 4 else "holding"


_SERVER_DECODER = DecodePDU(is_server=True)
#: PDU length of the fixed-size requests
_FIXED_SIZE = {3: 5, 4: 5, 6: 5}


def parse_request(pdu: bytes) -> ParsedRequest:
    """A request PDU as the console reads it; RequestRefused for anything it does not
    serve exactly (function, malformed PDU, sizes)."""
    if not pdu:
        raise RequestRefused(ExcCodes.ILLEGAL_FUNCTION, "empty PDU")
    fc = pdu[0]
    if fc not in (3, 4, 6, 16):
        raise RequestRefused(ExcCodes.ILLEGAL_FUNCTION, f"function code {fc} not supported")
    request = _SERVER_DECODER.decode(pdu)
    if request is None:
        raise RequestRefused(ExcCodes.ILLEGAL_VALUE, f"function {fc}: malformed request")
    expected = _FIXED_SIZE.get(fc)
    if expected is not None and len(pdu) != expected:
        raise RequestRefused(ExcCodes.ILLEGAL_VALUE, f"function {fc}: PDU length {len(pdu)}")
    if isinstance(request, ReadInputRegistersRequest | ReadHoldingRegistersRequest):
        return ParsedRequest(fc, request.address, request.count)
    if isinstance(request, WriteSingleRegisterRequest):
        return ParsedRequest(fc, request.address, 1, tuple(request.registers))
    if isinstance(request, WriteMultipleRegistersRequest):
        count = request.count
        if not 1 <= count <= MAX_WRITE_REGISTERS or request.byte_count != 2 * count:
            raise RequestRefused(ExcCodes.ILLEGAL_VALUE, "function 16: bad count")
        if len(request.registers) != count or len(pdu) != 6 + 2 * count:
            raise RequestRefused(ExcCodes.ILLEGAL_VALUE, "function 16: byte count mismatch")
        return ParsedRequest(fc, request.address, count, tuple(request.registers))
    raise RequestRefused(ExcCodes.ILLEGAL_FUNCTION, f"function code {fc} not supported")


def encode_answer(req: ParsedRequest, words: list[int] | None = None) -> bytes:
    """The normal answer PDU: the registers read (``words``), or a write's acknowledgement."""
    answer: ModbusPDU
    if req.function_code == 4:
        answer = ReadInputRegistersResponse(registers=words or [])
    elif req.function_code == 3:
        answer = ReadHoldingRegistersResponse(registers=words or [])
    elif req.function_code == 6:
        answer = WriteSingleRegisterResponse(address=req.address, registers=list(req.registers))
    else:
        answer = WriteMultipleRegistersResponse(address=req.address, count=req.count)
    return _encode(answer)


def exception_answer(function_code: int, code: int) -> bytes:
    """The exception answer PDU to a request of ``function_code``."""
    return _encode(ExceptionResponse(function_code & 0x7F, code))


def _encode(pdu: ModbusPDU) -> bytes:
    return pdu.function_code.to_bytes(1, "big") + pdu.encode()


def rtu_request_size(buf: bytes) -> int | None:
    """Size of the RTU request frame at the start of ``buf`` (unit id, PDU, CRC):
    0 = no request starts here, None = need more bytes."""
    if len(buf) < 2:
        return None
    try:
        cls = _SERVER_DECODER.lookupPduClass(buf)
        if cls is None:
            return 0
        size = cls.calculateRtuFrameSize(buf)
    except Exception:  # noqa: BLE001 - pymodbus raises odd types on odd frames
        return 0
    return size or None
